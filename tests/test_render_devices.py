"""Render devices on this CPU-only machine: auto renders on the CPU and says so, a GPU asked for stops the
worker at start, GPU-only jobs are skipped unclaimed, and the backend's record lists what the probes found.

No GPU exists here, so the GPU branches of the choice are tested with stand-in device lists (``Device``
values, as Cycles would list them); the render child's device code runs against each test Blender's real
Cycles preference API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from devnet.process import Devnet
from veriframe_addon.render_child import __file__ as CHILD
from veriframe_addon.worker.errors import ConfigError
from veriframe_addon.worker.render.devices import Device, DeviceChoice, choose_device

from .conftest import run_worker, run_worker_until, worker_env
from .test_addon_matrix import _python

# Stand-ins for GPUs (none exists on this machine): ids as Cycles spells them.
RTX = Device("CUDA", "NVIDIA GeForce RTX 4090", "CUDA_NVIDIA GeForce RTX 4090_0000:01:00")
RTX_OPTIX = Device("OPTIX", "NVIDIA GeForce RTX 4090", "CUDA_NVIDIA GeForce RTX 4090_0000:01:00_OptiX")
A4000 = Device("CUDA", "NVIDIA RTX A4000", "CUDA_NVIDIA RTX A4000_0000:02:00")
RADEON = Device("HIP", "AMD Radeon RX 7900 XTX", "HIP_AMD Radeon RX 7900 XTX_0000:03:00")


def test_auto_takes_the_best_gpu_type_else_the_cpu() -> None:
    assert choose_device("auto", (), (), "Blender 4.5.15") == DeviceChoice()
    assert choose_device("auto", (), (RTX, RTX_OPTIX, A4000), "B") == DeviceChoice("OPTIX", (RTX_OPTIX,))
    assert choose_device("auto", (), (RADEON, RTX), "B") == DeviceChoice("CUDA", (RTX,))
    assert choose_device("CPU", (), (RTX,), "B") == DeviceChoice()  # the operator's CPU wins


def test_gpus_are_picked_by_id_or_name_and_unknown_ones_are_named() -> None:
    seen = (RTX, A4000, RADEON)
    assert choose_device("CUDA", (), seen, "B").devices == (RTX, A4000)  # default: all of the type
    assert choose_device("CUDA", (A4000.id,), seen, "B").devices == (A4000,)
    assert choose_device("CUDA", ("NVIDIA GeForce RTX 4090",), seen, "B").devices == (RTX,)
    with pytest.raises(
        ConfigError, match=r"RENDER_GPUS: names 'RTX 9999', which is none of the CUDA devices"
    ):
        choose_device("CUDA", ("RTX 9999",), seen, "Blender 4.5.15")
    with pytest.raises(
        ConfigError, match=r"RENDER_DEVICE: is METAL, but Blender 4.5.15 sees no METAL device"
    ):
        choose_device("METAL", (), seen, "Blender 4.5.15")
    with pytest.raises(ConfigError, match=r"sees no OPTIX device \(it sees no GPU, only the CPU\)"):
        choose_device("OPTIX", (), (), "Blender 4.5.15")


DEVICE_PROBE = """
import json, sys
import bpy
import addon_utils
sys.path.insert(0, sys.argv[1])
import render_child
addon_utils.enable("cycles", default_set=True)
scene = bpy.context.scene
said = {"cpu": render_child.apply_device(bpy, scene, {"type": "CPU"}), "scene": scene.cycles.device}
try:
    render_child.apply_device(bpy, scene, {"type": "CUDA", "ids": ["CUDA_Nonexistent_0000:09:00"]})
except RuntimeError as exc:
    said["cuda"] = str(exc)
