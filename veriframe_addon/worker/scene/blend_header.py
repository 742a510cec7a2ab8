"""Which Blender saved a .blend: the version in the file's own header, read without starting Blender.

Two header layouts exist, both starting ``BLENDER``:

- 12 bytes, Blender 2.x to 4.x: pointer size (``_`` 4 bytes, ``-`` 8), endianness (``v`` little, ``V``
  big), then the version in three digits: ``BLENDER-v405`` is 4.5.
- 17 bytes, Blender 5.0 and later: the header size ``17``, pointer size, file format version (``01``),
  endianness, then the version in four digits: ``BLENDER17-01v0500`` is 5.0.

Blender compresses with gzip (before 3.0) or zstd (3.0 and later, the default from 5.0); only the first
bytes are decompressed. zstd needs the ``zstandard`` module, which every Blender since 3.0 bundles.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import AssetError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
HEAD_BYTES = 32
LEGACY = re.compile(rb"BLENDER[_-][vV](\d)(\d\d)")
LARGE = re.compile(rb"BLENDER(\d\d)[_-](\d\d)[vV](\d\d)(\d\d)")


@dataclass(frozen=True, order=True)
class BlendVersion:
    """A Blender release as a file header names it: major and minor (headers carry no patch number)."""

    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    @classmethod
    def parse(cls, text: str) -> BlendVersion:
        """``"4.5"``, ``"4.5.15"`` or ``"Blender 4.5.15 LTS"`` -> 4.5; ``ValueError`` for anything else."""
        found = re.search(r"(\d+)\.(\d+)", text)
        if found is None:
            raise ValueError(f"{text!r} names no Blender version (expected e.g. 4.5)")
        return cls(int(found[1]), int(found[2]))


def read_blend_version(path: Path) -> BlendVersion:
    """The version of Blender that saved ``path``; ``AssetError`` when it is no .blend file."""
    head = _first_bytes(path)
    large = LARGE.match(head)
    if large:
        return BlendVersion(int(large[3]), int(large[4]))
    legacy = LEGACY.match(head)
    if legacy:
        return BlendVersion(int(legacy[1]), int(legacy[2]))
    raise AssetError(f"{path.name} has no Blender file header (it starts {head[:12]!r})")


def _first_bytes(path: Path) -> bytes:
    with path.open("rb") as file:
        head = file.read(HEAD_BYTES)
    try:
        if head.startswith(GZIP_MAGIC):
            with gzip.open(path, "rb") as file:
                return file.read(HEAD_BYTES)
        if head.startswith(ZSTD_MAGIC):
            return _zstd_head(path)
    except (OSError, EOFError) as exc:
        raise AssetError(f"{path.name} is compressed but cannot be read: {exc}") from None
    return head


def _zstd_head(path: Path) -> bytes:
    try:
        import zstandard  # bundled with Blender since 3.0; the bpy wheel depends on it
    except ImportError:
        raise AssetError(
            f"{path.name} is zstd-compressed and this Python has no zstandard module to read its version"
        ) from None
    with path.open("rb") as file, zstandard.ZstdDecompressor().stream_reader(file) as reader:
        try:
            return reader.read(HEAD_BYTES)
        except zstandard.ZstdError as exc:
            raise AssetError(f"{path.name} is zstd-compressed but cannot be read: {exc}") from None
