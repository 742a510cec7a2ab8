"""Render slots (``RENDER_SLOTS``): several jobs in flight in one worker, each claimed, rendered and reported
once. Real worker process, real devnet over HTTP, real bpy renders; two slots on this 2-core machine are
CPU-bound, so these tests show correctness (claims, crash safety, stopping), not speed (see the bench)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import requests

from devnet.process import Devnet

from .conftest import QUICK_SETTINGS, read_until, run_worker, start_worker, worker_env
from .servers import served_status

SETTINGS = ("--settings", '{"samples": 1, "resolution_percentage": 50}')


def _status(devnet: Devnet, job_id: str) -> str:
    return requests.get(f"{devnet.backend_url}/jobs/{job_id}", timeout=10).json()["status"]


def _journal(data: Path) -> dict:
    return json.loads((data / "completed_jobs.json").read_text())


def _two_in_flight(
    devnet: Devnet, sample_blend: Path, data: Path, submitted: int
) -> tuple[list[str], dict[str, str], subprocess.Popen[str], list[str]]:
    """``submitted`` jobs, and a 2-slot worker started on them that is rendering two at once."""
    jobs = [devnet.cli("submit", str(sample_blend), *SETTINGS).strip() for _ in range(submitted)]
    env = worker_env(devnet, data, RENDER_SLOTS="2")
    worker = start_worker(env)
    lines: list[str] = []
    read_until(worker, lines, lambda log: log.count("[Worker] Validating and rendering") >= 2, 180)
    return jobs, env, worker, lines


def _rendering_at_once(log: str) -> bool:
    """Whether the log shows a render starting while another job's render had not ended yet."""
    open_renders = 0
    for line in log.splitlines():
        if "[Worker] Validating and rendering" in line:
            open_renders += 1
            if open_renders > 1:
                return True
        elif "[Worker] Render successful" in line or "failed" in line:
            open_renders = max(0, open_renders - 1)
    return False


