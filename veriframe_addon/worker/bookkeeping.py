"""Everything around a job's stages that must survive a restart or reach the backend.

``job.py`` runs the stages of one job; this module keeps its stage record, decides what a setback
means (interrupted, paused for IPFS, failed for good), delivers the result (and settles a refused
report), and, after a restart, reports kept results and resumes claimed jobs. It never renders or
downloads anything itself.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from .backend.api import BackendClient, Job
from .config import WorkerConfig
from .errors import (
    BackendError,
    Cancelled,
    ContentMismatch,
    InvalidCid,
    IpfsCredentialsRefused,
    IpfsError,
    WorkerError,
)
from .observe import telemetry
from .observe.metrics import METRICS
from .render.renderer import RenderResult
from .scene.job_settings import RenderSettings
from .state.history import HistoryEntry, JobHistory
from .state.job_records import JobState, JobStateStore
from .state.journal import JobJournal
from .status import StatusBoard

log = logging.getLogger("veriframe.worker")

MAX_TRANSIENT_ATTEMPTS = 5  # tries of one stage while IPFS fails, before the job is given up

HISTORY_SHOWN = 30  # finished jobs the status carries for the panel

# Runs a job from its record to the end (``JobFlow.process``); True when the backend accepted it.
Process = Callable[[Job, RenderSettings, JobState], bool]


class Bookkeeper:
    """The journal, the job records and the backend's view of this worker's jobs, kept in step."""

    def __init__(
        self,
        config: WorkerConfig,
        backend: BackendClient,
        board: StatusBoard,
        stop: threading.Event,
    ) -> None:
        self.config = config
        self.backend = backend
        self.board = board
        self.stop = stop
        self.journal = JobJournal(config.journal_path)
        self.states = JobStateStore(config.data_dir / "job-state")
        self.history = JobHistory(config.data_dir)
        self.worker_id: object = None  # the backend's id of this worker (a job's ``worker_id``), at sign-in

    # -- the stage record ----------------------------------------------------------------------------
    def begin(self, job: Job, settings: RenderSettings) -> JobState:
        """The record of a job just claimed; saved before any of its stages runs."""
        state = JobState(
            job.id, "claimed", job.asset_cid, job.reward, settings.to_json(), creator=job.creator
        )
        self.states.save(state)
        return state

    def advance(self, state: JobState, stage: str, **changes: object) -> JobState:
        """Records that ``stage`` finished (with what it made), before the next stage begins."""
        state = state.at(stage, **changes)
        self.states.save(state)
        return state

    def is_known(self, job_id: str) -> bool:
        """Whether the journal has this job, finished or with a result still to report."""
        return self.journal.is_finished(job_id) or job_id in self.journal.pending_results

    def is_mine(self, job: Job) -> bool:
        return same_id(job.raw.get("worker_id"), self.worker_id)

    # -- setbacks ------------------------------------------------------------------------------------
    def setback(self, job: Job, state: JobState, exc: WorkerError) -> bool:
        """What a stage's error means for the job; always False (it did not finish now).

        Raises ``IpfsCredentialsRefused``: every job would fail the same way, so the worker stops.
        """
        if isinstance(exc, Cancelled) or self.stop.is_set():
            # Stopped by the operator: the job stays claimed, its record and files stay, and the next
            # start resumes it from the last finished stage.
            log.warning("[Worker] Job %s interrupted at stage %s: %s", job.id, state.stage, exc)
            self.board.publish(last_error=f"Job {job.id} interrupted: {exc}")
            return False
        if isinstance(exc, IpfsCredentialsRefused):
            # Keep this one at its stage (not a try used up) and stop taking jobs until the operator
            # fixes the credential; the next start resumes it.
            log.error("[Worker] Job %s kept at stage '%s': %s", job.id, state.stage, exc)
            self.board.publish(last_error=str(exc))
            raise exc
        if is_transient(exc) and state.attempts + 1 < MAX_TRANSIENT_ATTEMPTS:
            # IPFS is unreachable or failing right now: keep what is done, try this stage again later.
            state = self.advance(state, state.stage, attempts=state.attempts + 1)
            log.warning(
                "[Worker] Job %s paused after stage '%s' (try %d of %d): %s",
                job.id,
                state.stage,
                state.attempts,
                MAX_TRANSIENT_ATTEMPTS,
                exc,
            )
            self.board.publish(last_error=f"Job {job.id} waiting for IPFS: {exc}")
            return False
        self.fail(job.id, str(exc), telemetry.failure_reason(exc))
        remove_inputs(self.config.jobs_dir / job.id)
        return False

    def fail(self, job_id: str, reason: str, kind: str = "other") -> None:
        """Gives the job up for good; ``kind`` is the short reason metrics count it under."""
        log.error("[Worker] ✗ Job %s failed: %s", job_id, reason, extra={"job_id": job_id})
        METRICS.jobs_failed.labels(reason=kind).inc()
        self.journal.mark_failed(job_id, reason)
        self._remember(job_id, "failed", reason=reason)
        self.states.remove(job_id)
        self.board.count_failed(f"Job {job_id} failed: {reason}")

    # -- delivery ------------------------------------------------------------------------------------
    def deliver(self, job: Job, state: JobState) -> bool:
        """Reports an uploaded result (already in the journal); True when the backend accepted it."""
        remove_inputs(self.config.jobs_dir / job.id)
        assert state.result_cid is not None
        with telemetry.stage(job.id, "report") as report:
            report.finished = self.report(
                job.id, state.result_cid, quality_score(state.render or {}), job.reward
            )
        return report.finished

    def report(self, job_id: str, result_cid: str, quality: int, reward: int) -> bool:
        self.board.publish(state="reporting", progress=None)
        log.info("[Worker] Reporting the result of job %s to the backend", job_id)
        try:
            self.backend.complete(job_id, result_cid, quality)
        except BackendError as exc:
            if exc.status is None or exc.status >= 500 or exc.status == 401:
                # Kept in the journal's pending results and reported again on the next poll.
                log.error("[Worker] Could not report job %s yet (%s); will retry", job_id, exc)
                self.board.publish(last_error=f"Result of job {job_id} not reported yet: {exc}")
                return False
            return self._settle_refused_report(job_id, result_cid, exc)
        log.info("[Worker] Successfully submitted result for job %s", job_id)
        self._completed(job_id, reward)
        log.info("[Worker] ✓ Successfully completed job %s", job_id)
        return True

    def _settle_refused_report(self, job_id: str, result_cid: str, exc: BackendError) -> bool:
        """A 4xx on complete: maybe an earlier attempt already went through; ask the backend."""
        try:
            job = self.backend.get_job(job_id)
        except BackendError as lookup:
            log.error(
                "[Worker] Could not check job %s after the backend refused it (%s); will retry",
                job_id,
                lookup,
            )
            return False  # still in the journal's pending results
        mine = self.is_mine(job) or self.worker_id is None
        if job.status == "completed" and job.raw.get("full_result_cid") == result_cid and mine:
            log.info("[Worker] Job %s was already completed with this result", job_id)
            self._completed(job_id, job.reward)
            return True
        self.fail(job_id, f"the backend refused the result: {exc.detail}", "backend_refused")
        return False

    def _completed(self, job_id: str, reward: int) -> None:
        self.journal.mark_completed(job_id)
        METRICS.jobs_completed.inc()
        self._remember(job_id, "completed", reward=reward)
        self.states.remove(job_id)
        self.board.count_completed(reward)

    def _remember(self, job_id: str, outcome: str, *, reason: str | None = None, reward: int = 0) -> None:
        """Adds the job to the history, from its record and this run's tally. After the journal: the
        history is the operator's view, and a failure to write it loses no job (it is logged)."""
        state = self.states.load(job_id)
        render = (state.render if state else None) or {}
        tally = telemetry.take_tally(job_id)
        entry = HistoryEntry(
            job_id=job_id,
            outcome=outcome,
            reason=reason,
            creator=state.creator if state else None,
            asset_cid=state.asset_cid if state else None,
            result_cid=(state.result_cid if state else None) or self.journal.pending_results.get(job_id),
            reward=reward or (state.reward if state and outcome == "completed" else 0),
            blender=render.get("blender"),
            device=render.get("device"),
            stage_seconds=tally.seconds,
            bytes_down=tally.bytes_down,
            bytes_up=tally.bytes_up,
            receipt=state.receipt if state else None,
        )
        output = Path(render["output"]) if render.get("output") else None
        try:
            self.history.record(entry, output if outcome == "completed" else None)
        except (OSError, sqlite3.Error) as exc:
            log.warning("[Worker] Could not add job %s to the history: %s", job_id, exc)
        self.publish_history()

    def publish_history(self) -> None:
        """Puts the newest finished jobs and the earnings in the status (the panel shows them)."""
        try:
            recent, earnings = self.history.recent(HISTORY_SHOWN), self.history.earnings()
        except (OSError, sqlite3.Error) as exc:
            log.warning("[Worker] Could not read the job history: %s", exc)
            return
        self.board.publish(history=tuple(recent), earnings=earnings)

    # -- after a restart -----------------------------------------------------------------------------
    def report_pending_results(self) -> None:
        """Reports results that were uploaded but not yet accepted (after a crash or a backend outage)."""
        for job_id, cid in self.journal.pending_results.items():
            log.info("[Worker] Reporting earlier result of job %s: %s", job_id, cid)
            self.report(job_id, cid, 100, 0)

    def resume_unfinished(
        self,
        process: Process,
        taken: set[str],
        reserve: Callable[[str], bool] | None = None,
        release: Callable[[str], None] | None = None,
    ) -> bool:
        """Goes on with jobs this worker claimed before it was stopped or killed; True if one ran.

        Runs before every poll (a job paused while IPFS was down is tried again here). Results already
        uploaded are left to ``report_pending_results``. A job the backend no longer has assigned to
        this worker (its lease expired, or it finished) is let go, or recorded as completed when the
        backend shows it completed by this worker. ``taken`` collects the jobs resumed. With render
        slots, ``reserve`` holds a job for the calling slot first (False: another slot runs it, or no
        more may be taken) and ``release`` lets it go after.
        """
        resumed = False
        for state in self.states.unfinished():
            if self.stop.is_set():
                break
            if reserve is not None and not reserve(state.job_id):
                continue
            try:
                resumed = self._resume(state, process, taken) or resumed
            finally:
                if release is not None:
                    release(state.job_id)
        return resumed

    def _resume(self, state: JobState, process: Process, taken: set[str]) -> bool:
        """One unfinished job of ``resume_unfinished``; True when it ran to its end (not paused)."""
        if self.is_known(state.job_id):
            if self.journal.is_finished(state.job_id):
                self.states.remove(state.job_id)
            return False
        job = self.backend.get_job(state.job_id)
        if job.status == "completed" and self.is_mine(job):
            log.info("[Worker] Job %s was completed by this worker before the restart", job.id)
            self.journal.mark_completed(job.id)
            self.states.remove(job.id)
            return False
        if job.status != "assigned" or not self.is_mine(job):
            log.warning(
                "[Worker] Letting job %s go: it is %s and no longer assigned to this worker",
                job.id,
                job.status or "unknown",
            )
            self.states.remove(job.id)
            remove_inputs(self.config.jobs_dir / job.id)
            return False
        log.info("[Worker] Resuming job %s from stage '%s'", job.id, state.stage)
        self.board.publish(job_id=job.id, asset_cid=job.asset_cid)
        taken.add(state.job_id)
        process(job, RenderSettings(**state.settings), state)
        return not self.states.has(job.id)  # finished (completed or failed), not paused


