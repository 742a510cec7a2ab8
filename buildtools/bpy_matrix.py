"""Extra virtual environments with the ``bpy`` module of other Blender releases, for the add-on smoke run.

The full add-on tests run on the main ``.venv`` (Blender 4.5 LTS). ``tests/test_addon_matrix.py`` also
registers the add-on and draws its panel under Blender 4.2 LTS and 5.0, each from a venv under
``.cache/bpy-venvs/RELEASE`` holding only what that needs: the ``bpy`` wheel, the Python packages that
release of Blender bundles at exactly its versions (``BUNDLED``), and the extension's vendored packages
at the versions ``requirements-dev.txt`` pins. ``build.py test`` provisions them and hands their
interpreters to pytest as ``VERIFRAME_BPY_MATRIX=4.2=/path/python,5.0=/path/python``; a release that could
not be provisioned goes, with the reason, into ``VERIFRAME_BPY_MATRIX_FAILED`` (JSON), and its tests skip
with that reason.

Stdlib only: ``build.py`` imports this before the virtual environment exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger("build.bpy_matrix")

ROOT = Path(__file__).resolve().parent.parent
# The newest release of each line with a cp311 manylinux x86_64 wheel on PyPI; both need Python 3.11.
BPY_PINS = {"4.2": "bpy==4.2.23", "5.0": "bpy==5.0.1"}
# What the extension vendors as wheels, at requirements-dev.txt's versions (starknet-py only matters when
# it signs, but the extension ships it, so it is here to catch a clash with the release's own packages).
RUNTIME_PACKAGES = ("starknet-py", "multiformats", "prometheus-client")
# What each release's own Python bundles, from Blender's build_files/build_environment/cmake/versions.cmake
# on that release's branch. The bpy wheel declares requests and numpy unpinned, so without these a venv
# would hold today's releases and a test could pass on a library feature no real Blender has. zstandard is
# left to the wheel: the worker never imports it, and 4.2's 0.16.0 has no wheel for Python 3.11.
# Sources: 4.2 (high confidence) and 5.0 (its versions.cmake, Python 3.11.13, USD 25.08) were read from
# the file; 4.5's file was not at hand: the requests stack moved from 4.4's set to 5.0's set between 4.4
# and 5.0, and certifi 2025.4.26 dates that move to May 2025, before 4.5 branched, so 4.5 is given 5.0's.
_REQUESTS_2022 = {  # Blender 4.2 to 4.4
    "requests": "2.27.1",
    "urllib3": "1.26.8",
    "idna": "3.3",
    "charset-normalizer": "2.0.10",
    "certifi": "2021.10.8",
}
_REQUESTS_2025 = {  # Blender 4.5 and 5.0
    "requests": "2.32.3",
    "urllib3": "2.4.0",
    "idna": "3.10",
    "charset-normalizer": "3.4.1",
    "certifi": "2025.4.26",
}
BUNDLED: dict[str, dict[str, str]] = {
    "4.2": {**_REQUESTS_2022, "numpy": "1.24.3", "cython": "0.29.30"},
    "4.5": {**_REQUESTS_2025, "numpy": "1.26.4", "cython": "3.0.11"},
    "5.0": {**_REQUESTS_2025, "numpy": "1.26.4", "cython": "3.0.11"},
}
MATRIX_VAR = "VERIFRAME_BPY_MATRIX"
FAILED_VAR = "VERIFRAME_BPY_MATRIX_FAILED"
STAMP_NAME = ".synced"


class ProvisionError(RuntimeError):
    """A release's venv could not be set up; the message says which step failed and why."""


def runtime_pins(requirements: Path) -> list[str]:
    """The ``name==version`` lines of ``requirements`` for ``RUNTIME_PACKAGES``, in that order."""
    pins: dict[str, str] = {}
    for raw in requirements.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        name, sep, _ = line.partition("==")
        if sep and name.strip().lower() in RUNTIME_PACKAGES:
            pins[name.strip().lower()] = line
    missing = [name for name in RUNTIME_PACKAGES if name not in pins]
    if missing:
        raise ProvisionError(f"{requirements.name} pins no version of {', '.join(missing)}")
    return [pins[name] for name in RUNTIME_PACKAGES]


def bundled_pins(release: str) -> list[str]:
    """``name==version`` for every package ``release``'s Blender bundles (``BUNDLED``)."""
    return [f"{name}=={version}" for name, version in BUNDLED[release].items()]


def venv_dir(root: Path, release: str) -> Path:
    return root / ".cache" / "bpy-venvs" / release


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_bpy_venv(root: Path, release: str) -> Path:
    """The interpreter of ``release``'s venv, created or re-synced only when its pins changed."""
    if sys.version_info[:2] != (3, 11):
        raise ProvisionError(f"the bpy {release} wheel needs Python 3.11, this is {sys.version.split()[0]}")
    pins = [BPY_PINS[release], *bundled_pins(release), *runtime_pins(root / "requirements-dev.txt")]
    venv = venv_dir(root, release)
    python = venv_python(venv)
    stamp = venv / STAMP_NAME
    wanted = hashlib.sha256("\n".join([sys.version, *pins]).encode()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    started = time.monotonic()
    log.info("bpy %s: installing %s into %s", release, " ".join(pins), venv)
    # --clear: a venv from other pins or another Python is rebuilt rather than patched.
    _run([sys.executable, "-m", "venv", "--clear", str(venv)])
    _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins])
    stamp.write_text(wanted + "\n")
    log.info("bpy %s: ready in %.0f s", release, time.monotonic() - started)
    return python


def provision(root: Path = ROOT) -> tuple[dict[str, Path], dict[str, str]]:
    """Every release's interpreter, and for each release that failed, why; failures are logged here."""
    pythons: dict[str, Path] = {}
    failures: dict[str, str] = {}
    # One after the other: measured, the two installs took longer in parallel (80 s) than in turn (70 s).
    for release in BPY_PINS:
        try:
            pythons[release] = ensure_bpy_venv(root, release)
        except (ProvisionError, OSError) as exc:
            failures[release] = f"could not provision bpy {release}: {exc}"
            log.error("%s (its add-on smoke tests will be skipped)", failures[release])
    return pythons, failures


def matrix_environment(root: Path = ROOT) -> dict[str, str]:
    """The variables that tell ``tests/test_addon_matrix.py`` where each release's interpreter is."""
    pythons, failures = provision(root)
    return {
        MATRIX_VAR: ",".join(f"{release}={python}" for release, python in pythons.items()),
        FAILED_VAR: json.dumps(failures),
    }


def read_environment(environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``matrix_environment``'s variables read back: interpreters and failure reasons, by release."""
    pythons = {}
    for entry in environ.get(MATRIX_VAR, "").split(","):
        release, sep, python = entry.strip().partition("=")
        if sep and release and python:
            pythons[release] = python
    failures = json.loads(environ.get(FAILED_VAR) or "{}")
    return pythons, failures


def _run(cmd: list[str]) -> None:
    log.debug("$ %s", " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-10:])
        raise ProvisionError(f"`{' '.join(cmd[:5])} ...` failed (exit {done.returncode}):\n{tail}")
