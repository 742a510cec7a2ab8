"""The job history in SQLite: rows, earnings by day and week, pruning of rows and thumbnails, the schema's
migrations, and a ``kill -9`` in the middle of writes (a real child process, really killed)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from veriframe_addon.worker.state.history import SCHEMA_VERSION, HistoryEntry, JobHistory

ROOT = Path(__file__).resolve().parent.parent


def test_rows_come_back_newest_first_with_their_figures(tmp_path: Path) -> None:
    history = JobHistory(tmp_path)
    png = tmp_path / "render.png"
    Image.new("RGB", (16, 12), "blue").save(png)
    history.record(
        HistoryEntry("a", "completed", finished_at=100.0, reward=10**15, blender="Blender 4.5"), png
    )
    history.record(HistoryEntry("b", "failed", finished_at=200.0, reason="not a .blend", bytes_down=42))
    newest, oldest = history.recent()
    assert (newest.job_id, newest.outcome, newest.reason, newest.bytes_down) == (
        "b",
        "failed",
        "not a .blend",
        42,
    )
    assert oldest.reward == 10**15 and oldest.blender == "Blender 4.5"
    assert oldest.thumbnail is not None and Image.open(oldest.thumbnail).size == (16, 12)
    assert [e.job_id for e in history.recent(since=150.0)] == ["b"]


def test_earnings_count_today_this_week_and_in_all(tmp_path: Path) -> None:
    history = JobHistory(tmp_path)
    now = datetime(2026, 12, 3, 15, 0).astimezone()  # a Thursday
    for job_id, when, reward, outcome in (
        ("today", now - timedelta(hours=1), 3, "completed"),
        ("monday", datetime(2026, 11, 30, 0, 30).astimezone(), 5, "completed"),
        ("last-week", datetime(2026, 11, 29, 23, 0).astimezone(), 7, "completed"),
        ("failed-today", now, 0, "failed"),
        ("huge", datetime(2020, 1, 1).astimezone(), 10**30, "completed"),  # beyond 64 bits: stored as text
    ):
        history.record(HistoryEntry(job_id, outcome, finished_at=when.timestamp(), reward=reward))
    earned = history.earnings(now)
    assert (earned.today, earned.week, earned.total) == (3, 8, 15 + 10**30)
    assert (earned.completed, earned.failed) == (4, 1)


def test_old_rows_and_thumbnails_are_pruned(tmp_path: Path) -> None:
    history = JobHistory(tmp_path, max_rows=5, thumbnails=2)
    png = tmp_path / "render.png"
    Image.new("RGB", (4, 4), "red").save(png)
    for number in range(8):
        history.record(HistoryEntry(f"job-{number}", "completed", finished_at=float(number)), png)
    rows = history.recent()
    assert [e.job_id for e in rows] == [f"job-{n}" for n in (7, 6, 5, 4, 3)]
    assert [e.thumbnail is not None for e in rows] == [True, True, False, False, False]
    assert sorted(p.name for p in history.thumbnails.iterdir()) == ["job-6.png", "job-7.png"]


def test_the_schema_is_versioned_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    history = JobHistory(tmp_path)
    history.record(HistoryEntry("a", "completed"))
    with sqlite3.connect(history.path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(sqlite3.DatabaseError, match="newer than this worker"):
        history.recent()


WRITER = """
import sys, time
from pathlib import Path
from veriframe_addon.worker.state.history import HistoryEntry, JobHistory
history = JobHistory(Path(sys.argv[1]))
number = 0
while True:
    history.record(HistoryEntry(f"job-{number}", "completed", reward=number, reason="x" * 2000))
    print(number, flush=True)  # only after the commit returned
    number += 1
"""


def test_kill_9_mid_write_loses_no_finished_row(tmp_path: Path) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    finished = -1
    deadline = time.monotonic() + 60
    while finished < 40 and time.monotonic() < deadline:
        finished = int(writer.stdout.readline())
    os.kill(writer.pid, signal.SIGKILL)  # most likely inside the next write
    writer.wait(timeout=30)
    history = JobHistory(tmp_path)
    kept = {entry.job_id for entry in history.recent(limit=10_000)}
    assert {f"job-{n}" for n in range(finished + 1)} <= kept
    with sqlite3.connect(history.path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _first_rows_at_once(data: Path, slots: int) -> list[BaseException]:
    """``slots`` threads, each with its own ``JobHistory`` on the new folder ``data``, recording one row
    at the same instant; what they raised."""
    start = threading.Barrier(slots)
    failures: list[BaseException] = []

    def finish(slot: int) -> None:
        history = JobHistory(data)
        start.wait()
        try:
            history.record(HistoryEntry(job_id=f"job-{slot}", outcome="completed"))
        except sqlite3.Error as exc:
            failures.append(exc)

    threads = [threading.Thread(target=finish, args=(slot,)) for slot in range(slots)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


def test_slots_writing_their_first_rows_at_once_all_land(tmp_path: Path) -> None:
    """Render slots that finish together on a new data folder each set the file up: one must wait for
    the other (a lost race dropped a row with "table jobs already exists" or "database is locked")."""
    for attempt in range(10):
        data = tmp_path / str(attempt)
        assert _first_rows_at_once(data, slots=4) == []
        assert sorted(e.job_id for e in JobHistory(data).recent(10)) == [f"job-{s}" for s in range(4)]
