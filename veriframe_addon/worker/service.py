"""Running the worker in the foreground until it is told to stop: the shared body of every headless entry.

``python -m veriframe_addon``, ``blender -c veriframe`` and ``blender -b --addons veriframe_addon`` all end
up here, so they parse the same options, stop the same way on SIGINT/SIGTERM (a running render is
killed; an uploaded result stays journaled and is reported on the next start) and exit with the same codes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from .config import WorkerConfig, data_dir_setting, load_config, parse_env_file
from .env_mode import LEVELS
from .errors import AuthError, ConfigError, IpfsCredentialsRefused, RenderError
from .ipfs.client import client_from_config
from .loop import Worker
from .observe.logs import (
    Redactor,
    configure_from_config,
    configure_logging,
    early_format,
    secret_values,
)
from .ops.status_server import StatusServer, WorkerMonitor
from .ops.verify import Verifier
from .policy.tokens import DEFAULT_SYMBOL, Token, parse_decimals
from .render.inventory import BlenderInventory
from .state.history import JobHistory
from .state.pause_flag import PauseFlag

log = logging.getLogger("veriframe.worker")

EXIT_OK, EXIT_CONFIG, EXIT_AUTH, EXIT_BLENDER = 0, 2, 3, 4

T = TypeVar("T")
SIGNAL_CHECK_SECONDS = 0.2  # the longest a signal that reached another thread waits for its handler


def argument_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Render VeriFrame jobs on this machine.",
        epilog=f"Also: {prog} doctor (check the setup), {prog} pause | resume (the running worker), "
        f"{prog} history (finished jobs and earnings), {prog} verify CID_OR_FILE (check a result).",
    )
    parser.add_argument("--max-jobs", type=int, default=None, help="stop after taking this many jobs")
    parser.add_argument(
        "--env-file",
        type=Path,
        default=None,
        help="settings file (default: .env in the current folder, if there is one)",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LEVELS,
        default=None,
        help="overrides LOG_LEVEL (default: DEBUG in development, INFO in production)",
    )
    parser.add_argument(
        "--status-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve /health and /metrics on this port, 0 for any free one (default: STATUS_PORT, else off)",
    )
    parser.add_argument(
        "--status-host",
        default=None,
        metavar="ADDRESS",
        help="address the status endpoint listens on (default: STATUS_HOST, else 127.0.0.1)",
    )
    return parser


def run_pause(argv: list[str], prog: str, *, pause: bool) -> int:
    """``pause``/``resume``: sets or clears the pause flag in the data folder of this user's worker.

    The running worker takes no new job while the flag is set (the job in hand finishes) and tells the
    backend it is inactive. Only the data folder is read from the settings, so this works whatever else
    is configured, and only for the user who owns that folder.
    """
    parser = _local_options(
        argparse.ArgumentParser(
            prog=f"{prog} {'pause' if pause else 'resume'}",
            description="Pause the running worker after its current job." if pause else "Resume the worker.",
        )
    )
    data_dir = _data_dir_from(parser.parse_args(argv))
    flag = PauseFlag(data_dir)
    try:
        flag.set() if pause else flag.clear()
    except OSError as exc:
        print(f"{parser.prog}: cannot change {flag.path}: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    if pause:
        print(f"Paused: the worker using {data_dir} finishes its current job, then takes no new one.")
    else:
        print(f"Resumed: the worker using {data_dir} takes jobs again.")
    return EXIT_OK


def _settings_environ(env_file: Path | None) -> dict[str, str]:
    """The environment over the ``.env`` file (``--env-file``, else ``./.env``), as load_config reads it."""
    found = env_file_or_default(env_file)
    return {**(parse_env_file(found) if found else {}), **os.environ}


def _data_dir_from(args: argparse.Namespace) -> Path:
    environ = _settings_environ(args.env_file)
    return args.data_dir.absolute() if args.data_dir else data_dir_setting(environ.get("VERIFRAME_DATA_DIR"))


def _local_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--env-file", type=Path, default=None, help="settings file (default: .env here)")
    parser.add_argument("--data-dir", type=Path, default=None, help="the worker's data folder")
    return parser


def parse_since(text: str, now: datetime | None = None) -> float:
    """``--since``: ``7d``, ``12h``, ``30m`` ago, or a local date or time (``2026-12-01T18:00``)."""
    now = now or datetime.now()
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if text[-1:] in units and text[:-1].isdigit():
        return (now - timedelta(**{units[text[-1]]: int(text[:-1])})).timestamp()
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not 7d, 12h, 30m or a date like 2026-12-01") from None


def run_history(argv: list[str], prog: str) -> int:
    """``history [--json] [--since WHEN] [--limit N]``: this node's finished jobs and earnings."""
    parser = _local_options(argparse.ArgumentParser(prog=f"{prog} history", description=run_history.__doc__))
    parser.add_argument("--json", action="store_true", help="one JSON document, for machines")
    parser.add_argument("--since", type=parse_since, default=None, help="7d, 12h, 30m, or a date")
    parser.add_argument("--limit", type=int, default=50, help="newest jobs shown (default 50)")
    parser.add_argument("--token-symbol", default=None, help="default: TOKEN_SYMBOL, else STRK")
    parser.add_argument("--token-decimals", type=int, default=None, help="default: TOKEN_DECIMALS, else 18")
    args = parser.parse_args(argv)
    environ = _settings_environ(args.env_file)
    try:  # the token as the worker reads it (config's parser), the command line winning
        symbol = args.token_symbol or environ.get("TOKEN_SYMBOL") or DEFAULT_SYMBOL
        decimals = (
            args.token_decimals
            if args.token_decimals is not None
            else parse_decimals(environ.get("TOKEN_DECIMALS"))
        )
    except ConfigError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    history = JobHistory(_data_dir_from(args))
    try:
        entries, earnings = history.recent(args.limit, since=args.since), history.earnings()
    except sqlite3.Error as exc:
        print(f"{parser.prog}: cannot read {history.path}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.json:  # amounts as text: they outgrow JSON readers' 53-bit integers
        money = {name: str(getattr(earnings, name)) for name in ("today", "week", "total")}
        counts = {"completed": earnings.completed, "failed": earnings.failed}
        document = {"jobs": [e.to_json() for e in entries], "earnings": {**money, **counts}}
        print(json.dumps(document, indent=1))
        return EXIT_OK
    token = Token(symbol, decimals)
    for entry in entries:
        when = datetime.fromtimestamp(entry.finished_at).strftime("%Y-%m-%d %H:%M")
        seconds = sum(entry.stage_seconds.values())
        what = token.format(entry.reward) if entry.outcome == "completed" else f"failed: {entry.reason}"
        used = f"Blender {entry.blender} on {entry.device or '-'}" if entry.blender else "-"
        print(f"{when}  {entry.job_id}  {what}  {used}  {seconds:.1f} s")
    if not entries:
        print("No finished jobs yet." if args.since is None else "No jobs finished in that time.")
    print(
        f"Earned today {token.format(earnings.today)}, this week {token.format(earnings.week)}, "
        f"in all {token.format(earnings.total)} ({earnings.completed} completed, {earnings.failed} failed)"
    )
    return EXIT_OK


EXIT_NOT_VERIFIED = 1


def run_verify(
    argv: list[str], prog: str, make_config: Callable[[dict[str, str]], WorkerConfig] | None = None
) -> int:
    """``verify CID_OR_FILE [--backend URL] [--rerender] [--json]``: checks a result's signed receipt.

    Exit 0 only when every check passed, 1 when one failed, 2 for a setting that is wrong.
    """
    parser = argparse.ArgumentParser(
        prog=f"{prog} verify",
        description="Check a VeriFrame result: its receipt, image hash, signature, the backend's job, "
        "and with --rerender the pixels themselves.",
    )
    parser.add_argument(
        "target", metavar="CID_OR_FILE", help="a result's CID (fetched, verified) or a PNG file"
    )
    parser.add_argument("--backend", default=None, help="backend API base (default: BACKEND_API_URL)")
    parser.add_argument("--rerender", action="store_true", help="render the asset again and compare")
    parser.add_argument("--json", action="store_true", help="one JSON document, for machines")
    parser.add_argument("--env-file", type=Path, default=None, help="settings file (default: .env here)")
    args = parser.parse_args(argv)
    environ = _settings_environ(args.env_file)
    if args.backend:
        environ["BACKEND_API_URL"] = args.backend
    # Verifying signs nothing: a placeholder wallet satisfies the settings' checks, no key is read.
    environ.pop("WORKER_KEYSTORE", None)
    environ.update(WORKER_ADDRESS=environ.get("WORKER_ADDRESS") or "0x1", WORKER_PRIVATE_KEY="0x1")
    try:
        config = make_config(environ) if make_config else load_config(environ=environ)
    except ConfigError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    def blenders() -> BlenderInventory:
        return BlenderInventory.from_config(config)[0]

    verifier = Verifier(config.backend_url, client_from_config(config), config=config, blenders=blenders)
    verdict = verifier.verify(args.target, rerender=args.rerender)
    if args.json:
        print(json.dumps(verdict.to_json(), indent=1))
    else:
        for check in verdict.checks:
            print(f"[{' OK ' if check.ok else 'FAIL'}] {check.name}: {check.detail}")
        failed = [check.name for check in verdict.checks if not check.ok]
        print("verified: every check passed" if verdict.ok else f"NOT verified: {', '.join(failed)} failed")
    return EXIT_OK if verdict.ok else EXIT_NOT_VERIFIED


def env_file_or_default(env_file: Path | None) -> Path | None:
    """The ``--env-file`` given, else ``.env`` in the current folder when there is one."""
    return env_file or (Path(".env") if Path(".env").is_file() else None)


def _early_logging(level_override: str | None) -> None:
    """Logging before the settings are read, so a broken setting is still reported, in the format the
    operator asked for where it can tell (the settings may be what is broken)."""
    wanted = (os.environ.get("LOG_LEVEL") or "INFO").upper()
    level = level_override or (wanted if wanted in LEVELS else "INFO")
    configure_logging(level, early_format(os.environ), secrets=secret_values(None, os.environ))


class StopRequests:
    """What SIGINT/SIGTERM ask of the worker: the first lets the job in hand finish, a second stops at once
    (the job stays claimed and is resumed on the next start)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.stop_after_job = threading.Event()

    def on_signal(self, signum: int, _frame: object) -> None:
        """The signal handler; safe only while the worker loop runs off the main thread (see
        ``run_off_main_thread``), since it sets the events that loop waits on."""
        name = signal.Signals(signum).name
        if self.stop_after_job.is_set():
            log.info("[Worker] %s received again: stopping now", name)
            self.stop.set()
        else:
            log.info("[Worker] %s received: stopping after the current job (send it again to stop now)", name)
            self.stop_after_job.set()


def run_off_main_thread(body: Callable[[], T]) -> T:
    """Runs ``body`` on a thread of its own while the main thread only waits for it; returns what it
    returned or raises what it raised.

    Why: Python runs a signal handler on the main thread between two bytecodes, which can be inside
    ``threading.Event.wait`` while that thread holds the event's lock (a plain, non-reentrant ``Lock``).
    A handler that sets that same event then waits for the lock its own thread holds, forever: CI saw a
    worker log "SIGTERM received" while idle and never exit. With the loop elsewhere, the handler only ever
    interrupts ``Thread.join``, which holds none of the locks the handler takes.

    The join is taken in slices (``SIGNAL_CHECK_SECONDS``): the kernel may hand the signal to any of the
    worker's threads, and then the main thread is not woken; it runs Python's handler only when it next
    runs bytecode, which a join without a timeout never does (CI saw a 2-slot worker ignore SIGTERM).
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def call() -> None:
        try:
            outcome.append(body())
        except BaseException as exc:  # handed to the main thread, which raises it as its own
            failure.append(exc)

    thread = threading.Thread(target=call, name="veriframe-worker")
    thread.start()
    while thread.is_alive():
        thread.join(SIGNAL_CHECK_SECONDS)  # handlers run here: at a signal to this thread, or between slices
    if failure:
        raise failure[0]
    return outcome[0]


def serve(args: argparse.Namespace, make_config: Callable[[Path | None], WorkerConfig] | None = None) -> int:
    """Loads the settings, runs the worker until SIGINT/SIGTERM or ``--max-jobs``, returns an exit code."""
    _early_logging(args.log_level)
    env_file = env_file_or_default(args.env_file)
    try:
        config = make_config(env_file) if make_config else load_config(env_file=env_file)
    except ConfigError as exc:
        log.error("[Worker] Configuration error: %s", exc)
        return EXIT_CONFIG
    written = configure_from_config(config, level=args.log_level, environ=os.environ)
    log.info(
        "[Worker] Mode %s: %s logs at %s, %s",
        config.env_mode,
        config.log_format,
        args.log_level or config.log_level,
        f"also written to {config.log_file}" if written is not None else "no log file",
    )
    status_port = args.status_port if args.status_port is not None else config.status_port
    monitor = None
    if status_port is not None:
        redactor = Redactor(secret_values(config, os.environ))
        monitor = WorkerMonitor(env_mode=config.env_mode, redact=redactor.redact)
    server: StatusServer | None = None

    stops = StopRequests()
    previous = {sig: signal.signal(sig, stops.on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker = Worker(config, stop=stops.stop, on_status=monitor.update if monitor is not None else None)
        if monitor is not None and status_port is not None:
            monitor.watch(worker)
            server = StatusServer(monitor, args.status_host or config.status_host, status_port)
            server.start()
            monitor.running = True
        completed = run_off_main_thread(
            lambda: worker.run(max_jobs=args.max_jobs, stop_after_job=stops.stop_after_job)
        )
    except ConfigError as exc:
        log.error("[Worker] Configuration error: %s", exc)
        return EXIT_CONFIG
    except AuthError as exc:
        log.error("[Worker] %s", exc)
        return EXIT_AUTH
    except IpfsCredentialsRefused as exc:
        log.error("[Worker] Stopped: %s (the job in hand stays claimed and resumes on the next start)", exc)
        return EXIT_CONFIG
    except RenderError as exc:
        log.error("[Worker] %s", exc)
        return EXIT_BLENDER
    finally:
        if monitor is not None:
            monitor.running = False
        if server is not None:
            server.close()
        for sig, handler in previous.items():
            if handler is not None:  # None: a handler installed from C (Blender's own), not restorable here
                signal.signal(sig, handler)
    log.info(
        "[Worker] Stopped after completing %d job(s) (%d failed in this session)",
        completed,
        worker.status.failed,
    )
    return EXIT_OK
