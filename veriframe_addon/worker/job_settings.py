"""Render settings a job may ask for in its ``required_capabilities`` JSON.

Only ``engine``, ``frame``, ``resolution_percentage`` and ``samples`` are read; other keys describe
requirements of other kinds and are left alone. Values are checked before the job is claimed: a job
whose settings cannot be honoured is skipped rather than claimed and failed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from .errors import JobSettingsError

# Names a creator may use, mapped to the engine family; the render child picks the identifier its
# Blender version knows (BLENDER_EEVEE_NEXT on 4.2-4.5, BLENDER_EEVEE on 5.0+).
ENGINES = {
    "EEVEE": "EEVEE",
    "BLENDER_EEVEE": "EEVEE",
    "BLENDER_EEVEE_NEXT": "EEVEE",
    "CYCLES": "CYCLES",
    "WORKBENCH": "WORKBENCH",
    "BLENDER_WORKBENCH": "WORKBENCH",
}
MAX_FRAME = 1_048_574  # Blender's own frame limit
MAX_SAMPLES = 4096


@dataclass(frozen=True)
class RenderSettings:
    """What to render: ``None`` keeps the file's own value."""

    engine: str = "EEVEE"
    frame: int = 1
    resolution_percentage: int | None = None
    samples: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_render_settings(required_capabilities: str | None) -> RenderSettings:
    """Reads the job's settings; raises ``JobSettingsError`` naming the key that is wrong."""
    if required_capabilities is None or not required_capabilities.strip():
        return RenderSettings()
    try:
        data = json.loads(required_capabilities)
    except ValueError as exc:
        raise JobSettingsError(f"required_capabilities is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        # A bare list/number says nothing about render settings: keep the defaults.
        return RenderSettings()

    engine = data.get("engine") or "EEVEE"
    if not isinstance(engine, str) or engine.upper() not in ENGINES:
        raise JobSettingsError(f"engine {engine!r} is not supported (use one of EEVEE, CYCLES, WORKBENCH)")
    return RenderSettings(
        engine=ENGINES[engine.upper()],
        frame=_int(data, "frame", 1, -MAX_FRAME, MAX_FRAME),
        resolution_percentage=_int(data, "resolution_percentage", None, 1, 100),
        samples=_int(data, "samples", None, 1, MAX_SAMPLES),
    )


def _int(data: dict[str, Any], key: str, default: int | None, low: int, high: int) -> int | None:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobSettingsError(f"{key} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise JobSettingsError(f"{key} must be between {low} and {high}, got {value}")
    return value
