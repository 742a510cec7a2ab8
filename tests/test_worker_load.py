"""Many jobs, many workers, a flaky network: every job completed exactly once, none rendered twice.

Real parts throughout: a devnet, headless worker processes rendering with the ``bpy`` module, and the
fault-injection proxy (``tests/fault_proxy.py``) between the workers and the backend and IPFS. The
figures (wall time, jobs per minute, retries) are logged for the record; nothing here asserts a time.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import requests

from devnet.process import ROOT, Devnet

from .conftest import faults_injected, faulty_network, run_worker, worker_env

log = logging.getLogger("tests.load")
DONE = "✓ Successfully completed job "


# Workbench: what is under load here is the job flow (claims, retries, the journal), not an engine, and an
# EEVEE frame costs three times as much on these cores.
SETTINGS = '{"engine": "WORKBENCH"}'


def submit(devnet: Devnet, blend: Path, count: int) -> list[str]:
    return [devnet.cli("submit", str(blend), "--settings", SETTINGS).strip() for _ in range(count)]


def warm_up(devnet: Devnet, blend: Path, tmp_path: Path) -> None:
    """One job first, outside the measured run, so the shared shader cache is warm."""
    job = submit(devnet, blend, 1)
    env = worker_env(devnet, tmp_path / "warm")
    assert run_worker(env, "--max-jobs", "1").returncode == 0
    assert statuses(devnet, job) == Counter({"completed": 1})


def statuses(devnet: Devnet, ids: list[str]) -> Counter[str]:
    return Counter(requests.get(f"{devnet.backend_url}/jobs/{i}", timeout=10).json()["status"] for i in ids)


def run_workers_until_done(
    devnet: Devnet, envs: list[dict[str, str]], ids: list[str], timeout: float
) -> tuple[list[str], float]:
    """Starts one worker process per env, waits until every job is completed, stops them all."""
    started = time.monotonic()
    logs = [Path(env["VERIFRAME_DATA_DIR"]).with_suffix(".log") for env in envs]
    processes = []
    for env, path in zip(envs, logs, strict=True):
        Path(env["VERIFRAME_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
        with path.open("w") as out:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "veriframe_addon"], cwd=ROOT, env=env, stdout=out, stderr=out
                )
            )
    try:
        while time.monotonic() - started < timeout:
            if statuses(devnet, ids)["completed"] == len(ids):
                break
            time.sleep(2)
        wall = time.monotonic() - started
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return [path.read_text() for path in logs], wall


def assert_each_job_once(devnet: Devnet, ids: list[str], outputs: list[str]) -> None:
    """Completed exactly once, claimed by one worker, rendered by one worker, in the backend's log too."""
    assert statuses(devnet, ids) == Counter({"completed": len(ids)})
    backend_log = "\n".join(devnet.log_lines)
    for job_id in ids:
        assert len(re.findall(rf"job {job_id} completed by", backend_log)) == 1, job_id
        assert len(re.findall(rf"job {job_id} claimed by", backend_log)) == 1, job_id
        rendered_by = [i for i, out in enumerate(outputs) if f"/jobs/{job_id}/render/render0001.png (" in out]
        assert len(rendered_by) == 1, (job_id, rendered_by)
        assert sum(out.count(DONE + job_id) for out in outputs) <= 1  # or settled as "already completed"


def test_twenty_jobs_through_thirty_percent_faults_all_complete_once(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    """Drops, delays, 500/503 (with Retry-After) and cut responses on 30 % of backend and IPFS calls."""
    warm_up(devnet, sample_blend, tmp_path)
    ids = submit(devnet, sample_blend, 20)
    with faulty_network(devnet, rate=0.3, seed=7) as (routes, proxies):
        flaky = worker_env(
            devnet,
            tmp_path / "worker",
            **routes,
            POLL_INTERVAL="0.5",
            ASSET_CACHE_MB="0",  # every job fetches its scene through the faulty network
        )
        outputs, wall = run_workers_until_done(devnet, [flaky], ids, timeout=900)
        injected = {
            name: faults_injected(proxy)
            for name, proxy in zip(("backend", "api", "gateway"), proxies, strict=True)
        }
    assert_each_job_once(devnet, ids, outputs)
    journal = json.loads((tmp_path / "worker" / "completed_jobs.json").read_text())
    assert sorted(journal["completed_jobs"]) == sorted(ids) and journal["pending_results"] == {}
    assert journal.get("failed_jobs", {}) == {}
    assert all(count > 0 for count in injected.values()), injected
    log.info(
        "flaky network: 20 jobs in %.0f s (%.1f jobs/min); faults injected %s; worker retries %d",
        wall,
        20 / wall * 60,
        injected,
        outputs[0].count("; retry "),
    )


def test_eight_workers_forty_jobs_each_rendered_once(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    warm_up(devnet, sample_blend, tmp_path)
    ids = submit(devnet, sample_blend, 40)
    envs = [worker_env(devnet, tmp_path / f"worker{n}", POLL_INTERVAL="1") for n in range(8)]
    outputs, wall = run_workers_until_done(devnet, envs, ids, timeout=1200)
    assert_each_job_once(devnet, ids, outputs)
    per_worker = [sum(out.count(DONE + i) for i in ids) for out in outputs]
    assert sum(per_worker) == 40
    lost_races = sum(out.count("Could not claim job") for out in outputs)
    log.info(
        "load: 8 workers, 40 jobs in %.0f s (%.1f jobs/min); jobs per worker %s; lost claim races %d; "
        "retries %d",
        wall,
        40 / wall * 60,
        per_worker,
        lost_races,
        sum(out.count("; retry ") for out in outputs),
    )
