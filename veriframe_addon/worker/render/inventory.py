"""The Blenders this node renders with: each probed at start, and the right one chosen for each file.

``BLENDER_PATH`` names one or more, separated by the OS path separator (``:`` on Linux and macOS, ``;``
on Windows). Each is a Blender binary, or a Python that has the ``bpy`` module (a venv made with
``pip install bpy==4.5.*``): a name starting with ``python`` is taken for the latter. With none named,
this Python's own ``bpy`` is the one. Probing runs each inside the sandbox where there is one: it proves
the Blender starts there and asks for its version and Python. One that fails is logged with why and
left out; the worker starts as long as one is left.

A file goes to the Blender of its own release (major.minor, from the .blend header), else to the oldest
release newer than the file (Blender opens older files, never reliably newer ones).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import WorkerConfig
from ..errors import ConfigError, RenderError
from ..limits import CpuBudget, RenderLimits
from ..scene.blend_header import BlendVersion
from .devices import Device, DeviceChoice, choose_device
from .renderer import CHILD_SCRIPT, BlenderCommand, BlenderRenderer, child_environment_base, find_blender
from .sandbox import Sandbox, choose_sandbox, run_probe

log = logging.getLogger("veriframe.worker")

PROBE_MARK = "VERIFRAME-PROBE"
PYTHON_NAME = re.compile(r"^python(\d+(\.\d+)?)?(\.exe)?$", re.IGNORECASE)


@dataclass(frozen=True)
class InstalledBlender:
    """One Blender that answered its probe: what it is, and how its renders are contained."""

    command: BlenderCommand
    version: tuple[int, int, int]
    label: str  # as Blender says it, e.g. "Blender 4.5.15 LTS"
    python: str
    sandbox: Sandbox | None
    contained: str  # the sandbox sentence for the log and panel
    devices: tuple[Device, ...] = ()  # the GPUs its Cycles can render on
    device: DeviceChoice = field(default_factory=DeviceChoice)  # what Cycles renders on (RENDER_DEVICE)

    @property
    def release(self) -> BlendVersion:
        return BlendVersion(self.version[0], self.version[1])

    @property
    def short(self) -> str:
        """``4.5.15``: how log lines and the job record name it."""
        return ".".join(str(part) for part in self.version)

    def describe(self) -> str:
        kind = "bpy module" if self.command.uses_bpy_module else "binary"
        gpus = ", ".join(f"{d.type} {d.name}" for d in self.devices) or "none"
        return (
            f"{self.label} ({kind}, Python {self.python}) at {self.command.executable}; GPUs: {gpus}; "
            f"Cycles renders on {self.device.describe()}"
        )


def commands_from(blender_path: str | None) -> list[BlenderCommand]:
    """The Blenders ``BLENDER_PATH`` names, in its order (none named: this Python's ``bpy``)."""
    if not blender_path or not blender_path.strip():
        return [find_blender(None)]
    commands = []
    for entry in blender_path.split(os.pathsep):
        entry = entry.strip()
        if not entry:
            continue
        commands.append(BlenderCommand(entry, uses_bpy_module=bool(PYTHON_NAME.match(Path(entry).name))))
    if not commands:
        raise ConfigError("BLENDER_PATH", f"names no Blender ({blender_path!r})")
    return commands


def probe(command: BlenderCommand, sandbox_mode: str, timeout: float = 120.0) -> InstalledBlender:
    """Starts ``command`` (in the sandbox ``sandbox_mode`` allows) and asks its version and Python.

    Raises ``RenderError`` saying why when it does not start or answer, ``ConfigError`` when
    ``RENDER_SANDBOX=bwrap`` and it cannot run sandboxed.
    """
    argv = command.probe_argv()
    sandbox, contained = choose_sandbox(
        sandbox_mode, command.executable, command.uses_bpy_module, CHILD_SCRIPT, argv
    )
    try:
        done = run_probe(argv, sandbox, timeout, child_environment_base())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RenderError(f"Blender at {command.executable} did not start: {exc}") from None
    answer = next((ln for ln in done.stdout.splitlines() if ln.startswith(PROBE_MARK)), None)
    if done.returncode != 0 or answer is None:
        said = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise RenderError(f"Blender at {command.executable} did not answer its probe: {said[:300]}")
    facts = json.loads(answer[len(PROBE_MARK) :])
    major, minor, patch = (int(part) for part in facts["version"][:3])
    return InstalledBlender(
        command, (major, minor, patch), facts["label"], facts["python"], sandbox, contained
    )


class BlenderInventory:
    """The Blenders that answered, oldest first, each with its own renderer."""

    def __init__(self, blenders: Iterable[InstalledBlender], renderers: dict[str, BlenderRenderer]) -> None:
        self.blenders = sorted(blenders, key=lambda b: b.version)
        self._renderers = renderers

    @classmethod
    def probe_all(
        cls,
        commands: list[BlenderCommand],
        sandbox_mode: str,
        *,
        render_timeout: float = 300.0,
        shader_cache: Path | None = None,
        limits: RenderLimits | None = None,
        cpu: CpuBudget | None = None,
        device: str = "auto",
        gpus: tuple[str, ...] = (),
        gpu_backend: str | None = None,
    ) -> tuple[BlenderInventory, list[str]]:
        """Probes each command; returns the inventory and one line per Blender that failed, saying why.

        Each Blender that answered gets its device (``device``, ``gpus``: see ``devices.py``) and its
        renderer (``render_timeout``, ``shader_cache``, ``limits`` and ``cpu`` are the renders'). Raises
        ``RenderError`` when none answered (the worker cannot render at all), ``ConfigError`` when the
        device asked for is on none of them, and the ``ConfigError`` of ``RENDER_SANDBOX=bwrap`` as soon
        as one cannot run sandboxed.
        """
        found, failures, wrong_device = [], [], []
        for command in commands:
            try:
                blender = probe(command, sandbox_mode)
            except RenderError as exc:
                failures.append(str(exc))
                continue
            try:
                chosen = choose_device(device, gpus, blender.devices, f"Blender {blender.short}")
            except ConfigError as exc:
                wrong_device.append(exc)
                failures.append(f"Blender at {command.executable}: {exc}")
                continue
            found.append(dataclasses.replace(blender, device=chosen))
        if not found and wrong_device:
            raise wrong_device[0]
        if not found:
            raise RenderError("no Blender could render here: " + "; ".join(failures))
        renderers = {
            blender.command.executable: BlenderRenderer(
                blender.command,
                render_timeout,
                shader_cache,
                limits=limits,
                sandbox=blender.sandbox,
                cpu=cpu,
                device=blender.device,
                gpu_backend=gpu_backend,
            )
            for blender in found
        }
        return cls(found, renderers), failures

    @classmethod
    def from_config(cls, config: WorkerConfig) -> tuple[BlenderInventory, list[str]]:
        """``probe_all`` with everything the operator set: the Blenders, sandbox, device and render caps."""
        return cls.probe_all(
            commands_from(config.blender_path),
            config.sandbox,
            render_timeout=config.render_timeout,
            shader_cache=config.shader_cache,
            limits=config.limits,
            cpu=config.cpu,
            device=config.render_device,
            gpus=config.render_gpus,
            gpu_backend=config.render_gpu_backend,
        )

    def slot_count(self, wanted: int | None) -> int:
        """Render slots: ``wanted`` (RENDER_SLOTS), or one per GPU the newest Blender renders on, else 1."""
        if wanted is not None:
            return wanted
        device = self.blenders[-1].device
        return max(1, len(device.devices)) if device.is_gpu else 1

    def for_slot(self, index: int, count: int) -> BlenderInventory:
        """The same Blenders for render slot ``index`` of ``count``: with as many GPUs as slots, each slot
        renders on its own GPU (else every slot shares them); CPU threads are split between the slots
        (``RENDER_THREADS``, or every core, divided by ``count``)."""
        if count == 1:
            return self
        blenders, renderers = [], {}
        for blender in self.blenders:
            device = blender.device
            if device.is_gpu and len(device.devices) >= count:
                device = dataclasses.replace(device, devices=(device.devices[index],))
            slot_blender = dataclasses.replace(blender, device=device)
            renderer = self._renderers[blender.command.executable]
            total = renderer.cpu.threads or os.cpu_count() or 1
            cpu = dataclasses.replace(renderer.cpu, threads=max(1, total // count))
            renderers[blender.command.executable] = renderer.with_device(device, cpu)
            blenders.append(slot_blender)
        return BlenderInventory(blenders, renderers)

    def renderer_for(self, blender: InstalledBlender) -> BlenderRenderer:
        return self._renderers[blender.command.executable]

    def releases(self) -> str:
        """``4.2.23, 4.5.15``: every installed version, for logs and reasons."""
        return ", ".join(b.short for b in self.blenders)

    def for_release(self, wanted: BlendVersion) -> InstalledBlender | None:
        """The newest installed Blender of exactly ``wanted``'s major.minor (a job's ``blender_version``)."""
        same = [b for b in self.blenders if b.release == wanted]
        return same[-1] if same else None

    def for_file(self, saved_by: BlendVersion, wanted: BlendVersion | None = None) -> InstalledBlender:
        """The Blender to open a file saved by ``saved_by``: its own release, else the oldest newer one.

        ``wanted`` (the job's ``blender_version``) overrides the file's own. Raises ``RenderError`` naming
        the versions present when none fits.
        """
        if wanted is not None:
            chosen = self.for_release(wanted)
            if chosen is None:
                raise RenderError(f"the job asks for Blender {wanted}; this node has {self.releases()}")
            return chosen
        same = self.for_release(saved_by)
        if same is not None:
            return same
        newer = [b for b in self.blenders if b.release > saved_by]
        if newer:
            return newer[0]
        raise RenderError(
            f"the scene was saved by Blender {saved_by}, newer than every Blender on this node "
            f"({self.releases()}); an older Blender cannot open it reliably"
        )
