"""A job's scene is untrusted: it must not run Python, write outside its job folder, or run forever.

Everything here renders with real Blender (the ``bpy`` module in a child process).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from devnet.process import ROOT, Devnet
from veriframe_addon.worker.errors import RenderCancelled, RenderError, RenderTimeout, SceneRejected
from veriframe_addon.worker.limits import RenderLimits
from veriframe_addon.worker.render.renderer import BlenderRenderer, find_blender
from veriframe_addon.worker.scene.job_settings import RenderSettings

from .conftest import run_worker, worker_env
from .processes import pids_with, render_children, rendering

HOSTILE = Path(__file__).resolve().parent / "hostile_scenes.py"


def _make(kind: str, *paths: Path) -> None:
    subprocess.run(
        [sys.executable, str(HOSTILE), kind, *map(str, paths)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def evil_scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("evil")
    markers, outside = root / "markers", root / "outside"
    markers.mkdir()
    outside.mkdir()
    blend = root / "evil.blend"
    _make("evil", blend, markers, outside)
    return blend, markers, outside


def test_the_hostile_scene_really_is_hostile(evil_scene: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Control: opened the trusting way (scripts allowed), the scene does run its Python.

    Without this, the next test could pass only because the payload was broken.
    """
    blend, markers, _ = evil_scene
    probe = (
        "import bpy, os\n"
        f"bpy.ops.wm.open_mainfile(filepath={str(blend)!r}, use_scripts=True)\n"
        "bpy.context.scene.frame_set(1)\n"
        "bpy.context.evaluated_depsgraph_get().update()\n"
        "os._exit(0)\n"  # the bpy module can hang in exit-time cleanup after compositor use
    )
    subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, timeout=120)
    ran = sorted(p.name for p in markers.iterdir())
    assert ran == ["driver_ran", "text_block_ran"]
    for marker in markers.iterdir():
        marker.unlink()


def test_worker_render_runs_no_scene_python_and_rejects_the_scene_naming_it(
    evil_scene: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    blend, markers, outside = evil_scene
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    renderer = BlenderRenderer(find_blender(None), timeout=240)
    with pytest.raises(SceneRejected) as rejected:
        renderer.render(blend, job_dir, RenderSettings(samples=1))

    message = str(rejected.value)
    assert "text block 'autorun.py' is registered to run as Python" in message
    assert "the driver on Cube.location[0] needs Python" in message
    assert list(markers.iterdir()) == []  # neither the text block nor the driver ran
    assert list(outside.iterdir()) == []  # nothing was written by the File Output node
    assert not (job_dir / "render" / "render0001.png").exists()


def test_scene_without_camera_fails_with_a_clear_message(tmp_path: Path) -> None:
    blend = tmp_path / "no_camera.blend"
    _make("no-camera", blend)
    renderer = BlenderRenderer(find_blender(None), timeout=240)
    with pytest.raises(RenderError, match="no active camera"):
        renderer.render(blend, tmp_path / "job", RenderSettings())


def test_render_past_the_timeout_is_killed_with_its_process_group(sample_blend: Path, tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    renderer = BlenderRenderer(find_blender(None), timeout=1.5)
    started = time.monotonic()
    with pytest.raises(RenderTimeout, match="RENDER_TIMEOUT"):
        renderer.render(sample_blend, job_dir, RenderSettings(samples=64))
    assert time.monotonic() - started < 15
    assert pids_with(str(job_dir / "render_spec.json")) == []


def test_stop_now_kills_a_running_render(sample_blend: Path, tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    renderer = BlenderRenderer(find_blender(None), timeout=240)
    with pytest.raises(RenderCancelled):
        renderer.render(sample_blend, job_dir, RenderSettings(samples=64), cancel=cancel)
    assert pids_with(str(job_dir / "render_spec.json")) == []


def test_render_child_never_sees_the_private_key_or_ipfs_credentials(
    sample_blend: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key and the IPFS credentials sit in the worker's environment; the child's environment and argv
    must not carry any of them."""
    secret = "0x" + "5ec12e7" * 9
    credentials = {"IPFS_API_AUTH": "Bearer t0ken-5ec12e7", "PINATA_JWT": "aaa.bbb5ec12e7.ccc"}
    monkeypatch.setenv("WORKER_PRIVATE_KEY", secret)
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    seen: list[bytes] = []

    def snoop(*_: object) -> None:
        for pid in pids_with(str(job_dir / "render_spec.json")):
            with contextlib.suppress(OSError):
                seen.append(
                    Path(f"/proc/{pid}/environ").read_bytes() + Path(f"/proc/{pid}/cmdline").read_bytes()
                )

    BlenderRenderer(find_blender(None), timeout=240).render(
        sample_blend, job_dir, RenderSettings(samples=2), progress=snoop
    )
    assert seen, "the render child was never observed"
    assert all(secret.encode() not in blob and b"WORKER_PRIVATE_KEY" not in blob for blob in seen)
    for name, value in credentials.items():
        assert all(value.encode() not in blob and name.encode() not in blob for blob in seen), name
    assert secret not in (job_dir / "render.log").read_text()
    assert os.environ["WORKER_PRIVATE_KEY"] == secret


def test_render_over_the_memory_cap_fails_naming_the_cap(sample_blend: Path, tmp_path: Path) -> None:
    """MAX_RENDER_MEMORY_MB is an rlimit on the child: Blender dies under it, and the error says why.

    600 MB is below what the bpy module needs for even this tiny render (about 1.5 GB measured here).
    """
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    renderer = BlenderRenderer(find_blender(None), timeout=240, limits=RenderLimits(max_render_memory_mb=600))
    with pytest.raises(RenderError, match=r"out of memory under the 600 MB cap, MAX_RENDER_MEMORY_MB"):
        renderer.render(sample_blend, job_dir, RenderSettings(samples=1))
    assert pids_with(str(job_dir / "render_spec.json")) == []


def test_a_crashed_and_a_hung_render_fail_their_jobs_and_the_worker_goes_on(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    """A Blender child killed by SIGSEGV, then one that runs past RENDER_TIMEOUT: both jobs fail with a
    clear reason, no child is left, and the same worker completes the next job."""
    crash = devnet.cli("submit", str(sample_blend), "--settings", '{"samples": 512}').strip()
    hang = devnet.cli("submit", str(sample_blend), "--settings", '{"samples": 4096}').strip()
    # Workbench: no EEVEE shader compile, so the good job renders well inside the 20 s even on busy cores.
    good = devnet.cli("submit", str(sample_blend), "--settings", '{"engine": "WORKBENCH"}').strip()
    data_dir = tmp_path / "worker"
    env = worker_env(devnet, data_dir, RENDER_TIMEOUT="20")

    def segfault_first_render() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            children = rendering(data_dir, crash)
            if children:
                time.sleep(1.0)  # let it get going
                for pid in children:
                    os.kill(pid, signal.SIGSEGV)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=segfault_first_render)
    killer.start()
    run = run_worker(env, "--max-jobs", "3")
    killer.join()

    assert run.returncode == 0, run.output
    failed = json.loads((data_dir / "completed_jobs.json").read_text())["failed_jobs"]
    assert "Blender crashed (SIGSEGV) without a render" in failed[crash], failed
    assert "ran past the 20s limit (RENDER_TIMEOUT) and was killed" in failed[hang], failed
    assert f"✓ Successfully completed job {good}" in run.output
    assert render_children(data_dir) == []
