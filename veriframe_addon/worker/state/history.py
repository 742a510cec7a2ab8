"""The job history: one row per finished job in SQLite in the data folder, for the operator's eyes.

What it holds: job id, creator, asset and result CIDs, reward, outcome and reason, the Blender and device
that rendered, seconds per stage, bytes moved, a thumbnail, and the result's signed receipt. Never a key
or a token. SQLite in WAL mode with full sync: a ``kill -9`` mid-write loses at most the row being
written, never a finished one. The schema carries its version (``PRAGMA user_version``) and each newer
version is one migration step, so an older data folder is upgraded in place. Old rows are pruned
(``MAX_ROWS``) and thumbnails kept only for the newest ``THUMBNAILS_KEPT`` jobs, so the folder never
grows without bound.

The journal stays the record of what was done (it decides what is never redone); this is the record of
how it went, and losing it loses no job.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

MAX_ROWS = 5000
THUMBNAILS_KEPT = 50
MAX_THUMBNAIL_BYTES = 8 << 20  # a render above this is not copied as a thumbnail
WAL_SWITCH_SECONDS = 10.0  # as long as a write waits for another (the connection's busy timeout)

# Each entry takes the schema from the version before it to its own; never edit one that shipped.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE jobs (
            job_id TEXT PRIMARY KEY,
            finished_at REAL NOT NULL,
            outcome TEXT NOT NULL CHECK (outcome IN ('completed', 'failed')),
            reason TEXT,
            creator TEXT,
            asset_cid TEXT,
            result_cid TEXT,
            reward TEXT NOT NULL DEFAULT '0',
            blender TEXT,
            device TEXT,
            stage_seconds TEXT NOT NULL DEFAULT '{}',
            bytes_down INTEGER NOT NULL DEFAULT 0,
            bytes_up INTEGER NOT NULL DEFAULT 0,
            thumbnail TEXT
        )""",
        "CREATE INDEX jobs_by_time ON jobs (finished_at)",
    ),
    ("ALTER TABLE jobs ADD COLUMN receipt TEXT",),  # 2: the signed receipt of a completed job
)
SCHEMA_VERSION = len(MIGRATIONS)


def _use_wal(connection: sqlite3.Connection) -> None:
    """Puts the file in WAL mode (it stays so). On a new file, several slots may try at once, and SQLite
    answers "locked" at once to all but one instead of waiting its busy timeout, so they try again."""
    if connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
        return
    deadline = time.monotonic() + WAL_SWITCH_SECONDS
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@dataclass(frozen=True)
class HistoryEntry:
    job_id: str
    outcome: str  # completed | failed
    finished_at: float = field(default_factory=time.time)
    reason: str | None = None
    creator: str | None = None
    asset_cid: str | None = None
    result_cid: str | None = None
    reward: int = 0  # the token's smallest unit; text in SQLite (it outgrows 64 bits)
    blender: str | None = None
    device: str | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    bytes_down: int = 0
    bytes_up: int = 0
    thumbnail: str | None = None
    receipt: dict[str, object] | None = None  # what the result's PNG carries, signed

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "reward": str(self.reward)}


@dataclass(frozen=True)
class Earnings:
    today: int
    week: int  # since Monday 00:00, local time
    total: int
    completed: int
    failed: int


