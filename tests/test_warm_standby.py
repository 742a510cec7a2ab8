"""The warm standby (render/standby.py): the next render's Blender starts before its job, and sees nothing
it should not. Real worker, real devnet, real bpy renders inside the bwrap sandbox.

Every other render test goes through a standby too, since it is the default (``WARM_STANDBY=on``); this
module checks what only a parked process can show: its environment and what its mount namespace holds,
read from ``/proc`` while it waits.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from devnet.process import Devnet
from veriframe_addon.worker.config import load_config
from veriframe_addon.worker.errors import ConfigError
from veriframe_addon.worker.job import on_gpu, standby_words, warm_engine
from veriframe_addon.worker.limits import DEFAULT_RENDER_NICE, CpuBudget
from veriframe_addon.worker.render.renderer import BlenderCommand, BlenderRenderer
from veriframe_addon.worker.render.standby import StandbyKeeper, can_leave_idle_priority, group_threads
from veriframe_addon.worker.scene.job_settings import RenderSettings

from .conftest import read_until, start_worker, worker_env
from .processes import environ_of, pids_with

SECRET_NAMES = ("WORKER_PRIVATE_KEY", "WORKER_KEYSTORE", "PINATA_JWT", "IPFS_API_AUTH", "BACKEND_API_URL")


def _parked_standbys(jobs_dir: Path) -> list[int]:
    """The render children waiting for a job under ``jobs_dir`` (their HOME is in their own folder)."""
    found = []
    for pid in pids_with("render_child.py", "--standby"):
        try:
            home = environ_of(pid).get("HOME", "")
        except OSError:
            continue
        if (
            home.startswith(str(jobs_dir / ".standby-"))
            and "bwrap" not in Path(f"/proc/{pid}/comm").read_text()
        ):
            found.append(pid)
    return found


@pytest.mark.skipif(
    shutil.which("bwrap") is None or not sys.platform.startswith("linux"), reason="needs bwrap (Linux)"
)
def test_a_parked_standby_holds_no_secret_and_cannot_see_the_last_job(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    first = devnet.cli("submit", str(sample_blend), "--settings", '{"samples": 1}').strip()
    data = tmp_path / "worker"
    env = worker_env(devnet, data, RENDER_SANDBOX="bwrap")
    worker = start_worker(env)
    assert worker.stdout is not None
    lines: list[str] = []
    try:
        read_until(worker, lines, lambda log: f"Successfully completed job {first}" in log, 240)
        log = "".join(lines)
        assert f"Successfully completed job {first}" in log, log[-3000:]
        # The job rendered in the standby started while the worker was idle, warmed before the claim.
        assert "[Worker] Rendering in a warm standby Blender" in log, log[-3000:]
        # ... and the standby really rendered it: only a standby says it parked, in the job's render.log.
        assert '"event": "parked"' in (data / "jobs" / first / "render.log").read_text()

        # After the render the next standby started; it parks while the worker waits for jobs.
        deadline = time.monotonic() + 60
        while not (parked := _parked_standbys(data / "jobs")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(parked) == 1, f"one parked standby expected: {parked}"
        pid = parked[0]
        environ = environ_of(pid)
        own = Path(environ["HOME"]).parent
        assert own.parent == data / "jobs" and own.name.startswith(".standby-")

        # The environment: allowlisted variables and its own folders, never a secret or the backend.
        for name in SECRET_NAMES:
            assert name not in environ, f"{name} reached a standby"
        key = env["WORKER_PRIVATE_KEY"].lower().removeprefix("0x")
        assert not any(key in value.lower() for value in environ.values())
        assert environ["TMPDIR"] == str(own / "tmp")

        # Its view of the file system (the kernel's, through /proc/PID/root): its own folder is there,
        # the job it did not render, the worker's books and the devnet are not.
        root = Path(f"/proc/{pid}/root")
        assert (root / own.relative_to("/")).is_dir(), "the probe sees the standby's own folder"
        assert (data / "jobs" / first / "render" / "render0001.png").is_file()
        for hidden in (data / "jobs" / first, data / "completed_jobs.json", data / "state", devnet.data):
            assert not (root / hidden.relative_to("/")).exists(), f"a standby can see {hidden}"
        # Nothing of the earlier job was put in its folder either.
        assert {p.name for p in own.iterdir()} <= {"home", "tmp"}, sorted(own.iterdir())
    finally:
        worker.send_signal(signal.SIGTERM)
        rest, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, rest[-3000:]
    # A stopped worker leaves no parked Blender and no standby folder behind.
    assert _parked_standbys(data / "jobs") == []
    assert list((data / "jobs").glob(".standby-*")) == []


def test_warm_standby_and_prefetch_are_switches(tmp_path: Path) -> None:
    base = {
        "BACKEND_API_URL": "http://127.0.0.1:9/api/v1",
        "WORKER_ADDRESS": "0x1",
        "WORKER_PRIVATE_KEY": "0x1",
        "VERIFRAME_DATA_DIR": str(tmp_path),
    }
    config = load_config(environ=base)
    assert config.warm_standby and config.prefetch  # both on unless the operator turns them off
    config = load_config(environ={**base, "WARM_STANDBY": "off", "PREFETCH": "no"})
    assert not config.warm_standby and not config.prefetch
    with pytest.raises(ConfigError, match="WARM_STANDBY"):
        load_config(environ={**base, "WARM_STANDBY": "sometimes"})


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_a_standby_beside_a_render_waits_at_idle_priority_until_promoted(tmp_path: Path) -> None:
    """A standby started beside a running render (on a GPU node) takes only CPU time nobody else wants;
    after the render it gets the renders' own priority back: every thread, nice (RENDER_NICE) kept."""
    if not can_leave_idle_priority():
        pytest.skip("this user may not leave SCHED_IDLE (not root, RLIMIT_NICE below 20)")
    command = BlenderCommand(sys.executable, uses_bpy_module=True)
    renderer = BlenderRenderer(command, 120, None, cpu=CpuBudget(nice=DEFAULT_RENDER_NICE))
    keeper = StandbyKeeper(tmp_path / "jobs", enabled=True)
    standby = keeper.prepare(renderer, "WORKBENCH", beside_render=True)
    assert standby is not None
    try:
        assert standby.wait_parked(120), "the standby never parked"
        # Every thread idle, but those that chose a background policy themselves (Mesa's disk cache
        # thread: SCHED_BATCH); none competes with the render.
        policies = {task: os.sched_getscheduler(task) for task in group_threads(standby.pid)}
        assert len(policies) > 3 and set(policies.values()) <= {os.SCHED_IDLE, os.SCHED_BATCH}
        assert os.sched_getscheduler(standby.pid) == os.SCHED_IDLE
        assert keeper.prepare(renderer, "WORKBENCH") is standby  # asked again after the render
        after = {task: os.sched_getscheduler(task) for task in group_threads(standby.pid)}
        assert os.SCHED_IDLE not in after.values()
        promoted = [task for task, policy in policies.items() if policy == os.SCHED_IDLE and task in after]
        assert promoted and {after[task] for task in promoted} == {os.SCHED_OTHER}
        assert {os.getpriority(os.PRIO_PROCESS, task) for task in promoted} == {DEFAULT_RENDER_NICE}
    finally:
        keeper.close()
    assert not standby.alive and not standby.folder.exists()


