"""What the extension holds in this Blender process: the running worker, setup-check results, the key.

Plain Python (no ``bpy``), so the operators stay thin and the logic is tested without Blender. A key
typed "for this session only" lives here, in memory, and nowhere else: not in the preferences (saved
in userpref.blend), not in a file, not on a command line.
"""

from __future__ import annotations

import os
import queue
import stat
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .worker.config import WorkerConfig, load_config
from .worker.errors import ConfigError
from .worker.ops.setup_check import CheckResult, run_checks
from .worker.runner import BackgroundWorker

KEY_SOURCES = ("ENV", "FILE", "SESSION", "KEYSTORE")
KEY_FILE_NAME = "worker_private_key"

# Preference name -> environment variable it stands for. The IPFS credentials (IPFS_API_AUTH, PINATA_JWT)
# are deliberately not here: like the key, they come from the environment or .env only, never from
# userpref.blend.
PREF_TO_ENV = {
    "backend_url": "BACKEND_API_URL",
    "wallet_address": "WORKER_ADDRESS",
    "ipfs_api": "IPFS_API",
    "ipfs_gateway": "IPFS_GATEWAY",
    "ipfs_provider": "IPFS_PROVIDER",
    "pinata_api_url": "PINATA_API_URL",
    "blender_path": "BLENDER_PATH",
    "poll_interval": "POLL_INTERVAL",
    "render_timeout": "RENDER_TIMEOUT",
    "render_device": "RENDER_DEVICE",
    "render_gpus": "RENDER_GPUS",
    "render_threads": "RENDER_THREADS",
    "render_nice": "RENDER_NICE",
    "data_dir": "VERIFRAME_DATA_DIR",
    "render_sandbox": "RENDER_SANDBOX",
    "max_output_megapixels": "MAX_OUTPUT_MEGAPIXELS",
    "max_samples": "MAX_SAMPLES",
    "max_render_memory_mb": "MAX_RENDER_MEMORY_MB",
    "max_asset_mb": "MAX_ASSET_MB",
    "max_unpacked_mb": "MAX_UNPACKED_MB",
    "asset_cache_mb": "ASSET_CACHE_MB",
    "keep_results_hours": "KEEP_RESULTS_HOURS",
    "render_slots": "RENDER_SLOTS",
    "warm_standby": "WARM_STANDBY",
    "prefetch": "PREFETCH",
    "schedule": "SCHEDULE",
    "pause_when_busy": "PAUSE_WHEN_BUSY",
    "busy_idle_minutes": "BUSY_IDLE_MINUTES",
    "min_reward": "MIN_REWARD",
    "accept_engines": "ACCEPT_ENGINES",
    "blocked_creators": "BLOCKED_CREATORS",
    "token_symbol": "TOKEN_SYMBOL",
    "token_decimals": "TOKEN_DECIMALS",
}

# Preferences whose 0 is a choice (off), not "unset": passed on like any other value.
ZERO_IS_A_SETTING = frozenset(
    {"asset_cache_mb", "keep_results_hours", "render_nice", "warm_standby", "prefetch"}  # False: off
)


def write_key_file(path: Path, key: str) -> None:
    """Stores the key readable by this user only (0600), created that way so it is never world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(key.strip() + "\n")
    os.chmod(path, 0o600)


def read_key_file(path: Path) -> str:
    if not path.is_file():
        raise ConfigError("WORKER_PRIVATE_KEY", f"no key file at {path} (use 'Save key to file' first)")
    mode = stat.S_IMODE(path.stat().st_mode)
    if os.name == "posix" and mode & 0o077:
        raise ConfigError("WORKER_PRIVATE_KEY", f"key file {path} is readable by others (chmod 600 it)")
    return path.read_text(encoding="utf-8").strip()


@dataclass
class TickStats:
    """Durations of the UI timer's ticks, so the "never freeze Blender" promise is measured."""

    count: int = 0
    total: float = 0.0
    worst: float = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.worst = max(self.worst, seconds)


