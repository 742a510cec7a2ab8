"""The right Blender for each file: every test Blender probed for real, file headers read from files each
real Blender saved, and jobs rendered by the Blender of their own version (as Blender itself reports).

The inventory is the four Blenders the test set-up installs: the ``bpy`` 4.2, 4.5 and 5.0 modules (each a
Python of its venv) and the Debian 4.3 binary.
"""

from __future__ import annotations

import gzip
import os
import sys
from pathlib import Path

import pytest
import requests

from devnet.process import Devnet
from veriframe_addon.worker.errors import AssetError, RenderError
from veriframe_addon.worker.render.inventory import BlenderInventory, commands_from
from veriframe_addon.worker.scene.blend_header import BlendVersion, read_blend_version

from .conftest import run_worker, worker_env
from .test_addon_matrix import _python
from .test_honest_corpus import _shipped_by_every_blender

# Workbench: quick in every Blender (Debian's 4.3 Cycles lacks OpenImageDenoise, which the default scene uses)
QUICK = '{"engine": "WORKBENCH", "resolution_percentage": 25}'


@pytest.fixture(scope="module")
def pythons() -> dict[str, str]:
    return {"4.2": _python("4.2"), "4.5": sys.executable, "5.0": _python("5.0")}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> dict[str, Path]:
    """The default scene as each real test Blender saves it (File > New > General, Save), by release."""
    files = _shipped_by_every_blender(tmp_path_factory.mktemp("saved"), request)
    return {
        entry["name"].removeprefix("default scene saved by "): Path(entry["asset"])
        for entry in files
        if entry["name"].startswith("default scene saved by ")
    }


def test_the_header_names_the_blender_that_saved_the_file(saved: dict[str, Path], tmp_path: Path) -> None:
    """Plain 12-byte headers (4.x), the 17-byte header and zstd compression 5.0 writes by default, and
    the gzip files Blender before 3.0 wrote (made here by gzipping a real 4.2 file)."""
    assert sorted(saved) == ["4.2", "4.3", "4.5", "5.0"]
    for release, path in saved.items():
        assert read_blend_version(path) == BlendVersion.parse(release), path
    assert saved["5.0"].read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # 5.0 compresses by default
    gzipped = tmp_path / "old.blend"
    gzipped.write_bytes(gzip.compress(saved["4.2"].read_bytes()))
    assert read_blend_version(gzipped) == BlendVersion(4, 2)
    not_blend = tmp_path / "image.blend"
    not_blend.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(AssetError, match="has no Blender file header"):
        read_blend_version(not_blend)


def test_every_real_blender_answers_its_probe(pythons: dict[str, str], blender_binary: Path) -> None:
    """Version, kind and Python of each; a path that is no Blender is left out, saying why."""
    named = [pythons["4.2"], str(blender_binary), pythons["4.5"], pythons["5.0"], "/nowhere/blender"]
    inventory, failures = BlenderInventory.probe_all(commands_from(os.pathsep.join(named)), "auto")
    found = {(b.short.rsplit(".", 1)[0], b.command.uses_bpy_module) for b in inventory.blenders}
    assert found == {("4.2", True), ("4.3", False), ("4.5", True), ("5.0", True)}
    assert [b.release for b in inventory.blenders] == sorted(b.release for b in inventory.blenders)
    assert all(b.python.startswith("3.") and b.label.startswith("Blender ") for b in inventory.blenders)
    bpy_ones = [b for b in inventory.blenders if b.command.uses_bpy_module]
    assert all(b.sandbox is not None for b in bpy_ones), [b.contained for b in bpy_ones]
    assert failures == [
        "Blender at /nowhere/blender did not start: [Errno 2] No such file or directory: '/nowhere/blender'"
    ]

    def chosen(saved_by: str, wanted: str | None = None) -> str:
        want = BlendVersion.parse(wanted) if wanted else None
        return inventory.for_file(BlendVersion.parse(saved_by), want).short.rsplit(".", 1)[0]

    assert [chosen(v) for v in ("4.2", "4.3", "4.5", "5.0")] == ["4.2", "4.3", "4.5", "5.0"]
    assert chosen("4.4") == "4.5" and chosen("3.6") == "4.2"  # the oldest newer one
    assert chosen("4.2", wanted="5.0") == "5.0"  # the job's blender_version wins
    with pytest.raises(RenderError, match=r"saved by Blender 5\.1, newer than every Blender on this node"):
        chosen("5.1")


def _submit(devnet: Devnet, path: Path, settings: str = QUICK) -> str:
    return devnet.cli("submit", str(path), "--settings", settings).strip()


def _render_line(log: str, job_id: str) -> str:
    """The worker's "Render successful" line of a job: it names the Blender the render child ran in."""
    return next(ln for ln in log.splitlines() if f"jobs/{job_id}/" in ln and "Render successful" in ln)


def test_each_file_renders_in_the_blender_of_its_version(
    devnet: Devnet, saved: dict[str, Path], pythons: dict[str, str], blender_binary: Path, tmp_path: Path
) -> None:
    """Files saved by 4.2, 4.3, 4.5 and 5.0 go to those Blenders; with no 4.3 listed, the 4.3 file goes to
    4.5; a job asking for a release nobody has is skipped unclaimed; RENDER_THREADS and RENDER_NICE
    reach the render. Which Blender rendered each job is
    what that Blender itself reported from inside the render."""
    everyone = os.pathsep.join([pythons["4.2"], str(blender_binary), pythons["4.5"], pythons["5.0"]])
    asks_44 = _submit(devnet, saved["4.5"], '{"engine": "WORKBENCH", "blender_version": "4.4"}')  # seen first
    ids = {release: _submit(devnet, saved[release]) for release in ("4.2", "4.3", "4.5", "5.0")}
    env = worker_env(devnet, tmp_path / "all", BLENDER_PATH=everyone)
    run = run_worker(env, "--max-jobs", "4", timeout=900)
    assert run.returncode == 0, run.output
    for release, job_id in ids.items():
        job = requests.get(f"{devnet.backend_url}/jobs/{job_id}", timeout=10).json()
        assert job["status"] == "completed", (release, run.output)
        line = _render_line(run.output, job_id)
        assert f"Blender {release}." in line  # as the rendering Blender said
        assert f", {os.cpu_count()} threads, nice 10, on " in line, line  # the default CPU budget
    assert (
        f"Skipping job {asks_44} without claiming it: it asks for Blender 4.4 and this node has" in run.output
    )
    assert requests.get(f"{devnet.backend_url}/jobs/{asks_44}", timeout=10).json()["status"] == "open"

    # No 4.3 on the node: its file opens in the oldest newer Blender, 4.5; a 5.0 file with only 4.x fails.
    older = _submit(devnet, saved["4.3"])
    newer = _submit(devnet, saved["5.0"])
    only_4x = os.pathsep.join([pythons["4.2"], pythons["4.5"]])
    env = worker_env(devnet, tmp_path / "4x", BLENDER_PATH=only_4x, RENDER_THREADS="1", RENDER_NICE="7")
    run = run_worker(env, "--max-jobs", "2", timeout=600)
    line = _render_line(run.output, older)
    assert "Blender 4.5." in line and ", 1 threads, nice 7, on " in line, (
        run.output
    )  # RENDER_THREADS honoured
    assert (
        f"Job {newer} failed: the scene was saved by Blender 5.0, newer than every Blender on this node "
        "(4.2.23, 4.5.15)" in run.output
    ), run.output
