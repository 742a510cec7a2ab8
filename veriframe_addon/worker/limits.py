"""The caps a job must fit in: every job comes from a stranger, so nothing about it is unbounded.

Each cap has an environment variable (and a preference in Blender) and a default that an honest job
never meets. Exceeding one rejects the job with a message naming the cap and the variable, so an
operator who wants bigger jobs knows what to raise.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

MIB = 1024 * 1024
DEFAULT_MAX_OUTPUT_MEGAPIXELS = 36.0  # 8K UHD (7680x4320) is 33.2 MP
DEFAULT_MAX_SAMPLES = 4096
DEFAULT_MAX_ASSET_MB = 2048
DEFAULT_MAX_UNPACKED_MB = 4096
# An archive that expands more than this many times over is a bomb, not a project: .blend files
# compress 3-10x, textures barely. Only checked once the unpacked size passes EXPANSION_FLOOR.
MAX_EXPANSION_RATIO = 100
EXPANSION_FLOOR = 64 * MIB


def machine_memory_bytes() -> int | None:
    """The machine's RAM (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def default_render_memory_mb() -> int:
    """Three quarters of the machine's RAM (0, meaning no cap, where that cannot be read)."""
    total = machine_memory_bytes()
    return int(total * 3 / 4 / MIB) if total else 0


@dataclass(frozen=True)
class RenderLimits:
    """Caps on one job. ``max_render_memory_mb`` 0 means no memory cap."""

    max_output_megapixels: float = DEFAULT_MAX_OUTPUT_MEGAPIXELS
    max_samples: int = DEFAULT_MAX_SAMPLES
    max_render_memory_mb: int = 0
    max_asset_mb: int = DEFAULT_MAX_ASSET_MB
    max_unpacked_mb: int = DEFAULT_MAX_UNPACKED_MB

    @property
    def max_asset_bytes(self) -> int:
        return self.max_asset_mb * MIB

    @property
    def max_unpacked_bytes(self) -> int:
        return self.max_unpacked_mb * MIB

    def to_json(self) -> dict[str, Any]:
        """What the render child needs to check a scene (it cannot import this package)."""
        return asdict(self)


# Environment variable for each cap, in the order the README lists them.
LIMIT_VARIABLES = {
    "max_output_megapixels": "MAX_OUTPUT_MEGAPIXELS",
    "max_samples": "MAX_SAMPLES",
    "max_render_memory_mb": "MAX_RENDER_MEMORY_MB",
    "max_asset_mb": "MAX_ASSET_MB",
    "max_unpacked_mb": "MAX_UNPACKED_MB",
}


DEFAULT_RENDER_NICE = 10  # the operator's own work wins; 0 renders at normal priority


@dataclass(frozen=True)
class CpuBudget:
    """How much of the processor a render may take, so a desktop stays usable while it renders.

    ``threads`` is Blender's render thread count (``-t``; 0: every core). ``nice`` lowers the render's
    priority (Linux and macOS: the nice value, 0 to 19; Windows: below normal when above 0).
    """

    threads: int = 0
    nice: int = DEFAULT_RENDER_NICE

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
