"""From a downloaded (and already CID-verified) asset to the .blend file to render.

An asset is a .blend (plain, gzip- or zstd-compressed, as Blender writes them) or a .zip/.tar* archive
holding one. Archives come from strangers, so extraction refuses absolute paths, ``..`` components,
links and device files, and caps the unpacked size and the expansion ratio (a zip bomb), before a
single byte is written; bytes are counted again while written, in case the headers lie. An archive must
hold exactly one scene at its top level (other .blend files deeper down are its libraries).
"""

from __future__ import annotations

import gzip
import logging
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ..errors import AssetError
from ..limits import DEFAULT_MAX_UNPACKED_MB, EXPANSION_FLOOR, MAX_EXPANSION_RATIO, MIB

log = logging.getLogger("veriframe.worker")

BLEND_MAGIC = b"BLENDER"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
MAX_UNPACKED_BYTES = DEFAULT_MAX_UNPACKED_MB * MIB
MAX_MEMBERS = 10_000
# Magic numbers of what people (or attackers) upload instead of a scene, to say what the file is.
KNOWN_FORMATS = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x7fELF", "a Linux executable (ELF)"),
    (b"MZ", "a Windows executable"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive (only .zip and .tar are unpacked)"),
    (b"Rar!", "a RAR archive (only .zip and .tar are unpacked)"),
    (b"\xfd7zXZ\x00", "an xz-compressed file that is not a tar archive"),
    (b"BZh", "a bzip2-compressed file that is not a tar archive"),
    (b"\x1f\x8b", "gzip-compressed data that is neither a .blend nor a tar archive"),
    (b"glTF", "a glTF model (export it into a .blend first)"),
    (b"Kaydara FBX Binary", "an FBX model (import it into a .blend first)"),
)


def prepare_blend(asset: Path, work_dir: Path, max_unpacked_bytes: int = MAX_UNPACKED_BYTES) -> Path:
    """Returns the .blend to render: ``asset`` itself, or the one scene in the archive it is."""
    head = _head(asset, 512)
    if head.startswith((BLEND_MAGIC, ZSTD_MAGIC)) or _is_gzipped_blend(asset, head):
        blend = asset.with_suffix(".blend")
        if blend != asset:
            asset.rename(blend)
        return blend
    if head.startswith(ZIP_MAGIC):
        extract_zip(asset, work_dir, max_unpacked_bytes)
        return find_blend(work_dir)
    if head.startswith(GZIP_MAGIC) or tarfile.is_tarfile(asset):
        try:
            extract_tar(asset, work_dir, max_unpacked_bytes)
        except AssetError:
            if head.startswith(GZIP_MAGIC) and not _is_gzipped_tar(asset):
                raise AssetError(f"the asset is not a .blend file: it is {describe(head)}") from None
            raise
        return find_blend(work_dir)
    raise AssetError(f"the asset is not a .blend file or a .zip/.tar archive: it is {describe(head)}")


def describe(head: bytes) -> str:
    """What a file is, from its first bytes, in words an operator can act on."""
    for magic, name in KNOWN_FORMATS:
        if head.startswith(magic):
            return name
    sample = head[:256]
    try:
        text: str | None = sample.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character cut at the sample's end is still text
        text = sample[: exc.start].decode("utf-8") if exc.start >= len(sample) - 3 else None
    if head and text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        lowered = text.lstrip().lower()
        if lowered.startswith(("<!doctype html", "<html")):
            return "an HTML page (a gateway's error page?)"
        return f"a text file (it starts {text.strip()[:40]!r})"
    if not head:
        return "an empty file"
    return f"unrecognised binary data (it starts with {head[:8].hex(' ')})"


def _is_gzipped_tar(path: Path) -> bool:
    try:
        with tarfile.open(path, "r:gz") as tf:
            return tf.next() is not None
    except (tarfile.TarError, OSError, EOFError):
        return False


def _head(path: Path, size: int) -> bytes:
    with path.open("rb") as file:
        return file.read(size)


def _is_gzipped_blend(path: Path, head: bytes) -> bool:
    if not head.startswith(GZIP_MAGIC):
        return False
    try:
        with gzip.open(path, "rb") as file:
            return file.read(len(BLEND_MAGIC)) == BLEND_MAGIC
    except (OSError, EOFError):
        return False


