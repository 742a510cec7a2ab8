#!/usr/bin/env python3
"""Sets up and runs everything for VeriFrame Worker with the machine's python3 (3.11), stdlib only.

    python3 build.py test [PYTEST ARGS]   # install what the tests need into .venv, then run pytest
    python3 build.py demo                 # same set-up, then a real job end to end on a local network
    python3 build.py build                # the extension: one zip per platform in dist/
    python3 build.py lock                 # re-pin the vendored wheels in wheels/lock.json
    python3 build.py bench [--blender B]  # speed as ratios against bare Blender, measured in one run

The set-up is idempotent: apt packages are installed only when missing (as root, on Debian/Ubuntu), and
``.venv`` is re-synced only when ``requirements-dev.txt`` or the test Blender pin changed.
``test`` also sets up the bpy 4.2 and 5.0 venvs of the add-on's smoke run (buildtools/bpy_matrix.py),
about 1.2 GB each.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
REQUIREMENTS = ROOT / "requirements-dev.txt"
# The test Blender: the bpy module of Blender 4.5 LTS, the release built for Python 3.11.
BPY_PIN = "bpy==4.5.15"
# What EEVEE needs to render headless through EGL (Mesa's software rasteriser where there is no GPU),
# plus the X/Wayland client libraries the bpy module links against, and bubblewrap for the render sandbox.
APT_PACKAGES = [
    "bubblewrap",
    "libegl1",
    "libegl-mesa0",
    "libgl1-mesa-dri",
    "libgbm1",
    "libgl1",
    "libglx-mesa0",
    "libx11-6",
    "libxi6",
    "libxxf86vm1",
    "libxfixes3",
    "libxrender1",
    "libxkbcommon0",
    "libsm6",
    "tzdata",  # the system zone database: the schedule's daylight-saving tests read Europe/Berlin from it
]
PYTEST_NO_TESTS = 5
# The suite runs in this many pytest-xdist processes: a render waits on its Blender subprocess as much as
# it computes, so two processes on two cores finish sooner than one. Each test module stays on one
# process (--dist loadscope), so its module fixtures are built once, and the modules go out in
# collection order, which tests/conftest.py sorts slowest first (pytest-xdist would otherwise sort them by
# their number of tests). Pass -n yourself to override.
TEST_PROCESSES = "2"

log = logging.getLogger("build")


def run(cmd: list[str], **kwargs: object) -> None:
    log.info("$ %s", " ".join(str(c) for c in cmd))
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def missing_apt_packages() -> list[str]:
    if not shutil.which("dpkg-query"):
        return []
    missing = []
    for package in APT_PACKAGES:
        status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
        if "install ok installed" not in status.stdout:
            missing.append(package)
    return missing


def ensure_apt_packages() -> None:
    missing = missing_apt_packages()
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        log.warning(
            "missing system packages %s; install them (sudo apt-get install %s) or renders may fail",
            missing,
            " ".join(missing),
        )
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-q"], env=env)
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)


def ensure_venv() -> Path:
    if sys.version_info[:2] != (3, 11):
        log.warning("python3 is %s; the bpy %s wheel needs Python 3.11", sys.version.split()[0], BPY_PIN)
    python = venv_python()
    if not python.exists():
        run([sys.executable, "-m", "venv", str(VENV)])
    stamp = VENV / ".synced"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes() + BPY_PIN.encode()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    run([str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS), BPY_PIN])
    stamp.write_text(wanted + "\n")
    return python


def set_up() -> Path:
    ensure_apt_packages()
    return ensure_venv()


def cmd_test(extra: list[str]) -> int:
    python = set_up()
    from buildtools import bpy_matrix
    from buildtools.blender_binary import ensure_blender

    # Only for the tests that need a real binary: BLENDER_PATH stays unset, the rest use the bpy module.
    env = dict(os.environ)
    blender = ensure_blender(ROOT)
    if blender is not None:
        env["VERIFRAME_TEST_BLENDER"] = str(blender)
    # The add-on's smoke run under bpy 4.2 and 5.0 (tests/test_addon_matrix.py); failures skip, logged.
    env.update(bpy_matrix.matrix_environment(ROOT))
    if not any(arg == "-n" or arg.startswith(("-n", "--numprocesses")) for arg in extra):
        extra = ["-n", TEST_PROCESSES, "--dist", "loadscope", "--no-loadscope-reorder", *extra]
    code = subprocess.run([str(python), "-m", "pytest", *extra], cwd=ROOT, env=env).returncode
    if code == PYTEST_NO_TESTS:
        log.error("pytest collected no tests: that is a failure, not a pass")
        return 1
    return code


def cmd_demo(extra: list[str]) -> int:
    python = set_up()
    return subprocess.run([str(python), "-m", "devnet.demo", *extra], cwd=ROOT).returncode


def cmd_bench(extra: list[str]) -> int:
    """Speed against bare Blender in one run; see buildtools/bench.py for what each number means."""
    python = set_up()
    return subprocess.run([str(python), "-m", "buildtools.bench", *extra], cwd=ROOT).returncode


def cmd_build(extra: list[str]) -> int:
    """Packages the extension from wheels/lock.json; needs the venv for Blender's builder (bpy wheel)."""
    python = set_up()
    from buildtools import packaging

    try:
        packaging.build_extension(python, VENV, blender=os.environ.get("BLENDER_PATH") or None)
    except packaging.PackagingError as exc:
        log.error("%s", exc)
        return 1
    return 0


def cmd_lock(extra: list[str]) -> int:
    """Re-pins the vendored wheels (VENDORED in buildtools/packaging.py) and the manifest's wheel list."""
    python = set_up()
    from buildtools import packaging

    try:
        packaging.update_lock(python)
    except packaging.PackagingError as exc:
        log.error("%s", exc)
        return 1
    return 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="[build] %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["test", "demo", "build", "lock", "bench"])
    args, extra = parser.parse_known_args()
    commands = {"test": cmd_test, "demo": cmd_demo, "build": cmd_build, "lock": cmd_lock, "bench": cmd_bench}
    try:
        return commands[args.command](extra)
    except subprocess.CalledProcessError as exc:
        log.error("set-up step failed (exit %s): %s", exc.returncode, " ".join(map(str, exc.cmd)))
        return 1


if __name__ == "__main__":
    sys.exit(main())
