"""The worker's loop: sign in, poll, claim, hand each job to its flow, wait, and go on.

A job's data flows down once: backend (claim) -> ipfs (fetch, verify) -> scene (unpack) -> render ->
ipfs (upload) -> state (pending result) -> backend (complete) -> state (completed). ``job.py`` holds
that journey and ``bookkeeping.py`` what must survive a restart; this module decides which job runs
next. Any one job's failure is logged once and the loop goes on; only a worker that cannot sign in at
all stops.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from .backend.api import LOST_RACE_STATUSES, BackendClient, Job
from .backend.auth import AuthSession, StarkSigner
from .bookkeeping import Bookkeeper
from .config import WorkerConfig
from .errors import AuthError, BackendError, InvalidCid, IpfsCredentialsRefused, JobSettingsError
from .ipfs.asset_cache import AssetCache
from .ipfs.cid import parse_cid
from .ipfs.client import IpfsClient, client_from_config, shown_url
from .ipfs.prefetch import Prefetcher
from .job import JobFlow
from .limits import MIB
from .net.retry import RetryPolicy
from .net.transport import JsonTransport
from .policy.job_filters import normalise_address
from .policy.schedule import describe_moment
from .render.hardware import cpu_model, ram_gb
from .render.inventory import BlenderInventory, commands_from
from .render.machine_load import CpuLoad
from .render.standby import wait_for_reapers
from .scene.blend_header import BlendVersion
from .scene.job_settings import ENGINES, RenderSettings, parse_render_settings
from .state.cleanup import CLEANUP_EVERY_SECONDS, remove_old_job_folders
from .state.job_records import JobState, JobStateStore
from .state.journal import JobJournal
from .state.pause_flag import PauseFlag
from .status import BackendFigures, StatusBoard, WorkerStatus

log = logging.getLogger("veriframe.worker")

UNVERIFIED_RECHECK_SECONDS = 60.0
HELD_STATES = ("paused", "sleeping", "busy")
HOLD_CHECK_SECONDS = 1.0  # while paused or sleeping, how often the flag and the clock are looked at
ACTIVE_RETRY_SECONDS = 30.0  # after the backend could not be told active/inactive


class Worker:
    """One node's worker. ``run()`` blocks; call it from a thread inside Blender, from main when headless."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        stop: threading.Event | None = None,
        on_status: Callable[[WorkerStatus], None] | None = None,
        user_quiet_seconds: Callable[[], float | None] | None = None,
    ) -> None:
        self.config = config
        self.stop = stop or threading.Event()
        self.board = StatusBoard(on_status)
        transport = JsonTransport(config.backend_url, policy=RetryPolicy(), stop=self.stop)
        signer = StarkSigner(config.private_key)
        self.auth = AuthSession(transport, config.worker_address, signer)
        self.backend = BackendClient(transport, self.auth)
        self.books = Bookkeeper(config, self.backend, self.board, self.stop)
        commands_from(config.blender_path)  # a malformed BLENDER_PATH fails here, before any network
        self._signer = signer
        self.flow = self._new_flow(self.find_blenders)
        self._blenders: BlenderInventory | None = None
        self.filters = config.filters.with_blocklist(self.blocklist_path)
        self._skipped_unclaimed: set[str] = set()  # malformed or filtered-out jobs, logged once
        self._last_verified_check = 0.0
        self._last_cleanup = 0.0
        self._taken: set[str] = set()  # jobs claimed or resumed in this run (--max-jobs counts these)
        self._block_lock = threading.Lock()
        # Render slots (RENDER_SLOTS): the flows, one per slot (slot 0's is ``self.flow``), the jobs a
        # slot holds now (never two slots on one job), and who connects or reports for all of them.
        self.flows: list[JobFlow] = [self.flow]
        self._in_flight: set[str] = set()
        self._slots_lock = threading.Lock()
        self._connect_lock = threading.Lock()
        self._report_lock = threading.Lock()
        self._max_jobs: int | None = None
        self.pause_flag = PauseFlag(config.data_dir)
        self._backend_active: bool | None = None  # what the backend was last told (None: nothing yet)
        self._active_retry_at = 0.0
        self._cpu = CpuLoad()
        if config.busy_cpu_share is not None:
            self._cpu.share()  # primed now: the first check before a job then has a real sample
        # Inside Blender: seconds since the operator last used it (the panel's timer sees the events).
        self.user_quiet_seconds = user_quiet_seconds

    def _new_flow(self, blenders: Callable[[], BlenderInventory]) -> JobFlow:
        """A job flow (one per render slot) with its own IPFS client, standby and prefetch."""
        config = self.config
        flow = JobFlow(
            config,
            ipfs=client_from_config(config, stop=self.stop),
            assets=AssetCache(config.asset_cache_dir, config.asset_cache_mb * MIB),
            blenders=blenders,
            books=self.books,
            board=self.board,
            stop=self.stop,
            signer=self._signer,
        )
        if config.prefetch:
            flow.prefetcher = Prefetcher(
                flow.assets, self.next_job, lambda cancel: client_from_config(config, stop=cancel)
            )
        return flow

    # -- what the rest of the program reads ----------------------------------------------------------
    @property
    def status(self) -> WorkerStatus:
        return self.board.current

    @property
    def journal(self) -> JobJournal:
        return self.books.journal

    @property
    def states(self) -> JobStateStore:
        return self.books.states

    @property
    def ipfs(self) -> IpfsClient:
        return self.flow.ipfs

    @property
    def blocklist_path(self) -> Path:
        """Creators the operator blocked from the panel, one address a line (BLOCKED_CREATORS adds more)."""
        return self.config.data_dir / "blocked_creators.txt"

    def block_creator(self, creator: str) -> str:
        """Never takes a job from ``creator`` again, from now on and after restarts; returns its address.

        Safe from any thread: the filters are replaced whole, and the file gets one appended line.
        """
        with self._block_lock:
            self.filters = self.filters.blocking(creator)
            address = normalise_address(creator)
            self.config.data_dir.mkdir(parents=True, exist_ok=True)
            with self.blocklist_path.open("a", encoding="utf-8") as file:
                file.write(f"{address}\n")
        self._skipped_unclaimed.clear()  # earlier decisions are made again with the new list
        log.info("[Worker] Jobs from creator %s will not be taken (blocked by the operator)", address)
        return str(address)

    def process(self, job: Job, settings: RenderSettings, state: JobState | None = None) -> bool:
        """Runs a claimed job to completion (see ``JobFlow.process``)."""
        return self.flow.process(job, settings, state)

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
        self.find_blenders()

    def find_blenders(self) -> BlenderInventory:
        """Probes every Blender ``BLENDER_PATH`` names, once; raises ``RenderError`` when none renders."""
        if self._blenders is not None:
            return self._blenders
        cfg = self.config
        inventory, failures = BlenderInventory.from_config(cfg)
        for failure in failures:
            log.warning("[Worker] Left out a Blender that does not work: %s", failure)
        several = len(inventory.blenders) > 1
        for blender in inventory.blenders:
            kind = " (bpy module)" if blender.command.uses_bpy_module else ""
            log.info("[Worker] Blender found: %s%s at %s", blender.label, kind, blender.command.executable)
            where = f" in Blender {blender.short}" if several else ""
            sandboxed = blender.sandbox is not None or cfg.sandbox == "off"
            (log.info if sandboxed else log.warning)("[Worker] Renders%s are %s", where, blender.contained)
            if blender.device.is_gpu:
                log.info("[Worker] Cycles renders%s on %s", where, blender.device.describe())
            else:
                why = (
                    "RENDER_DEVICE=CPU"
                    if cfg.render_device == "CPU"
                    else "no GPU that Blender can use was found"
                )
                log.info("[Worker] Cycles renders%s on the CPU (%s)", where, why)
        weakest = next((b for b in inventory.blenders if b.sandbox is None), inventory.blenders[0])
        self.board.publish(blender=", ".join(b.label for b in inventory.blenders), sandbox=weakest.contained)
        self._blenders = inventory
        return inventory

    def connect(self) -> None:
        """Registers (idempotently) and signs in; raises ``AuthError`` (bad key), ``BackendError`` (down)."""
        self.board.publish(state="signing-in")
        capabilities, hardware = self.advertised()
        registered = self.backend.register(capabilities, hardware)
        if registered:
            log.info("[Worker] Registered worker %s with its public key", self.config.worker_address)
        worker = self.auth.sign_in()
        if isinstance(worker, dict):
            self.books.worker_id = worker.get("id")
            if isinstance(worker.get("active"), bool):  # e.g. False after a crash while paused
                self._backend_active = worker["active"]
        self.board.publish(backend_figures=BackendFigures.from_record(worker))
        if not registered:
            self._update_record(capabilities, hardware)
        self._note_verification(worker)
        self.board.publish(last_error=None)

    def advertised(self) -> tuple[dict, dict]:
        """What the backend's record of this worker says it can do (``capabilities``) and is
        (``hardware_specs``): engines, Blender versions, devices; CPU, cores, RAM and GPUs."""
        blenders = self.find_blenders().blenders
        gpus = {device.id: device.to_json() for b in blenders for device in b.devices}
        capabilities = {
            "engines": sorted(set(ENGINES.values())),
            "blender": blenders[-1].label,  # the newest; every one below
            "blender_versions": [blender.short for blender in blenders],
            "render_devices": sorted({blender.device.type for blender in blenders}),
            "devices": list(gpus.values()),
            "output": "PNG",
        }
        hardware = {
            "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(),
            "ram_gb": ram_gb(),
            "gpus": list(gpus.values()),
            "machine": platform.machine(),
            "system": platform.system(),
        }
        return capabilities, hardware

    def _update_record(self, capabilities: dict, hardware: dict) -> None:
        """Tells the backend when what this node can do changed since it registered (a Blender or GPU
        added or removed): ``PUT /workers/{address}``, only when the stored record differs."""
        wanted = {
            "capabilities": json.dumps(capabilities, sort_keys=True),
            "hardware_specs": json.dumps(hardware, sort_keys=True),
        }
        try:
            stored = self.backend.me()
            if all(_same_json(stored.get(key), value) for key, value in wanted.items()):
                return
            self.backend.update(**wanted)
        except BackendError as exc:  # jobs still flow on the old record; say so and go on
            log.warning("[Worker] Could not update this worker's record on the backend: %s", exc)
            return
        log.info(
            "[Worker] Updated this worker's record on the backend: Blender %s; renders on %s",
            ", ".join(capabilities["blender_versions"]),
            ", ".join(capabilities["render_devices"]),
        )

    def run(self, max_jobs: int | None = None, stop_after_job: threading.Event | None = None) -> int:
        """Polls and processes jobs until stopped or ``max_jobs`` were taken; returns jobs completed.

        ``self.stop`` ends the run at once (a running render is killed); ``stop_after_job`` lets the
        jobs in hand finish first. Either one also cuts the wait between polls short. With several
        render slots each slot runs this loop in a thread of its own, on its own device.
        """
        idle = stop_after_job or self.stop
        self._max_jobs = max_jobs

        def more_jobs() -> bool:  # whether a job may follow the one in hand (a standby is worth it)
            return not (self._all_taken() or self.stop.is_set() or idle.is_set())

        self.announce()
        self._set_up_slots()
        for flow in self.flows:
            flow.more_jobs = more_jobs
        self.books.publish_history()
        self.flow.standby.remove_stale()
        self.clean_up_old_jobs()
        log.info("[Worker] Starting job polling loop (interval: %gs)", self.config.poll_interval)
        completed_before = self.status.completed
        try:
            if len(self.flows) == 1:
                self._loop(self.flow, idle)
            else:
                self._run_slots(idle)
        finally:
            for flow in self.flows:
                flow.finisher.wait_quietly()  # a result on its way is delivered before the worker stops
                flow.standby.close()
                if flow.prefetcher is not None:
                    flow.prefetcher.cancel()
            wait_for_reapers()  # the last renders' Blenders are gone before the worker says it stopped
        self.board.publish(state="stopped", job_id=None, asset_cid=None, progress=None)
        return self.status.completed - completed_before

    def _set_up_slots(self) -> None:
        """One flow per render slot (``RENDER_SLOTS``), each with its share of the devices."""
        inventory = self.find_blenders()
        count = inventory.slot_count(self.config.render_slots)
        if len(self.flows) == count:
            return
        slots = [inventory.for_slot(i, count) for i in range(count)]
        self.flow.blenders = lambda: slots[0]
        self.flows = [self.flow] + [self._new_flow(lambda s=slot: s) for slot in slots[1:]]
        described = [_slot_words(slot) for slot in slots]
        if count > 1:
            log.info("[Worker] %d render slots: %s", count, "; ".join(described))
        self.board.set_slots(described)

    def _run_slots(self, idle: threading.Event) -> None:
        """Each slot's loop in its own thread; the first error that stops one stops them all."""
        errors: list[BaseException] = []

        def slot_main(index: int) -> None:
            self.board.bind_slot(index)
            try:
                self._loop(self.flows[index], idle)
            except BaseException as exc:  # handed to the caller, which raises it
                errors.append(exc)
                self.stop.set()
            finally:
                self.board.publish(state="stopped", job_id=None, asset_cid=None, progress=None)

        threads = [
            threading.Thread(target=slot_main, args=(i,), name=f"veriframe-slot-{i}", daemon=True)
            for i in range(len(self.flows))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
        if errors:
            raise errors[0]

    def _loop(self, flow: JobFlow, idle: threading.Event) -> None:
        consecutive_auth_failures = 0
        first_slot = flow is self.flow  # housekeeping is one slot's job
        while not self.stop.is_set() and not idle.is_set():
            if self._all_taken():
                break
            try:
                flow.finisher.check()  # what finishing the last job raised, as if it had been in line
                if not self.auth.signed_in:
                    with self._connect_lock:  # one sign-in for every slot
                        if not self.auth.signed_in:
                            self.connect()  # here: a backend that is down now may be up later
                if self._report_lock.acquire(blocking=False):
                    try:
                        self.books.report_pending_results()
                    finally:
                        self._report_lock.release()
                worked = self.books.resume_unfinished(flow.process, self._taken, self._reserve, self._release)
                if not worked and self._held(flow):
                    flow.standby.close()  # held: no Blender waits, the machine is the operator's
                elif not worked:
                    flow.prepare_standby()  # idle: the next render's Blender starts before its job
                    worked = self.poll_once(flow)
                consecutive_auth_failures = 0
            except AuthError as exc:
                consecutive_auth_failures += 1
                self.board.publish(state="idle", last_error=str(exc))
                log.error("[Worker] %s", exc)
                if consecutive_auth_failures >= 3:
                    raise
                worked = False
            except IpfsCredentialsRefused as exc:
                self.board.publish(
                    state="stopped", job_id=None, asset_cid=None, progress=None, last_error=str(exc)
                )
                raise
            except BackendError as exc:
                kept = len(self.journal.pending_results)
                note = f"; {kept} finished result(s) kept to deliver when it is back" if kept else ""
                self.board.publish(
                    state="waiting", progress=None, last_error=f"Waiting for the backend: {exc}{note}"
                )
                log.error("[Worker] Waiting for the backend (%s)%s", exc, note)
                worked = False
            if not worked:
                if first_slot and time.monotonic() - self._last_cleanup >= CLEANUP_EVERY_SECONDS:
                    self.clean_up_old_jobs()
                if self.status.state not in ("waiting", *HELD_STATES):
                    self.board.publish(state="idle", job_id=None, asset_cid=None, progress=None)
                self._wait(idle)
        flow.finisher.wait()  # the last result is delivered (or what stopped it raised) before the slot ends

    # -- one job per slot ----------------------------------------------------------------------------
    def _all_taken(self) -> bool:
        """Whether ``max_jobs`` jobs are taken or held by a slot (no slot takes another)."""
        with self._slots_lock:
            return self._max_jobs is not None and len(self._taken | self._in_flight) >= self._max_jobs

    def _reserve(self, job_id: str) -> bool:
        """Holds ``job_id`` for the calling slot: False when another slot holds it, or ``max_jobs`` are
        taken. Held before its claim or resume, let go after: two slots never run one job."""
        with self._slots_lock:
            if job_id in self._in_flight:
                return False
            counted = self._taken | self._in_flight
            if self._max_jobs is not None and job_id not in self._taken and len(counted) >= self._max_jobs:
                return False
            self._in_flight.add(job_id)
            return True

    def _release(self, job_id: str) -> None:
        with self._slots_lock:
            self._in_flight.discard(job_id)

    def _wait(self, idle: threading.Event) -> None:
        """The pause between polls; held, it looks again each second, so Resume acts at once."""
        seconds = self.config.poll_interval
        if self.status.state in HELD_STATES:
            seconds = min(seconds, HOLD_CHECK_SECONDS)
        idle.wait(seconds)

    # -- pause and schedule ---------------------------------------------------------------------------
    def _held(self, flow: JobFlow) -> bool:
        """Whether new jobs wait: paused by the operator, outside the schedule, or (``PAUSE_WHEN_BUSY``)
        the computer busy with its owner's work. Says so once per change, once the slot's last result is
        delivered (the job in hand finishes first); while paused or sleeping the backend is told this
        worker is inactive (active again after)."""
        state, reason = self._hold_reason()
        if reason is not None:
            flow.finisher.wait()
        if reason != self.status.held:
            if reason is not None:
                log.info("[Worker] No new jobs: %s", reason)
                self.board.publish(state=state, held=reason, job_id=None, asset_cid=None, progress=None)
            else:
                log.info("[Worker] Taking jobs again")
                self.board.publish(held=None)
        if state != "busy":  # busy comes and goes by the minute: not worth the backend's record
            self._tell_backend_active(reason is None)
        return reason is not None

    def _hold_reason(self) -> tuple[str | None, str | None]:
        """(state, reason) when no new job may start now, else (None, None)."""
        if self.pause_flag.is_set():
            return "paused", "paused by the operator (resume to take jobs again)"
        schedule = self.config.schedule
        if schedule is not None:
            now = datetime.now().astimezone()
            if not schedule.is_open(now):
                until = describe_moment(schedule.next_change(now), now)
                return "sleeping", f"outside the schedule ({schedule.text}) until {until}"
        if self.config.busy_cpu_share is None:
            return None, None
        idle_minutes = self.config.busy_idle_minutes
        quiet = self.user_quiet_seconds() if self.user_quiet_seconds is not None else None
        if quiet is not None and quiet < idle_minutes * 60:
            return (
                "busy",
                f"you are using Blender (a job starts after {idle_minutes:g} min without input)",
            )
        share = self._cpu.share()
        if share is not None and share > self.config.busy_cpu_share:
            # Worded by the threshold, not the share: one log line per busy spell, not one per sample.
            return "busy", (
                f"this computer is busy (other programs use over {self.config.busy_cpu_share:.0%} of the CPU)"
            )
        if share is None and self.status.state == "busy":  # no new sample yet: stay as we were
            return "busy", self.status.held
        return None, None

    def _tell_backend_active(self, active: bool) -> None:
        """``PUT /workers/{address}`` with ``active``; a backend that is down now hears it later (tried
        again after ``ACTIVE_RETRY_SECONDS``, so a held worker does not ask every second)."""
        if self._backend_active == active or time.monotonic() < self._active_retry_at:
            return
        try:
            self.backend.update(active=active)
        except BackendError as exc:
            self._active_retry_at = time.monotonic() + ACTIVE_RETRY_SECONDS
            log.warning("[Worker] Could not tell the backend this worker is %s: %s", _active(active), exc)
            return
        self._backend_active = active
        log.info("[Worker] Told the backend this worker is %s", _active(active))

    def clean_up_old_jobs(self) -> None:
        """Removes finished jobs' folders older than ``KEEP_RESULTS_HOURS``; never an unfinished one's."""
        self._last_cleanup = time.monotonic()
        in_use = {state.job_id for state in self.states.unfinished()} | set(self.journal.pending_results)
        try:
            remove_old_job_folders(self.config.jobs_dir, self.config.keep_results_hours * 3600, in_use)
        except OSError as exc:  # housekeeping must never stop the worker
            log.warning("[Worker] Could not clean up old job folders: %s", exc)

    # -- polling --------------------------------------------------------------------------------------
    def poll_once(self, flow: JobFlow | None = None) -> bool:
        """Looks for a job and processes the first one it can claim (in ``flow``, a slot's; default
        the first); True if a job was taken."""
        flow = flow or self.flow
        self.board.publish(state="polling")
        log.info("[Worker] Polling for jobs...")
        jobs = self.backend.available_jobs()
        log.info("[Worker] Found %d available jobs", len(jobs))
        if not jobs:
            self._maybe_warn_unverified()
        for job in jobs:
            if self.stop.is_set():
                return False
            if job.id in self._in_flight:  # another slot's
                continue
            settings = self._acceptable(job)
            if settings is None or not self._reserve(job.id):
                continue
            processing = False
            try:
                if not self._claim(job):
                    continue
                with self._slots_lock:
                    self._taken.add(job.id)
                processing = True  # from here the job's end lets go of it (``_finished``)
                flow.process(job, settings, done=functools.partial(self._finished, job.id))
                return True
            finally:
                if not processing:
                    self._release(job.id)
        return False

    def _finished(self, job_id: str, accepted: bool) -> None:
        """A taken job's end, in its slot or on the slot's finisher: the slot lets go of it."""
        try:
            if accepted:
                self._refresh_figures()
        finally:
            self._release(job_id)

    def next_job(self, running_job: str) -> Job | None:
        """The first available job this worker would take after ``running_job`` (for the prefetch;
        nothing is claimed). Called from the prefetch thread: it only reads."""
        for job in self.backend.available_jobs():
            if job.id == running_job or job.id in self._taken or job.id in self._in_flight:
                continue
            if self._acceptable(job) is not None:
                return job
        return None

    def _acceptable(self, job: Job) -> RenderSettings | None:
        """Settings for a job this worker may take, or None (journaled, malformed: skipped unclaimed)."""
        if self.books.is_known(job.id):
            log.debug("[Worker] Skipping job %s: already in the journal", job.id)
            return None
        if job.id in self._skipped_unclaimed:
            return None
        try:
            parse_cid(job.asset_cid)
            settings = parse_render_settings(job.required_capabilities, self.config.limits.max_samples)
            self._check_release(settings)
            refusal = self.filters.refusal(reward=job.reward, engine=settings.engine, creator=job.creator)
            if refusal is not None:
                raise JobSettingsError(refusal)
            return settings
        except (InvalidCid, JobSettingsError) as exc:
            log.warning("[Worker] Skipping job %s without claiming it: %s", job.id, exc)
            self._skipped_unclaimed.add(job.id)
            return None

    def _check_release(self, settings: RenderSettings) -> None:
        """A job this node cannot honour is skipped before it is claimed: it names a Blender release
        this node lacks, or needs a GPU where this node's Cycles renders on the CPU."""
        blenders = self.find_blenders()
        wanted = settings.blender_version
        if wanted is not None and blenders.for_release(BlendVersion.parse(wanted)) is None:
            raise JobSettingsError(f"it asks for Blender {wanted} and this node has {blenders.releases()}")
        needs_gpu = settings.device == "GPU" or settings.min_gpu_memory_gb is not None
        if needs_gpu and not any(blender.device.is_gpu for blender in blenders.blenders):
            raise JobSettingsError("it needs a GPU and this node's Cycles renders on the CPU")

    def _claim(self, job: Job) -> bool:
        log.info("[Worker] Found job %s - Asset CID: %s", job.id, job.asset_cid)
        self.board.publish(
            state="claiming", job_id=job.id, asset_cid=job.asset_cid, creator=job.creator, progress=None
        )
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
        return job.status == "assigned" and self.books.is_mine(job)

    def _refresh_figures(self) -> None:
        """The backend's earnings, jobs and reputation for this worker, after it accepted a result."""
        try:
            self.board.publish(backend_figures=BackendFigures.from_record(self.backend.me()))
        except BackendError as exc:  # only the panel's figures wait: say so and go on
            log.debug("[Worker] Could not read this worker's record from the backend: %s", exc)

    # -- verification notice --------------------------------------------------------------------------
    def _note_verification(self, worker: dict | None) -> None:
        verified = bool(worker.get("verified")) if isinstance(worker, dict) else None
        self.board.publish(verified=verified)
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


def _slot_words(inventory: BlenderInventory) -> str:
    """What one render slot renders on, e.g. ``CUDA NVIDIA RTX 4090 (CUDA_0)`` or ``CPU, 1 thread``."""
    newest = inventory.blenders[-1]
    threads = inventory.renderer_for(newest).cpu.threads
    cpu = f"CPU, {threads} thread{'s' if threads != 1 else ''}" if threads else "CPU"
    return newest.device.describe() if newest.device.is_gpu else cpu


def _active(active: bool) -> str:
    return "active" if active else "inactive"


def _same_json(stored: object, wanted: str) -> bool:
    """Whether a stored JSON string says the same as ``wanted`` (however it was spaced or ordered)."""
    try:
        return isinstance(stored, str) and json.loads(stored) == json.loads(wanted)
    except ValueError:
        return False
