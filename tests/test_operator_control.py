"""The operator in charge, end to end against a devnet with real renders: filters and the blocklist skip
jobs unclaimed, pause and resume act mid-job, and a schedule window opening in a minute is kept.

Real time throughout (the window arithmetic has its own tests with an injected clock). Jobs render with
Workbench: what is tested is when jobs are taken, not an engine.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import requests
from PIL import Image

from devnet.keys import load_keypair
from devnet.process import ROOT, Devnet
from veriframe_addon.worker.config import load_config
from veriframe_addon.worker.keystore import encrypt_keystore
from veriframe_addon.worker.loop import Worker
from veriframe_addon.worker.state.journal import JobJournal

from .conftest import run_worker, start_worker, worker_env

SETTINGS = '{"engine": "WORKBENCH"}'
CYCLES = '{"engine": "CYCLES", "samples": 1}'
DONE = "✓ Successfully completed job "


class LogWatcher:
    """Reads a worker's output on a thread, so a test can wait for a line with a deadline."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 180) -> tuple[str, float]:
        """The first new line matching ``pattern`` and the wall-clock time it was read."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if re.search(pattern, line):
                return line, time.time()
        raise AssertionError(f"no line matching {pattern!r}:\n{''.join(self.lines)[-4000:]}")

    def stop(self) -> str:
        self.process.terminate()
        self.process.wait(timeout=60)
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        return "".join(self.lines)


def job(devnet: Devnet, job_id: str) -> dict:
    return requests.get(f"{devnet.backend_url}/jobs/{job_id}", timeout=10).json()


def worker_record(devnet: Devnet, address: str) -> dict:
    return requests.get(f"{devnet.backend_url}/workers/{address}", timeout=10).json()


def test_filtered_jobs_are_never_claimed_and_each_is_logged_once(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    cheap = devnet.cli("submit", str(sample_blend), "--settings", SETTINGS, "--reward", str(10**14)).strip()
    cycles = devnet.cli("submit", str(sample_blend), "--settings", CYCLES).strip()
    good = devnet.cli("submit", str(sample_blend), "--settings", SETTINGS).strip()
    env = worker_env(devnet, tmp_path / "w", MIN_REWARD="0.001", ACCEPT_ENGINES="workbench, eevee")
    run = run_worker(env, "--max-jobs", "1")

    assert run.returncode == 0, run.output[-3000:]
    assert f"{DONE}{good}" in run.output
    for skipped, reason in (
        (cheap, "its reward 0.0001 STRK is below MIN_REWARD 0.001 STRK"),
        (cycles, "it renders with CYCLES and ACCEPT_ENGINES is EEVEE, WORKBENCH"),
    ):
        assert run.output.count(f"Skipping job {skipped} without claiming it: {reason}") == 1, run.output
        record = job(devnet, skipped)
        assert record["status"] == "open" and record["worker_id"] is None  # never assigned here


def test_a_blocked_creator_is_skipped_and_the_block_outlives_a_restart(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    creator = load_keypair(devnet.data / "admin.json").address  # the devnet's jobs are the admin's
    env = worker_env(devnet, tmp_path / "w")
    # The panel's "Never take jobs from this creator" calls this on the running worker.
    worker = Worker(load_config(environ=env))
    address = worker.block_creator(creator.upper().replace("0X", "0x"))
    assert worker.blocklist_path.read_text().split() == [address]
    assert worker.filters.refusal(reward=10**18, engine="EEVEE", creator=creator) is not None

    blocked = devnet.cli("submit", str(sample_blend), "--settings", SETTINGS).strip()
    process = start_worker(env)  # a new process: the block comes from the data folder
    watcher = LogWatcher(process)
    watcher.wait_for(f"Skipping job {blocked} without claiming it: its creator .* is blocked")
    time.sleep(2.0)  # several more polls
    output = watcher.stop()
    assert output.count(f"Skipping job {blocked}") == 1
    assert job(devnet, blocked)["status"] == "open"


def test_a_worker_signs_in_with_a_keystore_and_the_key_is_never_written(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    """A keystore made here with starkli's parameters, opened with a password file, renders a job."""
    job_id = devnet.cli("submit", str(sample_blend), "--settings", SETTINGS).strip()
    env = worker_env(devnet, tmp_path / "w")
    key = env.pop("WORKER_PRIVATE_KEY")
    keystore = tmp_path / "keystore.json"
    keystore.write_text(json.dumps(encrypt_keystore(int(key, 16), "a long passphrase")))
    password_file = tmp_path / "password.txt"
    password_file.write_text("a long passphrase\n")
    env.update(WORKER_KEYSTORE=str(keystore), WORKER_KEYSTORE_PASSWORD_FILE=str(password_file))

    run = run_worker(env, "--max-jobs", "1")
    assert run.returncode == 0 and f"{DONE}{job_id}" in run.output, run.output[-3000:]
    written = b"".join(p.read_bytes() for p in (tmp_path / "w").rglob("*") if p.is_file())
    assert key[2:].lower().encode() not in written.lower() and key not in run.output

    wrong = run_worker({**env, "WORKER_KEYSTORE_PASSWORD_FILE": str(keystore)}, "--max-jobs", "1")
    assert wrong.returncode == 2 and "wrong password" in wrong.output


