"""Which device a render uses: the GPUs each Blender sees, and ``RENDER_DEVICE``/``RENDER_GPUS``.

The render child starts with factory settings, which reset Cycles' device preferences to the CPU, so
the choice made here travels in the render spec and the child sets Cycles' preferences for real
(``render_child.apply_device``). ``auto`` takes the best GPU type a Blender sees (OptiX, CUDA, HIP,
oneAPI, Metal, in that order), else the CPU. A GPU type asked for and not seen is a clear error at
start, never a silent CPU render.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import GPU_TYPES
from ..errors import ConfigError


@dataclass(frozen=True)
class Device:
    """One GPU as Cycles lists it; ``id`` is stable across reboots (unlike an index)."""

    type: str
    name: str
    id: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Device:
        return cls(str(data["type"]), str(data["name"]), str(data["id"]))

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "name": self.name, "id": self.id}


@dataclass(frozen=True)
class DeviceChoice:
    """What Cycles renders on: the CPU, or these GPUs of one type."""

    type: str = "CPU"
    devices: tuple[Device, ...] = ()

    @property
    def is_gpu(self) -> bool:
        return self.type != "CPU"

    def to_json(self) -> dict[str, Any]:
        """As the render spec carries it to the child."""
        return {"type": self.type, "ids": [device.id for device in self.devices]}

    def describe(self) -> str:
        if not self.is_gpu:
            return "CPU"
        return f"{self.type} " + ", ".join(f"{d.name} ({d.id})" for d in self.devices)


def choose_device(
    requested: str, gpus: tuple[str, ...], seen: tuple[Device, ...], blender: str
) -> DeviceChoice:
    """The device ``blender`` renders Cycles on, from what it ``seen``; ``ConfigError`` when the operator
    asked for a type or GPU it does not have (naming what it does have)."""
    if requested == "CPU":
        return DeviceChoice()
    present = [kind for kind in GPU_TYPES if any(d.type == kind for d in seen)]
    if requested == "auto":
        if not present:
            return DeviceChoice()
        kind = present[0]
    else:
        kind = requested
        if kind not in present:
            have = ", ".join(f"{d.type} {d.name}" for d in seen) or "no GPU, only the CPU"
            raise ConfigError(
                "RENDER_DEVICE", f"is {kind}, but {blender} sees no {kind} device (it sees {have})"
            )
    of_kind = tuple(d for d in seen if d.type == kind)
    if not gpus:
        return DeviceChoice(kind, of_kind)
    picked = []
    for wanted in gpus:
        matches = [d for d in of_kind if wanted in (d.id, d.name)]
        if not matches:
            listed = ", ".join(f"{d.name} ({d.id})" for d in of_kind)
            raise ConfigError(
                "RENDER_GPUS",
                f"names {wanted!r}, which is none of the {kind} devices {blender} sees: {listed}",
            )
        picked += [d for d in matches if d not in picked]
    return DeviceChoice(kind, tuple(picked))