class JobHistory:
    def __init__(
        self, data_dir: Path, *, max_rows: int = MAX_ROWS, thumbnails: int = THUMBNAILS_KEPT
    ) -> None:
        self.folder = data_dir / "history"
        self.path = self.folder / "history.sqlite3"
        self.thumbnails = self.folder / "thumbnails"
        self.max_rows = max_rows
        self.thumbnails_kept = thumbnails

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.folder.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=10)
        try:
            _use_wal(connection)
            connection.execute("PRAGMA synchronous=FULL")
            self._migrate(connection)
            yield connection
        finally:
            connection.close()

    def _migrate(self, connection: sqlite3.Connection) -> None:
        """Brings the schema to this worker's version. Render slots finishing together on a new data
        folder each get here at once, so the version is read again under SQLite's write lock
        (``BEGIN IMMEDIATE``): the first migrates, the others wait, then find nothing left to do. All the
        steps are one transaction, so a crash mid-migration leaves the schema as it was."""
        if self._version(connection) == SCHEMA_VERSION:
            return  # the usual case, without taking the write lock
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = self._version(connection)
            for number in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[number]:
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            connection.commit()
        except BaseException:
            connection.rollback()
            raise

    def _version(self, connection: sqlite3.Connection) -> int:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"{self.path} has schema {version}, newer than this worker's {SCHEMA_VERSION}"
            )
        return version

    # -- writing --------------------------------------------------------------------------------------
    def record(self, entry: HistoryEntry, render: Path | None = None) -> HistoryEntry:
        """Adds (or replaces) a job's row; ``render`` becomes its thumbnail when it is small enough."""
        thumbnail = self._keep_thumbnail(entry.job_id, render)
        if thumbnail is not None:
            entry = HistoryEntry(**{**asdict(entry), "thumbnail": str(thumbnail)})
        row = entry.to_json()
        row["stage_seconds"] = json.dumps(entry.stage_seconds, sort_keys=True)
        row["receipt"] = json.dumps(entry.receipt, sort_keys=True) if entry.receipt is not None else None
        columns = ", ".join(row)
        with self._connect() as connection, connection:
            connection.execute(
                f"INSERT OR REPLACE INTO jobs ({columns}) VALUES ({', '.join('?' * len(row))})",
                tuple(row.values()),
            )
            self._prune(connection)
        return entry

    def _keep_thumbnail(self, job_id: str, render: Path | None) -> Path | None:
        if render is None or not render.is_file() or render.stat().st_size > MAX_THUMBNAIL_BYTES:
            return None
        self.thumbnails.mkdir(parents=True, exist_ok=True)
        target = self.thumbnails / f"{job_id}.png"
        partial = target.with_suffix(".part")
        shutil.copyfile(render, partial)
        partial.replace(target)  # a half-copied thumbnail never has the final name
        return target

    def _prune(self, connection: sqlite3.Connection) -> None:
        cutoff = "SELECT job_id FROM jobs ORDER BY finished_at DESC LIMIT -1 OFFSET ?"
        old_thumbs = connection.execute(
            f"SELECT thumbnail FROM jobs WHERE thumbnail IS NOT NULL AND job_id IN ({cutoff})",
            (self.thumbnails_kept,),
        ).fetchall()
        connection.execute(
            f"UPDATE jobs SET thumbnail = NULL WHERE job_id IN ({cutoff})", (self.thumbnails_kept,)
        )
        connection.execute(f"DELETE FROM jobs WHERE job_id IN ({cutoff})", (self.max_rows,))
        for (path,) in old_thumbs:
            Path(path).unlink(missing_ok=True)

    # -- reading --------------------------------------------------------------------------------------
    def recent(self, limit: int = 50, since: float | None = None) -> list[HistoryEntry]:
        """The newest rows first; ``since`` (a Unix time) keeps only later ones."""
        if not self.path.exists():
            return []
        with self._connect() as connection:
            connection.row_factory = sqlite3.Row
            rows = connection.execute(
                "SELECT * FROM jobs WHERE finished_at >= ? ORDER BY finished_at DESC LIMIT ?",
                (since if since is not None else 0.0, limit),
            ).fetchall()
        return [_entry(row) for row in rows]

    def earnings(self, now: datetime | None = None) -> Earnings:
        """Rewards of completed jobs today, this week and in all, from this node's own record."""
        now = (now or datetime.now()).astimezone()
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        monday = midnight - timedelta(days=midnight.weekday())
        today = week = total = completed = failed = 0
        if self.path.exists():
            with self._connect() as connection:
                rows = connection.execute("SELECT outcome, reward, finished_at FROM jobs").fetchall()
            for outcome, reward, finished_at in rows:
                if outcome != "completed":
                    failed += 1
                    continue
                completed += 1
                amount = int(reward)
                total += amount
                if finished_at >= monday.timestamp():
                    week += amount
                if finished_at >= midnight.timestamp():
                    today += amount
        return Earnings(today, week, total, completed, failed)


def _entry(row: sqlite3.Row) -> HistoryEntry:
    values = dict(row)
    values["reward"] = int(values["reward"])
    values["stage_seconds"] = json.loads(values["stage_seconds"] or "{}")
    values["receipt"] = json.loads(values["receipt"]) if values.get("receipt") else None
    return HistoryEntry(**values)
