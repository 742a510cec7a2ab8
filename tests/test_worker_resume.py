"""A worker killed with SIGKILL at any stage of a job comes back and finishes it exactly once.

Each test runs the real headless worker against a devnet, through a small in-test proxy that holds one
chosen request (the asset download, the upload, or ``complete`` before or after the backend saw it) so
the kill lands at a known stage. The worker is then started again without the proxy. It must end with
the job completed once, with the same result CID a clean run gives (renders are deterministic: the PNG
carries no date, host or path), and without taking any other job on the way.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from fastapi import FastAPI, Request, Response

from devnet.keys import sign
from devnet.process import Devnet, running_devnet
from veriframe_addon.worker.multiaddr import api_url_from_multiaddr
from veriframe_addon.worker.proof.png_chunks import image_sha256, without_itxt
from veriframe_addon.worker.proof.receipt import RECEIPT_KEYWORD, SignedReceipt, embed, extract, receipt_felt

from .conftest import QUICK_SETTINGS, read_until, run_worker, run_worker_until, start_worker, worker_env
from .processes import render_children
from .servers import serve_app


class HoldingProxy:
    """Forwards everything to ``upstream``; holds requests whose path contains ``hold_path``.

    ``when="before"`` holds before forwarding (upstream never sees it), ``"after"`` once upstream has
    answered (the effect happened, the client never hears of it). ``reached`` is set when one is held.
    """

    def __init__(self, upstream: str, hold_path: str | None, when: str = "before", method: str = "") -> None:
        self.upstream, self.hold_path, self.when, self.method = upstream.rstrip("/"), hold_path, when, method
        self.reached = threading.Event()
        self.release = threading.Event()
        self.app = FastAPI()
        self.app.add_api_route("/{path:path}", self.forward, methods=["GET", "POST", "PUT", "DELETE"])

    def _hold(self, request: Request, stage: str) -> None:
        held = self.hold_path and self.hold_path in request.url.path and self.when == stage
        if held and (not self.method or request.method == self.method):
            self.reached.set()
            self.release.wait(60)

    async def forward(self, path: str, request: Request) -> Response:
        self._hold(request, "before")
        headers = {k: v for k, v in request.headers.items() if k.lower() in {"authorization", "content-type"}}
        answer = requests.request(
            request.method,
            f"{self.upstream}/{path}",
            params=request.query_params,
            data=await request.body(),
            headers=headers,
            timeout=60,
        )
        self._hold(request, "after")
        keep = {k: v for k, v in answer.headers.items() if k.lower() in {"content-type", "x-content-length"}}
        return Response(answer.content, status_code=answer.status_code, headers=keep)


@contextmanager
def proxied_env(env: dict[str, str], target: str, proxy: HoldingProxy) -> Iterator[dict]:
    """``env`` with one of backend / IPFS API / gateway going through ``proxy``."""
    with serve_app(proxy.app) as url:
        overrides = {
            "backend": {"BACKEND_API_URL": f"{url}/api/v1"},
            "api": {"IPFS_API": url},
            "gateway": {"IPFS_GATEWAY": f"{url}/ipfs", "IPFS_API": "http://127.0.0.1:9"},
        }[target]
        try:
            yield env | overrides
        finally:
            proxy.release.set()


LEASE_S = 30  # the devnet's job lease in the lease test


def kill_when(process: subprocess.Popen[str], ready: threading.Event | None, line: str | None) -> str:
    """SIGKILLs the worker once ``ready`` is set or its log shows ``line``; returns its log."""
    assert process.stdout is not None
    seen: list[str] = []
    if line is not None:
        for text in process.stdout:
            seen.append(text)
            if line in text:
                break
    else:
        assert ready is not None and ready.wait(120), "the worker never reached the held request"
    process.send_signal(signal.SIGKILL)
    rest, _ = process.communicate(timeout=30)
    return "".join(seen) + rest


def _job(devnet: Devnet, job_id: str) -> dict:
    return requests.get(f"{devnet.backend_url}/jobs/{job_id}", timeout=10).json()


def _submit(devnet: Devnet, blend: Path) -> str:
    return devnet.cli("submit", str(blend), "--settings", '{"samples": 1}').strip()


def _result(devnet: Devnet, job_id: str) -> bytes:
    cid = _job(devnet, job_id)["full_result_cid"]
    response = requests.get(f"{devnet.env['IPFS_GATEWAY']}/{cid}", timeout=30)
    response.raise_for_status()
    return response.content


# Fields of a receipt that name this job and this worker; the rest is what the render was.
WHO = ("job_id", "worker_address")


@pytest.fixture(scope="module")
def clean_receipt(tmp_path_factory: pytest.TempPathFactory, sample_blend: Path) -> dict:
    """What an uninterrupted worker's result of the sample job says: its receipt, less job and worker."""
    root = tmp_path_factory.mktemp("clean")
    with running_devnet(root / "devnet") as net:
        job = _submit(net, sample_blend)
        env = worker_env(net, root / "worker")
        run = run_worker(env, "--max-jobs", "1")
        assert run.returncode == 0, run.output
        signed = extract(_result(net, job))
        assert signed is not None
        return {k: v for k, v in signed.receipt.items() if k not in WHO}


