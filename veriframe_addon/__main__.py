"""Headless worker: ``python -m veriframe_addon`` in a Python with ``bpy`` (or with ``BLENDER_PATH``).

Runs the same ``Worker`` the Blender extension drives. SIGINT/SIGTERM stop it cleanly: a running render
is killed, an uploaded result stays in the journal and is reported on the next start.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path

from .worker.config import load_config
from .worker.errors import AuthError, ConfigError, RenderError
from .worker.logs import configure_logging
from .worker.loop import Worker

log = logging.getLogger("veriframe.worker")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m veriframe_addon", description=__doc__.splitlines()[0])
    parser.add_argument("--max-jobs", type=int, default=None, help="stop after taking this many jobs")
    parser.add_argument(
        "--env-file",
        type=Path,
        default=None,
        help="settings file (default: .env in the current folder, if there is one)",
    )
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    configure_logging(args.log_level)

    env_file = args.env_file or (Path(".env") if Path(".env").is_file() else None)
    try:
        config = load_config(env_file=env_file)
    except ConfigError as exc:
        log.error("[Worker] Configuration error: %s", exc)
        return 2

    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("[Worker] %s received: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        worker = Worker(config, stop=stop)
        completed = worker.run(max_jobs=args.max_jobs)
    except ConfigError as exc:
        log.error("[Worker] Configuration error: %s", exc)
        return 2
    except AuthError as exc:
        log.error("[Worker] %s", exc)
        return 3
    except RenderError as exc:
        log.error("[Worker] %s", exc)
        return 4
    log.info(
        "[Worker] Stopped after completing %d job(s) (%d failed in this session)",
        completed,
        worker.status.failed,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