def test_a_standby_beside_a_software_gl_or_cpu_render_warms_up_with_the_lightest_engine() -> None:
    """The device words are the render child's own (``gpu_context``, ``apply_device``); this machine's
    software GL is the first, the GPU ones are what the child says on NVIDIA and AMD nodes."""
    for software in ("llvmpipe (LLVM 15.0.7, 256 bits) (OpenGL)", "CPU", "unknown GPU context (ImportError)"):
        assert not on_gpu(software), software
        assert warm_engine("EEVEE", on_gpu=on_gpu(software)) == "WORKBENCH"
    for gpu in ("NVIDIA H200/PCIe/SSE2 (OpenGL)", "OPTIX NVIDIA H200", "HIP AMD Radeon RX 7900 XTX"):
        assert on_gpu(gpu), gpu
        assert warm_engine("EEVEE", on_gpu=True) == "EEVEE"
    assert warm_engine("CYCLES", on_gpu=False) == warm_engine("CYCLES", on_gpu=True) == "CYCLES"
    assert warm_engine("WORKBENCH", on_gpu=True) == "WORKBENCH"


def test_a_job_waiting_when_blender_has_started_renders_without_the_warm_up_frame(
    sample_blend: Path, tmp_path: Path
) -> None:
    """The job is handed over while ``import bpy`` still runs (0.4 s): an EEVEE warm-up frame would only
    delay it, so the standby renders the job at once, and the log says it skipped the warm-up."""
    command = BlenderCommand(sys.executable, uses_bpy_module=True)
    renderer = BlenderRenderer(command, 120, None, cpu=CpuBudget(nice=DEFAULT_RENDER_NICE))
    keeper = StandbyKeeper(tmp_path / "jobs", enabled=True)
    try:
        assert keeper.prepare(renderer, "EEVEE") is not None
        job_dir = tmp_path / "jobs" / "job"
        job_dir.mkdir(parents=True)
        blend = job_dir / "asset.blend"  # where a job's plain .blend asset lies (an archive: scene/)
        shutil.copy(sample_blend, blend)
        standby = keeper.take(renderer)
        assert standby is not None and not standby.parked.is_set()
        result = renderer.render(blend, job_dir, RenderSettings(samples=1), standby=standby)
    finally:
        keeper.close()
    assert result.output.is_file()
    assert '"event": "parked"' in (job_dir / "render.log").read_text()  # rendered by the standby
    deadline = time.monotonic() + 30  # the child exits after its PNG; a reaper then removes its folder
    while standby.folder.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not standby.folder.exists(), "the standby's folder (and the scene linked into it) stayed"
    assert standby.warm_skipped and standby.parked_seconds is not None
    assert "no warm-up frame" in standby_words(standby)
