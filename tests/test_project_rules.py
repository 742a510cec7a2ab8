"""Rules the code base keeps: ruff-clean, and a worker core that never imports ``bpy``."""

from __future__ import annotations

import re
import subprocess
import sys

from devnet.process import ROOT


def test_ruff_check_and_format_are_clean() -> None:
    for args in (["check", "."], ["format", "--check", "."]):
        done = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_worker_core_runs_without_bpy() -> None:
    """Importing the whole worker core (and the headless entry) must not load Blender."""
    probe = (
        "import sys, veriframe_addon.__main__, veriframe_addon.worker.loop\n"
        "import veriframe_addon.worker.ipfs.client\n"
        "assert 'bpy' not in sys.modules, 'bpy was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    statement = re.compile(r"^\s*(import bpy|from bpy\b)", re.MULTILINE)
    for path in (ROOT / "veriframe_addon" / "worker").rglob("*.py"):
        assert not statement.search(path.read_text()), f"{path} imports bpy"
