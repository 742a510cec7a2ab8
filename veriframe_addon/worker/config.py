"""Worker settings, read once from the environment and an optional ``.env`` file.

Every value is checked here, before the worker touches the network or the disk, so a typo surfaces as
one ``ConfigError`` naming the variable instead of a confusing failure halfway through a job.
"""

from __future__ import annotations

import base64
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .env_mode import (
    DEFAULT_LOG_FILE_COUNT,
    DEFAULT_LOG_FILE_MB,
    DEFAULT_STATUS_HOST,
    MODES,
    parse_env_mode,
    parse_log_settings,
    parse_status_settings,
)
from .errors import ConfigError
from .keystore import read_keystore, read_password_file
from .limits import DEFAULT_RENDER_NICE, LIMIT_VARIABLES, CpuBudget, RenderLimits, default_render_memory_mb
from .multiaddr import api_url_from_multiaddr
from .policy.job_filters import JobFilters, parse_creators, parse_engines
from .policy.schedule import Schedule, parse_schedule
from .policy.tokens import DEFAULT_SYMBOL, Token, parse_decimals

# The Stark curve order: a private key is a non-zero scalar below it.
STARK_EC_ORDER = 0x800000000000010FFFFFFFFFFFFFFFFB781126DCAE7B2321E66A241ADC64D2F
# Addresses and other felts are below the field prime (2**251 + 17 * 2**192 + 1).
STARK_FIELD_PRIME = 2**251 + 17 * 2**192 + 1

DEFAULT_POLL_INTERVAL = 10.0
DEFAULT_RENDER_TIMEOUT = 300.0
DEFAULT_GATEWAY = "http://127.0.0.1:8080/ipfs"
DEFAULT_IPFS_API = "/ip4/127.0.0.1/tcp/5001"
DEFAULT_PINATA_API_URL = "https://api.pinata.cloud"
IPFS_PROVIDERS = ("kubo", "pinata")
DEFAULT_ASSET_CACHE_MB = 2048
DEFAULT_KEEP_RESULTS_HOURS = 24.0
DEFAULT_BUSY_CPU_SHARE = 0.5  # PAUSE_WHEN_BUSY=on: other programs use half of all cores
DEFAULT_BUSY_IDLE_MINUTES = (
    5.0  # inside Blender, with PAUSE_WHEN_BUSY: minutes since the operator's last input
)