@dataclass
class ExtensionSession:
    worker: BackgroundWorker | None = None
    session_key: str | None = None
    keystore_password: str | None = None  # typed for this session; memory only, like the session key
    checks: list[CheckResult] = field(default_factory=list)
    checks_running: bool = False
    ticks: TickStats = field(default_factory=TickStats)
    last_input: float | None = None  # time.monotonic() of the operator's last event in Blender
    _check_queue: queue.SimpleQueue[CheckResult | None] = field(default_factory=queue.SimpleQueue)

    # -- configuration --------------------------------------------------------------------------------
    def build_config(
        self,
        prefs: Mapping[str, object],
        key_source: str,
        key_file: Path,
        environ: Mapping[str, str] | None = None,
        keystore: Path | None = None,
    ) -> WorkerConfig:
        """Preferences where set, the environment for the rest; the key from the chosen source only.

        ``KEYSTORE``: ``keystore`` (else ``WORKER_KEYSTORE``) opened with the password typed this session
        (else ``WORKER_KEYSTORE_PASSWORD``/``_FILE``); the key is decrypted into memory, never stored.
        """
        env = dict(os.environ if environ is None else environ)
        for pref, variable in PREF_TO_ENV.items():
            value = prefs.get(pref)
            if value not in (None, "") and (value not in (0, 0.0) or pref in ZERO_IS_A_SETTING):
                env[variable] = str(value)
        if key_source in ("FILE", "SESSION"):
            env.pop("WORKER_KEYSTORE", None)  # the chosen source, not a keystore the shell also names
        if key_source == "FILE":
            env["WORKER_PRIVATE_KEY"] = read_key_file(key_file)
        elif key_source == "SESSION":
            if not self.session_key:
                raise ConfigError("WORKER_PRIVATE_KEY", "no key entered for this session ('Enter key')")
            env["WORKER_PRIVATE_KEY"] = self.session_key
        elif key_source == "KEYSTORE":
            env.pop("WORKER_PRIVATE_KEY", None)
            if keystore is not None:
                env["WORKER_KEYSTORE"] = str(keystore)
            if not env.get("WORKER_KEYSTORE"):
                raise ConfigError("WORKER_KEYSTORE", "no keystore file chosen (Preferences: Keystore)")
            if self.keystore_password is not None:
                env["WORKER_KEYSTORE_PASSWORD"] = self.keystore_password
        elif key_source != "ENV":  # ENV: WORKER_PRIVATE_KEY, or WORKER_KEYSTORE, as headless
            raise ConfigError("WORKER_PRIVATE_KEY", f"unknown key source {key_source!r}")
        return load_config(environ=env)

    # -- worker ---------------------------------------------------------------------------------------
    @property
    def worker_running(self) -> bool:
        return self.worker is not None and self.worker.running

    def start_worker(self, config: WorkerConfig) -> BackgroundWorker:
        if self.worker_running:
            assert self.worker is not None
            return self.worker
        self.worker = BackgroundWorker(config, user_quiet_seconds=self.quiet_seconds)
        self.worker.start()
        return self.worker

    def note_input(self) -> None:
        """The operator did something in Blender now (main thread; one float written, read by the worker)."""
        self.last_input = time.monotonic()

    def quiet_seconds(self) -> float | None:
        """Seconds since the operator's last input in Blender (None: none seen since the start)."""
        last = self.last_input
        return None if last is None else time.monotonic() - last

    def stop_worker(self, *, now: bool, wait: float = 0.0) -> None:
        if self.worker is not None:
            self.worker.request_stop(now=now)
            if wait:
                self.worker.join(wait)

    # -- setup check ----------------------------------------------------------------------------------
    def start_checks(self, config: WorkerConfig) -> None:
        if self.checks_running:
            return
        self.checks = []
        self.checks_running = True

        def work() -> None:
            try:
                run_checks(config, on_result=self._check_queue.put)
            finally:
                self._check_queue.put(None)

        threading.Thread(target=work, name="veriframe-check", daemon=True).start()

    # -- the UI timer's work --------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True while something may still put news in a queue (the UI timer keeps running)."""
        return (
            self.worker_running
            or self.checks_running
            or (self.worker is not None and not self.worker.events.empty())
        )

    def drain(self) -> bool:
        """Takes queued news from the threads; True if the UI should redraw. Main thread only."""
        started = time.perf_counter()
        changed = self.worker.drain() if self.worker is not None else False
        while True:
            try:
                item = self._check_queue.get_nowait()
            except queue.Empty:
                break
            changed = True
            if item is None:
                self.checks_running = False
            else:
                self.checks.append(item)
        self.ticks.add(time.perf_counter() - started)
        return changed


def operator_message(error: str | None) -> str | None:
    """The last error, phrased for a node operator rather than a developer."""
    if not error:
        return None
    hints = (
        (
            "backend unreachable",
            "Cannot reach the VeriFrame backend. Is the Backend URL right, and is it online?",
        ),
        ("Authentication failed", "The backend refused your wallet: check the address and the private key."),
        # Before "IPFS download failed": a refused download says both, and the credential is the fix.
        ("check IPFS_API_AUTH", "The IPFS API refused the worker: set IPFS_API_AUTH (environment or .env)."),
        ("check PINATA_JWT", "Pinata refused the upload: set a valid PINATA_JWT (environment or .env)."),
        (
            "does not match CID",
            "An IPFS source served wrong data for a job; it was refused and the job skipped.",
        ),
        (
            "IPFS download failed",
            "Could not download a job's scene from IPFS: check the IPFS API and gateway.",
        ),
        ("IPFS API unreachable", "Cannot reach the IPFS API: is your IPFS node running?"),
        ("RENDER_TIMEOUT", "A render took longer than the render timeout and was stopped."),
        ("Blender could not render", "Blender could not open or render a job's file; the job was skipped."),
    )
    for needle, hint in hints:
        if needle in error:
            return f"{hint} ({error})"
    return error
