"""The asset cache: a scene shared by many jobs is downloaded and verified once, within a size cap.

Unit tests on real files, then the real worker against a devnet with a counting proxy in front of IPFS,
so "fetched once" is counted on the wire rather than read from the worker's own log alone.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
import requests

from devnet.process import Devnet
from veriframe_addon.session import ExtensionSession
from veriframe_addon.worker.config import load_config
from veriframe_addon.worker.errors import ConfigError
from veriframe_addon.worker.ipfs.asset_cache import STALE_PART_SECONDS, AssetCache
from veriframe_addon.worker.ipfs.cid import cid_of_bytes
from veriframe_addon.worker.multiaddr import api_url_from_multiaddr
from veriframe_addon.worker.proof.png_chunks import image_sha256
from veriframe_addon.worker.proof.receipt import extract

from .conftest import run_worker, worker_env
from .fault_proxy import FaultPolicy, FaultProxy

KIB = 1024


def _settings(data_dir: Path) -> dict[str, str]:
    """The least a worker config needs (nothing here is contacted)."""
    return {
        "BACKEND_API_URL": "http://127.0.0.1:8000",
        "WORKER_ADDRESS": "0x1",
        "WORKER_PRIVATE_KEY": "0x2",
        "VERIFRAME_DATA_DIR": str(data_dir),
    }


def _job(devnet: Devnet, job_id: str) -> dict:
    return requests.get(f"{devnet.backend_url}/jobs/{job_id}", timeout=10).json()


def _asset(folder: Path, content: bytes) -> tuple[str, Path]:
    """A file and its CIDv0, as a verified download leaves them."""
    path = folder / f"download-{len(content)}-{content[:4].hex()}"
    path.write_bytes(content)
    return str(cid_of_bytes(content)), path


def test_a_kept_asset_is_copied_back_byte_for_byte(tmp_path: Path) -> None:
    cache = AssetCache(tmp_path / "cache", 1024 * KIB)
    cid, source = _asset(tmp_path, b"scene bytes" * 100)
    assert cache.copy_to(cid, tmp_path / "job-a") is None  # nothing kept yet
    assert cache.add(cid, source)
    copy = cache.copy_to(cid, tmp_path / "job-b")
    assert copy is not None and copy.size == source.stat().st_size
    assert (tmp_path / "job-b").read_bytes() == source.read_bytes()


def test_a_job_that_changes_its_copy_cannot_change_the_cache(tmp_path: Path) -> None:
    """A render may write its job folder; the next job sharing the scene must still get the real bytes."""
    cache = AssetCache(tmp_path / "cache", 1024 * KIB)
    cid, source = _asset(tmp_path, b"honest scene" * 50)
    cache.add(cid, source)
    job_copy = tmp_path / "job"
    cache.copy_to(cid, job_copy)
    job_copy.write_bytes(b"tampered")
    entry = next(p for p, _, _ in cache.entries())
    assert not stat.S_IMODE(entry.stat().st_mode) & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert entry.stat().st_ino != job_copy.stat().st_ino  # a copy, not a hard link
    again = cache.copy_to(cid, tmp_path / "next-job")
    assert again is not None and (tmp_path / "next-job").read_bytes() == b"honest scene" * 50


def test_least_recently_used_entries_go_first_when_the_cap_is_reached(tmp_path: Path) -> None:
    cache = AssetCache(tmp_path / "cache", 250 * KIB)
    a, b, c = (_asset(tmp_path, bytes([n]) * 100 * KIB) for n in (1, 2, 3))
    cache.add(*a)
    cache.add(*b)
    past = time.time() - 100
    for index, (path, _, _) in enumerate(cache.entries()):  # a older than b, whatever the clock did
        os.utime(path, (past + index, past + index))
    assert cache.copy_to(a[0], tmp_path / "use-a") is not None  # a is now the most recently used
    cache.add(*c)  # 300 KiB would pass the 250 KiB cap: b, least recently used, goes
    kept = {path.name for path, _, _ in cache.entries()}
    assert kept == {a[0], c[0]}
    assert cache.size() <= 250 * KIB


def test_an_asset_larger_than_the_cap_is_not_kept_and_evicts_nothing(tmp_path: Path) -> None:
    cache = AssetCache(tmp_path / "cache", 100 * KIB)
    small = _asset(tmp_path, b"s" * 10 * KIB)
    cache.add(*small)
    assert not cache.add(*_asset(tmp_path, b"L" * 200 * KIB))
    assert [p.name for p, _, _ in cache.entries()] == [small[0]]


def test_a_cap_of_zero_turns_the_cache_off(tmp_path: Path) -> None:
    cache = AssetCache(tmp_path / "cache", 0)
    cid, source = _asset(tmp_path, b"x" * 100)
    assert not cache.add(cid, source)
    assert cache.copy_to(cid, tmp_path / "job") is None
    assert not (tmp_path / "cache").exists()


def test_one_entry_however_a_cidv1_is_written(tmp_path: Path) -> None:
    cache = AssetCache(tmp_path / "cache", 1024 * KIB)
    content = b"v1 scene" * 10
    v1 = cid_of_bytes(content, cid_version=1)
    source = tmp_path / "download"
    source.write_bytes(content)
    cache.add(str(v1.set(base="base32")), source)
    hit = cache.copy_to(str(v1.set(base="base58btc")), tmp_path / "job")
    assert hit is not None and (tmp_path / "job").read_bytes() == content
    assert len(cache.entries()) == 1


def test_a_string_that_is_not_a_cid_never_names_a_path(tmp_path: Path) -> None:
    cache = AssetCache(tmp_path / "cache", 1024 * KIB)
    _, source = _asset(tmp_path, b"x" * 100)
    assert not cache.add("../../etc/passwd", source)
    assert cache.copy_to("../completed_jobs.json", tmp_path / "job") is None


def test_half_written_entries_left_by_a_crash_are_removed_once_stale(tmp_path: Path) -> None:
    cache = AssetCache(tmp_path / "cache", 1024 * KIB)
    cache.root.mkdir()
    stale, fresh = cache.root / ".Qmold.999.part", cache.root / ".Qmnew.998.part"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")  # another worker's copy in progress: left alone
    old = time.time() - STALE_PART_SECONDS - 10
    os.utime(stale, (old, old))
    cache.add(*_asset(tmp_path, b"y" * 100))
    assert not stale.exists() and fresh.exists()
    assert all(not p.name.startswith(".") for p, _, _ in cache.entries())


def test_asset_cache_mb_is_read_from_the_environment(tmp_path: Path) -> None:
    base = _settings(tmp_path)
    assert load_config(environ=base).asset_cache_mb == 2048
    assert load_config(environ={**base, "ASSET_CACHE_MB": "0"}).asset_cache_mb == 0
    assert load_config(environ={**base, "ASSET_CACHE_MB": "512"}).asset_cache_dir == tmp_path / "asset-cache"
    for bad in ("-1", "lots", "1.5"):
        with pytest.raises(ConfigError, match="ASSET_CACHE_MB"):
            load_config(environ={**base, "ASSET_CACHE_MB": bad})


def test_jobs_sharing_a_scene_download_it_once(devnet: Devnet, sample_blend: Path, tmp_path: Path) -> None:
    """Two frames' worth of jobs on one scene: one download on the wire, the second job from the cache,
    both completed with the same (deterministic) pixels, each under its own signed receipt."""
    ids = [devnet.cli("submit", str(sample_blend)).strip() for _ in range(2)]
    asset_cid = _job(devnet, ids[0])["full_asset_cid"]
    api = api_url_from_multiaddr(devnet.env["IPFS_API"])
    gateway = devnet.env["IPFS_GATEWAY"].removesuffix("/ipfs")
    with FaultProxy(api, FaultPolicy()) as api_proxy, FaultProxy(gateway, FaultPolicy()) as gateway_proxy:
        env = worker_env(
            devnet, tmp_path / "worker", IPFS_API=api_proxy.url, IPFS_GATEWAY=f"{gateway_proxy.url}/ipfs"
        )
        run = run_worker(env, "--max-jobs", "2")
        requests_for_asset = gateway_proxy.counts["forwarded"]
        api_calls = api_proxy.counts["forwarded"]
    assert run.returncode == 0, run.output
    assert run.output.count("Downloading asset CID") == 1, run.output
    assert run.output.count(f"Asset CID {asset_cid} is in the local cache") == 1, run.output
    assert requests_for_asset == 1  # the gateway saw the scene requested once
    assert api_calls == 2  # two result uploads, no `cat` fallback
    jobs = {i: _job(devnet, i) for i in ids}
    assert all(jobs[i]["status"] == "completed" for i in ids)
    results = [requests.get(f"{gateway}/ipfs/{jobs[i]['full_result_cid']}", timeout=30).content for i in ids]
    assert image_sha256(results[0]) == image_sha256(results[1])  # the same image data...
    assert [extract(png).receipt["job_id"] for png in results] == ids  # ...each receipt naming its job
    cached = list((tmp_path / "worker" / "asset-cache").iterdir())
    assert [p.name for p in cached] == [asset_cid]
    assert not list((tmp_path / "worker" / "jobs").glob("*/asset*"))  # the jobs' own copies are gone


def test_a_preference_of_zero_turns_the_cache_off_despite_the_environment(tmp_path: Path) -> None:
    """0 is a choice for this preference ("off"), unlike the preferences where 0 means "not set"."""
    environ = {**_settings(tmp_path), "ASSET_CACHE_MB": "4096"}
    session = ExtensionSession()
    assert session.build_config({}, "ENV", tmp_path / "key", environ=environ).asset_cache_mb == 4096
    off = session.build_config({"asset_cache_mb": 0}, "ENV", tmp_path / "key", environ=environ)
    assert off.asset_cache_mb == 0
