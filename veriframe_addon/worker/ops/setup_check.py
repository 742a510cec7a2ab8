""" "Check setup": proves each outside piece the worker needs works, and names the one that does not.

Each check does the real thing on a small scale: the backend answers ``/health``; the IPFS API (or
Pinata, with ``IPFS_PROVIDER=pinata``) stores a fixed probe and every gateway serves it back with the
right CID; the key signs a real challenge and the
backend accepts it; the render Blender starts and reports its version, and starts inside the OS sandbox
(unless the operator turned that off). The same checks back the panel's
button and the ``doctor`` command (``worker/doctor.py``).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests

from ..backend.api import BackendClient
from ..backend.auth import AuthSession, StarkSigner
from ..config import WorkerConfig
from ..errors import IpfsError, WorkerError
from ..ipfs.cid import cid_of_bytes
from ..ipfs.client import IpfsClient, client_from_config, shown_url
from ..net.retry import RetryPolicy
from ..net.transport import JsonTransport
from ..render.inventory import BlenderInventory
from ..render.sandbox import platform_has_sandbox

log = logging.getLogger("veriframe.worker")

PROBE = b"VeriFrame Worker setup check\n"
NO_RETRY = RetryPolicy(attempts=1)


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    message: str
    seconds: float


def _backend(config: WorkerConfig) -> str:
    parts = urlsplit(config.backend_url)
    health = urlunsplit((parts.scheme, parts.netloc, "/health", "", ""))
    response = requests.get(health, timeout=10)
    if response.status_code != 200:
        raise WorkerError(f"{health} answered HTTP {response.status_code}")
    return f"reachable at {config.backend_url}"


def _ipfs_api(config: WorkerConfig, client: IpfsClient, folder: Path) -> str:
    probe = folder / "probe.txt"
    probe.write_bytes(PROBE)
    cid = client.upload(probe)  # also checks the node's CID against our own computation
    return f"stored the probe at {client.uploader.where} ({cid})"


def _ipfs_gateway(config: WorkerConfig, client: IpfsClient, folder: Path) -> str:
    """Each gateway alone, so a gateway problem is not hidden by the next one or the API fallback."""
    probe_cid = str(cid_of_bytes(PROBE))
    failed: list[str] = []
    for source in client.gateway_sources:
        try:
            client.fetch_from(source, probe_cid, folder / "back.txt")
        except IpfsError as exc:
            failed.append(f"{source}: {exc}")
    if len(client.gateways) == 1 and failed:
        raise IpfsError(failed[0])
    if failed:
        raise IpfsError(f"{len(failed)} of {len(client.gateways)} gateways failed: {'; '.join(failed)}")
    names = ", ".join(shown_url(gateway) for gateway in client.gateways)
    return f"served the probe back, verified, from {names}"


def _key(config: WorkerConfig) -> str:
    transport = JsonTransport(config.backend_url, policy=NO_RETRY, timeout=15)
    auth = AuthSession(transport, config.worker_address, StarkSigner(config.private_key))
    worker = auth.sign_in()
    verified = BackendClient(transport, auth).me().get("verified", worker.get("verified"))
    note = "" if verified else " (not verified yet: the backend offers no jobs until an admin verifies it)"
    return f"signed a challenge as {config.worker_address}{note}"


class _Blenders:
    """The Blender and sandbox checks share one probe of every Blender ``BLENDER_PATH`` names."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self._probed: tuple[BlenderInventory, list[str]] | None = None

    def probed(self) -> tuple[BlenderInventory, list[str]]:
        if self._probed is None:
            self._probed = BlenderInventory.from_config(self.config)
        return self._probed

    def blenders(self, _config: WorkerConfig) -> str:
        """Every Blender that answered; a named one that did not fails the check, saying why."""
        inventory, failures = self.probed()
        found = "; ".join(blender.describe() for blender in inventory.blenders)
        if failures:
            raise WorkerError(f"{'; '.join(failures)} (working: {found})")
        return found

    def sandbox(self, config: WorkerConfig) -> str:
        """Renders of strangers' scenes should run in the OS sandbox; "off" on purpose is fine too.

        On Windows and macOS there is no sandbox to install, so its absence is no setup fault: the check
        passes and says plainly that the scene check is then the only wall.
        """
        inventory, _ = self.probed()
        several = len(inventory.blenders) > 1
        said = "; ".join(f"{b.short}: {b.contained}" if several else b.contained for b in inventory.blenders)
        bare = any(b.sandbox is None for b in inventory.blenders)
        if bare and config.sandbox != "off" and platform_has_sandbox():
            raise WorkerError(said)
        return said


def run_checks(
    config: WorkerConfig, on_result: Callable[[CheckResult], None] | None = None
) -> list[CheckResult]:
    """Runs every check (none depends on another passing) and returns their results in order."""
    results: list[CheckResult] = []

    def record(name: str, ok: bool, message: str, started: float) -> None:
        result = CheckResult(name, ok, message, time.monotonic() - started)
        results.append(result)
        (log.info if ok else log.error)("[Check] %s: %s %s", name, "OK" if ok else "FAILED", message)
        if on_result is not None:
            on_result(result)

    blenders = _Blenders(config)
    for name, check in (
        ("Backend", _backend),
        ("Wallet key", _key),
        ("Render Blender", blenders.blenders),
        ("Render sandbox", blenders.sandbox),
    ):
        started = time.monotonic()
        try:
            record(name, True, check(config), started)
        except (WorkerError, requests.RequestException, OSError) as exc:
            record(name, False, str(exc), started)

    client = client_from_config(config, policy=NO_RETRY, timeout=15)
    with tempfile.TemporaryDirectory(prefix="veriframe-check-") as tmp:
        for name, ipfs_check in (("IPFS API", _ipfs_api), ("IPFS gateway", _ipfs_gateway)):
            started = time.monotonic()
            try:
                record(name, True, ipfs_check(config, client, Path(tmp)), started)
            except (WorkerError, requests.RequestException, OSError) as exc:
                record(name, False, str(exc), started)
    return results
