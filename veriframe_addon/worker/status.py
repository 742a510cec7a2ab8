"""What an operator watches: the worker's status as immutable snapshots, and the one board that changes it.

Every part of the job flow reports through ``StatusBoard.publish``; the panel, ``/health`` and the
headless summary read the snapshots it hands on.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .state.history import Earnings, HistoryEntry


@dataclass(frozen=True)
class WorkerStatus:
    """A snapshot; a new one after every change (the panel draws it).

    Frozen, because snapshots cross from the worker thread to Blender's main thread.
    """

    # stopped, signing-in, polling, idle, waiting (for the backend), paused, sleeping (outside the
    # schedule), claiming, downloading, rendering, uploading, reporting
    state: str = "stopped"
    job_id: str | None = None
    asset_cid: str | None = None
    progress: float | None = None
    samples: tuple[int, int] | None = None  # rendering: samples done of the total, where counted
    completed: int = 0
    failed: int = 0
    reward_total: int = 0
    verified: bool | None = None
    last_error: str | None = None
    last_render: Path | None = None
    last_result_cid: str | None = None
    last_receipt_signed: bool = False  # the last result carries the worker's signed receipt
    sandbox: str | None = None  # how renders are contained, in words (set once Blender is found)
    blender: str | None = None  # every render Blender's version, e.g. "Blender 4.5.15 LTS" (once probed)
    render_blender: str | None = None  # the Blender rendering the job in hand, or that rendered the last
    creator: str | None = None  # the creator of the job in hand
    held: str | None = None  # why no new job is taken now, e.g. "outside the schedule until Mon 18:00"
    slots: tuple[SlotStatus, ...] = ()  # with RENDER_SLOTS above 1: what each slot does, slot 0 first
    delivering: tuple[str, ...] = ()  # jobs whose results are on their way beside the next render
    history: tuple[HistoryEntry, ...] = ()  # the newest finished jobs, newest first
    earnings: Earnings | None = None  # from this node's history
    backend_figures: BackendFigures | None = None  # the backend's own record of this worker


# The fields that describe the job in hand: with several render slots, each slot has its own.
SLOT_FIELDS = ("state", "job_id", "asset_cid", "progress", "samples", "render_blender", "creator")
# A slot in one of these holds no job: while another slot holds one, the whole worker shows that one (a
# slot polling every half second would otherwise hide the other's render from the panel's headline).
SLOT_AT_REST = ("idle", "polling", "stopped")


@dataclass(frozen=True)
class SlotStatus:
    """One render slot's job in hand (the fields of ``SLOT_FIELDS``) and what it renders on."""

    index: int
    device: str = ""
    state: str = "idle"
    job_id: str | None = None
    asset_cid: str | None = None
    progress: float | None = None
    samples: tuple[int, int] | None = None
    render_blender: str | None = None
    creator: str | None = None


@dataclass(frozen=True)
class BackendFigures:
    """What the backend says of this worker (``GET /workers/{address}``), as it reports them."""

    total_earnings: int
    jobs_completed: int
    reputation: float

    @classmethod
    def from_record(cls, record: object) -> BackendFigures | None:
        if not isinstance(record, dict):
            return None
        try:
            return cls(
                int(record.get("total_earnings") or 0),
                int(record.get("jobs_completed") or 0),
                float(record.get("reputation") or 0),
            )
        except (TypeError, ValueError):
            return None


class StatusBoard:
    """Holds the current snapshot and hands each new one to ``on_status`` (a queue, the status server).

    With several render slots each slot's thread is bound to its slot (``bind_slot``): what it publishes
    about its job goes to its ``SlotStatus``, and the top-level job fields follow the latest change of
    any slot (one line for a glance; the slots are the whole picture). Safe from any thread.
    """

    def __init__(self, on_status: Callable[[WorkerStatus], None] | None = None) -> None:
        self.current = WorkerStatus()
        self._on_status = on_status
        self._lock = threading.RLock()
        self._slot = threading.local()

    def set_slots(self, devices: list[str]) -> None:
        """Several render slots from now on, one per device description (none: one slot, no rows)."""
        slots = tuple(SlotStatus(i, device) for i, device in enumerate(devices)) if len(devices) > 1 else ()
        self.publish(slots=slots)

    def bind_slot(self, index: int | None, *, background: bool = False) -> None:
        """The calling thread publishes for slot ``index`` (None: for the worker as a whole).

        ``background``: the thread finishes an earlier job of the slot while the slot goes on to its
        next, so what it says of "the job in hand" (``SLOT_FIELDS``) is not published; the rest is
        (the last result, the counts, errors, the history)."""
        self._slot.index = index
        self._slot.background = background

    def slot_index(self) -> int | None:
        """The slot the calling thread publishes for."""
        return getattr(self._slot, "index", None)

    def publish(self, **changes: object) -> None:
        if getattr(self._slot, "background", False):
            changes = {k: v for k, v in changes.items() if k not in SLOT_FIELDS}
            if not changes:
                return
        with self._lock:
            index = getattr(self._slot, "index", None)
            if index is not None and index < len(self.current.slots):
                mine = {k: v for k, v in changes.items() if k in SLOT_FIELDS}
                if mine:
                    slots = list(self.current.slots)
                    slots[index] = dataclasses.replace(slots[index], **mine)
                    changes = {**changes, "slots": tuple(slots)}
                    busy = self._busy_other(index) if changes.get("state") in SLOT_AT_REST else None
                    if busy is not None:  # the headline shows the job another slot holds
                        changes = {**changes, **{k: getattr(busy, k) for k in SLOT_FIELDS}}
            self.current = dataclasses.replace(self.current, **changes)
            if self._on_status is not None:
                self._on_status(self.current)

    def _busy_other(self, index: int) -> SlotStatus | None:
        """Another slot that holds a job, if any."""
        others = (slot for slot in self.current.slots if slot.index != index)
        return next((slot for slot in others if slot.state not in SLOT_AT_REST), None)

    def delivering_result(self, job_id: str, *, on: bool) -> None:
        """``job_id``'s result is on its way on a finisher (``on``), or no longer."""
        with self._lock:
            others = tuple(job for job in self.current.delivering if job != job_id)
            self.publish(delivering=(*others, job_id) if on else others)

    def count_completed(self, reward: int) -> None:
        with self._lock:
            self.publish(
                completed=self.current.completed + 1, reward_total=self.current.reward_total + reward
            )

    def count_failed(self, last_error: str) -> None:
        with self._lock:
            self.publish(failed=self.current.failed + 1, last_error=last_error)
