"""Render settings a job may ask for in its ``required_capabilities`` JSON.

Only ``engine``, ``frame``, ``resolution_percentage`` and ``samples`` are read, plus ``frame_start``/
``frame_end``/``frames`` to refuse a request for more than one frame (a job's result is one PNG, so a
worker renders exactly one frame per job); other keys describe requirements of other kinds and are left
alone. Values are checked before the job is claimed: a job whose settings cannot be honoured is skipped
rather than claimed and failed.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import JobSettingsError
from ..limits import DEFAULT_MAX_SAMPLES
from ..policy.job_filters import ENGINES

MAX_FRAME = 1_048_574  # Blender's own frame limit
MAX_SAMPLES = DEFAULT_MAX_SAMPLES
MAX_FRAMES_PER_JOB = 1


@dataclass(frozen=True)
class RenderSettings:
    """What to render: ``None`` keeps the file's own value."""

    engine: str = "EEVEE"
    frame: int = 1
    resolution_percentage: int | None = None
    samples: int | None = None
    blender_version: str | None = None  # "4.5": render in that release (else the file's own)
    device: str = "any"  # "GPU": only a node that renders on a GPU; "CPU": render on the processor
    min_gpu_memory_gb: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_render_settings(
    required_capabilities: str | None, max_samples: int = MAX_SAMPLES
) -> RenderSettings:
    """Reads the job's settings; raises ``JobSettingsError`` naming the key that is wrong.

    ``max_samples`` is the operator's cap (``MAX_SAMPLES``).
    """
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
    frame_start = _int(data, "frame_start", None, -MAX_FRAME, MAX_FRAME)
    frame_end = _int(data, "frame_end", frame_start, -MAX_FRAME, MAX_FRAME)
    frames = _frame_count(data, frame_start, frame_end)
    if frames > MAX_FRAMES_PER_JOB:
        raise JobSettingsError(
            f"the job asks for {frames} frames; its result is one PNG, so this worker renders one frame "
            "per job (split the animation into one job per frame)"
        )
    listed = data.get("frames")
    if isinstance(listed, list) and listed:
        default_frame = _int({"frames": listed[0]}, "frames", 1, -MAX_FRAME, MAX_FRAME)
    else:
        default_frame = frame_start if frame_start is not None else 1
    try:
        samples = _int(data, "samples", None, 1, max_samples)
    except JobSettingsError as exc:
        raise JobSettingsError(f"{exc} (MAX_SAMPLES)") from None
    device = str(data.get("device") or "any").strip()
    if device.upper() not in ("ANY", "GPU", "CPU"):
        raise JobSettingsError(f'device must be "GPU", "CPU" or "any", got {data.get("device")!r}')
    memory = data.get("min_gpu_memory_gb")
    if memory is not None and (
        isinstance(memory, bool) or not isinstance(memory, (int, float)) or memory < 0
    ):
        raise JobSettingsError(f"min_gpu_memory_gb must be a number of GB, got {memory!r}")
    return RenderSettings(
        blender_version=_release(data.get("blender_version")),
        device="any" if device.upper() == "ANY" else device.upper(),
        min_gpu_memory_gb=float(memory) if memory is not None else None,
        engine=ENGINES[engine.upper()],
        frame=_int(data, "frame", default_frame, -MAX_FRAME, MAX_FRAME),
        resolution_percentage=_int(data, "resolution_percentage", None, 1, 100),
        samples=samples,
    )


def _release(value: object) -> str | None:
    """A job's ``blender_version``: ``"4.5"`` (or the number 4.5, as JSON writers often put it)."""
    if value is None:
        return None
    text = str(value).strip() if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""
    if not re.fullmatch(r"\d+\.\d+", text):
        raise JobSettingsError(f'blender_version must name a release such as "4.5", got {value!r}')
    return text


def _frame_count(data: dict[str, Any], frame_start: int | None, frame_end: int | None) -> int:
    """How many frames the job asks for: ``frames`` (a count or a list), or the start-end range."""
    frames = data.get("frames")
    if isinstance(frames, list):
        return len(frames)
    if frames is not None:
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            raise JobSettingsError(f"frames must be a positive whole number or a list, got {frames!r}")
        return frames
    if frame_start is not None and frame_end is not None:
        if frame_end < frame_start:
            raise JobSettingsError(f"frame_end {frame_end} is before frame_start {frame_start}")
        return frame_end - frame_start + 1
    return 1


def _int(data: dict[str, Any], key: str, default: int | None, low: int, high: int) -> int | None:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobSettingsError(f"{key} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise JobSettingsError(f"{key} must be between {low} and {high}, got {value}")
    return value
