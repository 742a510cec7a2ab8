"""From a downloaded (and already CID-verified) asset to the .blend file to render.

An asset is a .blend (plain, gzip- or zstd-compressed, as Blender writes them) or a .zip/.tar* archive
holding one. Archives come from strangers, so extraction refuses absolute paths, ``..`` components,
links and device files, and caps the unpacked size, before a single byte is written.
"""

from __future__ import annotations

import gzip
import logging
import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from .errors import AssetError

log = logging.getLogger("veriframe.worker")

BLEND_MAGIC = b"BLENDER"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
MAX_UNPACKED_BYTES = 8 * 1024**3
MAX_MEMBERS = 10_000


def prepare_blend(asset: Path, work_dir: Path) -> Path:
    """Returns the .blend to render: ``asset`` itself, or the one found in the archive it is."""
    head = _head(asset, 512)
    if head.startswith((BLEND_MAGIC, ZSTD_MAGIC)) or _is_gzipped_blend(asset, head):
        blend = asset.with_suffix(".blend")
        if blend != asset:
            asset.rename(blend)
        return blend
    if head.startswith(ZIP_MAGIC):
        extract_zip(asset, work_dir)
        return find_blend(work_dir)
    if head.startswith(GZIP_MAGIC) or tarfile.is_tarfile(asset):
        extract_tar(asset, work_dir)
        return find_blend(work_dir)
    raise AssetError(f"the asset is not a .blend file or a .zip/.tar archive (it starts with {head[:8]!r})")


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


def extract_zip(archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            _check_budget(len(members), sum(m.file_size for m in members))
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
                    shutil.copyfileobj(src, out, 1024 * 1024)
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as exc:
        raise AssetError(f"the zip archive cannot be read: {exc}") from exc


def extract_tar(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            _check_budget(len(members), sum(m.size for m in members if m.isfile()))
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
                        shutil.copyfileobj(source, out, 1024 * 1024)
                else:
                    raise AssetError(f"archive member {member.name!r} is a link or special file")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise AssetError(f"the tar archive cannot be read: {exc}") from exc


def _check_budget(count: int, total: int) -> None:
    if count > MAX_MEMBERS:
        raise AssetError(f"the archive holds {count} entries (the limit is {MAX_MEMBERS})")
    if total > MAX_UNPACKED_BYTES:
        raise AssetError(f"the archive unpacks to {total} bytes (the limit is {MAX_UNPACKED_BYTES})")


def find_blend(root: Path) -> Path:
    """The archive's .blend: the only one, or the shallowest one when there are several."""
    blends = sorted(
        (p for p in root.rglob("*.blend") if p.is_file()),
        key=lambda p: (len(p.relative_to(root).parts), str(p)),
    )
    if not blends:
        raise AssetError("the archive contains no .blend file")
    if len(blends) > 1:
        log.info("[Worker] Archive holds %d .blend files; rendering %s", len(blends), blends[0].name)
    return blends[0]