def _safe_member_path(name: str, root: Path) -> Path:
    """Maps an archive member name to a path inside ``root``, or raises for anything that escapes it."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise AssetError(f"archive member {name!r} has an absolute path")
    if any(part == ".." for part in posix.parts):
        raise AssetError(f"archive member {name!r} points outside the job folder")
    target = (root / Path(*posix.parts)).resolve() if posix.parts else root.resolve()
    if not target.is_relative_to(root.resolve()):
        raise AssetError(f"archive member {name!r} points outside the job folder")
    return target


def extract_zip(archive: Path, dest: Path, max_unpacked_bytes: int = MAX_UNPACKED_BYTES) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            budget = _Budget(archive, len(members), sum(m.file_size for m in members), max_unpacked_bytes)
            for member in members:
                target = _safe_member_path(member.filename, dest)
                mode = member.external_attr >> 16
                if mode and (mode & 0o170000) not in (0, 0o100000, 0o040000):
                    raise AssetError(f"archive member {member.filename!r} is a link or special file")
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, target.open("wb") as out:
                    budget.copy(src, out)
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as exc:
        raise AssetError(f"the zip archive cannot be read: {exc}") from exc


def extract_tar(archive: Path, dest: Path, max_unpacked_bytes: int = MAX_UNPACKED_BYTES) -> None:
    try:
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            declared = sum(m.size for m in members if m.isfile())
            budget = _Budget(archive, len(members), declared, max_unpacked_bytes)
            for member in members:
                target = _safe_member_path(member.name, dest)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    source = tf.extractfile(member)
                    if source is None:
                        raise AssetError(f"archive member {member.name!r} cannot be read")
                    with source, target.open("wb") as out:
                        budget.copy(source, out)
                else:
                    raise AssetError(f"archive member {member.name!r} is a link or special file")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise AssetError(f"the tar archive cannot be read: {exc}") from exc


class _Budget:
    """The unpacking caps of one archive: entries, total size, expansion ratio; checked up front
    from the headers and again for every byte written."""

    def __init__(self, archive: Path, count: int, declared: int, max_bytes: int) -> None:
        if count > MAX_MEMBERS:
            raise AssetError(f"the archive holds {count} entries (the limit is {MAX_MEMBERS})")
        self.max_bytes = max_bytes
        self.written = 0
        self._check(declared)
        packed = max(archive.stat().st_size, 1)
        if declared > EXPANSION_FLOOR and declared / packed > MAX_EXPANSION_RATIO:
            raise AssetError(
                f"the archive would expand {declared / packed:.0f}x, from {_mb(packed)} to {_mb(declared)}: "
                f"a zip bomb, not a project (the limit is {MAX_EXPANSION_RATIO}x)"
            )

    def _check(self, total: int) -> None:
        if total > self.max_bytes:
            size = "more than " + _mb(self.max_bytes) if self.written else _mb(total)
            raise AssetError(
                f"the archive unpacks to {size}; the limit is {_mb(self.max_bytes)} (MAX_UNPACKED_MB)"
            )

    def copy(self, source: BinaryIO, out: BinaryIO) -> None:
        while piece := source.read(MIB):
            self.written += len(piece)
            self._check(self.written)
            out.write(piece)


def _mb(size: int) -> str:
    return f"{size / MIB:.1f} MB"


def find_blend(root: Path) -> Path:
    """The archive's scene: the one .blend at the shallowest level (deeper ones are its libraries)."""
    blends = sorted(
        (p for p in root.rglob("*.blend") if p.is_file() and not p.name.startswith("._")),
        key=lambda p: (len(p.relative_to(root).parts), str(p)),
    )
    if not blends:
        raise AssetError("the archive contains no .blend file")
    depth = len(blends[0].relative_to(root).parts)
    top = [p for p in blends if len(p.relative_to(root).parts) == depth]
    if len(top) > 1:
        names = ", ".join(str(p.relative_to(root)) for p in top[:5])
        raise AssetError(
            f"the archive holds {len(top)} scenes side by side ({names}): it must hold exactly one "
            "scene to render (libraries may sit in subfolders)"
        )
    if len(blends) > 1:
        log.info("[Worker] Archive holds %d .blend files; rendering %s", len(blends), blends[0].name)
    return blends[0]
