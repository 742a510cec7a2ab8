"""Prefetch (ipfs/prefetch.py): the next job's scene is fetched while the current one renders. Real worker,
real devnet, real renders; the gateway that lies is a real HTTP server in front of the devnet's."""

from __future__ import annotations

import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import requests
from fastapi import FastAPI, Request, Response

from devnet.process import Devnet
from veriframe_addon.worker.backend.api import BackendClient
from veriframe_addon.worker.backend.auth import AuthSession, StarkSigner
from veriframe_addon.worker.ipfs.asset_cache import AssetCache
from veriframe_addon.worker.multiaddr import api_url_from_multiaddr
from veriframe_addon.worker.net.transport import JsonTransport

from .conftest import QUICK_SETTINGS, run_worker_until, worker_env
from .servers import serve_app


def _scene_archive(sample_blend: Path, folder: Path, name: str) -> Path:
    """The sample scene zipped under its own name: the same honest scene under a CID of its own."""
    archive = folder / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(sample_blend, f"{name}/scene.blend")
    return archive


def _cid(devnet: Devnet, job_id: str) -> str:
    return requests.get(f"{devnet.backend_url}/jobs/{job_id}", timeout=10).json()["full_asset_cid"]


def _ipfs_lying_first(gateway: str, api: str, target: str, lies: int) -> tuple[FastAPI, list[str]]:
    """A gateway and RPC API in one that serve other bytes for the first ``lies`` fetches of ``target``
    and pass everything else through; the list records each answer for ``target``."""
    app = FastAPI()
    answers: list[str] = []
    lock = threading.Lock()

    def lie_now() -> bool:
        with lock:
            lying = sum(a == "lie" for a in answers) < lies
            answers.append("lie" if lying else "truth")
            return lying

    def relay(answer: requests.Response) -> Response:
        kind = answer.headers.get("content-type", "application/octet-stream")
        return Response(answer.content, status_code=answer.status_code, media_type=kind)

    lie = Response(b"PK not the bytes the CID names", media_type="application/octet-stream")

    @app.get("/ipfs/{cid}")
    def gateway_get(cid: str) -> Response:
        if cid == target and lie_now():
            return lie
        return relay(requests.get(f"{gateway}/{cid}", timeout=30))

    @app.post("/api/v0/{command}")
    async def rpc(command: str, request: Request) -> Response:
        if command == "cat" and request.query_params.get("arg") == target and lie_now():
            return lie
        answer = requests.post(
            f"{api}/api/v0/{command}",
            params=request.query_params,
            data=await request.body(),
            headers={"content-type": request.headers.get("content-type", "application/octet-stream")},
            timeout=30,
        )
        return relay(answer)

    return app, answers


def _run_until(
    env: dict[str, str], marker: str, timeout: float, on_line: Callable[[str], None] | None = None
) -> str:
    run = run_worker_until(env, marker, 1, timeout, on_line)
    assert run.returncode == 0, run.output[-5000:]
    return run.output


