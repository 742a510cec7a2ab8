"""Running a ``Worker`` in a background thread and handing its news to whoever drives the UI.

Blender's data may only be touched from the main thread, so the worker thread never calls back into
the UI: it puts status snapshots and log lines into a queue, and the UI's timer drains that queue on
the main thread. Everything here is plain Python, so the hand-off is tested without Blender.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .config import WorkerConfig
from .errors import WorkerError
from .loop import Worker
from .observe.logs import Redactor, SecretFilter, config_file_handler, secret_values
from .state.pause_flag import PauseFlag
from .status import WorkerStatus

log = logging.getLogger("veriframe.worker")

LOG_LINES_KEPT = 200


@dataclass(frozen=True)
class LogLine:
    level: str
    text: str


class _QueueLogHandler(logging.Handler):
    """Copies the worker's log records into the UI queue (formatting happens here, in the thread)."""

    def __init__(self, sink: Callable[[LogLine], None]) -> None:
        super().__init__(logging.INFO)
        self.sink = sink
        self.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink(LogLine(record.levelname, self.format(record)))
        except Exception:  # a log handler must never take the worker down
            self.handleError(record)


def _logged(action: Callable[[], object], what: str) -> Callable[[], None]:
    """``action`` for a thread of its own: a failure is logged (the panel shows it), never raised."""

    def run() -> None:
        try:
            action()
        except (OSError, ValueError) as exc:
            log.error("[Worker] Could not %s: %s", what, exc)

    return run


class BackgroundWorker:
    """One worker thread plus the queue the UI drains; ``drain()`` is the only call the UI makes per tick."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        max_jobs: int | None = None,
        user_quiet_seconds: Callable[[], float | None] | None = None,
    ) -> None:
        self.config = config
        self.user_quiet_seconds = user_quiet_seconds
        self.max_jobs = max_jobs
        self.stop_now = threading.Event()  # kills a running render
        self.stop_after_job = threading.Event()  # finishes the current job first
        self.events: queue.SimpleQueue[WorkerStatus | LogLine] = queue.SimpleQueue()
        self.status = WorkerStatus()
        self.log_lines: deque[LogLine] = deque(maxlen=LOG_LINES_KEPT)
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._handler = _QueueLogHandler(self.events.put)
        self._redactor = Redactor(secret_values(config, os.environ))
        self._handler.addFilter(SecretFilter(self._redactor))  # the panel shows no secret either
        self._file_handler: logging.Handler | None = None
        self._worker: Worker | None = None
        self.pause_flag = PauseFlag(config.data_dir)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self.stop_now.clear()
        self.stop_after_job.clear()
        logging.getLogger("veriframe.worker").addHandler(self._handler)
        # The same rotating file (DATA/logs/worker.log) a headless worker writes, for a bug report.
        self._file_handler = config_file_handler(self.config, self._redactor)
        if self._file_handler is not None:
            logging.getLogger("veriframe.worker").addHandler(self._file_handler)
        logging.getLogger("veriframe.worker").setLevel(self.config.log_level)
        self._thread = threading.Thread(target=self._run, name="veriframe-worker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            worker = self._worker = Worker(
                self.config,
                stop=self.stop_now,
                on_status=self.events.put,
                user_quiet_seconds=self.user_quiet_seconds,
            )
            worker.run(max_jobs=self.max_jobs, stop_after_job=self.stop_after_job)
        except WorkerError as exc:
            self.error = str(exc)
            log.error("[Worker] Stopped: %s", exc)
        except Exception as exc:  # report, don't vanish: the operator only sees the panel
            self.error = f"unexpected {type(exc).__name__}: {exc}"
            log.exception("[Worker] Stopped by an unexpected error")
        finally:
            # The worker's own latest snapshot: the UI may not have drained the last ones yet.
            latest = self._worker.status if self._worker is not None else self.status
            self.events.put(
                WorkerStatus(
                    state="stopped",
                    last_error=self.error,
                    completed=latest.completed,
                    failed=latest.failed,
                    reward_total=latest.reward_total,
                    last_render=latest.last_render,
                    history=latest.history,
                    earnings=latest.earnings,
                    backend_figures=latest.backend_figures,
                )
            )
            logging.getLogger("veriframe.worker").removeHandler(self._handler)
            if self._file_handler is not None:
                logging.getLogger("veriframe.worker").removeHandler(self._file_handler)
                self._file_handler.close()

    def request_stop(self, *, now: bool) -> None:
        """``now``: kill the render and stop; otherwise finish the current job, then stop."""
        self.stop_after_job.set()
        if now:
            self.stop_now.set()

    def set_paused(self, paused: bool) -> None:
        """Pause (the job in hand finishes, no new one is taken) or resume; the same flag ``python -m
        veriframe_addon pause`` sets. Written from a short thread: the caller is Blender's UI."""
        action = self.pause_flag.set if paused else self.pause_flag.clear
        threading.Thread(target=_logged(action, "change the pause flag"), daemon=True).start()

    def block_creator(self, creator: str) -> None:
        """Never take another job from ``creator`` (kept in the data folder across restarts)."""
        worker = self._worker
        if worker is not None:
            threading.Thread(
                target=_logged(lambda: worker.block_creator(creator), "block"), daemon=True
            ).start()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def drain(self, limit: int = 500) -> bool:
        """Moves queued news into ``status``/``log_lines``; True if anything changed (the UI redraws)."""
        changed = False
        for _ in range(limit):
            try:
                item = self.events.get_nowait()
            except queue.Empty:
                break
            changed = True
            if isinstance(item, LogLine):
                self.log_lines.append(item)
            else:
                self.status = item
        return changed
