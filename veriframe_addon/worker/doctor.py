"""``doctor``: the panel's "Check setup" for a terminal, with an exit code a script or a deploy can test.

``python -m veriframe_addon doctor`` and ``blender -c veriframe doctor`` run the same checks as the
panel (``setup_check.run_checks``), print one line per check as it finishes, and end with one line
naming every broken piece, so the operator knows what to fix before starting the worker.

The report is the command's output, so it goes to stdout; the worker's own log lines (warnings only)
stay on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from .config import WorkerConfig, load_config
from .errors import ConfigError
from .observe.logs import Redactor, configure_logging, early_format, secret_values
from .ops.setup_check import CheckResult, run_checks
from .service import EXIT_CONFIG, EXIT_OK, env_file_or_default

EXIT_PROBLEMS = 5
CHECK_PREFIX = "[Check]"  # run_checks logs each result; the report already shows it


class _WithoutCheckLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(CHECK_PREFIX)


def doctor_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Check that the backend, the wallet key, IPFS and the render Blender all work.",
        epilog=f"Exit status: {EXIT_OK} all checks passed, {EXIT_CONFIG} a setting is missing or "
        f"malformed, {EXIT_PROBLEMS} a check failed.",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        default=None,
        help="settings file (default: .env in the current folder, if there is one)",
    )
    return parser


def run_doctor(
    argv: list[str],
    prog: str,
    make_config: Callable[[Path | None], WorkerConfig] | None = None,
    out: TextIO | None = None,
) -> int:
    """Parses ``argv`` (what follows ``doctor``), runs every check, reports, returns the exit code."""
    out = out or sys.stdout
    args = doctor_parser(prog).parse_args(argv)
    configure_logging("WARNING", early_format(os.environ), secrets=secret_values(None, os.environ))
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WithoutCheckLines())
    env_file = env_file_or_default(args.env_file)
    redactor = Redactor(secret_values(None, os.environ))

    def say(line: str) -> None:
        out.write(redactor.redact(line) + "\n")  # a check's message quoting a secret is still masked
        out.flush()

    try:
        config = make_config(env_file) if make_config else load_config(env_file=env_file)
    except ConfigError as exc:
        say(f"[FAIL] Settings: {exc}")
        say(f"doctor: 1 problem(s): Settings ({exc.variable}); fix it, then run doctor again")
        return EXIT_CONFIG
    redactor = Redactor(secret_values(config, os.environ))
    source = f"settings from {env_file}" if env_file else "settings from the environment"
    say(f"doctor: checking the setup ({source}, VERIFRAME_ENV={config.env_mode})")

    def report(result: CheckResult) -> None:
        mark = "[ OK ]" if result.ok else "[FAIL]"
        say(f"{mark} {result.name}: {result.message} ({result.seconds:.2f} s)")

    results = run_checks(config, on_result=report)
    broken = [result.name for result in results if not result.ok]
    if broken:
        say(f"doctor: {len(broken)} problem(s): {', '.join(broken)}")
        return EXIT_PROBLEMS
    say(f"doctor: all {len(results)} checks passed")
    return EXIT_OK