def test_two_slots_render_ten_jobs_each_claimed_and_completed_once(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    jobs = [devnet.cli("submit", str(sample_blend), *QUICK_SETTINGS).strip() for _ in range(10)]
    env = worker_env(devnet, tmp_path / "worker", RENDER_SLOTS="2")
    run = run_worker(env, "--max-jobs", "10")

    assert run.returncode == 0, run.output[-4000:]
    share = max(1, (os.cpu_count() or 1) // 2)  # RENDER_THREADS unset: every core, split between slots
    threads = f"CPU, {share} thread{'s' if share > 1 else ''}"
    assert f"[Worker] 2 render slots: {threads}; {threads}" in run.output
    for job in jobs:
        assert run.output.count(f"Successfully claimed job {job}") == 1, job
        assert run.output.count(f"Successfully completed job {job}") == 1, job
        assert _status(devnet, job) == "completed"
    assert sorted(_journal(run.data_dir)["completed_jobs"]) == sorted(jobs)
    assert "Could not claim" not in run.output  # the slots never raced each other for a job
    assert _rendering_at_once(run.output), "two renders were never in flight at once"
    # Each render kept to its slot's share of the CPU.
    assert set(re.findall(r"Render successful: .*?, (\d+) threads", run.output)) == {str(share)}


def test_a_worker_killed_with_two_jobs_in_flight_finishes_both_once_after_a_restart(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    jobs, env, worker, lines = _two_in_flight(devnet, sample_blend, tmp_path / "worker", 2)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    first = "".join(lines)
    assert all(f"Successfully claimed job {job}" in first for job in jobs), first[-3000:]
    assert "Successfully completed job" not in first  # both were in flight when it died

    run = run_worker(env, "--max-jobs", "2")
    assert run.returncode == 0, run.output[-4000:]
    for job in jobs:
        assert f"Resuming job {job}" in run.output
        assert f"Successfully claimed job {job}" not in run.output  # resumed, never claimed again
        assert run.output.count(f"Successfully completed job {job}") == 1
        assert _status(devnet, job) == "completed"
    assert sorted(_journal(run.data_dir)["completed_jobs"]) == sorted(jobs)


def test_stop_after_the_jobs_in_hand_with_two_in_flight_finishes_both(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    jobs, _, worker, lines = _two_in_flight(devnet, sample_blend, tmp_path / "worker", 3)
    worker.send_signal(signal.SIGTERM)  # the first SIGTERM: finish the jobs in hand, take no new one
    try:
        rest, _ = worker.communicate(timeout=240)
    except subprocess.TimeoutExpired as exc:
        worker.kill()
        said = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else str(exc.output)
        raise AssertionError("the worker did not stop: " + ("".join(lines) + said)[-5000:]) from None
    log = "".join(lines) + rest

    assert worker.returncode == 0, log[-4000:]
    claimed = [job for job in jobs if f"Successfully claimed job {job}" in log]
    assert len(claimed) == 2, log[-4000:]
    for job in claimed:
        assert f"Successfully completed job {job}" in log
        assert _status(devnet, job) == "completed"
    (left,) = set(jobs) - set(claimed)
    assert _status(devnet, left) == "open"  # no new job was taken after the stop


def test_each_slot_reports_its_own_job_to_health_and_metrics_over_http() -> None:
    # The real board, published from two slot threads as the job flow does, watched over real HTTP.
    with served_status() as (board, url):
        board.set_slots(["CUDA GPU 0", "CUDA GPU 1"])
        steps = {0: ("job-a", "rendering", 0.5), 1: ("job-b", "uploading", None)}

        def slot(index: int) -> None:
            board.bind_slot(index)
            job, state, progress = steps[index]
            board.publish(state="claiming", job_id=job, asset_cid=f"Qm{index}", progress=None)
            board.publish(state=state, progress=progress)

        threads = [threading.Thread(target=slot, args=(i,)) for i in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        health = requests.get(f"{url}/health", timeout=5).json()
        assert [(s["slot"], s["device"], s["state"]) for s in health["slots"]] == [
            (0, "CUDA GPU 0", "rendering"),
            (1, "CUDA GPU 1", "uploading"),
        ]
        assert health["slots"][0]["job"] == {
            "id": "job-a",
            "asset_cid": "Qm0",
            "stage": "rendering",
            "progress": 0.5,
        }
        assert health["slots"][1]["job"]["id"] == "job-b"
        metrics = requests.get(f"{url}/metrics", timeout=5).text
        assert (
            'veriframe_slot_busy{slot="0"} 1.0' in metrics and 'veriframe_slot_busy{slot="1"} 1.0' in metrics
        )
        assert 'veriframe_current_job_info{job_id="job-a",stage="rendering"} 1.0' in metrics
        assert 'veriframe_current_job_info{job_id="job-b",stage="uploading"} 1.0' in metrics

        # One slot done: its row goes idle, then polls, while the whole worker still shows the other's job.
        board.bind_slot(1)
        board.publish(state="idle", job_id=None, asset_cid=None, progress=None)
        health = requests.get(f"{url}/health", timeout=5).json()
        assert health["slots"][1]["job"] is None and health["state"] != "idle"
        board.publish(state="polling")
        health = requests.get(f"{url}/health", timeout=5).json()
        assert health["slots"][1]["state"] == "polling" and health["state"] == "rendering"
        assert health["current_job"]["id"] == "job-a"
        assert 'veriframe_slot_busy{slot="1"} 0.0' in requests.get(f"{url}/metrics", timeout=5).text

        # Slot 0's finisher delivers job-a while slot 0 renders its next job: the row keeps the render,
        # and the finished job still counts.
        board.bind_slot(0)
        board.publish(state="rendering", job_id="job-c", asset_cid="Qm2", progress=0.1)

        def finisher() -> None:
            board.bind_slot(0, background=True)
            board.publish(state="reporting", progress=None)
            board.count_completed(7)

        thread = threading.Thread(target=finisher)
        thread.start()
        thread.join()
        health = requests.get(f"{url}/health", timeout=5).json()
        assert health["slots"][0]["state"] == "rendering" and health["slots"][0]["job"]["id"] == "job-c"
        assert health["slots"][0]["job"]["progress"] == 0.1
        assert health["completed"] == 1