def test_the_next_scene_is_fetched_during_the_render_and_bytes_that_fail_verification_are_never_kept(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    # Three jobs in a row: while the first renders, the second's asset is prefetched and the gateway
    # lies about it (never kept: it is downloaded, verified, when claimed); while the second renders the
    # third's is prefetched honestly, and its job then starts from the cache with no download.
    settings = ("--settings", '{"samples": 1}')
    first = devnet.cli("submit", str(_scene_archive(sample_blend, tmp_path, "first")), *settings).strip()
    second = devnet.cli("submit", str(_scene_archive(sample_blend, tmp_path, "second")), *settings).strip()
    third = devnet.cli("submit", str(_scene_archive(sample_blend, tmp_path, "third")), *settings).strip()
    second_cid, third_cid = _cid(devnet, second), _cid(devnet, third)
    gateway = devnet.env["IPFS_GATEWAY"]
    api = api_url_from_multiaddr(devnet.env["IPFS_API"])
    app, answers = _ipfs_lying_first(gateway, api, second_cid, lies=2)  # the gateway, then the RPC API
    data = tmp_path / "worker"
    with serve_app(app) as lying:
        env = worker_env(
            devnet,
            data,
            IPFS_GATEWAY=f"{lying}/ipfs",
            IPFS_API=lying,
        )
        log = _run_until(env, f"Successfully completed job {third}", 300)

    for job in (first, second, third):
        assert f"Successfully completed job {job}" in log, log[-4000:]
    # The lie: refused by the prefetch, nothing cached; the claimed job downloaded the true bytes.
    assert f"Prefetch of job {second}'s asset {second_cid} failed" in log, log[-4000:]
    assert answers[:2] == ["lie", "lie"] and "truth" in answers[2:], answers
    second_part = log[log.index(f"Successfully claimed job {second}") :]
    assert "Downloaded and verified" in second_part.split(f"Successfully claimed job {third}")[0]
    # The honest prefetch: fetched while the second job rendered, so its job needed no download.
    assert f"Prefetched job {third}'s asset {third_cid}" in log, log[-4000:]
    assert log.index(f"Prefetched job {third}'s") < log.index(f"Successfully completed job {second}")
    third_part = log[log.index(f"Successfully claimed job {third}") :]
    assert f"Asset CID {third_cid} is in the local cache" in third_part
    assert "Downloading asset CID" not in third_part
    cache = AssetCache(data / "asset-cache", 1 << 30)
    assert cache.has(second_cid) and cache.has(third_cid)  # the true bytes, kept at the claimed download


def test_a_prefetched_job_someone_else_claims_costs_only_its_cache_entry(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    settings = ("--settings", '{"samples": 1}')
    mine = devnet.cli("submit", str(_scene_archive(sample_blend, tmp_path, "mine")), *settings).strip()
    theirs = devnet.cli("submit", str(_scene_archive(sample_blend, tmp_path, "theirs")), *settings).strip()
    theirs_cid = _cid(devnet, theirs)
    # Another node, signed in with its own real Stark key, claims the second job once it is prefetched.
    other = devnet.worker_env()
    transport = JsonTransport(other["BACKEND_API_URL"])
    auth = AuthSession(transport, other["WORKER_ADDRESS"], StarkSigner(int(other["WORKER_PRIVATE_KEY"], 16)))
    other_node = BackendClient(transport, auth)
    claimed = threading.Event()
    other_id: list[str] = []

    def claim_when_prefetched(line: str) -> None:
        if f"Prefetched job {theirs}'s asset" in line and not claimed.is_set():
            other_node.assign(theirs)
            other_id.append(other_node.me()["id"])
            claimed.set()

    data = tmp_path / "worker"
    env = worker_env(devnet, data, POLL_INTERVAL="0.3")
    worker_log = _run_until(env, f"Successfully completed job {mine}", 240, claim_when_prefetched)
    assert claimed.is_set(), worker_log[-3000:]
    assert f"Successfully completed job {mine}" in worker_log
    assert f"claimed job {theirs}" not in worker_log and "Could not claim" not in worker_log
    job = requests.get(f"{devnet.backend_url}/jobs/{theirs}", timeout=10).json()
    assert job["status"] == "assigned" and job["worker_id"] == other_id[0]
    # What it cost: one verified cache entry, no job folder, no record, no journal line.
    assert AssetCache(data / "asset-cache", 1 << 30).has(theirs_cid)
    assert not (data / "jobs" / theirs).exists()
    assert theirs not in (data / "completed_jobs.json").read_text()


def test_a_job_claimed_while_its_scene_is_still_prefetching_waits_for_it_and_downloads_it_once(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    # The first job renders in a moment (Workbench), so the second is claimed while a gateway holds its
    # prefetch; let go, the prefetch lands in the cache and the claimed job copies it from there.
    first, second = (
        devnet.cli("submit", str(_scene_archive(sample_blend, tmp_path, name)), *QUICK_SETTINGS).strip()
        for name in ("first", "second")
    )
    second_cid = _cid(devnet, second)
    gateway = devnet.env["IPFS_GATEWAY"]
    held, release, fetches = threading.Event(), threading.Event(), []
    app = FastAPI()

    @app.get("/ipfs/{cid}")
    def gateway_get(cid: str) -> Response:
        if cid == second_cid:
            fetches.append(cid)
            held.set()
            release.wait(60)
        answer = requests.get(f"{gateway}/{cid}", timeout=30)
        return Response(answer.content, status_code=answer.status_code, media_type="application/octet-stream")

    def on_line(line: str) -> None:
        if "Waiting for the prefetch of asset" in line:
            release.set()  # the claimed job waits for the prefetch: now let the bytes through

    with serve_app(app) as holding:
        env = worker_env(devnet, tmp_path / "worker", IPFS_GATEWAY=f"{holding}/ipfs")
        log = _run_until(env, f"Successfully completed job {second}", 300, on_line)
    release.set()

    assert held.is_set() and fetches == [second_cid], fetches  # fetched once, by the prefetch
    second_part = log[log.index(f"Successfully claimed job {second}") :]
    assert f"Waiting for the prefetch of asset {second_cid}" in second_part, log[-4000:]
    assert f"Prefetched job {second}'s asset {second_cid}" in second_part
    assert f"Asset CID {second_cid} is in the local cache" in second_part
    assert "Downloading asset CID" not in second_part
    assert f"Successfully completed job {first}" in log
