"""``VERIFRAME_ENV`` and the settings it picks defaults for: logs, the poll interval, the status endpoint.

Development keeps what a person at a terminal wants (verbose text lines, as the worker guide has it: each
job's stage records and the render command too; a poll every 10 s); production picks
what a fleet wants (JSON lines a log shipper can index, polls every 30 s so hundreds of workers do not
hammer the backend). Each default still yields to its own variable, so one setting can be changed
without switching the whole mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

Getter = Callable[[str], str | None]


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # LOG_LEVEL
FORMATS = ("text", "json")  # LOG_FORMAT


@dataclass(frozen=True)
class ModeDefaults:
    poll_interval: float
    log_level: str
    log_format: str


MODES = {
    "development": ModeDefaults(poll_interval=10.0, log_level="DEBUG", log_format="text"),
    "production": ModeDefaults(poll_interval=30.0, log_level="INFO", log_format="json"),
}
ALIASES = {"dev": "development", "prod": "production"}
DEFAULT_LOG_FILE_MB = 10.0
DEFAULT_LOG_FILE_COUNT = 5
LOG_FILE_OFF = ("off", "none", "no", "false", "0")
DEFAULT_STATUS_HOST = "127.0.0.1"


@dataclass(frozen=True)
class LogSettings:
    level: str
    format: str
    file: Path | None  # None: no log file
    file_mb: float
    file_count: int


@dataclass(frozen=True)
class StatusSettings:
    port: int | None  # None: no status endpoint; 0: any free port
    host: str


def parse_env_mode(text: str | None) -> str:
    """``development`` (the default) or ``production``; ``dev``/``prod`` are accepted too."""
    mode = (text or "development").strip().lower()
    mode = ALIASES.get(mode, mode)
    if mode not in MODES:
        raise ConfigError("VERIFRAME_ENV", f"{text!r} is not one of {', '.join(MODES)}")
    return mode


def parse_log_settings(get: Getter, mode: str, data_dir: Path) -> LogSettings:
    """``LOG_LEVEL``, ``LOG_FORMAT``, and the rotating file: ``LOG_FILE`` (a path, or ``off``; default
    ``DATA/logs/worker.log``), ``LOG_FILE_MB`` per file and ``LOG_FILE_COUNT`` old files kept."""
    defaults = MODES[mode]
    level = (get("LOG_LEVEL") or defaults.log_level).upper()
    level = "WARNING" if level == "WARN" else level
    if level not in LEVELS:
        raise ConfigError("LOG_LEVEL", f"{level!r} is not one of {', '.join(LEVELS)}")
    fmt = (get("LOG_FORMAT") or defaults.log_format).lower()
    if fmt not in FORMATS:
        raise ConfigError("LOG_FORMAT", f"{fmt!r} is not one of {', '.join(FORMATS)}")
    file_text = get("LOG_FILE")
    if file_text is not None and file_text.lower() in LOG_FILE_OFF:
        log_file = None
    elif file_text is not None:
        log_file = Path(file_text).expanduser().absolute()
    else:
        log_file = data_dir / "logs" / "worker.log"
    if log_file is not None and log_file.is_dir():
        raise ConfigError("LOG_FILE", f"{log_file} is a folder; name a file (or 'off')")
    file_mb = _parse_number(get("LOG_FILE_MB"), "LOG_FILE_MB", DEFAULT_LOG_FILE_MB, minimum=0.001)
    count = _parse_number(get("LOG_FILE_COUNT"), "LOG_FILE_COUNT", DEFAULT_LOG_FILE_COUNT, minimum=1)
    if count != int(count):
        raise ConfigError("LOG_FILE_COUNT", f"must be a whole number, got {get('LOG_FILE_COUNT')!r}")
    return LogSettings(level, fmt, log_file, file_mb, int(count))


def parse_status_settings(get: Getter) -> StatusSettings:
    """``STATUS_PORT`` (unset: no endpoint; 0: a free port) and ``STATUS_HOST`` (loopback by default)."""
    text = get("STATUS_PORT")
    port = None
    if text is not None:
        port = int(_parse_number(text, "STATUS_PORT", 0, minimum=0))
        if port != float(text) or port > 65535:
            raise ConfigError("STATUS_PORT", f"must be a port number from 0 to 65535, got {text!r}")
    host = get("STATUS_HOST") or DEFAULT_STATUS_HOST
    return StatusSettings(port, host)


def _parse_number(text: str | None, name: str, default: float, *, minimum: float) -> float:
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(name, f"{text!r} is not a number") from None
    if not value >= minimum or value == float("inf"):
        raise ConfigError(name, f"must be at least {minimum:g}, got {text!r}")
    return value
