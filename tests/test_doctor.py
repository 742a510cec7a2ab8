"""``doctor`` as an operator runs it: a real process against a real devnet, each piece broken in turn.

One devnet serves the whole module (each doctor run only reads from it, plus one small probe stored in
IPFS), so the cost is the checks themselves: two Blender starts per run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devnet.process import ROOT, Devnet, free_port, running_devnet

from .conftest import worker_env

NAMES = ["Backend", "Wallet key", "Render Blender", "Render sandbox", "IPFS API", "IPFS gateway"]
# Pieces that cannot pass when another one is broken (see test_setup_check.py): without a backend no key
# can be checked; without a Blender no sandbox can start it; the gateway serves what the API stored.
DEPENDENT = {"Backend": {"Wallet key"}, "Render Blender": {"Render sandbox"}, "IPFS API": {"IPFS gateway"}}
WORKER_VARIABLES = ("BACKEND_API_URL", "WORKER_ADDRESS", "WORKER_PRIVATE_KEY", "IPFS_API", "IPFS_GATEWAY")


@pytest.fixture(scope="module")
def shared_devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with running_devnet(tmp_path_factory.mktemp("devnet")) as net:
        yield net


@pytest.fixture(scope="module")
def healthy_env(shared_devnet: Devnet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return worker_env(shared_devnet, tmp_path_factory.mktemp("worker"))


def _doctor(env: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "veriframe_addon", "doctor", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    for secret in (env.get("WORKER_PRIVATE_KEY"), (env.get("WORKER_PRIVATE_KEY") or "")[2:]):
        if secret and len(secret) > 8:
            assert secret not in done.stdout + done.stderr
    return done


def _report(done: subprocess.CompletedProcess[str]) -> tuple[dict[str, bool], str]:
    """{check: passed} from the report's lines, and its last line."""
    lines = done.stdout.splitlines()
    checks = {}
    for line in lines:
        if line.startswith(("[ OK ] ", "[FAIL] ")):
            name = line[7:].split(":", 1)[0]
            checks[name] = line.startswith("[ OK ]")
    return checks, lines[-1] if lines else ""


def test_doctor_passes_on_a_healthy_setup_read_from_an_env_file(
    healthy_env: dict[str, str], tmp_path: Path
) -> None:
    settings = tmp_path / "worker.env"
    settings.write_text("".join(f"{name}={healthy_env[name]}\n" for name in WORKER_VARIABLES))
    env = {k: v for k, v in healthy_env.items() if k not in WORKER_VARIABLES}
    done = _doctor(env, "--env-file", str(settings), cwd=tmp_path)

    checks, last = _report(done)
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(checks) == NAMES and all(checks.values()), done.stdout
    assert last == "doctor: all 6 checks passed"
    assert f"settings from {settings}" in done.stdout.splitlines()[0]
    assert "[Check]" not in done.stderr  # the report says it once, on stdout
    assert healthy_env["WORKER_PRIVATE_KEY"][2:] not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("broken", "change"),
    [
        pytest.param("Backend", {"BACKEND_API_URL": "http://127.0.0.1:{dead}/api/v1"}, id="backend-down"),
        pytest.param("Wallet key", {"WORKER_PRIVATE_KEY": "0x" + "5" * 62}, id="wrong-key"),
        pytest.param("Render Blender", {"BLENDER_PATH": "/nonexistent/blender"}, id="no-blender"),
        pytest.param("IPFS API", {"IPFS_API": "/ip4/127.0.0.1/tcp/{dead}"}, id="ipfs-api-closed"),
        pytest.param("IPFS gateway", {"IPFS_GATEWAY": "http://127.0.0.1:{dead}/ipfs"}, id="gateway-closed"),
    ],
)
def test_doctor_names_each_broken_piece(
    healthy_env: dict[str, str], broken: str, change: dict[str, str]
) -> None:
    env = {**healthy_env, **{k: v.format(dead=free_port()) for k, v in change.items()}}
    done = _doctor(env)

    checks, last = _report(done)
    assert done.returncode == 5, done.stdout + done.stderr
    assert list(checks) == NAMES, done.stdout
    failed = {name for name, ok in checks.items() if not ok}
    assert broken in failed and failed <= {broken, *DEPENDENT.get(broken, ())}, done.stdout
    assert last == f"doctor: {len(failed)} problem(s): {', '.join(n for n in NAMES if n in failed)}"
    failure = next(line for line in done.stdout.splitlines() if line.startswith(f"[FAIL] {broken}: "))
    assert len(failure) > len(f"[FAIL] {broken}: ") + 10  # with the reason, not just the name


def test_doctor_reports_a_missing_setting_without_checking_anything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in WORKER_VARIABLES and k != "LOG_LEVEL"}
    env.update({"BACKEND_API_URL": "http://127.0.0.1:9/api/v1", "VERIFRAME_DATA_DIR": str(tmp_path)})
    done = _doctor(env, cwd=tmp_path)

    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "[FAIL] Settings: WORKER_ADDRESS: is not set (put it in the environment or the .env file)",
        "doctor: 1 problem(s): Settings (WORKER_ADDRESS); fix it, then run doctor again",
    ]


def test_blender_command_routes_doctor_too(tmp_path: Path) -> None:
    """``blender -c veriframe doctor`` is ``headless.cli_command(["doctor"])`` in Blender; the ``bpy``
    module runs the same code (a Blender binary with the extension installed is covered elsewhere)."""
    env = {k: v for k, v in os.environ.items() if k not in WORKER_VARIABLES}
    env.update({"VERIFRAME_DATA_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)})
    # As `blender --online-mode -c veriframe doctor`: online access allowed (doctor connects).
    probe = (
        "import sys, bpy; bpy.context.preferences.system.use_online_access = {online}; "
        "from veriframe_addon import headless; sys.exit(headless.cli_command(['doctor']))"
    )

    def doctor(online: bool) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", probe.format(online=online)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = doctor(online=True)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "[FAIL] Settings: BACKEND_API_URL: is not set" in done.stdout
    offline = doctor(online=False)  # Blender's rule: no network, so no checks at all
    assert offline.returncode == 2 and "Allow Online Access is off" in offline.stderr
    assert "[FAIL]" not in offline.stdout
