"""Log setup: the seed worker's ``[Worker] ...`` lines (text) or one JSON object a line, to stderr and to a
rotating file in the data folder, with every configured secret masked before any handler writes it.

Text is for people watching a terminal; JSON is for log shippers (Loki, Elasticsearch, journald with a
parser), which need the job id, stage and duration as fields rather than words inside a sentence.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import logging
import logging.handlers
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from ..env_mode import FORMATS
from . import telemetry

if TYPE_CHECKING:
    from ..config import WorkerConfig

FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
FILE_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"  # a file outlives the day; the terminal's time-only stamp does not
# Settings whose values must never appear in a log, whatever code tries to write them.
SECRET_VARIABLES = ("WORKER_PRIVATE_KEY", "IPFS_API_AUTH", "PINATA_JWT")
MIN_SECRET_LENGTH = 6  # shorter "secrets" (a test's 0x1234) would mask half the hex in a log
REDACTED = "[REDACTED]"
# Record attributes (set by ``telemetry`` or passed as ``extra``) a JSON line carries as fields.
CONTEXT_FIELDS = ("job_id", "stage", "duration")
WORKER_LOGGER = "veriframe.worker"
OWN_HANDLER = "veriframe"


class Redactor:
    """Replaces each secret (case-insensitively: hex keys are written both ways) with ``[REDACTED]``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        wanted = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, wanted)), re.IGNORECASE) if wanted else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def redact(self, text: str) -> str:
        return self._pattern.sub(REDACTED, text) if self._pattern is not None else text


class SecretFilter(logging.Filter):
    """Defense in depth: the worker never logs its secrets on purpose, and this makes sure an exception
    message or a third-party line quoting one does not either. It rewrites the record itself, so every
    handler after it (stderr, file, the panel) sees the masked text."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.redactor:
            return True
        message = record.getMessage()
        masked = self.redactor.redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        return True


class ContextFilter(logging.Filter):
    """Puts the current job id and stage (``telemetry``) on records that do not carry them already."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in telemetry.current().items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, and
    ``job_id``/``stage``/``duration`` when known; ``exception`` holds a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        line: dict[str, object] = {
            "time": created.strftime("%Y-%m-%dT%H:%M:%S.") + f"{created.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def make_formatter(fmt: str, *, for_file: bool = False) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    return logging.Formatter(FORMAT, datefmt=FILE_DATE_FORMAT if for_file else "%H:%M:%S")


def secret_values(config: WorkerConfig | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every spelling of every secret the worker holds: fields kept out of ``repr`` in the config (the
    key as hex with and without ``0x`` or padding, and as a number; an ``Authorization`` value, its
    credentials and, for Basic, the decoded ``user:password`` and password) and the raw settings."""
    found: list[str] = []
    if config is not None:
        for item in fields(config):
            value = getattr(config, item.name)
            if item.repr or value is None:
                continue
            if isinstance(value, int):
                found += [format(value, "x"), format(value, "064x"), str(value)]
            else:
                found += _credential_forms(str(value))
    for name in SECRET_VARIABLES:
        raw = (environ or {}).get(name, "").strip()
        if raw:
            found += _credential_forms(raw)
            if raw.lower().startswith("0x"):
                found.append(raw[2:].lstrip("0"))
    return found


def _credential_forms(value: str) -> list[str]:
    forms = [value]
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() in ("bearer", "basic") and credentials:
        forms.append(credentials.strip())
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                decoded = ""
            forms.append(decoded)
            value = decoded
    if ":" in value and " " not in value:  # user:password
        forms.append(value.partition(":")[2])
    return [form for form in forms if form]


def file_handler(
    path: Path, fmt: str, *, max_bytes: int, backup_count: int, redactor: Redactor | None = None
) -> logging.Handler | None:
    """A size-rotating log file (``worker.log``, ``worker.log.1`` ...); None, with a warning, when the
    folder cannot be written: a worker that renders but cannot log to a file should still render."""
    try:
        return _open_file(path, fmt, max_bytes, backup_count, redactor)
    except OSError as exc:
        _warn_unwritable(path, exc)
        return None


def _open_file(
    path: Path, fmt: str, max_bytes: int, backup_count: int, redactor: Redactor | None
) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
    )
    _prepare(handler, make_formatter(fmt, for_file=True), redactor)
    return handler


def _warn_unwritable(path: Path, exc: OSError) -> None:
    logging.getLogger(WORKER_LOGGER).warning("[Worker] Cannot write the log file %s: %s", path, exc)


def config_file_handler(config: WorkerConfig, redactor: Redactor | None = None) -> logging.Handler | None:
    """The log file ``config`` asks for (``LOG_FILE``, ``LOG_FILE_MB``, ``LOG_FILE_COUNT``), or None."""
    if config.log_file is None:
        return None
    return file_handler(
        config.log_file,
        config.log_format,
        max_bytes=max(1, int(config.log_file_mb * 1024 * 1024)),
        backup_count=config.log_file_count,
        redactor=redactor,
    )


def _prepare(handler: logging.Handler, formatter: logging.Formatter, redactor: Redactor | None) -> None:
    # The secret filter comes first, so the context filter and the formatter only see masked text.
    handler.addFilter(SecretFilter(redactor or Redactor()))
    handler.addFilter(ContextFilter())
    handler.setFormatter(formatter)


def configure_logging(
    level: str = "INFO",
    fmt: str = "text",
    *,
    log_file: Path | None = None,
    max_bytes: int = 10 * 1024 * 1024,
    backup_count: int = 5,
    secrets: Iterable[str] = (),
) -> logging.Handler | None:
    """Sends the process's logs to stderr (and ``log_file``, rotated); quiets third-party chatter
    (urllib3) below WARNING. Returns the file handler, if one was opened."""
    redactor = Redactor(secrets)
    stream = logging.StreamHandler(sys.stderr)
    _prepare(stream, make_formatter(fmt), redactor)
    stream.set_name(OWN_HANDLER)
    handlers: list[logging.Handler] = [stream]
    written = None
    failure: OSError | None = None
    if log_file is not None:
        try:
            written = _open_file(log_file, fmt, max_bytes, backup_count, redactor)
        except OSError as exc:
            failure = exc  # said once the new stderr handler is in place, so it is seen
        else:
            written.set_name(OWN_HANDLER)
            handlers.append(written)
    root = logging.getLogger()
    for old in root.handlers:
        if old.get_name() == OWN_HANDLER:  # ours from an earlier call (the file stays open otherwise)
            old.close()
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.captureWarnings(True)  # a library's warning is a log line too (JSON stays one object a line)
    if failure is not None and log_file is not None:
        _warn_unwritable(log_file, failure)
    return written


def configure_from_config(
    config: WorkerConfig, level: str | None = None, environ: Mapping[str, str] | None = None
) -> logging.Handler | None:
    """Logging as ``config`` says (``level`` overrides ``LOG_LEVEL``, as ``--log-level`` does)."""
    return configure_logging(
        level or config.log_level,
        config.log_format,
        log_file=config.log_file,
        max_bytes=max(1, int(config.log_file_mb * 1024 * 1024)),
        backup_count=config.log_file_count,
        secrets=secret_values(config, environ),
    )


def early_format(environ: Mapping[str, str]) -> str:
    """The format to report a broken configuration in, before the configuration could be read."""
    wanted = environ.get("LOG_FORMAT", "").strip().lower()
    if wanted in FORMATS:
        return wanted
    mode = environ.get("VERIFRAME_ENV", "").strip().lower()
    return "json" if mode in ("production", "prod") else "text"
