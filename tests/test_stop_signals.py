"""SIGTERM/SIGINT stop the headless worker whatever its loop is doing at that instant.

CI once caught a worker that logged "SIGTERM received" while idle and then never exited: Python ran the
handler on the main thread at a moment that thread held the lock inside ``threading.Event.wait``, and the
handler's ``Event.set`` waited for that same lock forever. These tests recreate that instant on purpose
(the loop holds the event's lock, a real signal arrives), each in a child process so a hang is a failure
with a timeout rather than a stuck test run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from devnet.process import ROOT

# The loop body takes the event's internal lock (``_cond``, what ``Event.wait`` holds between its checks),
# signals its own process while holding it, lets go, then waits for the stop as the worker's loop does.
CHILD = textwrap.dedent(
    """
    import logging, os, signal, sys, threading, time
    from veriframe_addon.worker.service import StopRequests, run_off_main_thread

    logging.basicConfig(level=logging.INFO)
    stops = StopRequests()
    signal.signal(signal.SIGTERM, stops.on_signal)

    def loop() -> str:
        with stops.stop_after_job._cond:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.3)
        stopped = stops.stop_after_job.wait(20)
        return f"stopped after job: {stopped}, stop now: {stops.stop.is_set()}"

    def loop_takes_the_signal() -> str:
        # The kernel hands a process's signal to any thread that does not block it: here, the loop's own,
        # once the main thread is surely asleep in its join.
        time.sleep(0.5)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        stopped = stops.stop_after_job.wait(20)
        return f"stopped after job: {stopped}, stop now: {stops.stop.is_set()}"

    if sys.argv[1] == "worker-thread":
        print(run_off_main_thread(loop), flush=True)
    elif sys.argv[1] == "delivered-to-the-loop":
        print(run_off_main_thread(loop_takes_the_signal), flush=True)
    else:
        print(loop(), flush=True)
    """
)


def _run_child(mode: str, timeout: float) -> subprocess.CompletedProcess[str] | None:
    """The child's result, or None when it was still running at ``timeout`` (it is then killed)."""
    try:
        return subprocess.run(
            [sys.executable, "-c", CHILD, mode], cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return None


def test_a_signal_while_the_loop_holds_its_wait_lock_still_stops_it() -> None:
    done = _run_child("worker-thread", timeout=30)
    assert done is not None, "the worker loop never saw the stop: the signal handler deadlocked"
    assert done.returncode == 0, done.stderr
    assert "stopped after job: True, stop now: False" in done.stdout
    assert "SIGTERM received: stopping after the current job" in done.stderr


def test_a_signal_the_kernel_hands_to_the_loops_thread_still_stops_it() -> None:
    """CI saw a 2-slot worker ignore SIGTERM: the signal went to another thread, and a main thread blocked
    in a join without a timeout never ran Python's handler."""
    done = _run_child("delivered-to-the-loop", timeout=30)
    assert done is not None, "the signal was never handled: the main thread never woke up"
    assert done.returncode == 0, done.stderr
    assert "stopped after job: True, stop now: False" in done.stdout
    assert "SIGTERM received: stopping after the current job" in done.stderr


def test_control_the_same_signal_deadlocks_a_loop_on_the_main_thread() -> None:
    """Shows the hazard is real: the old arrangement (loop on the main thread) never returns."""
    assert _run_child("main-thread", timeout=5) is None


def test_what_the_loop_raises_reaches_the_caller() -> None:
    from veriframe_addon.worker.errors import AuthError
    from veriframe_addon.worker.service import run_off_main_thread

    def refused() -> int:
        raise AuthError("signature refused")

    with pytest.raises(AuthError, match="signature refused"):
        run_off_main_thread(refused)
    assert run_off_main_thread(lambda: 3) == 3
