"""A slot's last result on its way while its next job renders: seal, upload and report on a thread of
their own.

Why: on a GPU a frame renders in about a second, and signing the receipt (0.08 s), uploading the image
and reporting it (0.05 s on a near backend, much more over a slow link) would otherwise sit between two
renders. Why it is safe: every stage is still recorded before the next begins (a crash mid-upload
resumes as before), the job stays held by its slot until it is finished (no other slot resumes it), and
one finisher takes one job at a time, in order: a slot hands over its next job only once the one before
it is finished, so at most one result per slot is ever on its way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .backend.api import Job
from .state.job_records import JobState
from .status import StatusBoard

log = logging.getLogger("veriframe.worker")

Finish = Callable[[Job, JobState], bool]  # seals, uploads and reports; True when the backend accepted it


class Finisher:
    """Finishes a slot's rendered jobs in the background, one at a time; what finishing one raised
    reaches the slot at its next ``check``, ``hand`` or ``wait`` (as if it had happened in line)."""

    def __init__(self, finish: Finish, board: StatusBoard) -> None:
        self._finish = finish
        self._board = board
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def hand(self, job: Job, state: JobState, done: Callable[[bool], None]) -> None:
        """Finishes ``job`` from ``state`` in the background, then calls ``done(accepted)`` (always, even
        when finishing raised). Waits first for the job before it, and raises what that one raised."""
        self.wait()
        slot = self._board.slot_index()
        self._board.delivering_result(job.id, on=True)

        def run() -> None:
            self._board.bind_slot(slot, background=True)
            accepted = False
            try:
                accepted = self._finish(job, state)
            except BaseException as exc:  # handed to the slot, which raises it as its own
                self._failure = exc
            finally:
                self._board.delivering_result(job.id, on=False)
                done(accepted)

        self._thread = threading.Thread(target=run, daemon=True, name=f"veriframe-finish-{job.id[:8]}")
        self._thread.start()

    def check(self) -> None:
        """Raises what the last job's finishing raised, once it has ended; never waits."""
        if not self.busy:
            self.wait()

    def wait(self) -> None:
        """Until the job on its way is finished; raises what finishing it raised (once)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def wait_quietly(self) -> None:
        """``wait``, logging what it raised instead (the worker is stopping for another reason)."""
        try:
            self.wait()
        except Exception as exc:
            log.error("[Worker] Finishing the last job failed: %s", exc)
