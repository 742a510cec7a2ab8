"""The add-on's smoke run under the other supported Blender releases (4.2 LTS, 5.0).

Blender 4.5 gets the full add-on tests (``test_addon.py``); here each release's ``bpy`` module, from its
own venv (``buildtools/bpy_matrix.py``), registers and unregisters the add-on and draws the panel in every
state. ``python3 build.py test`` provisions the venvs and passes their interpreters in
``VERIFRAME_BPY_MATRIX``; a release missing there is skipped with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from buildtools import bpy_matrix

from .test_addon import assert_draw_states, assert_register_cycle, draw_states_args, probe

PYTHONS, FAILURES = bpy_matrix.read_environment(os.environ)
RELEASES = sorted(set(bpy_matrix.BPY_PINS) | set(PYTHONS))


def _python(release: str) -> str:
    if release in PYTHONS:
        return PYTHONS[release]
    if release in FAILURES:
        pytest.skip(FAILURES[release])
    pytest.skip(
        f"no bpy {release}: {bpy_matrix.MATRIX_VAR} names no interpreter for it "
        "(python3 build.py test provisions one)"
    )


def _assert_release(result: dict, release: str) -> None:
    major, minor = (int(part) for part in release.split("."))
    assert result["bpy_version"][:2] == [major, minor], f"expected bpy {release}, ran {result['bpy_version']}"


@pytest.mark.parametrize("release", RELEASES)
def test_registers_and_unregisters_cleanly_twice(release: str) -> None:
    result = probe("register-cycle", python=_python(release))
    _assert_release(result, release)
    assert_register_cycle(result)


@pytest.mark.parametrize("release", RELEASES)
def test_panel_draws_every_state(release: str, tmp_path: Path) -> None:
    result = probe("draw-states", draw_states_args(tmp_path), python=_python(release))
    _assert_release(result, release)
    assert_draw_states(result["drawn"])
