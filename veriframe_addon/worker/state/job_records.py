"""Where each claimed job stands, on disk, so a worker killed at any moment picks its job up again.

One small JSON file per job in ``VERIFRAME_DATA_DIR/job-state/``, rewritten atomically (temp file,
fsync, rename) at each stage:

    claimed -> downloaded (the scene is ready to render) -> rendered (the PNG exists) -> uploaded (the
    result CID is known) -> completed / failed (the record is removed; the journal keeps the outcome)

A stage is written only once the work it names is finished and on disk, so resuming from a record never
trusts half-done work: a kill during a download leaves ``claimed`` (download again), during a render
``downloaded`` (render again), after the upload ``uploaded`` (report the same CID again).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("veriframe.worker")

STAGES = ("claimed", "downloaded", "rendered", "uploaded")


@dataclass(frozen=True)
class JobState:
    """What a resumed worker needs to go on with a job without redoing finished stages."""

    job_id: str
    stage: str
    asset_cid: str
    reward: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    blend: str | None = None  # stage downloaded: the scene to render
    render: dict[str, Any] | None = None  # stage rendered: the PNG and what Blender reported
    result_cid: str | None = None  # stage uploaded
    attempts: int = 0  # tries of the next stage that failed for want of IPFS
    creator: str | None = None  # the job's creator, for the history
    receipt: dict[str, Any] | None = None  # stage uploaded: the signed receipt sealed into the PNG

    def at(self, stage: str, **changes: Any) -> JobState:
        """This job at ``stage``; reaching a new stage starts its count of failed tries afresh."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        fresh = {"attempts": 0} if stage != self.stage else {}
        return JobState(**{**asdict(self), **fresh, **changes, "stage": stage})

    def reached(self, stage: str) -> bool:
        return STAGES.index(self.stage) >= STAGES.index(stage)


class JobStateStore:
    """The per-job records of one worker's data folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.json"

    def save(self, state: JobState) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        data = json.dumps(asdict(state), indent=1).encode()
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".state-")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self._path(state.job_id))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        log.debug("[Worker] Job %s: %s", state.job_id, state.stage)

    def has(self, job_id: str) -> bool:
        return self._path(job_id).is_file()

    def load(self, job_id: str) -> JobState | None:
        """The record of ``job_id``, or None when there is none (or it cannot be read)."""
        try:
            return JobState(**json.loads(self._path(job_id).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def remove(self, job_id: str) -> None:
        self._path(job_id).unlink(missing_ok=True)

    def unfinished(self) -> list[JobState]:
        """Every recorded job, oldest first; an unreadable record is logged and set aside, not fatal."""
        if not self.folder.is_dir():
            return []
        states = []
        for path in sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime):
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                state = JobState(**raw)
                if state.stage not in STAGES:
                    raise ValueError(f"unknown stage {state.stage!r}")
            except (OSError, ValueError, TypeError) as exc:
                log.error("[Worker] Ignoring unreadable job record %s: %s", path.name, exc)
                path.rename(path.with_suffix(".unreadable"))
                continue
            states.append(state)
        return states