SANDBOX_MODES = ("auto", "bwrap", "off")
GPU_TYPES = ("OPTIX", "CUDA", "HIP", "ONEAPI", "METAL")  # Cycles' GPU kinds, best first (for auto)
DEVICE_CHOICES = ("auto", "CPU", *GPU_TYPES)  # RENDER_DEVICE
GPU_BACKENDS = ("opengl", "vulkan", "metal")  # RENDER_GPU_BACKEND: Blender's --gpu-backend
_HEX_RE = re.compile(r"^0x[0-9a-fA-F]{1,64}$")
_VISIBLE_RE = re.compile(r"^[!-~]+$")  # a token: visible ASCII, no spaces
_JWT_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class WorkerConfig:
    """The settings a worker runs with; ``private_key`` is kept out of ``repr`` so it never lands in a log."""

    backend_url: str
    worker_address: str
    private_key: int = field(repr=False)
    ipfs_api_url: str
    ipfs_gateways: tuple[str, ...]  # tried in order for downloads, then the RPC API's cat
    blender_path: str | None
    poll_interval: float
    render_timeout: float
    data_dir: Path
    limits: RenderLimits = field(default_factory=RenderLimits)
    cpu: CpuBudget = field(default_factory=CpuBudget)
    render_device: str = "auto"  # RENDER_DEVICE: auto, CPU or a GPU type (render/devices.py)
    render_gpus: tuple[str, ...] = ()  # RENDER_GPUS: Cycles device ids or names (empty: all of the type)
    render_gpu_backend: str | None = None  # RENDER_GPU_BACKEND: Blender's --gpu-backend for EEVEE (binaries)
    # auto: bwrap where it works, a loud warning where not; bwrap: refuse to render without it; off.
    sandbox: str = "auto"
    shader_cache_dir: Path | None = None
    # Verified assets kept by CID for jobs that share a scene; 0 turns the cache off.
    asset_cache_mb: int = DEFAULT_ASSET_CACHE_MB
    # How long a finished job's folder (its render and render.log) is kept; 0: removed at once.
    keep_results_hours: float = DEFAULT_KEEP_RESULTS_HOURS
    # WARM_STANDBY: the next render's Blender starts (sandboxed, warmed on its own scene) before its job.
    warm_standby: bool = True
    # PREFETCH: while a job renders, the next acceptable job's asset is fetched into the asset cache.
    prefetch: bool = True
    # RENDER_SLOTS: jobs in flight at once (None: auto, one per chosen GPU, else 1).
    render_slots: int | None = None

    # Who stores results: kubo (the RPC API's add) or pinata (Pinata's pinning API).
    ipfs_provider: str = "kubo"
    pinata_api_url: str = DEFAULT_PINATA_API_URL
    # Credentials, like the key, stay out of ``repr``: the RPC API's Authorization header and Pinata's JWT.
    ipfs_api_auth: str | None = field(default=None, repr=False)
    pinata_jwt: str | None = field(default=None, repr=False)

    # VERIFRAME_ENV and what it picks defaults for (see env_mode.py); log_file None: no log file.
    env_mode: str = "development"
    log_level: str = "INFO"
    log_format: str = "text"
    log_file: Path | None = None
    log_file_mb: float = DEFAULT_LOG_FILE_MB
    log_file_count: int = DEFAULT_LOG_FILE_COUNT
    # The /health and /metrics endpoint (STATUS_PORT; None: off, 0: a free port), loopback by default.
    filters: JobFilters = field(default_factory=JobFilters)  # MIN_REWARD, ACCEPT_ENGINES, BLOCKED_CREATORS
    schedule: Schedule | None = None  # SCHEDULE: when new jobs are taken (None: always)
    busy_cpu_share: float | None = None  # PAUSE_WHEN_BUSY: others' CPU share above which no job starts
    busy_idle_minutes: float = DEFAULT_BUSY_IDLE_MINUTES  # inside Blender: the operator's quiet time

    status_port: int | None = None
    status_host: str = DEFAULT_STATUS_HOST

    @property
    def ipfs_gateway_url(self) -> str:
        """The first gateway (what the panel shows); downloads try every one in ``ipfs_gateways``."""
        return self.ipfs_gateways[0]

    @property
    def shader_cache(self) -> Path:
        """Where GL drivers and Blender keep compiled shaders across jobs and restarts."""
        return self.shader_cache_dir or self.data_dir / "shader-cache"

    @property
    def asset_cache_dir(self) -> Path:
        return self.data_dir / "asset-cache"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def journal_path(self) -> Path:
        return self.data_dir / "completed_jobs.json"


def parse_env_file(path: Path) -> dict[str, str]:
    """Reads ``KEY=value`` lines the way python-dotenv does for the common cases.

    Blender's Python has no python-dotenv, so this small reader covers what operators write: comments,
    ``export`` prefixes, single/double quotes, and trailing ``# comments`` after a value.
    """
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            # The line's text is not echoed: it may hold the private key (``WORKER_PRIVATE_KEY 0x...``).
            raise ConfigError(str(path), f"line {number} is not KEY=value")
        value = value.strip()
        quoted = re.fullmatch(r"""(['"])(.*?)\1\s*(?:#.*)?""", value)
        values[key] = quoted.group(2) if quoted else value.split(" #", 1)[0].strip()
    return values


