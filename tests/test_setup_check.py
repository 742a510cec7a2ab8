""" "Check setup" against a real devnet: all green, then each piece broken in turn names that piece."""

from __future__ import annotations

from pathlib import Path

import pytest

from devnet.process import Devnet, free_port
from veriframe_addon.worker.config import load_config
from veriframe_addon.worker.ops.setup_check import run_checks

from .conftest import worker_env
from .servers import serve_app
from .test_worker_network import _evil_gateway

NAMES = ["Backend", "Wallet key", "Render Blender", "Render sandbox", "IPFS API", "IPFS gateway"]
# Pieces that cannot pass when another is broken: the gateway serves the probe the API stored, and the
# sandbox is proven by starting the render Blender inside it.
DEPENDENT = {"IPFS API": {"IPFS gateway"}, "Render Blender": {"Render sandbox"}}


def _failed(env: dict[str, str]) -> dict[str, str]:
    results = run_checks(load_config(environ=env))
    assert [r.name for r in results] == NAMES
    return {r.name: r.message for r in results if not r.ok}


def test_all_checks_pass_on_a_working_setup(devnet: Devnet, tmp_path: Path) -> None:
    results = run_checks(load_config(environ=worker_env(devnet, tmp_path / "w")))
    assert all(r.ok for r in results), [(r.name, r.message) for r in results]
    assert "Blender 4." in next(r.message for r in results if r.name == "Render Blender")


@pytest.mark.parametrize(
    ("broken", "change"),
    [
        ("IPFS API", {"IPFS_API": "/ip4/127.0.0.1/tcp/{dead}"}),
        ("Render Blender", {"BLENDER_PATH": "/nonexistent/blender"}),
        ("Wallet key", {"WORKER_PRIVATE_KEY": "0x1234"}),
    ],
)
def test_a_broken_piece_is_named(devnet: Devnet, tmp_path: Path, broken: str, change: dict[str, str]) -> None:
    env = worker_env(devnet, tmp_path / "w")
    env.update({k: v.format(dead=free_port()) for k, v in change.items()})
    failed = _failed(env)
    assert broken in failed, failed
    assert set(failed) - {broken, *DEPENDENT.get(broken, ())} == set(), failed


def test_backend_down_is_named(devnet: Devnet, tmp_path: Path) -> None:
    env = worker_env(devnet, tmp_path / "w")
    env["BACKEND_API_URL"] = f"http://127.0.0.1:{free_port()}/api/v1"
    failed = _failed(env)
    assert set(failed) == {"Backend", "Wallet key"}, failed  # the key cannot be checked without a backend


def test_lying_gateway_is_named(devnet: Devnet, tmp_path: Path) -> None:
    with serve_app(_evil_gateway()) as evil:
        env = worker_env(devnet, tmp_path / "w", IPFS_GATEWAY=f"{evil}/ipfs")
        failed = _failed(env)
    assert set(failed) == {"IPFS gateway"}, failed
    assert "does not match CID" in failed["IPFS gateway"]


def test_renders_that_would_not_be_sandboxed_are_named(
    devnet: Devnet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No bwrap on PATH: renders would run unsandboxed, which the check flags unless set off on purpose."""
    env = worker_env(devnet, tmp_path / "w")
    monkeypatch.setenv("PATH", str(tmp_path))  # the render Blender here is this Python: an absolute path
    failed = _failed(env)
    assert set(failed) == {"Render sandbox"}, failed
    assert "NOT sandboxed: bwrap is not installed" in failed["Render sandbox"]
    assert "Render sandbox" not in _failed(env | {"RENDER_SANDBOX": "off"})
