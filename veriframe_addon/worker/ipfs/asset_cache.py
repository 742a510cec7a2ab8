"""Verified assets kept by CID, so a scene many jobs share (the frames of one animation) is fetched once.

Content addressing is what makes a cache safe here: an entry is named by the CID its bytes were
verified against when they were downloaded, and nothing but the worker writes this folder. Entries are
written under a temporary name and renamed into place (a crash never leaves half an entry), made
read-only, and never handed to a render directly: each job gets its own copy, because a render may
write its job folder and must not be able to change what the next job reads.

The cache is capped (``ASSET_CACHE_MB``); when an entry would pass the cap the least recently used ones
go first. "Used" is the entry's modification time, bumped on every hit, so the order survives restarts
without an index file that could disagree with the folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidCid
from .cid import parse_cid

log = logging.getLogger("veriframe.worker")

STALE_PART_SECONDS = 3600.0


@dataclass(frozen=True)
class CachedAsset:
    path: Path
    size: int


class AssetCache:
    """A folder of verified assets named by CID, at most ``max_bytes`` in all (0 turns it off)."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def _entry(self, cid: str) -> Path | None:
        """The entry's path; None for a CID that could not name one (never a path from a stranger)."""
        try:
            parsed = parse_cid(cid)
        except InvalidCid:
            return None
        # One name however the CID was written: CIDv1 in any multibase is kept as base32.
        return self.root / str(parsed if parsed.version == 0 else parsed.set(base="base32"))

    def copy_to(self, cid: str, dest: Path) -> CachedAsset | None:
        """Copies the entry for ``cid`` to ``dest`` and marks it used; None when there is none."""
        entry = self._entry(cid) if self.enabled else None
        if entry is None or not entry.is_file():
            return None
        shutil.copyfile(entry, dest)  # copy_file_range/sendfile: no bytes pass through Python
        os.utime(entry)
        return CachedAsset(dest, dest.stat().st_size)

    def has(self, cid: str) -> bool:
        entry = self._entry(cid) if self.enabled else None
        return entry is not None and entry.is_file()

    def adopt(self, cid: str, verified: Path) -> bool:
        """Moves ``verified`` (a file in this cache's folder, already verified against ``cid``) in as
        the entry for ``cid``, without a copy; False when it was not kept (``verified`` stays)."""
        entry = self._entry(cid) if self.enabled else None
        if entry is None:
            return False
        size = verified.stat().st_size
        if size > self.max_bytes:
            return False
        self._make_room(size)
        try:
            with verified.open("rb") as written:  # on disk before its name says "verified"
                os.fsync(written.fileno())
            os.chmod(verified, stat.S_IRUSR | stat.S_IRGRP)
            os.replace(verified, entry)
        except OSError as exc:
            log.warning("[Worker] Could not keep asset %s in the cache: %s", cid, exc)
            return False
        return True

    def add(self, cid: str, source: Path) -> bool:
        """Keeps a copy of ``source`` (already verified against ``cid``); False when it was not kept."""
        entry = self._entry(cid) if self.enabled else None
        if entry is None:
            return False
        size = source.stat().st_size
        if size > self.max_bytes:
            log.debug("[Worker] Not caching %s: %d bytes is more than ASSET_CACHE_MB", cid, size)
            return False
        if entry.is_file():
            os.utime(entry)
            return True
        self.root.mkdir(parents=True, exist_ok=True)
        self._make_room(size)
        partial = entry.with_name(f".{entry.name}.{os.getpid()}-{threading.get_ident()}.part")
        try:
            shutil.copyfile(source, partial)
            with partial.open("rb") as written:
                os.fsync(written.fileno())
            os.chmod(partial, stat.S_IRUSR | stat.S_IRGRP)
            os.replace(partial, entry)
        except OSError as exc:  # a full disk costs a cache entry, never the job
            log.warning("[Worker] Could not keep asset %s in the cache: %s", cid, exc)
            partial.unlink(missing_ok=True)
            return False
        return True

    def entries(self) -> list[tuple[Path, int, float]]:
        """(path, size, last used) of every entry, least recently used first."""
        found = []
        if not self.root.is_dir():
            return found
        for path in self.root.iterdir():
            if path.name.startswith("."):
                continue
            try:
                info = path.stat()
            except FileNotFoundError:  # removed by another worker sharing the folder
                continue
            found.append((path, info.st_size, info.st_mtime))
        found.sort(key=lambda item: item[2])
        return found

    def size(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def _make_room(self, incoming: int) -> None:
        """Removes least recently used entries until ``incoming`` more bytes fit under the cap (and
        what a crash left half-written an hour or more ago)."""
        for partial in self.root.glob(".*.part"):
            try:
                if time.time() - partial.stat().st_mtime > STALE_PART_SECONDS:
                    partial.unlink()
            except FileNotFoundError:
                continue
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        for path, size, _ in entries:
            if total + incoming <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            log.info("[Worker] Removed asset %s from the cache (least recently used)", path.name)