def quality_score(render: dict) -> int:
    """The share of the requested samples actually rendered, 0-100 (100 when Blender reported none)."""
    done, total = render.get("samples_done"), render.get("samples_total")
    if done is None or not total:
        return 100
    return max(0, min(100, round(100 * done / total)))


def is_transient(exc: WorkerError) -> bool:
    """Failures that say nothing about the job itself: an IPFS node or gateway down, slow or erroring.

    Bytes that do not match the CID and malformed CIDs are the job's (or a source's) fault, not the
    network's, and are final.
    """
    return isinstance(exc, IpfsError) and not isinstance(exc, (ContentMismatch, InvalidCid))


def same_id(a: object, b: object) -> bool:
    """UUIDs compare equal however they are spelled (with or without dashes, any case)."""
    if a is None or b is None:
        return False
    return str(a).replace("-", "").lower() == str(b).replace("-", "").lower()


def render_record(result: RenderResult) -> dict:
    """A render as the job record keeps it (JSON)."""
    record = dataclasses.asdict(result)
    record["output"] = str(result.output)
    return record


def remove_inputs(job_dir: Path) -> None:
    """Drops the downloaded asset and unpacked scene; the render and its log stay for the operator."""
    for name in ("asset", "asset.blend", "asset.part", "scene", "home", "tmp"):
        path = job_dir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
