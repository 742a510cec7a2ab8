"""GPU check for a render node: a Cycles and an EEVEE frame on every device type each Blender finds.

    python -m buildtools.gpu_check [--blender PATH[:PATH...]] [--size 640x360] [--samples 16]

The Blenders are those of ``--blender`` (else ``BLENDER_PATH``, else this Python's ``bpy``), probed the
way the worker probes them (``veriframe_addon/worker/render/inventory.py``). For each Blender it renders
the sample scene in Cycles on the CPU and on each GPU type that Blender's Cycles lists, and once in EEVEE
(which renders on the GPU of Blender's GPU context), through the worker's own renderer, sandbox and
device code. One line per render: Blender, engine, device asked, device the render reported, seconds,
and whether a GPU really rendered it:

- Cycles: the render child's report of the devices Cycles' preferences use, checked against Cycles' own
  render log wherever that log names devices;
- EEVEE: the GPU context's renderer from ``gpu.platform``; a software rasteriser (llvmpipe, softpipe,
  SwiftShader, WARP) means no GPU was used.

Exit status 0 when every render succeeded and every GPU render ran on its GPU. Needs a GPU machine to say
anything about GPUs; on a machine without one it renders on the CPU only and says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from veriframe_addon.worker.config import GPU_TYPES
from veriframe_addon.worker.errors import WorkerError
from veriframe_addon.worker.render.devices import DeviceChoice, choose_device
from veriframe_addon.worker.render.inventory import BlenderInventory, InstalledBlender, commands_from
from veriframe_addon.worker.render.renderer import BlenderRenderer
from veriframe_addon.worker.scene.job_settings import RenderSettings

log = logging.getLogger("gpu_check")
ROOT = Path(__file__).resolve().parent.parent
SOFTWARE_GL = ("llvmpipe", "softpipe", "swiftshader", "warp", "software")


@dataclass(frozen=True)
class Outcome:
    blender: str
    engine: str
    asked: str
    reported: str
    seconds: float
    gpu_used: bool | None  # None: a CPU render, nothing to prove
    error: str | None = None

    def line(self) -> str:
        if self.error:
            return f"{self.blender:<22} {self.engine:<8} {self.asked:<8} FAILED: {self.error}"
        used = {True: "GPU used", False: "GPU NOT used", None: "-"}[self.gpu_used]
        timing = f"{self.seconds:7.2f} s"
        return f"{self.blender:<22} {self.engine:<8} {self.asked:<8} {timing}  {used:<12} {self.reported}"

    @property
    def ok(self) -> bool:
        return self.error is None and self.gpu_used is not False


def write_scene(python: str, out: Path, size: tuple[int, int], samples: int) -> Path:
    """The sample scene, written by a Python that has ``bpy`` (the worker's own test scene)."""
    argv = [python, "-m", "devnet.sample_scene", str(out), "--size", f"{size[0]}x{size[1]}"]
    subprocess.run([*argv, "--samples", str(samples)], cwd=ROOT, check=True, capture_output=True)
    return out


def render_once(
    blender: InstalledBlender, choice: DeviceChoice, engine: str, scene: Path, work: Path, samples: int
) -> Outcome:
    renderer = BlenderRenderer(blender.command, 900, sandbox=blender.sandbox, device=choice)
    job_dir = work / f"{blender.short}-{engine}-{choice.type}"
    job_dir.mkdir(parents=True, exist_ok=True)
    scene = Path(shutil.copy(scene, job_dir / "scene.blend"))  # a sandboxed render sees its job folder only
    asked = choice.type if engine == "CYCLES" else "context"
    started = time.monotonic()
    try:
        result = renderer.render(scene, job_dir, RenderSettings(engine=engine, samples=samples))
    except WorkerError as exc:
        return Outcome(blender.short, engine, asked, "", time.monotonic() - started, None, str(exc))
    if engine == "CYCLES":
        used = None if not choice.is_gpu else _cycles_used_gpu(result.device, choice, job_dir / "render.log")
    elif blender.devices:
        used = not any(word in result.device.lower() for word in SOFTWARE_GL)
    else:
        used = None  # no GPU here at all: a software rasteriser is all there is, and no fault of a GPU
    return Outcome(blender.short, engine, asked, result.device, result.seconds, used)


def _cycles_used_gpu(reported: str, choice: DeviceChoice, render_log: Path) -> bool:
    """The child set exactly the chosen GPUs; Cycles' log, where it names devices, must name one too."""
    if not reported.startswith(choice.type):
        return False
    said = render_log.read_text(errors="replace") if render_log.is_file() else ""
    named = [d.name for d in choice.devices if d.name in said]
    mentions_devices = any(kind in said for kind in GPU_TYPES) or "Device" in said
    return bool(named) or not mentions_devices


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[gpu_check] %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blender", default=os.environ.get("BLENDER_PATH"), help="as BLENDER_PATH")
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--engines", default="CYCLES,EEVEE", help="which of CYCLES,EEVEE to render")
    args = parser.parse_args(argv)
    size = tuple(int(part) for part in args.size.lower().split("x"))
    engines = {part.strip().upper() for part in args.engines.split(",")}
    inventory, failures = BlenderInventory.probe_all(commands_from(args.blender), "auto")
    for failure in failures:
        log.warning("left out: %s", failure)
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="veriframe-gpu-check-") as tmp:
        work = Path(tmp)
        scene = write_scene(sys.executable, work / "scene.blend", size, args.samples)  # type: ignore[arg-type]
        for blender in inventory.blenders:
            gpus = ", ".join(f"{d.type} {d.name} ({d.id})" for d in blender.devices) or "none"
            log.info("%s: GPUs Cycles lists: %s", blender.describe(), gpus)
            kinds = ["CPU", *sorted({d.type for d in blender.devices}, key=GPU_TYPES.index)]
            for kind in kinds if "CYCLES" in engines else ():
                choice = choose_device(kind, (), blender.devices, blender.label)
                outcomes.append(render_once(blender, choice, "CYCLES", scene, work, args.samples))
                print(outcomes[-1].line(), flush=True)
            if "EEVEE" in engines:
                outcomes.append(render_once(blender, DeviceChoice(), "EEVEE", scene, work, args.samples))
                print(outcomes[-1].line(), flush=True)
    if not any(blender.devices for blender in inventory.blenders):
        print("no Blender here lists a GPU: every Cycles render above ran on the CPU", flush=True)
    print(json.dumps({"ok": all(o.ok for o in outcomes), "renders": len(outcomes)}), flush=True)
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
