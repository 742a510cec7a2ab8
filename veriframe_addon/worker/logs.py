"""Log setup for headless runs: the seed worker's ``[Worker] ...`` lines, with time and level in front."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)-7s %(message)s"


def configure_logging(level: str = "INFO") -> None:
    """Sends the worker's logs to stderr; quiet third-party chatter (urllib3) below WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("urllib3").setLevel(logging.WARNING)
