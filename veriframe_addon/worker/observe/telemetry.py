"""Which job and stage a log line belongs to, how long each stage took, and why a job failed (in short).

A worker handles one job at a time on one thread (the main thread headless, a worker thread inside
Blender), so context variables carry the job id and stage to every log line emitted meanwhile, deep in
the IPFS client or the renderer, without threading them through every call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from ..errors import AssetError, BackendError, IpfsError, JobSettingsError, RenderError, SceneRejected
from .metrics import METRICS, WorkerMetrics

log = logging.getLogger("veriframe.worker")

_job_id: ContextVar[str | None] = ContextVar("veriframe_job_id", default=None)
_stage: ContextVar[str | None] = ContextVar("veriframe_stage", default=None)


def current() -> dict[str, str]:
    """The job id and stage of the code running now; empty outside a job."""
    context = {}
    job_id, stage_name = _job_id.get(), _stage.get()
    if job_id is not None:
        context["job_id"] = job_id
    if stage_name is not None:
        context["stage"] = stage_name
    return context


@dataclass
class JobTally:
    """Seconds per stage and bytes moved for one job in this process (the history's figures)."""

    seconds: dict[str, float] = field(default_factory=dict)
    bytes_down: int = 0
    bytes_up: int = 0
    running: dict[str, float] = field(default_factory=dict)  # stages under way: their monotonic start


_tallies: dict[str, JobTally] = {}


def tally(job_id: str) -> JobTally:
    """The running tally of ``job_id`` (created on first use)."""
    return _tallies.setdefault(job_id, JobTally())


def take_tally(job_id: str) -> JobTally:
    """The tally of a job that ended, forgotten here: it goes into the history once. A stage still
    under way (the report, whose success ends the job) counts with its time so far."""
    taken = _tallies.pop(job_id, JobTally())
    for name, started in taken.running.items():
        taken.seconds[name] = round(taken.seconds.get(name, 0.0) + time.monotonic() - started, 3)
    taken.running.clear()
    return taken


@dataclass
class StageRun:
    job_id: str
    name: str
    # The body sets False when it returned without finishing the stage (a result kept to report later).
    finished: bool = True


@contextmanager
def stage(job_id: str, name: str, metrics: WorkerMetrics = METRICS) -> Iterator[StageRun]:
    """Runs one stage of a job: its log lines carry ``job_id`` and ``stage``; when it finishes, its
    duration goes to ``veriframe_stage_seconds`` and one line says how long it took.

    A stage that raises (or is marked not finished) is not observed: its time says nothing about how
    long the stage takes. The time it ran is still logged, and an exception goes on unchanged.
    """
    job_token, stage_token = _job_id.set(job_id), _stage.set(name)
    run = StageRun(job_id, name)
    started = time.monotonic()
    tally(job_id).running[name] = started
    returned = False
    try:
        yield run
        returned = True
    finally:
        seconds = time.monotonic() - started
        if job_id in _tallies and _tallies[job_id].running.pop(name, None) is not None:
            times = _tallies[job_id].seconds
            times[name] = round(times.get(name, 0.0) + seconds, 3)
        extra = {"job_id": job_id, "stage": name, "duration": round(seconds, 3)}
        if returned and run.finished:
            metrics.stage_seconds.labels(stage=name).observe(seconds)
            log.info("[Worker] Stage %s of job %s took %.2f s", name, job_id, seconds, extra=extra)
        else:
            log.info("[Worker] Stage %s of job %s stopped after %.2f s", name, job_id, seconds, extra=extra)
        _stage.reset(stage_token)
        _job_id.reset(job_token)


def failure_reason(exc: BaseException) -> str:
    """The ``reason`` label of ``veriframe_jobs_failed_total`` for the error that ended a job."""
    if isinstance(exc, SceneRejected):
        return "scene_rejected"
    if isinstance(exc, RenderError):
        return "render_error"
    if isinstance(exc, (AssetError, JobSettingsError)):
        return "asset_error"
    if isinstance(exc, IpfsError):
        return "ipfs"
    if isinstance(exc, BackendError):
        return "backend_refused"
    return "other"
