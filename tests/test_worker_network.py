"""Network behaviour of the worker against real servers on 127.0.0.1: tokens, races, bad bytes, retries."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
import requests
from fastapi import FastAPI, Response

from devnet.process import Devnet, free_port, running_devnet
from veriframe_addon.worker.backend.auth import AuthSession, StarkSigner
from veriframe_addon.worker.config import load_config
from veriframe_addon.worker.errors import BackendError
from veriframe_addon.worker.loop import Worker
from veriframe_addon.worker.net.retry import RetryPolicy
from veriframe_addon.worker.net.transport import JsonTransport
from veriframe_addon.worker.scene.job_settings import RenderSettings

from .conftest import read_until, run_worker, start_worker, worker_env
from .servers import serve_app


def _job(devnet: Devnet, job_id: str) -> dict:
    return requests.get(f"{devnet.backend_url}/jobs/{job_id}", timeout=10).json()


def _in_process_worker(devnet: Devnet, data_dir: Path) -> Worker:
    return Worker(load_config(environ=worker_env(devnet, data_dir)))


def test_expired_token_is_renewed_mid_run(tmp_path: Path, sample_blend: Path) -> None:
    """Tokens live 1 s here; starting Blender alone takes longer, so the report needs a renewed token."""
    with running_devnet(tmp_path / "devnet", extra_args=("--access-ttl", "1")) as devnet:
        job_id = devnet.cli("submit", str(sample_blend)).strip()
        run = run_worker(worker_env(devnet, tmp_path / "worker"), "--max-jobs", "1")
        assert run.returncode == 0, run.output
        assert "Access token expired; renewing it" in run.output
        assert "Token refreshed" in run.output
        assert _job(devnet, job_id)["status"] == "completed"


def test_token_refused_with_401_is_refreshed_and_the_call_repeated(tmp_path: Path) -> None:
    """The worker's clock says the token is fresh, the backend says 401: it must refresh and retry."""
    with running_devnet(tmp_path / "devnet", extra_args=("--access-ttl", "1")) as devnet:
        env = worker_env(devnet, tmp_path / "worker")
        worker = Worker(load_config(environ=env))
        frozen = AuthSession(
            worker.auth.transport, env["WORKER_ADDRESS"], worker.auth.signer, clock=lambda: 0.0
        )
        worker.backend.auth = frozen
        frozen.sign_in()
        first_token = frozen.bearer()
        threading.Event().wait(2.2)  # the token is now expired on the backend's clock
        me = worker.backend.me()
        assert me["address"] == env["WORKER_ADDRESS"]
        assert frozen.bearer() != first_token


def test_wrong_key_is_refused_with_a_clear_error(devnet: Devnet, tmp_path: Path) -> None:
    env = worker_env(devnet, tmp_path / "worker")
    env["WORKER_PRIVATE_KEY"] = hex(int(env["WORKER_PRIVATE_KEY"], 16) ^ 1)
    run = run_worker(env, "--max-jobs", "1", timeout=120)
    assert run.returncode == 3
    assert "Authentication failed for" in run.output
    assert env["WORKER_PRIVATE_KEY"] not in run.output


def test_two_workers_racing_for_one_job(
    devnet: Devnet, sample_blend: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = devnet.cli("submit", str(sample_blend)).strip()
    workers = [_in_process_worker(devnet, tmp_path / f"worker{i}") for i in range(2)]
    for worker in workers:
        worker.auth.sign_in()
    offers = [worker.backend.available_jobs() for worker in workers]
    assert all([job.id for job in offer] == [job_id] for offer in offers)  # both see the same job

    barrier = threading.Barrier(2)
    results: dict[int, bool] = {}

    def claim(index: int) -> None:
        barrier.wait()
        results[index] = workers[index]._claim(offers[index][0])

    caplog.set_level(logging.INFO, logger="veriframe.worker")
    threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results.values()) == [False, True], results
    assert f"Could not claim job {job_id}: Job is not available for assignment" in caplog.text

    winner = workers[next(i for i, won in results.items() if won)]
    assert winner.process(offers[0][0], RenderSettings(samples=1))
    job = _job(devnet, job_id)
    assert job["status"] == "completed"
    assert job["worker_id"] == winner.backend.me()["id"]


def _evil_gateway() -> FastAPI:
    app = FastAPI()

    @app.get("/ipfs/{cid}")
    def serve(cid: str) -> Response:
        return Response(
            b"BLENDER-v404 definitely not the bytes you asked for", media_type="application/octet-stream"
        )

    return app