def control(env: dict[str, str], command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veriframe_addon", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_pause_mid_job_finishes_it_takes_nothing_new_and_resume_goes_on(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    first, second = (devnet.cli("submit", str(sample_blend), "--settings", SETTINGS).strip() for _ in "ab")
    env = worker_env(devnet, tmp_path / "w")
    watcher = LogWatcher(start_worker(env))
    try:
        watcher.wait_for(f"Successfully claimed job {first}")
        paused = control(env, "pause")  # mid-job, from another process, as the operator would
        assert paused.returncode == 0 and "Paused" in paused.stdout, paused.stderr
        watcher.wait_for("No new jobs: paused by the operator")
        watcher.wait_for("Told the backend this worker is inactive")
        assert job(devnet, first)["status"] == "completed"  # the job in hand finished
        assert worker_record(devnet, env["WORKER_ADDRESS"])["active"] is False
        time.sleep(3.0)  # many poll intervals: still nothing taken
        assert job(devnet, second)["status"] == "open"

        resumed = control(env, "resume")
        assert resumed.returncode == 0, resumed.stderr
        watcher.wait_for("Taking jobs again")
        watcher.wait_for(re.escape(f"{DONE}{second}"))
        assert worker_record(devnet, env["WORKER_ADDRESS"])["active"] is True
    finally:
        output = watcher.stop()
    assert output.index(f"{DONE}{first}") < output.index("No new jobs: paused")
    assert output.count("Successfully claimed job") == 2


def test_a_schedule_window_opening_in_a_minute_is_kept(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    now = datetime.now()
    opens = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    if (opens - now).total_seconds() < 20:  # leave the worker time to start and sleep first
        opens += timedelta(minutes=1)
    schedule = f"{opens:%H:%M}-{opens + timedelta(minutes=30):%H:%M}"  # may cross midnight: that works too
    waiting = devnet.cli("submit", str(sample_blend), "--settings", SETTINGS).strip()
    env = worker_env(devnet, tmp_path / "w", SCHEDULE=schedule)
    watcher = LogWatcher(start_worker(env, "--status-port", "0"))
    try:
        line, _ = watcher.wait_for(r"Status endpoint at (\S+)/health")
        health_url = re.search(r"at (\S+/health)", line)[1]
        watcher.wait_for(f"No new jobs: outside the schedule \\({schedule}\\) until {opens:%H:%M}")
        watcher.wait_for("Told the backend this worker is inactive")
        health = requests.get(health_url, timeout=10).json()
        assert health["state"] == "sleeping" and f"until {opens:%H:%M}" in health["held"]
        assert worker_record(devnet, env["WORKER_ADDRESS"])["active"] is False
        assert job(devnet, waiting)["status"] == "open"

        _, claimed_at = watcher.wait_for(f"Successfully claimed job {waiting}", timeout=240)
        assert claimed_at >= opens.timestamp()  # nothing was claimed before the window opened
        watcher.wait_for(re.escape(f"{DONE}{waiting}"))
        assert worker_record(devnet, env["WORKER_ADDRESS"])["active"] is True
    finally:
        watcher.stop()


def test_history_of_a_mixed_run_matches_the_journal_and_the_backend(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    """Two completed jobs and one failed (its asset is a PNG): ``history --json`` says what the journal
    and the backend say, and the history file holds no key and no token."""
    picture = tmp_path / "picture.png"
    Image.new("RGB", (8, 8), "white").save(picture)
    good = [devnet.cli("submit", str(sample_blend), "--settings", SETTINGS).strip() for _ in "ab"]
    bad = devnet.cli("submit", str(picture)).strip()
    env = worker_env(devnet, tmp_path / "w")
    run = run_worker(env, "--max-jobs", "3")
    assert run.returncode == 0, run.output[-3000:]

    shown = subprocess.run(
        [sys.executable, "-m", "veriframe_addon", "history", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    rows = {row["job_id"]: row for row in document["jobs"]}
    journal = JobJournal(load_config(environ=env).journal_path)
    assert set(rows) == set(good) | {bad}
    for job_id in good:
        backend = job(devnet, job_id)
        assert journal.is_completed(job_id) and rows[job_id]["outcome"] == "completed"
        assert rows[job_id]["result_cid"] == backend["full_result_cid"]
        assert rows[job_id]["asset_cid"] == backend["full_asset_cid"]
        assert int(rows[job_id]["reward"]) == backend["reward_amount"]
        assert re.fullmatch(r"\d+\.\d+\.\d+", rows[job_id]["blender"]) and rows[job_id]["device"]
        assert set(rows[job_id]["stage_seconds"]) >= {"download", "render", "upload", "report"}
        assert rows[job_id]["bytes_up"] > 0
        assert Path(rows[job_id]["thumbnail"]).is_file()
        assert rows[job_id]["receipt"]["job_id"] == job_id  # the signed receipt the result carries
    # The same scene twice: downloaded once, the second time from the asset cache.
    assert sorted(rows[j]["bytes_down"] for j in good) == [0, sample_blend.stat().st_size]
    assert bad in journal.failed and rows[bad]["outcome"] == "failed"
    assert rows[bad]["reason"] == journal.failed[bad] and rows[bad]["receipt"] is None
    earnings = document["earnings"]
    assert earnings["completed"] == 2 and earnings["failed"] == 1
    assert int(earnings["today"]) == sum(job(devnet, j)["reward_amount"] for j in good)

    text = subprocess.run(
        [sys.executable, "-m", "veriframe_addon", "history", "--since", "1h"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Earned today 0.002 STRK" in text.stdout and f"failed: {journal.failed[bad]}" in text.stdout
    stored = b"".join(p.read_bytes() for p in (tmp_path / "w" / "history").rglob("history.sqlite3*"))
    assert env["WORKER_PRIVATE_KEY"][2:].encode() not in stored and b"eyJ" not in stored


def test_a_busy_computer_takes_no_new_job_and_says_why(
    devnet: Devnet, sample_blend: Path, tmp_path: Path
) -> None:
    """PAUSE_WHEN_BUSY: two programs spinning (a whole core's worth even when tests share the machine,
    above the 30% threshold of this 2-core machine) hold new jobs, and the log says why."""
    waiting = devnet.cli("submit", str(sample_blend), "--settings", SETTINGS).strip()
    cores = os.cpu_count() or 1
    threshold = min(0.3, 0.6 / cores)
    spin = "import time\nend = time.monotonic() + 120\nwhile time.monotonic() < end: pass"
    burners = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(2)]
    env = worker_env(devnet, tmp_path / "w", PAUSE_WHEN_BUSY=str(threshold))
    watcher = LogWatcher(start_worker(env))
    try:
        watcher.wait_for(r"No new jobs: this computer is busy \(other programs use over \d+% of the CPU\)")
        time.sleep(2.0)
        assert job(devnet, waiting)["status"] == "open"
    finally:
        for burner in burners:
            burner.kill()
        watcher.stop()
