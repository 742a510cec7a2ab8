"""Shared fixtures: a real devnet process per test, the sample scene, and a way to run the worker.

Nothing here is mocked: the devnet is ``python -m devnet serve`` on 127.0.0.1, the worker is
``python -m veriframe_addon`` (or the ``Worker`` class in-process), renders run in real Blender (``bpy``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from buildtools import bpy_matrix
from devnet.process import ROOT, Devnet, running_devnet
from veriframe_addon.worker.multiaddr import api_url_from_multiaddr

from .fault_proxy import FaultPolicy, FaultProxy

SCENE_SIZE = (64, 48)
SANDBOX_MODES = ("bwrap", "off")
# A job's settings for a real render that takes a fraction of a second (Workbench, half size): for tests of
# claims, order and crash safety, not of the CPU.
QUICK_SETTINGS = ("--settings", '{"engine": "WORKBENCH", "resolution_percentage": 50}')


# The slowest modules first. The suite runs in two pytest-xdist processes that take whole modules in
# collection order (--dist loadscope): a long module picked up last would leave one process idle at the
# end while the other finishes it alone.
SLOWEST_FIRST = (
    "test_worker_resume.py",
    "test_worker_load.py",
    "test_honest_corpus.py",
    "test_hostile_jobs.py",
    "test_blender_extension.py",
    "test_addon.py",
    "test_receipts.py",
    "test_operator_control.py",
    "test_gui_screenshots.py",
    "test_monitoring.py",
    "test_render_slots.py",
    "test_prefetch.py",
    "test_warm_standby.py",
    "test_worker_e2e.py",
    "test_blender_inventory.py",
    "test_asset_cache.py",
    "test_render_safety.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[Devnet]:
    with running_devnet(tmp_path / "devnet") as net:
        yield net


@pytest.fixture(params=SANDBOX_MODES)
def sandbox(request: pytest.FixtureRequest) -> str:
    """``RENDER_SANDBOX`` for a test that must hold both inside the bwrap sandbox and without it."""
    if request.param == "bwrap" and (shutil.which("bwrap") is None or not sys.platform.startswith("linux")):
        pytest.skip("bwrap is not installed here (python3 build.py test installs bubblewrap on Debian)")
    return request.param


# The session's GL shader cache (``shader_cache``), the default of every ``worker_env``.
_SHADER_CACHE: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def shader_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One warm GL shader cache for every worker of the session, as a long-running node has (else each
    test's first render compiles EEVEE's shaders again, about 20 s here); Mesa's cache is safe to share
    across processes. Every ``worker_env`` uses it unless a test names another."""
    if not _SHADER_CACHE:
        _SHADER_CACHE.append(tmp_path_factory.mktemp("shader-cache"))
    return _SHADER_CACHE[0]


def oldest_bpy_python() -> str:
    """The interpreter of the oldest test Blender (bpy 4.2): a scene it saves opens in every test Blender."""
    pythons, failures = bpy_matrix.read_environment(os.environ)
    if "4.2" not in pythons:
        pytest.fail(f"bpy 4.2 is not set up ({failures.get('4.2', 'python3 build.py test provisions it')})")
    return pythons["4.2"]