print(json.dumps(said))
"""


@pytest.mark.parametrize("release", ["4.2", "4.5", "5.0"])
def test_the_child_sets_cycles_devices_through_blenders_own_preferences(release: str) -> None:
    """The CPU choice sets the scene to CPU; a GPU this Blender does not see is an error, not a CPU render."""
    python = sys.executable if release == "4.5" else _python(release)
    done = subprocess.run(
        [python, "-c", DEVICE_PROBE, str(Path(CHILD).parent)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert (said["cpu"], said["scene"]) == ("CPU", "CPU")
    assert said["cuda"] == (
        "Cycles does not see the CUDA device(s) chosen for this render: ['CUDA_Nonexistent_0000:09:00']"
    )


def _worker_record(devnet: Devnet, address: str) -> dict:
    return requests.get(f"{devnet.backend_url}/workers/{address}", timeout=10).json()


def test_a_cpu_node_renders_on_the_cpu_says_so_and_tells_the_backend(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    gpu_job = devnet.cli("submit", str(sample_blend), "--settings", '{"engine": "CYCLES", "device": "GPU"}')
    cycles_job = devnet.cli("submit", str(sample_blend), "--settings", '{"engine": "CYCLES", "samples": 1}')
    gpu_job, cycles_job = gpu_job.strip(), cycles_job.strip()
    env = worker_env(devnet, tmp_path / "worker")
    run = run_worker(env, "--max-jobs", "1", timeout=600)
    assert run.returncode == 0, run.output
    assert "[Worker] Cycles renders on the CPU (no GPU that Blender can use was found)" in run.output
    skipped = f"Skipping job {gpu_job} without claiming it: it needs a GPU and this node's Cycles renders on"
    assert skipped in run.output
    assert requests.get(f"{devnet.backend_url}/jobs/{gpu_job}", timeout=10).json()["status"] == "open"
    line = next(ln for ln in run.output.splitlines() if "Render successful" in ln and cycles_job in ln)
    assert line.endswith(", on CPU)"), line

    record = _worker_record(devnet, env["WORKER_ADDRESS"])
    capabilities, hardware = json.loads(record["capabilities"]), json.loads(record["hardware_specs"])
    assert capabilities["blender_versions"][0].startswith("4.5.") and capabilities["devices"] == []
    assert capabilities["render_devices"] == ["CPU"] and "CYCLES" in capabilities["engines"]
    assert hardware["cpu_count"] == os.cpu_count() and hardware["gpus"] == [] and hardware["ram_gb"] > 0
    assert hardware["cpu_model"] and hardware["cpu_model"] != "unknown"

    # A Blender added: the next start updates the record (PUT /workers/{address}), and only then.
    both = os.pathsep.join([_python("4.2"), sys.executable])
    again = run_worker_until({**env, "BLENDER_PATH": both}, "[Worker] Polling for jobs", 1, timeout=300)
    assert "Updated this worker's record on the backend: Blender 4.2." in again.output, again.output
    versions = json.loads(_worker_record(devnet, env["WORKER_ADDRESS"])["capabilities"])["blender_versions"]
    assert [v.rsplit(".", 1)[0] for v in versions] == ["4.2", "4.5"]
    unchanged = run_worker_until({**env, "BLENDER_PATH": both}, "[Worker] Polling for jobs", 1, timeout=300)
    assert "Updated this worker's record" not in unchanged.output


def test_a_gpu_asked_for_and_absent_stops_the_worker_at_start(devnet: Devnet, tmp_path: Path) -> None:
    env = worker_env(devnet, tmp_path / "worker", RENDER_DEVICE="CUDA")
    run = run_worker(env, "--max-jobs", "1", timeout=300)
    assert run.returncode == 2, run.output
    assert "Configuration error: RENDER_DEVICE: is CUDA, but Blender 4.5." in run.output
    assert "sees no CUDA device (it sees no GPU, only the CPU)" in run.output


def test_the_gpu_check_script_renders_on_every_device_it_finds() -> None:
    """On this machine: one Cycles render on the CPU, reported as such, and the note that no GPU exists
    (EEVEE is left out here: its software-GL shader compile takes a minute and proves nothing of GPUs)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "buildtools.gpu_check",
            "--size",
            "64x48",
            "--samples",
            "1",
            "--engines",
            "CYCLES",
        ],
        cwd=Path(CHILD).parent.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.split()[1:3] == ["CYCLES", "CPU"] and line.rstrip().endswith(" CPU") for line in lines), (
        lines
    )
    assert "no Blender here lists a GPU: every Cycles render above ran on the CPU" in lines
    assert json.loads(lines[-1]) == {"ok": True, "renders": 1}
