"""The headless worker against a real devnet over HTTP, rendering with real Blender (``bpy``)."""

from __future__ import annotations

import json
import sqlite3
import zipfile
from pathlib import Path

import requests
from PIL import Image

from devnet.image_check import describe_sample_render
from devnet.process import Devnet

from .conftest import SCENE_SIZE, run_worker, run_worker_until, worker_env


def _job(devnet: Devnet, job_id: str) -> dict:
    return requests.get(f"{devnet.backend_url}/jobs/{job_id}", timeout=10).json()


def _journal(data_dir: Path) -> dict:
    return json.loads((data_dir / "completed_jobs.json").read_text())


def _reopen(devnet: Devnet, job_id: str) -> None:
    """Puts a job back on offer, as a backend that re-lists jobs would; done in the devnet's own DB."""
    with sqlite3.connect(devnet.data / "backend.sqlite3") as db:
        cur = db.execute(
            "UPDATE jobs SET status='open', worker_id=NULL, assigned_at=NULL, completed_at=NULL WHERE id=?",
            (job_id.replace("-", ""),),
        )
        if cur.rowcount == 0:
            cur = db.execute(
                "UPDATE jobs SET status='open', worker_id=NULL, assigned_at=NULL, "
                "completed_at=NULL WHERE id=?",
                (job_id,),
            )
        assert cur.rowcount == 1


def test_worker_completes_a_job_end_to_end(devnet: Devnet, sample_blend: Path, tmp_path: Path) -> None:
    job_id = devnet.cli(
        "submit",
        str(sample_blend),
        "--settings",
        '{"resolution_percentage": 50, "samples": 1, "frame": 2, "gpu": "any"}',
    ).strip()
    env = worker_env(devnet, tmp_path / "worker")
    run = run_worker(env, "--max-jobs", "1")

    assert run.returncode == 0, run.output
    for expected in (
        "[Worker] Successfully authenticated.",
        f"[Worker] Successfully claimed job {job_id}",
        "[Worker] Render successful:",
        f"[Worker] ✓ Successfully completed job {job_id}",
    ):
        assert expected in run.output
    job = _job(devnet, job_id)
    assert job["status"] == "completed"
    cid = job["full_result_cid"]
    assert job["result_cid_part1"] == cid[:31] and job["result_cid_part2"] == (cid[31:] or None)
    assert 0 <= job["quality_score"] <= 100

    # The result as anyone would get it: from IPFS by the CID the backend holds.
    png = tmp_path / "result.png"
    png.write_bytes(requests.get(f"{env['IPFS_GATEWAY']}/{cid}", timeout=10).content)
    assert Image.open(png).size == (SCENE_SIZE[0] // 2, SCENE_SIZE[1] // 2)  # the job's 50% was honoured
    describe_sample_render(png)

    assert _journal(run.data_dir)["completed_jobs"] == [job_id]
    assert env["WORKER_PRIVATE_KEY"] not in run.output
    assert env["WORKER_PRIVATE_KEY"][2:] not in run.output
    # Inputs are cleaned up; the render and Blender's log stay for the operator.
    job_dir = run.data_dir / "jobs" / job_id
    assert not (job_dir / "asset.blend").exists() and (job_dir / "render" / "render0001.png").exists()
    assert '"frame": 2' in (job_dir / "render.log").read_text()  # the job's frame was the one rendered


def test_bad_assets_fail_cleanly_and_the_next_job_completes(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    not_blend = tmp_path / "picture.png"
    Image.new("RGB", (8, 8), "white").save(not_blend)
    broken_blend = tmp_path / "broken.blend"
    broken_blend.write_bytes(sample_blend.read_bytes()[:2000])  # a real header, then nothing
    archive = tmp_path / "scene.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(sample_blend, "project/scene.blend")
        zf.writestr("project/textures/readme.txt", "no textures")
    bad_png = devnet.cli("submit", str(not_blend)).strip()
    bad_blend = devnet.cli("submit", str(broken_blend)).strip()
    good = devnet.cli("submit", str(archive)).strip()

    run = run_worker(worker_env(devnet, tmp_path / "worker"), "--max-jobs", "3")

    assert run.returncode == 0, run.output
    failed = _journal(run.data_dir)["failed_jobs"]
    assert "not a .blend file" in failed[bad_png]
    assert "Blender could not render" in failed[bad_blend]
    assert "broken.blend" in failed[bad_blend] or "asset.blend" in failed[bad_blend]
    assert f"✗ Job {bad_png} failed" in run.output and f"✗ Job {bad_blend} failed" in run.output
    assert _job(devnet, good)["status"] == "completed"
    assert _journal(run.data_dir)["completed_jobs"] == [good]


def test_restarted_worker_skips_journaled_jobs(devnet: Devnet, sample_blend: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "worker"
    env = worker_env(devnet, data_dir)
    first = devnet.cli("submit", str(sample_blend)).strip()
    run = run_worker(env, "--max-jobs", "1")
    assert run.returncode == 0, run.output
    assert _job(devnet, first)["status"] == "completed"

    # The backend offers the finished job again; a restarted worker (same data folder) must not take it.
    _reopen(devnet, first)
    second = devnet.cli("submit", str(sample_blend)).strip()
    rerun = run_worker(env, "--max-jobs", "1")
    assert rerun.returncode == 0, rerun.output
    assert f"Successfully claimed job {first}" not in rerun.output
    assert _job(devnet, first)["status"] == "open"
    assert _job(devnet, second)["status"] == "completed"
    assert _journal(data_dir)["completed_jobs"] == [first, second]

    # With only journaled work on offer it keeps polling, claims nothing, and stops cleanly on SIGTERM.
    idle = run_worker_until(env, "Found 1 available jobs", count=2)
    assert idle.returncode == 0, idle.output
    assert "Successfully claimed" not in idle.output
    assert "SIGTERM received" in idle.output
