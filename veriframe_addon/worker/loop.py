"""The job loop: poll, claim, fetch, render, upload, report, remember.

A job's data flows down once: api (claim) -> ipfs (fetch, verify) -> asset -> render -> ipfs (upload)
-> journal (pending result) -> api (complete) -> journal (completed). Any one job's failure is logged
once, here, and the loop goes on; only a worker that cannot sign in at all stops.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import telemetry
from .api import LOST_RACE_STATUSES, BackendClient, Job
from .asset import prepare_blend
from .asset_cache import AssetCache
from .auth import AuthSession, StarkSigner
from .cid import parse_cid
from .cleanup import CLEANUP_EVERY_SECONDS, remove_old_job_folders
from .config import WorkerConfig
from .errors import (
    AssetTooLarge,
    AuthError,
    BackendError,
    Cancelled,
    ContentMismatch,
    InvalidCid,
    IpfsCredentialsRefused,
    IpfsError,
    JobSettingsError,
    RenderError,
    WorkerError,
)
from .ipfs import client_from_config, shown_url
from .job_settings import ENGINES, RenderSettings, parse_render_settings
from .job_state import JobState, JobStateStore
from .journal import JobJournal
from .limits import MIB
from .metrics import METRICS
from .render import CHILD_SCRIPT, BlenderRenderer, RenderResult, blender_version, find_blender, png_size
from .retry import RetryPolicy
from .sandbox import choose_sandbox
from .transport import JsonTransport

log = logging.getLogger("veriframe.worker")

UNVERIFIED_RECHECK_SECONDS = 60.0
MAX_TRANSIENT_ATTEMPTS = 5  # tries of one stage while IPFS fails, before the job is given up


@dataclass(frozen=True)
class WorkerStatus:
    """What an operator watches; a new, immutable snapshot after every change (the panel draws it).

    Frozen, because snapshots cross from the worker thread to Blender's main thread.
    """

    # stopped, signing-in, polling, idle, waiting (for the backend), claiming, downloading, rendering,
    # uploading, reporting
    state: str = "stopped"
    job_id: str | None = None
    asset_cid: str | None = None
    progress: float | None = None
    completed: int = 0
    failed: int = 0
    reward_total: int = 0
    verified: bool | None = None
    last_error: str | None = None
    last_render: Path | None = None
    last_result_cid: str | None = None
    sandbox: str | None = None  # how renders are contained, in words (set once Blender is found)
    blender: str | None = None  # the render Blender's version (set once it is found)


class Worker:
    """One node's worker. ``run()`` blocks; call it from a thread inside Blender, from main when headless."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        stop: threading.Event | None = None,
        on_status: Callable[[WorkerStatus], None] | None = None,
    ) -> None:
        self.config = config
        self.stop = stop or threading.Event()
        self.on_status = on_status
        self.status = WorkerStatus()
        self.journal = JobJournal(config.journal_path)
        self.states = JobStateStore(config.data_dir / "job-state")
        transport = JsonTransport(config.backend_url, policy=RetryPolicy(), stop=self.stop)
        self.auth = AuthSession(transport, config.worker_address, StarkSigner(config.private_key))
        self.backend = BackendClient(transport, self.auth)
        self.ipfs = client_from_config(config, stop=self.stop)
        self.assets = AssetCache(config.asset_cache_dir, config.asset_cache_mb * MIB)
        self.blender = find_blender(config.blender_path)
        self.renderer = BlenderRenderer(
            self.blender, config.render_timeout, config.shader_cache, limits=config.limits
        )
        self._sandbox_chosen = False
        self._skipped_unclaimed: set[str] = set()  # malformed jobs, logged once
        self._last_verified_check = 0.0
        self._blender_version = "unknown"
        self._worker_id: object = None  # the backend's id of this worker (a job's ``worker_id``)
        self._last_cleanup = 0.0
        self._taken: set[str] = set()  # jobs claimed or resumed in this run (--max-jobs counts these)

    # -- status ---------------------------------------------------------------------------------------
    def _publish(self, **changes: object) -> None:
        self.status = dataclasses.replace(self.status, **changes)
        if self.on_status is not None:
            self.on_status(self.status)

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Announces the setup, then registers and signs in (see ``announce`` and ``connect``)."""
        self.announce()
        self.connect()

    def announce(self) -> None:
        """Logs the setup and proves the render Blender starts; raises ``RenderError`` if it does not."""
        cfg = self.config
        log.info("[Worker] Starting VeriFrame Worker (API-based)")
        log.info("[Worker] Backend API: %s", cfg.backend_url)
        log.info("[Worker] Worker Address: %s", cfg.worker_address)
        pinata = cfg.ipfs_provider == "pinata"
        uploads = f"Pinata at {shown_url(cfg.pinata_api_url)}" if pinata else "the IPFS API"
        log.info(
            "[Worker] IPFS API: %s, gateway%s: %s (results go to %s)",
            shown_url(cfg.ipfs_api_url),
            "s" if len(cfg.ipfs_gateways) > 1 else "",
            ", ".join(shown_url(g) for g in cfg.ipfs_gateways),
            uploads,
        )
        self._blender_version = blender_version(self.blender)
        self._publish(blender=self._blender_version)
        kind = " (bpy module)" if self.blender.uses_bpy_module else ""
        log.info("[Worker] Blender found: %s%s", self._blender_version, kind)
        if not self._sandbox_chosen:
            sandbox, described = choose_sandbox(
                cfg.sandbox,
                self.blender.executable,
                self.blender.uses_bpy_module,
                CHILD_SCRIPT,
                self.blender.version_argv(),
            )
            self.renderer.sandbox = sandbox
            self._sandbox_chosen = True
            self._publish(sandbox=described)
            (log.info if sandbox is not None or cfg.sandbox == "off" else log.warning)(
                "[Worker] Renders are %s", described
            )

    def connect(self) -> None:
        """Registers (idempotently) and signs in; raises ``AuthError`` (bad key), ``BackendError`` (down)."""
        self._publish(state="signing-in")
        capabilities = {
            "engines": sorted(set(ENGINES.values())),
            "blender": self._blender_version,
            "output": "PNG",
        }
        hardware = {"cpu_count": os.cpu_count(), "machine": platform.machine(), "system": platform.system()}
        if self.backend.register(capabilities, hardware):
            log.info("[Worker] Registered worker %s with its public key", self.config.worker_address)
        worker = self.auth.sign_in()
        if isinstance(worker, dict):
            self._worker_id = worker.get("id")
        self._note_verification(worker)
        self._publish(last_error=None)

    def run(self, max_jobs: int | None = None, stop_after_job: threading.Event | None = None) -> int:
        """Polls and processes jobs until stopped or ``max_jobs`` were taken; returns jobs completed.

        ``self.stop`` ends the run at once (a running render is killed); ``stop_after_job`` lets the
        current job finish first. Either one also cuts the wait between polls short.
        """
        idle = stop_after_job or self.stop
        self.announce()
        self.clean_up_old_jobs()
        log.info("[Worker] Starting job polling loop (interval: %gs)", self.config.poll_interval)
        completed_before = self.status.completed
        consecutive_auth_failures = 0
        while not self.stop.is_set() and not idle.is_set():
            if max_jobs is not None and len(self._taken) >= max_jobs:
                break
            try:
                if not self.auth.signed_in:
                    self.connect()  # here, not before the loop: a backend that is down now may be up later
                self.report_pending_results()
                worked = self.resume_unfinished() or self.poll_once()
                consecutive_auth_failures = 0
            except AuthError as exc:
                consecutive_auth_failures += 1
                self._publish(state="idle", last_error=str(exc))
                log.error("[Worker] %s", exc)
                if consecutive_auth_failures >= 3:
                    raise
                worked = False
            except IpfsCredentialsRefused as exc:
                self._publish(
                    state="stopped", job_id=None, asset_cid=None, progress=None, last_error=str(exc)
                )
                raise
            except BackendError as exc:
                kept = len(self.journal.pending_results)
                note = f"; {kept} finished result(s) kept to deliver when it is back" if kept else ""
                self._publish(
                    state="waiting", progress=None, last_error=f"Waiting for the backend: {exc}{note}"
                )
                log.error("[Worker] Waiting for the backend (%s)%s", exc, note)
                worked = False
            if not worked:
                if time.monotonic() - self._last_cleanup >= CLEANUP_EVERY_SECONDS:
                    self.clean_up_old_jobs()
                if self.status.state != "waiting":
                    self._publish(state="idle", job_id=None, asset_cid=None, progress=None)
                idle.wait(self.config.poll_interval)
        self._publish(state="stopped", job_id=None, asset_cid=None, progress=None)
        return self.status.completed - completed_before

    def clean_up_old_jobs(self) -> None:
        """Removes finished jobs' folders older than ``KEEP_RESULTS_HOURS``; never an unfinished one's."""
        self._last_cleanup = time.monotonic()
        in_use = {state.job_id for state in self.states.unfinished()} | set(self.journal.pending_results)
        try:
            remove_old_job_folders(self.config.jobs_dir, self.config.keep_results_hours * 3600, in_use)
        except OSError as exc:  # housekeeping must never stop the worker
            log.warning("[Worker] Could not clean up old job folders: %s", exc)

    # -- polling --------------------------------------------------------------------------------------
    def poll_once(self) -> bool:
        """Looks for a job and processes the first one it can claim; True if a job was taken."""
        self._publish(state="polling")
        log.info("[Worker] Polling for jobs...")
        jobs = self.backend.available_jobs()
        log.info("[Worker] Found %d available jobs", len(jobs))
        if not jobs:
            self._maybe_warn_unverified()
        for job in jobs:
            if self.stop.is_set():
                return False
            settings = self._acceptable(job)
            if settings is None:
                continue
            if not self._claim(job):
                continue
            self._taken.add(job.id)
            self.process(job, settings)
            return True
        return False

    def _acceptable(self, job: Job) -> RenderSettings | None:
        """Settings for a job this worker may take, or None (journaled, malformed: skipped unclaimed)."""
        if self.journal.is_finished(job.id) or job.id in self.journal.pending_results:
            log.debug("[Worker] Skipping job %s: already in the journal", job.id)
            return None
        if job.id in self._skipped_unclaimed:
            return None
        try:
            parse_cid(job.asset_cid)
            return parse_render_settings(job.required_capabilities, self.config.limits.max_samples)
        except (InvalidCid, JobSettingsError) as exc:
            log.warning("[Worker] Skipping job %s without claiming it: %s", job.id, exc)
            self._skipped_unclaimed.add(job.id)
            return None

    def _claim(self, job: Job) -> bool:
        log.info("[Worker] Found job %s - Asset CID: %s", job.id, job.asset_cid)
        self._publish(state="claiming", job_id=job.id, asset_cid=job.asset_cid, progress=None)
        try:
            self.backend.assign(job.id)
        except BackendError as exc:
            if exc.status is not None and exc.status not in LOST_RACE_STATUSES:
                raise
            # An earlier try whose answer was lost (a cut connection) may have won the job for us.
            if not self._holds(job.id):
                if exc.status is None:
                    raise
                log.info("[Worker] Could not claim job %s: %s", job.id, exc.detail)
                return False
        log.info("[Worker] Successfully claimed job %s", job.id)
        return True

    def _holds(self, job_id: str) -> bool:
        """Whether the backend shows ``job_id`` assigned to this worker (False when it cannot tell)."""
        try:
            job = self.backend.get_job(job_id)
        except BackendError:
            return False
        return job.status == "assigned" and _same_id(job.raw.get("worker_id"), self._worker_id)

    # -- one job --------------------------------------------------------------------------------------
    def process(self, job: Job, settings: RenderSettings, state: JobState | None = None) -> bool:
        """Runs a claimed job to completion, from ``state`` when resuming; True when the backend accepted
        the result. Each finished stage is recorded (``job_state``) before the next begins."""
        job_dir = self.config.jobs_dir / job.id
        if state is None:
            state = JobState(job.id, "claimed", job.asset_cid, job.reward, settings.to_json())
            self.states.save(state)
        try:
            if not state.reached("downloaded"):
                with telemetry.stage(job.id, "download"):
                    blend = self._fetch(job, job_dir)
                state = state.at("downloaded", blend=str(blend))
                self.states.save(state)
            if not state.reached("rendered"):
                with telemetry.stage(job.id, "render"):
                    render = self._render(job, settings, job_dir, Path(str(state.blend)))
                state = state.at("rendered", render=_render_record(render))
                self.states.save(state)
            if not state.reached("uploaded"):
                output = Path(str((state.render or {})["output"]))
                png_size(output)  # a resumed render must still be there, and a PNG
                with telemetry.stage(job.id, "upload"):
                    self._publish(state="uploading", progress=None)
                    log.info("[Worker] Uploading render result to IPFS: %s", output)
                    result_cid = self.ipfs.upload(output)
                    log.info("[Worker] Upload successful. CID: %s", result_cid)
                METRICS.bytes_uploaded.inc(output.stat().st_size)
                self.journal.record_result(job.id, result_cid)
                state = state.at("uploaded", result_cid=result_cid)
                self.states.save(state)
                self._publish(last_render=output, last_result_cid=result_cid)
        except WorkerError as exc:
            if isinstance(exc, Cancelled) or self.stop.is_set():
                # Stopped by the operator: the job stays claimed, its record and files stay, and the next
                # start resumes it from the last finished stage.
                log.warning("[Worker] Job %s interrupted at stage %s: %s", job.id, state.stage, exc)
                self._publish(last_error=f"Job {job.id} interrupted: {exc}")
                return False
            if isinstance(exc, IpfsCredentialsRefused):
                # Every job would fail the same way: keep this one at its stage (not a try used up) and
                # stop taking jobs until the operator fixes the credential; the next start resumes it.
                log.error("[Worker] Job %s kept at stage '%s': %s", job.id, state.stage, exc)
                self._publish(last_error=str(exc))
                raise
            if _is_transient(exc) and state.attempts + 1 < MAX_TRANSIENT_ATTEMPTS:
                # IPFS is unreachable or failing right now: keep what is done, try this stage again later.
                state = state.at(state.stage, attempts=state.attempts + 1)
                self.states.save(state)
                log.warning(
                    "[Worker] Job %s paused after stage '%s' (try %d of %d): %s",
                    job.id,
                    state.stage,
                    state.attempts,
                    MAX_TRANSIENT_ATTEMPTS,
                    exc,
                )
                self._publish(last_error=f"Job {job.id} waiting for IPFS: {exc}")
                return False
            self._fail(job.id, str(exc), telemetry.failure_reason(exc))
            _remove_inputs(job_dir)
            return False
        _remove_inputs(job_dir)
        assert state.result_cid is not None
        with telemetry.stage(job.id, "report") as report:
            report.finished = self._report(
                job.id, state.result_cid, quality_score(state.render or {}), job.reward
            )
        return report.finished

    def _fetch(self, job: Job, job_dir: Path) -> Path:
        """Downloads and verifies the asset into a fresh job folder; returns the scene to render."""
        if job_dir.exists():
            shutil.rmtree(job_dir)
        job_dir.mkdir(parents=True)
        self._publish(state="downloading", progress=0.0)
        cached = self.assets.copy_to(job.asset_cid, job_dir / "asset")
        if cached is not None:
            cap = self.config.limits.max_asset_bytes
            if cached.size > cap:  # kept under an earlier, higher MAX_ASSET_MB
                raise AssetTooLarge(
                    f"the asset {job.asset_cid} is larger than {cap / MIB:.0f} MB (the cache holds "
                    f"{cached.size / MIB:.1f} MB; the cap is MAX_ASSET_MB)"
                )
            log.info(
                "[Worker] Asset CID %s is in the local cache (%d bytes, verified when first downloaded)",
                job.asset_cid,
                cached.size,
            )
            METRICS.asset_cache_hits.inc()
        else:
            self._download(job, job_dir / "asset")
        blend = prepare_blend(job_dir / "asset", job_dir / "scene", self.config.limits.max_unpacked_bytes)
        log.info("[Worker] Found blend file: %s", blend)
        return blend

    def _download(self, job: Job, dest: Path) -> None:
        log.info("[Worker] Downloading asset CID: %s", job.asset_cid)
        started = time.monotonic()

        def on_bytes(done: int, total: int | None) -> None:
            self._publish(progress=done / total if total else None)

        download = self.ipfs.download(job.asset_cid, dest, on_bytes)
        seconds = max(time.monotonic() - started, 1e-6)
        log.info(
            "[Worker] Downloaded and verified %d bytes from the %s (%.1f MB/s)",
            download.size,
            download.source,
            download.size / seconds / 1e6,
        )
        METRICS.bytes_downloaded.inc(download.size)
        self.assets.add(job.asset_cid, dest)  # before unpacking: the cache keeps the verified bytes

    def _render(self, job: Job, settings: RenderSettings, job_dir: Path, blend: Path) -> RenderResult:
        if not blend.is_file():
            raise RenderError(f"the scene {blend} of a resumed job is gone; it cannot be rendered")
        log.info(
            "[Worker] Validating and rendering %s (%s, frame %d, %s)",
            blend.name,
            settings.engine,
            settings.frame,
            "sandboxed" if self.renderer.sandboxed else "NOT sandboxed",
        )
        self._publish(state="rendering", progress=0.0)
        last_logged = [-1]

        def on_progress(fraction: float) -> None:
            self._publish(progress=fraction)
            step = int(fraction * 4)
            if step > last_logged[0]:
                last_logged[0] = step
                log.info("[Worker] Rendering job %s: %d%%", job.id, round(fraction * 100))

        result = self.renderer.render(blend, job_dir, settings, progress=on_progress, cancel=self.stop)
        _log_missing_files(job.id, result.missing_files)
        log.info(
            "[Worker] Render successful: %s (%dx%d, %s, %.1fs)",
            result.output,
            result.width,
            result.height,
            result.engine,
            result.seconds,
        )
        return result

    def _report(self, job_id: str, result_cid: str, quality: int, reward: int) -> bool:
        self._publish(state="reporting", progress=None)
        log.info("[Worker] Reporting the result of job %s to the backend", job_id)
        try:
            self.backend.complete(job_id, result_cid, quality)
        except BackendError as exc:
            if exc.status is None or exc.status >= 500 or exc.status == 401:
                # Kept in the journal's pending results and reported again on the next poll.
                log.error("[Worker] Could not report job %s yet (%s); will retry", job_id, exc)
                self._publish(last_error=f"Result of job {job_id} not reported yet: {exc}")
                return False
            return self._settle_refused_report(job_id, result_cid, exc)
        log.info("[Worker] Successfully submitted result for job %s", job_id)
        self.journal.mark_completed(job_id)
        METRICS.jobs_completed.inc()
        self.states.remove(job_id)
        self._publish(completed=self.status.completed + 1, reward_total=self.status.reward_total + reward)
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
        mine = _same_id(job.raw.get("worker_id"), self._worker_id) or self._worker_id is None
        if job.status == "completed" and job.raw.get("full_result_cid") == result_cid and mine:
            log.info("[Worker] Job %s was already completed with this result", job_id)
            self.journal.mark_completed(job_id)
            METRICS.jobs_completed.inc()
            self.states.remove(job_id)
            self._publish(
                completed=self.status.completed + 1, reward_total=self.status.reward_total + job.reward
            )
            return True
        self._fail(job_id, f"the backend refused the result: {exc.detail}", "backend_refused")
        return False

    def resume_unfinished(self) -> bool:
        """Goes on with jobs this worker claimed before it was stopped or killed; True if one ran.

        Runs before every poll (a job paused while IPFS was down is tried again here). Results already
        uploaded are left to ``report_pending_results``. A job
        the backend no longer has assigned to this worker (its lease expired, or it finished) is let go,
        or recorded as completed when the backend shows it completed by this worker.
        """
        resumed = False
        for state in self.states.unfinished():
            if self.stop.is_set():
                break
            if self.journal.is_finished(state.job_id) or state.job_id in self.journal.pending_results:
                if self.journal.is_finished(state.job_id):
                    self.states.remove(state.job_id)
                continue
            job = self.backend.get_job(state.job_id)
            mine = _same_id(job.raw.get("worker_id"), self._worker_id)
            if job.status == "completed" and mine:
                log.info("[Worker] Job %s was completed by this worker before the restart", job.id)
                self.journal.mark_completed(job.id)
                self.states.remove(job.id)
                continue
            if job.status != "assigned" or not mine:
                log.warning(
                    "[Worker] Letting job %s go: it is %s and no longer assigned to this worker",
                    job.id,
                    job.status or "unknown",
                )
                self.states.remove(job.id)
                _remove_inputs(self.config.jobs_dir / job.id)
                continue
            log.info("[Worker] Resuming job %s from stage '%s'", job.id, state.stage)
            self._publish(job_id=job.id, asset_cid=job.asset_cid)
            self._taken.add(state.job_id)
            self.process(job, RenderSettings(**state.settings), state)
            resumed = not self.states.has(job.id)  # finished (completed or failed), not paused
        return resumed

    def report_pending_results(self) -> None:
        """Reports results that were uploaded but not yet accepted (after a crash or a backend outage)."""
        for job_id, cid in self.journal.pending_results.items():
            log.info("[Worker] Reporting earlier result of job %s: %s", job_id, cid)
            self._report(job_id, cid, 100, 0)

    def _fail(self, job_id: str, reason: str, kind: str = "other") -> None:
        """Gives the job up for good; ``kind`` is the short reason metrics count it under."""
        log.error("[Worker] ✗ Job %s failed: %s", job_id, reason, extra={"job_id": job_id})
        METRICS.jobs_failed.inc(reason=kind)
        self.journal.mark_failed(job_id, reason)
        self.states.remove(job_id)
        self._publish(failed=self.status.failed + 1, last_error=f"Job {job_id} failed: {reason}")

    # -- verification notice --------------------------------------------------------------------------
    def _note_verification(self, worker: dict | None) -> None:
        verified = bool(worker.get("verified")) if isinstance(worker, dict) else None
        self._publish(verified=verified)
        if verified is False:
            log.warning(
                "[Worker] Worker %s is not verified yet: the backend offers no jobs until an admin "
                "verifies it",
                self.config.worker_address,
            )

    def _maybe_warn_unverified(self) -> None:
        if self.status.verified is not False:
            return
        now = time.monotonic()
        if now - self._last_verified_check < UNVERIFIED_RECHECK_SECONDS:
            return
        self._last_verified_check = now
        self._note_verification(self.backend.me())


def quality_score(render: dict) -> int:
    """The share of the requested samples actually rendered, 0-100 (100 when Blender reported none)."""
    done, total = render.get("samples_done"), render.get("samples_total")
    if done is None or not total:
        return 100
    return max(0, min(100, round(100 * done / total)))


def _is_transient(exc: WorkerError) -> bool:
    """Failures that say nothing about the job itself: an IPFS node or gateway down, slow or erroring.

    Bytes that do not match the CID and malformed CIDs are the job's (or a source's) fault, not the
    network's, and are final.
    """
    return isinstance(exc, IpfsError) and not isinstance(exc, (ContentMismatch, InvalidCid))


def _same_id(a: object, b: object) -> bool:
    """UUIDs compare equal however they are spelled (with or without dashes, any case)."""
    if a is None or b is None:
        return False
    return str(a).replace("-", "").lower() == str(b).replace("-", "").lower()


MISSING_FILES_LOGGED = 20  # one line each; a scene missing more gets a count after these


def _log_missing_files(job_id: str, missing: tuple[str, ...]) -> None:
    """One warning per file the scene names that does not exist here; the job record keeps the list.

    Rendering without them is what Blender itself does (a missing texture shows pink): the creator
    forgot to pack it, or it sits outside the job folder where the sandbox hides it.
    """
    for entry in missing[:MISSING_FILES_LOGGED]:
        log.warning(
            "[Worker] Job %s: the scene names a file that does not exist here; rendered without it: %s",
            job_id,
            entry,
            extra={"job_id": job_id},
        )
    if len(missing) > MISSING_FILES_LOGGED:
        log.warning(
            "[Worker] Job %s: and %d more missing files (the job record lists them all)",
            job_id,
            len(missing) - MISSING_FILES_LOGGED,
            extra={"job_id": job_id},
        )


def _render_record(result: RenderResult) -> dict:
    """A render as the job record keeps it (JSON)."""
    record = dataclasses.asdict(result)
    record["output"] = str(result.output)
    return record


def _remove_inputs(job_dir: Path) -> None:
    """Drops the downloaded asset and unpacked scene; the render and its log stay for the operator."""
    for name in ("asset", "asset.blend", "asset.part", "scene", "home", "tmp"):
        path = job_dir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