def assert_same_result(devnet: Devnet, job_id: str, clean: dict, env: dict[str, str]) -> None:
    """The job's result is the uninterrupted run's: the same pixels and settings in a receipt for this job
    by this worker, sealed as an uninterrupted run seals it (signatures are deterministic), so the same
    bytes and the same CID as if it had never been interrupted."""
    result = _result(devnet, job_id)
    signed = extract(result)
    assert signed is not None and signed.receipt["job_id"] == job_id
    assert {k: v for k, v in signed.receipt.items() if k not in WHO} == clean
    assert image_sha256(result) == clean["image_sha256"]
    r, s = sign(receipt_felt(signed.receipt), int(env["WORKER_PRIVATE_KEY"], 16))
    resealed = embed(without_itxt(result, RECEIPT_KEYWORD), SignedReceipt(signed.receipt, (r, s)))
    assert resealed == result


KILL_POINTS = {
    # stage: (which connection goes through the proxy, path held, before/after upstream, method)
    "download": ("gateway", "/ipfs/", "before", "GET"),
    "upload": ("api", "/api/v0/add", "before", "POST"),
    "before-complete": ("backend", "/complete", "before", "POST"),
    "during-complete": ("backend", "/complete", "after", "POST"),
}


@pytest.mark.parametrize("point", [*KILL_POINTS, "render"])
def test_sigkill_at_any_stage_then_restart_completes_the_job_exactly_once(
    point: str, devnet: Devnet, sample_blend: Path, clean_receipt: dict, tmp_path: Path
) -> None:
    job_id = _submit(devnet, sample_blend)
    decoy = _submit(devnet, sample_blend)  # on offer too: the restart must finish its own job first
    data_dir = tmp_path / "worker"
    env = worker_env(devnet, data_dir)  # one wallet for both runs: the restart is the same worker

    if point == "render":
        process = start_worker(env, "--max-jobs", "1")
        first = kill_when(process, None, "Rendering job")
        deadline = time.monotonic() + 10
        while render_children(data_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert render_children(data_dir) == [], "the render child outlived the killed worker"
    else:
        target, path, when, method = KILL_POINTS[point]
        upstream = {
            "backend": devnet.backend_url.removesuffix("/api/v1"),
            "api": api_url_from_multiaddr(devnet.env["IPFS_API"]),
            "gateway": devnet.env["IPFS_GATEWAY"].removesuffix("/ipfs"),
        }[target]
        proxy = HoldingProxy(upstream, path, when, method)
        with proxied_env(env, target, proxy) as through_proxy:
            first = kill_when(start_worker(through_proxy, "--max-jobs", "1"), proxy.reached, None)
    assert f"Successfully claimed job {job_id}" in first, first
    assert "Successfully completed" not in first
    if point == "during-complete":
        assert _job(devnet, job_id)["status"] == "completed"  # the backend took it; the worker never heard

    again = run_worker(env, "--max-jobs", "1")
    assert again.returncode == 0, again.output
    job = _job(devnet, job_id)
    assert job["status"] == "completed", again.output
    assert_same_result(devnet, job_id, clean_receipt, env)
    # The restart finished its own job before it took any other.
    out = again.output
    done_at = max(out.find(f"Successfully completed job {job_id}"), out.find(f"Job {job_id} was already"))
    decoy_at = out.find(f"Successfully claimed job {decoy}")
    assert done_at != -1 and (decoy_at == -1 or decoy_at > done_at), out
    journal = json.loads((data_dir / "completed_jobs.json").read_text())
    assert journal["completed_jobs"][0] == job_id and journal["completed_jobs"].count(job_id) == 1
    assert journal["pending_results"] == {}
    assert not (data_dir / "job-state" / f"{job_id}.json").exists()
    resumed = {
        "download": "Resuming job",
        "render": "Resuming job",
        "upload": "Resuming job",
        "before-complete": f"Reporting earlier result of job {job_id}",
        "during-complete": "was already completed with this result",
    }[point]
    assert resumed in again.output, again.output
    if point in {"render", "upload"}:
        # The verified download (and, after a render, the PNG) was reused, not fetched again.
        assert "Downloading asset CID" not in again.output
    if point == "upload":
        assert "Validating and rendering" not in again.output


def test_stop_now_leaves_the_job_claimed_and_the_next_start_resumes_it(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    """Two SIGTERMs: the first asks to finish the job in hand, the second stops at once."""
    # 64 samples: a render long enough (seconds) that the second signal surely lands during it.
    job_id = devnet.cli("submit", str(sample_blend), "--settings", '{"samples": 64}').strip()
    data_dir = tmp_path / "worker"
    env = worker_env(devnet, data_dir)
    process = start_worker(env, "--max-jobs", "1")
    log: list[str] = []
    read_until(process, log, lambda text: "Rendering job" in text, 120)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # two signals sent at once would merge into one
    process.send_signal(signal.SIGTERM)
    rest, _ = process.communicate(timeout=60)
    output = "".join(log) + rest
    assert process.returncode == 0, output
    assert "stopping now" in output and f"Job {job_id} interrupted" in output
    assert _job(devnet, job_id)["status"] == "assigned"
    state = json.loads((data_dir / "job-state" / f"{job_id}.json").read_text())
    assert state["stage"] == "downloaded"

    again = run_worker(env, "--max-jobs", "1")
    assert again.returncode == 0, again.output
    assert "Resuming job" in again.output and "Downloading asset CID" not in again.output
    assert _job(devnet, job_id)["status"] == "completed"


def test_one_sigterm_finishes_the_job_in_hand(devnet: Devnet, sample_blend: Path, tmp_path: Path) -> None:
    job_id = _submit(devnet, sample_blend)
    process = start_worker(worker_env(devnet, tmp_path / "worker"))
    read_until(process, [], lambda log: "Rendering job" in log, 120)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert "stopping after the current job" in output
    assert f"✓ Successfully completed job {job_id}" in output
    assert _job(devnet, job_id)["status"] == "completed"


def test_a_job_whose_lease_ran_out_while_stopped_is_let_go(
    sample_blend: Path, clean_receipt: dict, tmp_path: Path
) -> None:
    """The record says the job is ours, but the backend's lease on it expired and another worker finished
    it meanwhile: the restarted worker drops its record and files instead of rendering it again.

    The lease (30 s) must outlast the other worker's start, download and render, with the other tests'
    renders sharing the cores: both use the cache the clean run warmed.
    """
    with running_devnet(tmp_path / "devnet", extra_args=("--job-lease", str(LEASE_S))) as devnet:
        job_id = _submit(devnet, sample_blend)
        data_dir = tmp_path / "worker"
        env = worker_env(devnet, data_dir)
        kill_when(start_worker(env, "--max-jobs", "1"), None, "Rendering job")
        time.sleep(LEASE_S + 0.5)  # the lease runs out; the job is offered again
        other = worker_env(devnet, tmp_path / "other")
        assert run_worker(other, "--max-jobs", "1").returncode == 0
        assert_same_result(devnet, job_id, clean_receipt, other)  # the other worker's result
        again = run_worker_until(env, "Found 0 available jobs", 1)
    assert f"Letting job {job_id} go: it is completed and no longer assigned to this worker" in again.output
    assert not (data_dir / "job-state" / f"{job_id}.json").exists()
    assert not (data_dir / "jobs" / job_id / "scene").exists()


@contextmanager
def next_render_while_a_report_is_held(
    devnet: Devnet, sample_blend: Path, env: dict[str, str]
) -> Iterator[tuple[list[str], subprocess.Popen[str], HoldingProxy, list[str]]]:
    """Two jobs, and a worker whose first ``complete`` a proxy holds, read until its second render has
    started (a worker that reports before its next render never gets there): (the jobs, the worker, the
    proxy, its log so far). The proxy lets go when the block ends."""
    jobs = [devnet.cli("submit", str(sample_blend), *QUICK_SETTINGS).strip() for _ in range(2)]
    proxy = HoldingProxy(devnet.backend_url.removesuffix("/api/v1"), "/complete", "before", "POST")
    with proxied_env(env, "backend", proxy) as through_proxy:
        worker = start_worker(through_proxy, "--max-jobs", "2")
        try:
            lines: list[str] = []
            started = read_until(worker, lines, lambda log: log.count("Validating and rendering") >= 2, 180)
            assert started, "".join(lines)[-4000:]
            assert proxy.reached.wait(60), "the first job's result was never reported"
            yield jobs, worker, proxy, lines
        finally:
            if worker.poll() is None:
                worker.kill()


def _completed_once(devnet: Devnet, data_dir: Path, jobs: list[str], log: str) -> None:
    for job in jobs:
        assert log.count(f"Successfully completed job {job}") == 1, log[-4000:]
        assert _job(devnet, job)["status"] == "completed"
    journal = json.loads((data_dir / "completed_jobs.json").read_text())
    assert sorted(journal["completed_jobs"]) == sorted(jobs) and journal["pending_results"] == {}


def test_the_next_job_renders_while_the_last_result_is_still_being_reported(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    """The seal, upload and report of one job run beside the next job's render (a GPU renders a frame in
    about the time they take), and each job is still claimed, rendered and completed once."""
    data_dir = tmp_path / "worker"
    env = worker_env(devnet, data_dir)
    with next_render_while_a_report_is_held(devnet, sample_blend, env) as (jobs, worker, proxy, lines):
        assert "Successfully completed job" not in "".join(lines)  # the first job's report is still held
        proxy.release.set()
        rest, _ = worker.communicate(timeout=120)
    log = "".join(lines) + rest
    assert worker.returncode == 0, log[-4000:]
    assert all(log.count(f"Successfully claimed job {job}") == 1 for job in jobs)
    _completed_once(devnet, data_dir, jobs, log)


def test_a_worker_killed_with_a_result_on_its_way_and_the_next_job_rendering_completes_both_once(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "worker"
    env = worker_env(devnet, data_dir)  # one wallet for both runs: the restart is the same worker
    with next_render_while_a_report_is_held(devnet, sample_blend, env) as (jobs, worker, _, lines):
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=30)
    assert "Successfully completed job" not in "".join(lines)

    # The first job's result is delivered from the journal (it is not a job taken again: --max-jobs 1 is
    # the second, resumed). Its held report may have reached the backend as the proxy let go.
    again = run_worker(env, "--max-jobs", "1")
    assert again.returncode == 0, again.output[-4000:]
    assert not any(f"Successfully claimed job {job}" in again.output for job in jobs)  # never claimed again
    first, second = jobs
    assert f"Reporting earlier result of job {first}" in again.output
    assert f"Resuming job {second}" in again.output
    for job in jobs:
        assert _job(devnet, job)["status"] == "completed"
    journal = json.loads((data_dir / "completed_jobs.json").read_text())
    assert sorted(journal["completed_jobs"]) == sorted(jobs) and journal["pending_results"] == {}
