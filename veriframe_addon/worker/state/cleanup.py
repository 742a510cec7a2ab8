"""Removing old job folders, so a worker that runs for months does not fill its disk.

A job's downloaded inputs go as soon as the job ends (``loop._remove_inputs``); what stays is the
render and Blender's log, for the operator to look at. Those are kept while the job is unfinished (a
stage record or an unreported result still needs them) and, once it is completed or failed, for
``KEEP_RESULTS_HOURS`` more. Age is the folder's modification time: removing the inputs when the job
ended touched it, so it says when the job finished.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("veriframe.worker")

CLEANUP_EVERY_SECONDS = 3600.0


@dataclass(frozen=True)
class Cleaned:
    folders: int
    bytes: int


def folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:
            continue
    return total


def remove_old_job_folders(
    jobs_dir: Path, keep_seconds: float, in_use: Container[str], now: float | None = None
) -> Cleaned:
    """Removes the folders of jobs not ``in_use`` (unfinished or unreported) older than ``keep_seconds``."""
    if not jobs_dir.is_dir():
        return Cleaned(0, 0)
    now = time.time() if now is None else now
    folders = removed_bytes = 0
    for folder in jobs_dir.iterdir():
        if not folder.is_dir() or folder.is_symlink() or folder.name in in_use:
            continue
        if folder.name.startswith("."):  # a parked standby's folder (render/standby.py), however old
            continue
        try:
            age = now - folder.stat().st_mtime
        except FileNotFoundError:
            continue
        if age < keep_seconds:
            continue
        size = folder_bytes(folder)
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            folders += 1
            removed_bytes += size
    if folders:
        log.info(
            "[Worker] Removed %d finished job folder(s) older than %s (%.1f MB)",
            folders,
            _age_words(keep_seconds),
            removed_bytes / 1e6,
        )
    return Cleaned(folders, removed_bytes)


def _age_words(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds:g} s"