@pytest.fixture(scope="session")
def sample_blend(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's scene at a tiny size and 2 samples, written once by real Blender: the oldest test
    Blender (bpy 4.2), so that every test Blender may open it (a file newer than every Blender on a node
    is refused, render/inventory.py)."""
    path = tmp_path_factory.mktemp("scene") / "sample_scene.blend"
    subprocess.run(
        [
            oldest_bpy_python(),
            "-m",
            "devnet.sample_scene",
            str(path),
            "--size",
            f"{SCENE_SIZE[0]}x{SCENE_SIZE[1]}",
            "--samples",
            "2",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return path


@dataclass
class WorkerRun:
    returncode: int
    output: str
    data_dir: Path


def worker_env(devnet: Devnet, data_dir: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"BLENDER_PATH", "LOG_LEVEL"}}
    env.update(devnet.worker_env())
    env.update({"VERIFRAME_DATA_DIR": str(data_dir), "POLL_INTERVAL": "0.5", "RENDER_TIMEOUT": "240"})
    if _SHADER_CACHE:
        env["VERIFRAME_SHADER_CACHE"] = str(_SHADER_CACHE[0])
    env.update(overrides)
    return env


def run_worker(
    env: dict[str, str], *args: str, timeout: float = 600, python: str = sys.executable
) -> WorkerRun:
    """Runs the headless worker to its end (``--max-jobs``) under ``python``; returns its code and log."""
    done = subprocess.run(
        [python, "-m", "veriframe_addon", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return WorkerRun(done.returncode, done.stdout + done.stderr, Path(env["VERIFRAME_DATA_DIR"]))


def start_worker(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """The headless worker as a running process with its log on ``stdout`` (for tests that signal it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "veriframe_addon", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_until(
    process: subprocess.Popen[str],
    lines: list[str],
    done: Callable[[str], bool],
    timeout: float,
    on_line: Callable[[str], None] | None = None,
) -> bool:
    """Reads ``process``'s output into ``lines`` until ``done`` holds for the log so far, the output ends,
    or ``timeout`` passes (checked per line); whether ``done`` held. The process keeps running."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    text = "".join(lines)  # the log so far, grown line by line (not joined again for each line)
    for line in process.stdout:
        lines.append(line)
        text += line
        if on_line is not None:
            on_line(line)
        if done(text):
            return True
        if time.monotonic() > deadline:
            return False
    return False


def run_worker_until(
    env: dict[str, str],
    marker: str,
    count: int,
    timeout: float = 120,
    on_line: Callable[[str], None] | None = None,
) -> WorkerRun:
    """Runs the worker until ``marker`` appeared ``count`` times in its log, then stops it with SIGTERM;
    ``on_line`` sees each log line as it comes (a test acting mid-run)."""
    process = start_worker(env)
    lines: list[str] = []
    read_until(process, lines, lambda log: log.count(marker) >= count, timeout, on_line)
    process.send_signal(signal.SIGTERM)
    rest, _ = process.communicate(timeout=60)
    return WorkerRun(process.returncode, "".join(lines) + rest, Path(env["VERIFRAME_DATA_DIR"]))


@pytest.fixture(scope="session")
def blender_binary() -> Path:
    """A real Blender executable (>= 4.2) for tests the ``bpy`` module cannot stand in for.

    ``python3 build.py test`` finds or provisions one and passes it as ``VERIFRAME_TEST_BLENDER``; run
    directly, pytest looks on ``BLENDER_PATH``/``PATH`` and for an earlier provisioning in ``.cache``.
    """
    from buildtools.blender_binary import find_blender, provisioned_blender

    given = os.environ.get("VERIFRAME_TEST_BLENDER")
    if given:
        if not os.access(given, os.X_OK):
            pytest.skip(f"no Blender binary: VERIFRAME_TEST_BLENDER={given} is not an executable file")
        return Path(given)
    found = find_blender() or provisioned_blender(ROOT / ".cache")
    if found is None:
        pytest.skip(
            "no Blender binary: VERIFRAME_TEST_BLENDER is unset, there is no Blender >= 4.2 on BLENDER_PATH "
            "or PATH, and none provisioned (python3 build.py test does that as root on Debian)"
        )
    return found


@contextlib.contextmanager
def faulty_network(
    devnet: Devnet, rate: float, seed: int
) -> Iterator[tuple[dict[str, str], tuple[FaultProxy, FaultProxy, FaultProxy]]]:
    """Fault proxies (``tests/fault_proxy.py``) in front of the devnet's backend, IPFS API and gateway, each
    failing ``rate`` of its requests (seeds ``seed`` to ``seed + 2``). Yields the worker settings that
    route through them, and the three proxies (their ``counts`` say what they injected)."""
    backend = devnet.backend_url.removesuffix("/api/v1")
    api = api_url_from_multiaddr(devnet.env["IPFS_API"])
    gateway = devnet.env["IPFS_GATEWAY"].removesuffix("/ipfs")
    with (
        FaultProxy(backend, FaultPolicy(rate=rate, seed=seed)) as backend_proxy,
        FaultProxy(api, FaultPolicy(rate=rate, seed=seed + 1)) as api_proxy,
        FaultProxy(gateway, FaultPolicy(rate=rate, seed=seed + 2)) as gateway_proxy,
    ):
        routes = {
            "BACKEND_API_URL": f"{backend_proxy.url}/api/v1",
            "IPFS_API": api_proxy.url,
            "IPFS_GATEWAY": f"{gateway_proxy.url}/ipfs",
        }
        yield routes, (backend_proxy, api_proxy, gateway_proxy)


def faults_injected(proxy: FaultProxy) -> int:
    return sum(count for kind, count in proxy.counts.items() if kind != "forwarded")