def test_bytes_that_do_not_match_the_cid_are_refused(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    with serve_app(_evil_gateway()) as evil:
        # 1: the gateway lies, the IPFS API is honest: the lie is refused and the honest copy is rendered.
        rescued = devnet.cli("submit", str(sample_blend)).strip()
        env = worker_env(devnet, tmp_path / "worker1", IPFS_GATEWAY=f"{evil}/ipfs")
        run = run_worker(env, "--max-jobs", "1")
        assert run.returncode == 0, run.output
        assert "Refused gateway bytes" in run.output
        assert _job(devnet, rescued)["status"] == "completed"

        # 2: the gateway lies and there is no other source: the job fails and nothing is rendered.
        doomed = devnet.cli("submit", str(sample_blend)).strip()
        env = worker_env(
            devnet,
            tmp_path / "worker2",
            IPFS_GATEWAY=f"{evil}/ipfs",
            IPFS_API=f"/ip4/127.0.0.1/tcp/{free_port()}",
        )
        run = run_worker(env, "--max-jobs", "1")
        assert run.returncode == 0, run.output
        assert f"✗ Job {doomed} failed: content from gateway does not match CID" in run.output
        job_dir = tmp_path / "worker2" / "jobs" / doomed
        assert not (job_dir / "render.log").exists() and not (job_dir / "asset.blend").exists()
        assert _job(devnet, doomed)["status"] == "assigned"


def test_uploaded_result_survives_a_crash_before_it_was_reported(devnet: Devnet, tmp_path: Path) -> None:
    """A worker that died between upload and ``complete`` reports the journaled result when it restarts."""
    job_id = devnet.cli("submit", str(Path(__file__))).strip()
    env = worker_env(devnet, tmp_path / "worker")
    crashed = Worker(load_config(environ=env))
    crashed.auth.sign_in()
    crashed.backend.assign(job_id)
    result = tmp_path / "render0001.png"
    result.write_bytes(b"\x89PNG\r\n\x1a\n pretend this is the render")
    cid = crashed.ipfs.upload(result)
    crashed.journal.record_result(job_id, cid)
    del crashed  # the process ends here without reporting

    restarted = Worker(load_config(environ=env))  # same wallet, same data folder
    restarted.start()
    restarted.books.report_pending_results()
    job = _job(devnet, job_id)
    assert job["status"] == "completed" and job["full_result_cid"] == cid
    assert restarted.journal.completed == [job_id] and restarted.journal.pending_results == {}


def _flaky_backend(counts: dict[str, int]) -> FastAPI:
    app = FastAPI()

    @app.get("/flaky")
    def flaky() -> Response:
        counts["flaky"] = counts.get("flaky", 0) + 1
        if counts["flaky"] < 3:
            return Response('{"detail": "try later"}', status_code=503, media_type="application/json")
        return Response('{"ok": true}', media_type="application/json")

    @app.get("/missing")
    def missing() -> Response:
        counts["missing"] = counts.get("missing", 0) + 1
        return Response('{"detail": "Job not found"}', status_code=404, media_type="application/json")

    @app.get("/down")
    def down() -> Response:
        counts["down"] = counts.get("down", 0) + 1
        return Response("bad gateway", status_code=502)

    return app


def test_retries_5xx_with_backoff_but_never_4xx() -> None:
    counts: dict[str, int] = {}
    with serve_app(_flaky_backend(counts)) as url:
        transport = JsonTransport(url, policy=RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05))
        assert transport.request("GET", "/flaky") == {"ok": True}
        assert counts["flaky"] == 3

        with pytest.raises(BackendError) as refused:
            transport.request("GET", "/missing")
        assert refused.value.status == 404 and refused.value.detail == "Job not found"
        assert counts["missing"] == 1

        with pytest.raises(BackendError) as gave_up:
            transport.request("GET", "/down")
        assert gave_up.value.status == 502 and counts["down"] == 4

    with pytest.raises(BackendError, match="backend unreachable"):
        JsonTransport(
            f"http://127.0.0.1:{free_port()}", policy=RetryPolicy(attempts=2, base_delay=0.01)
        ).request("GET", "/health")


def test_signer_matches_the_backend_verification() -> None:
    """What the worker signs, starknet-py's ECDSA verifier (the devnet's) accepts, for its key only."""
    from starknet_py.hash.utils import private_to_stark_key, verify_message_signature

    signer = StarkSigner(0x1234ABCD)
    message = "0x" + "ab" * 31
    r, s = (int(v, 16) for v in signer.sign(message))
    assert verify_message_signature(int(message, 16), [r, s], private_to_stark_key(0x1234ABCD))
    assert not verify_message_signature(int(message, 16), [r, s], private_to_stark_key(0x1234ABCE))
    assert "1234" not in repr(signer)


def test_worker_started_during_a_backend_outage_waits_and_then_works(
    tmp_path: Path, sample_blend: Path
) -> None:
    """The network is down when the worker starts; it keeps trying and completes the job once it is back."""
    ports = (free_port(), free_port(), free_port())
    data = tmp_path / "devnet"
    with running_devnet(data, ports=ports) as devnet:
        env = worker_env(devnet, tmp_path / "worker")
        job_id = devnet.cli("submit", str(sample_blend)).strip()
    # The devnet is stopped now.
    worker = start_worker(env, "--max-jobs", "1")
    lines: list[str] = []
    read_until(worker, lines, lambda log: "backend unreachable" in log, 120)
    with running_devnet(data, ports=ports) as devnet:
        rest, _ = worker.communicate(timeout=300)
        output = "".join(lines) + rest
        assert worker.returncode == 0, output
        assert f"✓ Successfully completed job {job_id}" in output
        assert _job(devnet, job_id)["status"] == "completed"
