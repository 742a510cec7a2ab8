"""The worker's memory across restarts: which jobs are done, which failed, which results await reporting.

``completed_jobs.json`` keeps the seed worker's format (``{"completed_jobs": [...]}``) and adds two keys
beside it: ``failed_jobs`` (id -> reason, so a broken job is not retried forever) and
``pending_results`` (id -> result CID, written right after the upload and before ``complete``), so a crash
between upload and report never loses a finished render. Every write goes to a temp file that is fsynced
and renamed over the old one: a crash leaves either the old or the new journal, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("veriframe.worker")


class JobJournal:
    """Thread-safe record of finished jobs, persisted atomically after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._completed: list[str] = []
        self._failed: dict[str, str] = {}
        self._pending: dict[str, str] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            data: Any = json.loads(self.path.read_text(encoding="utf-8"))
            # A hand-edited file of the wrong shape is as unreadable as a truncated one.
            if not isinstance(data, dict) or not isinstance(data.get("completed_jobs", []), list):
                raise ValueError('it is not a {"completed_jobs": [...]} object')
            completed = [str(job) for job in data.get("completed_jobs", []) if job is not None]
            failed = {str(k): str(v) for k, v in (data.get("failed_jobs") or {}).items()}
            pending = {str(k): str(v) for k, v in (data.get("pending_results") or {}).items()}
        except (OSError, ValueError, AttributeError) as exc:
            # Keep the unreadable file for the operator instead of silently forgetting finished jobs.
            backup = self.path.with_suffix(".corrupt.json")
            os.replace(self.path, backup)
            log.error("[Worker] Journal %s was unreadable (%s); kept it as %s", self.path, exc, backup)
            return
        self._completed, self._failed, self._pending = completed, failed, pending

    def is_finished(self, job_id: str) -> bool:
        """True for jobs completed or given up on: a restarted worker must not take them again."""
        with self._lock:
            return job_id in self._completed or job_id in self._failed

    def is_completed(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._completed

    @property
    def completed(self) -> list[str]:
        with self._lock:
            return list(self._completed)

    @property
    def failed(self) -> dict[str, str]:
        with self._lock:
            return dict(self._failed)

    @property
    def pending_results(self) -> dict[str, str]:
        with self._lock:
            return dict(self._pending)

    def record_result(self, job_id: str, result_cid: str) -> None:
        """Remembers an uploaded result before it is reported, so a crash cannot lose it."""
        with self._lock:
            self._pending[job_id] = result_cid
            self._save()

    def mark_completed(self, job_id: str) -> None:
        with self._lock:
            if job_id not in self._completed:
                self._completed.append(job_id)
            self._pending.pop(job_id, None)
            self._failed.pop(job_id, None)
            self._save()

    def mark_failed(self, job_id: str, reason: str) -> None:
        with self._lock:
            self._failed[job_id] = reason[:500]
            self._pending.pop(job_id, None)
            self._save()

    def _save(self) -> None:
        data = {
            "completed_jobs": self._completed,
            "failed_jobs": self._failed,
            "pending_results": self._pending,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".completed_jobs.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as tmp:
                json.dump(data, tmp, indent=2)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, self.path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