def default_data_dir() -> Path:
    """A per-user data folder (XDG on Linux, Application Support on macOS, LOCALAPPDATA on Windows)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "veriframe-worker"


def data_dir_setting(text: str | None) -> Path:
    """``VERIFRAME_DATA_DIR``, else the per-user data folder; absolute."""
    return (Path(text.strip()).expanduser() if text and text.strip() else default_data_dir()).absolute()


def load_config(environ: Mapping[str, str] | None = None, env_file: Path | None = None) -> WorkerConfig:
    """Builds a ``WorkerConfig`` from ``environ`` (default ``os.environ``) over an optional ``.env`` file.

    Real environment variables win over the file, as with python-dotenv, so a one-off override on the
    command line needs no edit of the file.
    """
    env: dict[str, str] = {}
    if env_file is not None:
        if not env_file.is_file():
            raise ConfigError(str(env_file), "the .env file does not exist")
        env.update(parse_env_file(env_file))
    env.update(os.environ if environ is None else environ)

    def get(name: str, default: str | None = None) -> str | None:
        value = env.get(name, "").strip()
        return value if value else default

    backend_url = _parse_backend_url(_require(get("BACKEND_API_URL"), "BACKEND_API_URL"))
    worker_address = _parse_felt(_require(get("WORKER_ADDRESS"), "WORKER_ADDRESS"), "WORKER_ADDRESS")
    private_key = _private_key(get)
    ipfs_api = get("IPFS_API", DEFAULT_IPFS_API) or DEFAULT_IPFS_API
    if "@" in urlsplit(ipfs_api).netloc:  # the URL is logged; the value is not echoed here
        raise ConfigError("IPFS_API", "holds user:password; put credentials in IPFS_API_AUTH instead")
    try:
        ipfs_api_url = api_url_from_multiaddr(ipfs_api)
    except ValueError as exc:
        raise ConfigError("IPFS_API", str(exc)) from None
    gateways = _parse_gateways(get("IPFS_GATEWAY", DEFAULT_GATEWAY) or DEFAULT_GATEWAY)
    ipfs_api_auth_text = get("IPFS_API_AUTH")
    ipfs_api_auth = parse_authorization(ipfs_api_auth_text, "IPFS_API_AUTH") if ipfs_api_auth_text else None
    ipfs_provider = (get("IPFS_PROVIDER", "kubo") or "kubo").lower()
    if ipfs_provider not in IPFS_PROVIDERS:
        raise ConfigError("IPFS_PROVIDER", f"{ipfs_provider!r} is not one of {', '.join(IPFS_PROVIDERS)}")
    pinata_api_url = _parse_http_url(
        get("PINATA_API_URL", DEFAULT_PINATA_API_URL) or DEFAULT_PINATA_API_URL, "PINATA_API_URL"
    )
    pinata_jwt_text = get("PINATA_JWT")
    pinata_jwt = _parse_jwt(pinata_jwt_text, "PINATA_JWT") if pinata_jwt_text else None
    if ipfs_provider == "pinata" and pinata_jwt is None:
        raise ConfigError("PINATA_JWT", "is not set; IPFS_PROVIDER=pinata needs it (environment or .env)")
    blender_path = get("BLENDER_PATH")
    env_mode = parse_env_mode(get("VERIFRAME_ENV"))
    poll_default = MODES[env_mode].poll_interval
    poll_interval = _parse_seconds(get("POLL_INTERVAL"), "POLL_INTERVAL", poll_default, minimum=0.05)
    render_timeout = _parse_seconds(
        get("RENDER_TIMEOUT"), "RENDER_TIMEOUT", DEFAULT_RENDER_TIMEOUT, minimum=1
    )
    data_dir = data_dir_setting(get("VERIFRAME_DATA_DIR"))
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError("VERIFRAME_DATA_DIR", f"{data_dir} exists and is not a folder")
    log_settings = parse_log_settings(get, env_mode, data_dir)
    status_settings = parse_status_settings(get)
    shader_cache_text = get("VERIFRAME_SHADER_CACHE")
    sandbox = (get("RENDER_SANDBOX", "auto") or "auto").lower()
    if sandbox not in SANDBOX_MODES:
        raise ConfigError("RENDER_SANDBOX", f"{sandbox!r} is not one of {', '.join(SANDBOX_MODES)}")

    return WorkerConfig(
        backend_url=backend_url,
        worker_address=worker_address,
        private_key=private_key,
        ipfs_api_url=ipfs_api_url,
        ipfs_gateways=gateways,
        blender_path=blender_path,
        poll_interval=poll_interval,
        render_timeout=render_timeout,
        data_dir=data_dir,
        env_mode=env_mode,
        log_level=log_settings.level,
        log_format=log_settings.format,
        log_file=log_settings.file,
        log_file_mb=log_settings.file_mb,
        log_file_count=log_settings.file_count,
        status_port=status_settings.port,
        status_host=status_settings.host,
        limits=_parse_limits(get),
        cpu=_parse_cpu(get),
        render_device=parse_device(get("RENDER_DEVICE")),
        render_gpus=parse_gpus(get("RENDER_GPUS")),
        render_gpu_backend=_parse_gpu_backend(get("RENDER_GPU_BACKEND")),
        sandbox=sandbox,
        shader_cache_dir=Path(shader_cache_text).expanduser().absolute() if shader_cache_text else None,
        asset_cache_mb=_parse_megabytes(get("ASSET_CACHE_MB"), "ASSET_CACHE_MB", DEFAULT_ASSET_CACHE_MB),
        keep_results_hours=_parse_hours(get("KEEP_RESULTS_HOURS"), "KEEP_RESULTS_HOURS"),
        warm_standby=_parse_switch(get("WARM_STANDBY"), "WARM_STANDBY"),
        prefetch=_parse_switch(get("PREFETCH"), "PREFETCH"),
        render_slots=_parse_slots(get("RENDER_SLOTS")),
        filters=_parse_filters(get),
        schedule=parse_schedule(get("SCHEDULE")),
        busy_cpu_share=_parse_busy(get("PAUSE_WHEN_BUSY")),
        busy_idle_minutes=_parse_minutes(get("BUSY_IDLE_MINUTES"), "BUSY_IDLE_MINUTES"),
        ipfs_provider=ipfs_provider,
        pinata_api_url=pinata_api_url,
        ipfs_api_auth=ipfs_api_auth,
        pinata_jwt=pinata_jwt,
    )


def _private_key(get: Callable[[str], str | None]) -> int:
    """``WORKER_PRIVATE_KEY``, or the keystore ``WORKER_KEYSTORE`` opened with its password
    (``WORKER_KEYSTORE_PASSWORD``, else the first line of ``WORKER_KEYSTORE_PASSWORD_FILE``)."""
    keystore = get("WORKER_KEYSTORE")
    if keystore is None:
        return _parse_private_key(_require(get("WORKER_PRIVATE_KEY"), "WORKER_PRIVATE_KEY"))
    if get("WORKER_PRIVATE_KEY") is not None:
        raise ConfigError("WORKER_KEYSTORE", "and WORKER_PRIVATE_KEY are both set; keep one")
    password = get("WORKER_KEYSTORE_PASSWORD")
    password_file = get("WORKER_KEYSTORE_PASSWORD_FILE")
    if password is None and password_file is not None:
        password = read_password_file(Path(password_file).expanduser())
    if password is None:
        raise ConfigError(
            "WORKER_KEYSTORE",
            "needs its password: WORKER_KEYSTORE_PASSWORD, WORKER_KEYSTORE_PASSWORD_FILE, or in Blender "
            "the panel's 'Enter keystore password'",
        )
    key = read_keystore(Path(keystore).expanduser(), password)
    if not 0 < key < STARK_EC_ORDER:
        raise ConfigError("WORKER_KEYSTORE", "holds a key out of range for a Stark private key")
    return key


MAX_RENDER_SLOTS = 16


def _parse_slots(text: str | None) -> int | None:
    """``RENDER_SLOTS``: ``auto`` (default: one per chosen GPU, else 1) or a count from 1 to 16."""
    value = (text or "").strip().lower()
    if value in ("", "auto"):
        return None
    try:
        slots = int(value)
    except ValueError:
        raise ConfigError("RENDER_SLOTS", f"{text!r} is not a whole number or auto") from None
    if not 1 <= slots <= MAX_RENDER_SLOTS:
        raise ConfigError("RENDER_SLOTS", f"must be from 1 to {MAX_RENDER_SLOTS}, not {slots}")
    return slots


def _parse_switch(text: str | None, name: str, default: bool = True) -> bool:
    """An ``on``/``off`` setting (``yes``/``no``, ``true``/``false``, ``1``/``0`` too); unset: ``default``."""
    value = (text or "").strip().lower()
    if not value:
        return default
    if value in ("on", "yes", "true", "1"):
        return True
    if value in ("off", "no", "false", "0"):
        return False
    raise ConfigError(name, f"{text!r} is not on or off")


def _parse_busy(text: str | None) -> float | None:
    """``PAUSE_WHEN_BUSY``: ``off`` (default), ``on`` (others use half the CPU), or a share such as
    ``0.3`` or ``30%``."""
    if text is None or text.strip().lower() in ("", "off", "no", "0", "false"):
        return None
    value = text.strip().lower()
    if value in ("on", "yes", "true"):
        return DEFAULT_BUSY_CPU_SHARE
    try:
        share = float(value.removesuffix("%")) / (100 if value.endswith("%") else 1)
    except ValueError:
        raise ConfigError(
            "PAUSE_WHEN_BUSY", f"{text!r} is not on, off, or a CPU share like 0.5 or 50%"
        ) from None
    if not 0 < share <= 1:
        raise ConfigError(
            "PAUSE_WHEN_BUSY", f"the CPU share must be above 0 and at most 1 (100%), got {text!r}"
        )
    return share


def _parse_minutes(text: str | None, name: str) -> float:
    if text is None or not text.strip():
        return DEFAULT_BUSY_IDLE_MINUTES
    try:
        value = float(text.strip().removesuffix("min"))
    except ValueError:
        raise ConfigError(name, f"{text!r} is not a number of minutes") from None
    if not 0 <= value < 24 * 60:
        raise ConfigError(name, f"must be 0 to 1440 minutes, got {text!r}")
    return value


def _parse_filters(get: Callable[[str], str | None]) -> JobFilters:
    """``MIN_REWARD`` (in whole tokens), ``ACCEPT_ENGINES``, ``BLOCKED_CREATORS``; the token from
    ``TOKEN_SYMBOL`` (default STRK) and ``TOKEN_DECIMALS`` (default 18)."""
    symbol = get("TOKEN_SYMBOL", DEFAULT_SYMBOL) or DEFAULT_SYMBOL
    token = Token(symbol, parse_decimals(get("TOKEN_DECIMALS")))
    min_reward_text = get("MIN_REWARD")
    return JobFilters(
        min_reward=token.parse(min_reward_text, "MIN_REWARD") if min_reward_text else 0,
        engines=parse_engines(get("ACCEPT_ENGINES")),
        blocked_creators=parse_creators(get("BLOCKED_CREATORS")),
        token=token,
    )


def _parse_limits(get: Callable[[str], str | None]) -> RenderLimits:
    """Each cap from its variable; a cap must be a positive number (memory: 0 turns it off)."""
    defaults = RenderLimits(max_render_memory_mb=default_render_memory_mb())
    values: dict[str, float | int] = {}
    for name, variable in LIMIT_VARIABLES.items():
        text = get(variable)
        default = getattr(defaults, name)
        if text is None:
            values[name] = default
            continue
        kind = type(default)
        try:
            value = kind(float(text)) if kind is int else float(text)
        except (ValueError, OverflowError):
            raise ConfigError(variable, f"{text!r} is not a number") from None
        allow_zero = name == "max_render_memory_mb"
        if not (value > 0 or (allow_zero and value == 0)) or value == float("inf"):
            raise ConfigError(variable, f"must be a positive number, got {text!r}")
        values[name] = value
    return RenderLimits(**values)  # type: ignore[arg-type]


def parse_device(text: str | None) -> str:
    """``RENDER_DEVICE``: ``auto`` (default), ``CPU`` or a GPU type, in any case."""
    value = (text or "auto").strip()
    for choice in DEVICE_CHOICES:
        if value.lower() == choice.lower():
            return choice
    raise ConfigError("RENDER_DEVICE", f"{value!r} is not one of {', '.join(DEVICE_CHOICES)}")


def parse_gpus(text: str | None) -> tuple[str, ...]:
    """``RENDER_GPUS``: Cycles device ids or names, separated by commas (empty: every one of the type)."""
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def _parse_gpu_backend(text: str | None) -> str | None:
    """``RENDER_GPU_BACKEND``: ``opengl``, ``vulkan`` or ``metal`` (unset: Blender's own default)."""
    if text is None or not text.strip():
        return None
    value = text.strip().lower()
    if value not in GPU_BACKENDS:
        raise ConfigError("RENDER_GPU_BACKEND", f"{text!r} is not one of {', '.join(GPU_BACKENDS)}")
    return value


def _parse_cpu(get: Callable[[str], str | None]) -> CpuBudget:
    """``RENDER_THREADS`` (0 or unset: every core) and ``RENDER_NICE`` (0 to 19, default 10)."""
    threads = _parse_whole(get("RENDER_THREADS"), "RENDER_THREADS", 0, 0, 1024)
    nice = _parse_whole(get("RENDER_NICE"), "RENDER_NICE", DEFAULT_RENDER_NICE, 0, 19)
    return CpuBudget(threads=threads, nice=nice)


def _parse_whole(text: str | None, name: str, default: int, low: int, high: int) -> int:
    if text is None or not text.strip():
        return default
    try:
        value = int(text.strip())
    except ValueError:
        raise ConfigError(name, f"{text!r} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigError(name, f"must be between {low} and {high}, got {value}")
    return value


def _require(value: str | None, name: str) -> str:
    if value is None:
        raise ConfigError(name, "is not set (put it in the environment or the .env file)")
    return value


def _parse_backend_url(text: str) -> str:
    """Accepts the full API base (``.../api/v1``) or a bare host, which gets ``/api/v1`` appended."""
    url = _parse_http_url(text, "BACKEND_API_URL")
    parts = urlsplit(url)
    if parts.path in {"", "/"}:
        url = urlunsplit((parts.scheme, parts.netloc, "/api/v1", "", ""))
    return url.rstrip("/")


def _parse_http_url(text: str, name: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(name, f"{text!r} is not an http(s) URL (example: http://127.0.0.1:8000/api/v1)")
    try:
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise ConfigError(name, f"{text!r} has an invalid port") from None
    return text.rstrip("/")


def _parse_gateways(text: str) -> tuple[str, ...]:
    """``IPFS_GATEWAY``: one path gateway or several, comma-separated, tried in the order given."""
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    if not entries:
        raise ConfigError("IPFS_GATEWAY", "names no gateway (example: https://ipfs.io,http://127.0.0.1:8080)")
    gateways = [_parse_http_url(entry, "IPFS_GATEWAY") for entry in entries]
    return tuple(dict.fromkeys(gateways))  # a gateway named twice is tried once


def parse_authorization(text: str, name: str) -> str:
    """The ``Authorization`` header value for ``Bearer <token>``, ``Basic <base64>`` or ``user:password``.

    The value is a secret: no error here echoes it, and it must be plain visible ASCII so that no HTTP
    library later refuses it with the value in its message.
    """
    forms = "must be 'Bearer <token>', 'Basic <base64 of user:password>' or 'user:password'"
    if any(not " " <= char <= "~" for char in text):
        raise ConfigError(name, f"{forms}, in printable ASCII (the value is not shown: it is a secret)")
    scheme, _, credentials = text.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and _VISIBLE_RE.match(credentials):
        return f"Bearer {credentials}"
    if scheme.lower() == "basic" and _VISIBLE_RE.match(credentials):
        try:
            decoded = base64.b64decode(credentials, validate=True)
        except ValueError:
            decoded = b""
        if b":" not in decoded:
            raise ConfigError(name, "'Basic' needs the base64 of user:password (the value is not shown)")
        return f"Basic {credentials}"
    user, colon, _ = text.partition(":")
    if colon and user and scheme.lower() not in ("bearer", "basic"):
        return "Basic " + base64.b64encode(text.encode()).decode("ascii")
    raise ConfigError(name, f"{forms} (the value is not shown: it is a secret)")


def _parse_jwt(text: str, name: str) -> str:
    """A JSON Web Token (``header.payload.signature``, base64url); a pasted ``Bearer `` prefix is dropped."""
    token = text.removeprefix("Bearer ").removeprefix("bearer ").strip()
    if not _JWT_RE.match(token):
        raise ConfigError(
            name, "is not a JWT (three base64url parts joined by dots; an API key/secret pair will not do)"
        )
    return token


def _parse_felt(text: str, name: str) -> str:
    if not _HEX_RE.match(text) or int(text, 16) >= STARK_FIELD_PRIME or int(text, 16) == 0:
        raise ConfigError(name, "must be a non-zero 0x-prefixed hex StarkNet felt (below the field prime)")
    return "0x" + format(int(text, 16), "064x")


def _parse_private_key(text: str) -> int:
    # The value itself is never echoed: it is a secret.
    if not _HEX_RE.match(text):
        raise ConfigError("WORKER_PRIVATE_KEY", "must be a 0x-prefixed hex number")
    key = int(text, 16)
    if not 0 < key < STARK_EC_ORDER:
        raise ConfigError("WORKER_PRIVATE_KEY", "is out of range for a Stark private key")
    return key


def _parse_megabytes(text: str | None, name: str, default: int) -> int:
    """A whole number of MB, 0 or more (0: off)."""
    if text is None:
        return default
    try:
        value = int(text.strip().removesuffix("MB").strip())
    except ValueError:
        raise ConfigError(name, f"{text!r} is not a whole number of MB") from None
    if value < 0:
        raise ConfigError(name, f"must be 0 (off) or more, got {text!r}")
    return value


def _parse_hours(text: str | None, name: str) -> float:
    if text is None:
        return DEFAULT_KEEP_RESULTS_HOURS
    try:
        value = float(text.strip().removesuffix("h"))
    except ValueError:
        raise ConfigError(name, f"{text!r} is not a number of hours") from None
    if not value >= 0 or value == float("inf"):
        raise ConfigError(name, f"must be 0 or more hours, got {text!r}")
    return value


def _parse_seconds(text: str | None, name: str, default: float, *, minimum: float) -> float:
    if text is None:
        return default
    try:
        value = float(text.removesuffix("s"))
    except ValueError:
        raise ConfigError(name, f"{text!r} is not a number of seconds") from None
    if not value >= minimum or value == float("inf"):
        raise ConfigError(name, f"must be at least {minimum:g} seconds, got {text!r}")
    return value
