"""The built extension in a real Blender binary: validate, install, and run the worker headless.

Each test installs into its own ``BLENDER_USER_RESOURCES``, so nothing touches the operator's Blender.
The worker inside Blender signs with the vendored starknet-py wheels (Blender installs them from the zip).
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
import requests

from devnet.process import ROOT, Devnet

from .conftest import worker_env
from .processes import pids_with
from .servers import listening_socket, settings_pointing_at


@functools.cache
def _linux_zip() -> Path:
    """The linux-x64 zip, built once per test session from the working tree (a zip left in dist/ by an
    earlier build could hide a change to the add-on)."""
    subprocess.run(["python3", "build.py", "build"], cwd=ROOT, check=True, capture_output=True, timeout=900)
    return sorted((ROOT / "dist").glob("veriframe_addon-*-linux_x64.zip"))[-1]


@pytest.fixture(scope="module")
def linux_zip() -> Path:
    return _linux_zip()


def _blender(
    blender: Path, *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run([str(blender), *args], env=env, capture_output=True, text=True, timeout=timeout)


def _isolated(tmp_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    user = tmp_path / "blender-user"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLENDER_", "WORKER_", "VERIFRAME_"))}
    env.update({"BLENDER_USER_RESOURCES": str(user)})
    env.update(extra or {})
    return env


@pytest.fixture
def installed(blender_binary: Path, linux_zip: Path, tmp_path: Path) -> dict[str, str]:
    """The zip installed and enabled, as a user does through Preferences, into a throwaway user folder."""
    env = _isolated(tmp_path)
    done = _blender(
        blender_binary, "-c", "extension", "install-file", "-r", "user_default", "-e", str(linux_zip), env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return env


def test_blenders_validator_accepts_the_zip(blender_binary: Path, linux_zip: Path, tmp_path: Path) -> None:
    done = _blender(blender_binary, "-c", "extension", "validate", str(linux_zip), env=_isolated(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    with zipfile.ZipFile(linux_zip) as zf:
        names = zf.namelist()
    assert "blender_manifest.toml" in names and "worker/loop.py" in names
    assert not any(n.startswith(("devnet/", "tests/")) for n in names)


def _run_until_completed(
    argv: list[str], env: dict[str, str], job_id: str, stop: bool, log_file: Path
) -> tuple[int, str, list]:
    """Runs Blender until the job is reported complete (then SIGTERM if ``stop``); watches every argv."""
    seen_key: list[str] = []
    with log_file.open("w") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 400
        while process.poll() is None and time.monotonic() < deadline:
            secret = env["WORKER_PRIVATE_KEY"]
            seen_key.extend(str(pid) for pid in pids_with(secret) + pids_with(secret[2:]))
            if f"Successfully completed job {job_id}" in log_file.read_text(errors="replace"):
                break
            time.sleep(0.2)
        if stop and process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode, log_file.read_text(errors="replace"), seen_key


def _completes_job(
    argv: list[str], env: dict[str, str], job_id: str, tmp_path: Path
) -> tuple[int, str, list]:
    """Runs headless Blender (rendering with itself) until it completed ``job_id``, then SIGTERM."""
    env.pop("BLENDER_PATH", None)
    code, output, argv_hits = _run_until_completed(
        argv, env, job_id, stop=True, log_file=tmp_path / "blender.log"
    )
    assert f"✓ Successfully completed job {job_id}" in output, output[-3000:]
    return code, output, argv_hits


def test_extension_runs_headless_with_addons_argument(
    blender_binary: Path, installed: dict[str, str], devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    job_id = devnet.cli("submit", str(sample_blend)).strip()
    env = {**installed, **worker_env(devnet, tmp_path / "worker")}
    code, output, argv_hits = _completes_job(
        [str(blender_binary), "-b", "--online-mode", "--addons", "bl_ext.user_default.veriframe_addon"],
        env,
        job_id,
        tmp_path,
    )
    assert "SIGTERM received" in output and code == 0, output[-2000:]
    assert "Blender found: Blender 4." in output
    assert requests.get(f"{devnet.backend_url}/jobs/{job_id}", timeout=10).json()["status"] == "completed"
    assert argv_hits == [] and env["WORKER_PRIVATE_KEY"] not in output


def test_cli_command_takes_max_jobs(
    blender_binary: Path, installed: dict[str, str], devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    job_id = devnet.cli("submit", str(sample_blend)).strip()
    env = {**installed, **worker_env(devnet, tmp_path / "worker")}
    env.pop("BLENDER_PATH", None)
    code, output, argv_hits = _run_until_completed(
        [str(blender_binary), "--online-mode", "-c", "veriframe", "--max-jobs", "1"],
        env,
        job_id,
        stop=False,
        log_file=tmp_path / "blender.log",
    )
    assert code == 0, output[-3000:]
    assert f"✓ Successfully completed job {job_id}" in output
    assert argv_hits == []
    # Its result verifies from Blender too (no key needed: a verifier signs nothing).
    cid = requests.get(f"{devnet.backend_url}/jobs/{job_id}", timeout=10).json()["full_result_cid"]
    verifier_env = {k: v for k, v in env.items() if k not in ("WORKER_PRIVATE_KEY", "WORKER_ADDRESS")}
    verified = _blender(blender_binary, "--online-mode", "-c", "veriframe", "verify", cid, env=verifier_env)
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-2000:]
    assert "verified: every check passed" in verified.stdout
    userpref = Path(installed["BLENDER_USER_RESOURCES"]) / "config" / "userpref.blend"
    assert not userpref.exists() or env["WORKER_PRIVATE_KEY"].encode() not in userpref.read_bytes()


def test_headless_blender_stays_offline_unless_online_mode(
    blender_binary: Path, installed: dict[str, str], tmp_path: Path
) -> None:
    """``--offline-mode``, or no ``--online-mode`` with online access never allowed: the worker says why,
    exits 2, and makes no request (every address it could use is a port that records connections)."""
    with listening_socket() as (port, connections):
        env = {**installed, **settings_pointing_at(port, tmp_path / "worker")}
        offline = _blender(
            blender_binary, "-b", "--offline-mode", "--addons", "bl_ext.user_default.veriframe_addon", env=env
        )
        never_allowed = _blender(blender_binary, "-c", "veriframe", "--max-jobs", "1", env=env)
        doctor = _blender(blender_binary, "--offline-mode", "-c", "veriframe", "doctor", env=env)
    assert offline.returncode == 2, offline.stdout[-2000:] + offline.stderr[-2000:]
    assert "started with --offline-mode" in offline.stderr
    assert never_allowed.returncode == 2 and "Allow Online Access is off" in never_allowed.stderr
    assert "--online-mode" in never_allowed.stderr  # the way out is named
    assert doctor.returncode == 2 and "started with --offline-mode" in doctor.stderr
    assert connections == [], "a request was made with online access off"


def test_doctor_runs_inside_blender_and_names_what_is_broken(
    blender_binary: Path, installed: dict[str, str], devnet: Devnet, tmp_path: Path
) -> None:
    """``blender -c veriframe doctor`` in the installed extension: all checks pass against a devnet, and with
    the IPFS API pointed at a closed port it exits 5 naming that piece (the render Blender is this one)."""
    # This repository's test Blender enters a rootfs through unshare and cannot start inside bwrap (see
    # README, Security): with the sandbox on "auto" doctor would rightly name it.
    env = {**installed, **worker_env(devnet, tmp_path / "worker"), "RENDER_SANDBOX": "off"}
    env.pop("BLENDER_PATH", None)
    healthy = _blender(blender_binary, "--online-mode", "-c", "veriframe", "doctor", env=env)
    output = healthy.stdout + healthy.stderr
    assert healthy.returncode == 0, output[-3000:]
    assert "doctor: all" in output and "checks passed" in output
    assert "[ OK ] Render Blender: Blender 4." in output
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_api = f"http://127.0.0.1:{closed.getsockname()[1]}"
    broken = _blender(
        blender_binary, "--online-mode", "-c", "veriframe", "doctor", env={**env, "IPFS_API": dead_api}
    )
    output = broken.stdout + broken.stderr
    assert broken.returncode == 5, output[-3000:]
    assert "doctor: 1 problem(s): IPFS API" in output
    assert env["WORKER_PRIVATE_KEY"] not in output


def test_plain_render_is_never_taken_over(
    blender_binary: Path, installed: dict[str, str], devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    """With the extension enabled, ``blender -b scene.blend -f 1`` renders that scene and nothing else."""
    job_id = devnet.cli("submit", str(sample_blend)).strip()
    env = {**installed, **worker_env(devnet, tmp_path / "worker")}
    out = tmp_path / "frame_"
    done = _blender(blender_binary, "-b", str(sample_blend), "-o", str(out), "-f", "1", env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "frame_0001.png").exists()
    assert "[Worker]" not in done.stdout + done.stderr
    assert requests.get(f"{devnet.backend_url}/jobs/{job_id}", timeout=10).json()["status"] == "open"


def test_legacy_addon_install_runs_headless(
    blender_binary: Path, linux_zip: Path, devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    """The same package as a legacy add-on in scripts/addons, its dependencies in scripts/modules."""
    scripts = tmp_path / "scripts"
    (scripts / "addons").mkdir(parents=True)
    modules = scripts / "modules"
    with zipfile.ZipFile(linux_zip) as zf:
        zf.extractall(scripts / "addons" / "veriframe_addon")
    python_tag = "cp313"  # Debian's Blender runs Python 3.13
    for wheel in (scripts / "addons" / "veriframe_addon" / "wheels").glob("*.whl"):
        if "-none-any" in wheel.name or python_tag in wheel.name or "abi3" in wheel.name:
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(modules)
    job_id = devnet.cli("submit", str(sample_blend)).strip()
    env = {
        **_isolated(tmp_path, {"BLENDER_USER_SCRIPTS": str(scripts)}),
        **worker_env(devnet, tmp_path / "w"),
    }
    code, _, _ = _completes_job(
        [str(blender_binary), "-b", "--online-mode", "--addons", "veriframe_addon"], env, job_id, tmp_path
    )
    assert code == 0
