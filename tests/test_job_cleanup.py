"""Old job folders are removed so the data folder does not grow without bound, and nothing unfinished is.

Real folders and files; the worker-level tests use a real ``Worker`` (no network needed to clean up) and
one run of the real headless worker against a devnet.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from devnet.process import Devnet
from veriframe_addon.worker.config import load_config
from veriframe_addon.worker.errors import ConfigError
from veriframe_addon.worker.loop import Worker
from veriframe_addon.worker.state.cleanup import remove_old_job_folders
from veriframe_addon.worker.state.job_records import JobState

from .conftest import run_worker, run_worker_until, worker_env

DAY = 86400.0


def _job_folder(jobs: Path, name: str, age_seconds: float, png_bytes: int = 1000) -> Path:
    folder = jobs / name
    (folder / "render").mkdir(parents=True)
    (folder / "render" / "render0001.png").write_bytes(b"p" * png_bytes)
    (folder / "render.log").write_text("Blender said things\n")
    then = time.time() - age_seconds
    os.utime(folder, (then, then))
    return folder


def test_finished_folders_older_than_the_keep_time_go_and_the_rest_stay(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    old = _job_folder(jobs, "old", 2 * DAY, png_bytes=5000)
    recent = _job_folder(jobs, "recent", 60)
    busy = _job_folder(jobs, "busy", 3 * DAY)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the worker's")
    (jobs / "link").symlink_to(outside)
    os.utime(jobs / "link", (0, 0), follow_symlinks=False)

    cleaned = remove_old_job_folders(jobs, DAY, in_use={"busy"})

    assert not old.exists()
    assert recent.is_dir() and busy.is_dir()
    assert (outside / "keep.txt").is_file()  # a link is never followed out of the jobs folder
    assert cleaned.folders == 1 and cleaned.bytes == 5000 + len("Blender said things\n")


def test_keep_zero_removes_every_finished_folder(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    _job_folder(jobs, "a", 1)
    _job_folder(jobs, "b", 0)
    assert remove_old_job_folders(jobs, 0, in_use=set()).folders == 2
    assert list(jobs.iterdir()) == []


def _config(tmp_path: Path, **extra: str):
    return load_config(
        environ={
            "BACKEND_API_URL": "http://127.0.0.1:9",
            "WORKER_ADDRESS": "0x1",
            "WORKER_PRIVATE_KEY": "0x2",
            "VERIFRAME_DATA_DIR": str(tmp_path / "data"),
            **extra,
        }
    )


def test_keep_results_hours_is_read_and_checked(tmp_path: Path) -> None:
    assert _config(tmp_path).keep_results_hours == 24
    assert _config(tmp_path, KEEP_RESULTS_HOURS="0").keep_results_hours == 0
    assert _config(tmp_path, KEEP_RESULTS_HOURS="72h").keep_results_hours == 72
    for bad in ("-1", "a week", "inf"):
        with pytest.raises(ConfigError, match="KEEP_RESULTS_HOURS"):
            _config(tmp_path, KEEP_RESULTS_HOURS=bad)


def test_the_worker_keeps_folders_of_unfinished_and_unreported_jobs(tmp_path: Path) -> None:
    """A job with a stage record (resumable) or an uploaded but unreported result keeps its folder, however
    old: its render may still be needed."""
    worker = Worker(_config(tmp_path, KEEP_RESULTS_HOURS="1"))
    jobs = worker.config.jobs_dir
    done = _job_folder(jobs, "done", 2 * 3600)
    resumable = _job_folder(jobs, "resumable", 5 * 3600)
    unreported = _job_folder(jobs, "unreported", 5 * 3600)
    worker.states.save(JobState("resumable", "rendered", "QmX", 1, {}))
    worker.journal.record_result("unreported", "QmResult")
    os.utime(resumable, (time.time() - 5 * 3600,) * 2)
    worker.clean_up_old_jobs()
    assert not done.exists()
    assert resumable.is_dir() and unreported.is_dir()


def test_a_restarted_worker_removes_the_folder_of_a_job_it_finished(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    devnet.cli("submit", str(sample_blend))
    env = worker_env(devnet, tmp_path / "worker", KEEP_RESULTS_HOURS="0")
    first = run_worker(env, "--max-jobs", "1")
    assert first.returncode == 0, first.output
    job_folders = list((tmp_path / "worker" / "jobs").iterdir())
    assert len(job_folders) == 1 and list(job_folders[0].rglob("*.png"))  # the render stays until cleanup
    again = run_worker_until(env, "Polling for jobs", 1)
    assert "Removed 1 finished job folder(s) older than 0 s" in again.output, again.output
    assert list((tmp_path / "worker" / "jobs").iterdir()) == []
