"""A warm standby: the next render's Blender, started and warmed up before its job exists.

Blender's start-up (0.45 s to ``import bpy``, 0.6 s for a binary) and its first render's set-up (the
GPU context and the engine's shaders, about 0.6 s more) are paid by every job; on a GPU, where a frame
takes a second, they decide the rate. A standby pays them while the worker polls, uploads or reports,
and beside the running render (at idle CPU priority, so it takes only what the render leaves: on a GPU
nearly all of the CPU, in software GL the gaps in a frame's use of the cores). ``render_child.py
--standby`` renders Blender's own default scene at a tiny size, then parks, waiting for one line on
stdin (its job's spec); a job that is there before the warm-up skips it. The renderer hands it the job
(``StandbyStarter.render``).

Isolation is the same as a cold render's. A standby is started exactly like one: the same sandbox, the
same scrubbed environment (never the key), the same caps, in a fresh folder of its own
(``JOBS/.standby-<hex>``, a sibling of the job folders, so a scene's relative paths resolve at the same
depth), and it renders exactly one job and exits. Its job's scene is hard-linked into that folder (the
job folder itself stays the record): the unpacked archive's ``scene/``, or a plain ``asset.blend``
alone; nothing of an earlier job is ever in it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Protocol

from .child_events import child_event

log = logging.getLogger("veriframe.worker")

FOLDER_PREFIX = ".standby-"


class StandbyStarter(Protocol):
    """What starts standbys: a ``StandbyStarter`` (``renderer.py``), one per installed Blender."""

    def start_standby(self, folder: Path, engine: str, *, idle: bool = False) -> Standby: ...


class Standby:
    """One parked render process: its folder, its token and its output, read by a thread from the start."""

    def __init__(
        self,
        renderer: StandbyStarter,
        process: subprocess.Popen,
        folder: Path,
        token: str,
        lines: queue.Queue[str | None],
        *,
        idle: bool = False,
    ) -> None:
        self.renderer = renderer
        self.process = process
        self.folder = folder
        self.token = token
        self.lines = lines
        self.started = time.monotonic()
        self.parked = threading.Event()  # set by the output reader on the child's "parked" line
        self.parked_seconds: float | None = None
        self.idle = idle  # started at idle CPU priority, not promoted yet
        self.warm_error: str | None = None
        self.warm_skipped = False  # its job was waiting once Blender had started: no warm-up frame

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def pid(self) -> int:
        return self.process.pid

    def note_line(self, line: str) -> None:
        """Sees each output line (on the reader thread); the child's ``parked`` event sets ``parked``."""
        if self.parked.is_set():
            return
        event = child_event(line, self.token)
        if event is not None and event.get("event") == "parked":
            self.parked_seconds = event.get("seconds")
            self.warm_error = event.get("warm_error")
            self.warm_skipped = bool(event.get("warm_skipped"))
            self.parked.set()

    def promote(self) -> None:
        """From idle CPU priority back to the renders' own (``RENDER_NICE``): every thread of its group."""
        for _ in range(2):  # twice: a thread started while the first pass ran inherited idle priority
            for task in group_threads(self.process.pid):
                with contextlib.suppress(OSError):  # it ended meanwhile
                    # Only idle ones: a thread may have chosen its own (Mesa's disk cache: SCHED_BATCH).
                    if os.sched_getscheduler(task) == os.SCHED_IDLE:
                        os.sched_setscheduler(task, os.SCHED_OTHER, os.sched_param(0))

    def wait_parked(self, timeout: float) -> bool:
        """Whether it parked within ``timeout`` seconds (False as well when it died warming up)."""
        return self.parked.wait(timeout)

    def discard(self, *, wait: bool = True) -> None:
        """Ends the process (if still running) and removes its folder; safe to call more than once.
        ``wait=False``: after its job, when it exits by itself; a reaper thread sees to the rest."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):  # a broken pipe: it is gone already
                self.process.stdin.close()
        if self.process.poll() is None and not wait:
            reap_later(self.process, self.folder)
            return
        if self.process.poll() is None:
            kill_group(self.process)
        shutil.rmtree(self.folder, ignore_errors=True)


class StandbyKeeper:
    """Keeps at most one standby for one render slot: started when asked (``prepare``), handed to the
    next render whose Blender it is (``take``), discarded otherwise."""

    def __init__(self, jobs_dir: Path, *, enabled: bool) -> None:
        self.jobs_dir = jobs_dir
        self.enabled = enabled
        self._standby: Standby | None = None
        self._lock = threading.Lock()
        self._failures = 0

    def remove_stale(self) -> None:
        """Folders of standbys an earlier run left (killed with the worker): nothing in them is needed."""
        if not self.jobs_dir.is_dir():
            return
        for folder in self.jobs_dir.glob(f"{FOLDER_PREFIX}*"):
            if self._standby is None or folder != self._standby.folder:
                shutil.rmtree(folder, ignore_errors=True)

    def prepare(
        self, renderer: StandbyStarter, engine: str, *, beside_render: bool = False
    ) -> Standby | None:
        """Starts a standby for ``renderer`` warming with ``engine``, unless one is already there for it.

        ``beside_render``: a render is running, so the standby starts at idle CPU priority (it warms up
        on what the render leaves unused: on a GPU node nearly all of the CPU) and is promoted when
        asked again after the render; where it could not be promoted back, none starts now."""
        if not self.enabled or self._failures >= 3:  # a Blender that cannot park: cold renders only
            return None
        if beside_render and not can_leave_idle_priority():
            return None
        with self._lock:
            standby = self._standby
            if standby is not None and standby.renderer is renderer and standby.alive:
                if not beside_render and standby.idle:
                    standby.promote()
                    standby.idle = False
                return standby
            if standby is not None:
                standby.discard()
            folder = self.jobs_dir / f"{FOLDER_PREFIX}{secrets.token_hex(6)}"
            try:
                self._standby = renderer.start_standby(folder, engine, idle=beside_render)
            except OSError as exc:
                self._failures += 1
                self._standby = None
                shutil.rmtree(folder, ignore_errors=True)
                log.warning("[Worker] Could not start a standby Blender (renders start cold): %s", exc)
                return None
            log.debug("[Worker] Standby Blender started (pid %d) in %s", self._standby.pid, folder)
            return self._standby

    def take(self, renderer: StandbyStarter) -> Standby | None:
        """The standby, now this job's, if it runs ``renderer``'s Blender and is alive; else None (any
        other standby is discarded: a job's file decides its Blender)."""
        with self._lock:
            standby, self._standby = self._standby, None
        if standby is None:
            return None
        if standby.renderer is renderer and standby.alive:
            self._failures = 0
            return standby
        if not standby.alive:
            self._failures += 1
            log.warning(
                "[Worker] The standby Blender exited before its job (code %s); rendering cold",
                standby.process.returncode,
            )
        standby.discard()
        return None

    def close(self) -> None:
        with self._lock:
            standby, self._standby = self._standby, None
        if standby is not None:
            standby.discard()


_reapers: set[threading.Thread] = set()
_reapers_lock = threading.Lock()
REAP_GRACE_SECONDS = 30.0


def reap_later(process: subprocess.Popen, folder: Path | None = None) -> None:
    """Lets a render child that reported its result exit by itself while the worker goes on (its exit
    is no longer the job's business), then kills whatever of its group is left and removes ``folder``.
    ``wait_for_reapers`` waits for them all (the worker does, before it returns)."""

    def reap() -> None:
        try:
            process.wait(timeout=REAP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning(
                "[Worker] A render child (pid %d) did not exit after its job; killing it", process.pid
            )
        kill_group(process)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        with _reapers_lock:
            _reapers.discard(threading.current_thread())

    thread = threading.Thread(target=reap, daemon=True, name="render-reaper")
    with _reapers_lock:
        _reapers.add(thread)
    thread.start()


def wait_for_reapers(timeout: float = REAP_GRACE_SECONDS + 10) -> None:
    """Until every child handed to ``reap_later`` is gone (and its folder removed), or ``timeout``."""
    deadline = time.monotonic() + timeout
    with _reapers_lock:
        reapers = list(_reapers)
    for thread in reapers:
        thread.join(max(0.0, deadline - time.monotonic()))


def kill_group(process: subprocess.Popen) -> None:
    """Ends the child and everything it started: TERM, a short grace period, then KILL."""
    if os.name == "posix":
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=grace)
                # The leader is gone; make sure no straggler of its group survives it.
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue
            _wait_group_gone(process.pid, 5.0)
            return
    else:
        process.kill()
        process.wait(timeout=10)


def _wait_group_gone(group: int, timeout: float) -> None:
    """Waits until no live process of ``group`` is left: a killed Blender with its GL context and its
    memory takes a moment to go, and a caller told "killed" may look for it (or start the next render
    beside it) straight away. Zombies count as gone; Linux only (elsewhere this returns at once)."""
    if not Path("/proc").is_dir():
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _group_processes(group):
        time.sleep(0.02)


def _group_processes(group: int) -> list[Path]:
    """The ``/proc/PID`` folders of every live process in process group ``group``."""
    return [stat.parent for stat in Path("/proc").glob("[0-9]*/stat") if _in_group(stat, group)]


def _in_group(stat: Path, group: int) -> bool:
    """Whether the process of ``/proc/PID/stat`` is alive and in process group ``group``."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()  # after "PID (command)": state ppid pgrp
    except (OSError, IndexError):
        return False  # it ended while we looked
    return len(fields) > 2 and fields[0] not in "ZX" and fields[2] == str(group)


def can_leave_idle_priority() -> bool:
    """Whether a standby started at idle CPU priority can be given the renders' priority back: Linux
    lets only root (or a high enough RLIMIT_NICE) leave ``SCHED_IDLE``."""
    if not hasattr(os, "SCHED_IDLE"):
        return False
    if os.geteuid() == 0:
        return True
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    return soft == resource.RLIM_INFINITY or soft >= 20


def group_threads(group: int) -> list[int]:
    """Every thread of every live process in process group ``group``."""
    tasks = []
    for process in _group_processes(group):
        with contextlib.suppress(OSError):  # it ended meanwhile
            tasks += [int(task.name) for task in (process / "task").iterdir()]
    return tasks
