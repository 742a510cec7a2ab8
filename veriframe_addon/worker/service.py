"""Running the worker in the foreground until it is told to stop: the shared body of every headless entry.

``python -m veriframe_addon``, ``blender -c veriframe`` and ``blender -b --addons veriframe_addon`` all end
up here, so they parse the same options, stop the same way on SIGINT/SIGTERM (a running render is
killed; an uploaded result stays journaled and is reported on the next start) and exit with the same codes.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from .config import WorkerConfig, load_config
from .errors import AuthError, ConfigError, RenderError
from .logs import configure_logging
from .loop import Worker

log = logging.getLogger("veriframe.worker")

EXIT_OK, EXIT_CONFIG, EXIT_AUTH, EXIT_BLENDER = 0, 2, 3, 4


def argument_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Render VeriFrame jobs on this machine.")
    parser.add_argument("--max-jobs", type=int, default=None, help="stop after taking this many jobs")
    parser.add_argument(
        "--env-file",
        type=Path,
        default=None,
        help="settings file (default: .env in the current folder, if there is one)",
    )
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    return parser


def serve(args: argparse.Namespace, make_config: Callable[[Path | None], WorkerConfig] | None = None) -> int:
    """Loads the settings, runs the worker until SIGINT/SIGTERM or ``--max-jobs``, returns an exit code."""
    configure_logging(args.log_level)
    env_file = args.env_file or (Path(".env") if Path(".env").is_file() else None)
    try:
        config = make_config(env_file) if make_config else load_config(env_file=env_file)
    except ConfigError as exc:
        log.error("[Worker] Configuration error: %s", exc)
        return EXIT_CONFIG

    stop = threading.Event()
    stop_after_job = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        """The first SIGINT/SIGTERM lets the job in hand finish; a second one stops at once (the job
        stays claimed and is resumed on the next start)."""
        name = signal.Signals(signum).name
        if stop_after_job.is_set():
            log.info("[Worker] %s received again: stopping now", name)
            stop.set()
        else:
            log.info("[Worker] %s received: stopping after the current job (send it again to stop now)", name)
            stop_after_job.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker = Worker(config, stop=stop)
        completed = worker.run(max_jobs=args.max_jobs, stop_after_job=stop_after_job)
    except ConfigError as exc:
        log.error("[Worker] Configuration error: %s", exc)
        return EXIT_CONFIG
    except AuthError as exc:
        log.error("[Worker] %s", exc)
        return EXIT_AUTH
    except RenderError as exc:
        log.error("[Worker] %s", exc)
        return EXIT_BLENDER
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: a handler installed from C (Blender's own), not restorable here
                signal.signal(sig, handler)
    log.info(
        "[Worker] Stopped after completing %d job(s) (%d failed in this session)",
        completed,
        worker.status.failed,
    )
    return EXIT_OK
