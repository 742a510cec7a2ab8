"""Fetching assets from and storing results in IPFS, trusting no source's bytes without checking the CID.

Downloads go to each gateway of ``IPFS_GATEWAY`` in order and fall back to the node's RPC API
(``/api/v0/cat``). Each source's stream is written to disk in pieces while ``CidVerifier`` rebuilds the
DAG Kubo would have built; only a file whose recomputed CID equals the job's CID is handed on. A source
that is down or serves other bytes is logged, naming it, and the next source is tried. Uploads go
through an ``Uploader`` (``pinning``: the RPC API's ``add`` or Pinata), chosen by ``client_from_config``.
The RPC API's ``Authorization`` value (``IPFS_API_AUTH``) is sent to the RPC API only, never to a gateway.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests

from ..config import WorkerConfig
from ..errors import AssetTooLarge, ContentMismatch, IpfsCredentialsRefused, IpfsError
from ..net.retry import RetryPolicy, send_with_retries
from ..net.transport import USER_AGENT
from .cid import CidVerifier, parse_cid
from .pinning import REFUSED, KuboUploader, PinataUploader, Uploader, api_refused

log = logging.getLogger("veriframe.worker")

PIECE = 1024 * 1024
API_SOURCE = "IPFS API"
ProgressCallback = Callable[[int, int | None], None]


@dataclass(frozen=True)
class Download:
    path: Path
    size: int
    source: str


@dataclass(frozen=True)
class Source:
    """One place a download can come from: a path gateway, or the RPC API's ``cat`` (``API_SOURCE``)."""

    kind: str  # "gateway" or API_SOURCE
    url: str

    def __str__(self) -> str:
        return f"{self.kind} {shown_url(self.url)}"


def gateway_url(gateway: str, cid: str) -> str:
    """``http://host:8080/ipfs`` and ``http://host:8080`` both name the same path gateway."""
    base = gateway.rstrip("/")
    return f"{base}/{cid}" if base.endswith("/ipfs") else f"{base}/ipfs/{cid}"


def shown_url(url: str) -> str:
    """``url`` for a log line: without user:password or query (either may carry a credential)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


class IpfsClient:
    """Path gateways (one or several, tried in order) and an RPC API for downloads, an ``Uploader``
    (the RPC API's ``add`` unless given another) for results."""

    def __init__(
        self,
        api_url: str,
        gateways: str | Sequence[str],
        *,
        api_auth: str | None = None,
        uploader: Uploader | None = None,
        policy: RetryPolicy | None = None,
        stop: threading.Event | None = None,
        timeout: float = 60.0,
        max_bytes: int | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.max_bytes = max_bytes  # MAX_ASSET_MB: checked against the headers, then while streaming
        self.gateways = (gateways,) if isinstance(gateways, str) else tuple(gateways)
        self.policy = policy or RetryPolicy(attempts=3)
        self.stop = stop
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        # Per request, never on the session: the session also talks to gateways.
        self._api_headers = {"Authorization": api_auth} if api_auth else {}
        self.uploader: Uploader = uploader or KuboUploader(
            self.api_url, self.session, authorization=api_auth, policy=self.policy, stop=stop, timeout=timeout
        )

    def __repr__(self) -> str:
        gateways = [shown_url(gateway) for gateway in self.gateways]
        return f"IpfsClient({shown_url(self.api_url)!r}, {gateways!r}, uploader={self.uploader!r})"

    @property
    def gateway_sources(self) -> tuple[Source, ...]:
        return tuple(Source("gateway", gateway) for gateway in self.gateways)

    @property
    def sources(self) -> tuple[Source, ...]:
        """Every download source in the order tried: the gateways, then the RPC API."""
        return (*self.gateway_sources, Source(API_SOURCE, self.api_url))

    def _check_size(self, cid: str, size: int, source: str, verb: str) -> None:
        if self.max_bytes is not None and size > self.max_bytes:
            raise AssetTooLarge(
                f"the asset {cid} is larger than {self.max_bytes / 1024**2:.0f} MB ({source} "
                f"{verb} {size / 1024**2:.1f} MB; the cap is MAX_ASSET_MB)"
            )

    # -- download -------------------------------------------------------------------------------------
    def download(
        self,
        cid: str,
        dest: Path,
        progress: ProgressCallback | None = None,
        sources: Sequence[Source] | None = None,
    ) -> Download:
        """Saves the content of ``cid`` to ``dest`` after verifying it; raises ``ContentMismatch`` or
        ``IpfsError`` when none of ``sources`` (default: ``self.sources``, tried in order) delivers the
        right bytes."""
        parse_cid(cid)  # refuse an unverifiable CID before any request
        errors: list[str] = []
        mismatch: ContentMismatch | None = None
        refused: IpfsCredentialsRefused | None = None
        for source in self.sources if sources is None else sources:
            try:
                return self.fetch_from(source, cid, dest, progress)
            except ContentMismatch as exc:
                log.error(
                    "[Worker] Refused %s bytes for %s from %s: they hash to %s",
                    source.kind,
                    cid,
                    shown_url(source.url),
                    exc.actual,
                )
                mismatch = mismatch or exc
            except IpfsError as exc:
                log.warning("[Worker] %s could not deliver %s: %s", source, cid, exc)
                errors.append(f"{source}: {exc}")
                if isinstance(exc, IpfsCredentialsRefused):
                    refused = refused or exc
        if mismatch is not None:
            raise mismatch
        message = f"IPFS download failed for {cid} ({'; '.join(errors)})"
        if refused is not None:  # a setting to fix, not a passing outage: the worker stops on it
            raise IpfsCredentialsRefused(message, refused.variable)
        raise IpfsError(message)

    def fetch_from(
        self, source: Source, cid: str, dest: Path, progress: ProgressCallback | None = None
    ) -> Download:
        """``download`` from ``source`` alone, without logging; raises that source's own error."""
        parse_cid(cid)
        return Download(dest, self._fetch_verified(source, cid, dest, progress), str(source))

    def _open(self, source: Source, cid: str) -> requests.Response:
        if source.kind == API_SOURCE:
            return self.session.post(
                f"{source.url}/api/v0/cat",
                params={"arg": cid},
                headers=self._api_headers,
                stream=True,
                timeout=self.timeout,
            )
        return self.session.get(gateway_url(source.url, cid), stream=True, timeout=self.timeout)

    def _fetch_verified(self, source: Source, cid: str, dest: Path, progress: ProgressCallback | None) -> int:
        name = source.kind
        try:
            response = send_with_retries(
                lambda: self._open(source, cid), f"{source} download of {cid}", self.policy, self.stop
            )
        except requests.RequestException as exc:
            raise IpfsError(f"unreachable ({type(exc).__name__})") from None

        with response:
            if source.kind == API_SOURCE and response.status_code in REFUSED:
                raise api_refused(response.status_code)
            if response.status_code != 200:
                raise IpfsError(f"HTTP {response.status_code}: {response.text[:200]}")
            total = _content_length(response)
            if total is not None:
                self._check_size(cid, total, name, "announced")
            verifier = CidVerifier(cid, source=name)
            partial = dest.with_name(dest.name + ".part")
            received = 0
            try:
                with partial.open("wb") as out:
                    for piece in response.iter_content(PIECE):
                        if self.stop is not None and self.stop.is_set():
                            raise IpfsError("download cancelled")
                        received += len(piece)
                        self._check_size(cid, received, name, "sent")
                        verifier.update(piece)
                        out.write(piece)
                        if progress is not None:
                            progress(received, total)
                verifier.verify()
                os.replace(partial, dest)
            except requests.RequestException as exc:
                raise IpfsError(f"connection broke after {received} bytes ({type(exc).__name__})") from None
            finally:
                partial.unlink(missing_ok=True)
        return received

    # -- upload ---------------------------------------------------------------------------------------
    def upload(self, path: Path) -> str:
        """Stores ``path`` (CIDv0, Kubo defaults) and returns its CID, checked against a local computation."""
        return self.uploader.upload(path)

    def close(self) -> None:
        self.session.close()


def _content_length(response: requests.Response) -> int | None:
    """The size a source announces: Kubo's ``X-Content-Length`` (its ``cat`` streams chunked) or HTTP's."""
    for header in ("X-Content-Length", "Content-Length"):
        value = response.headers.get(header)
        if value and value.isdigit():
            return int(value)
    return None


def client_from_config(
    config: WorkerConfig,
    *,
    stop: threading.Event | None = None,
    policy: RetryPolicy | None = None,
    timeout: float = 60.0,
) -> IpfsClient:
    """The one place the IPFS provider is chosen: downloads from the gateways then the RPC API, uploads
    through the RPC API (``IPFS_PROVIDER=kubo``) or Pinata's pinning API (``pinata``)."""
    client = IpfsClient(
        config.ipfs_api_url,
        config.ipfs_gateways,
        api_auth=config.ipfs_api_auth,
        policy=policy,
        stop=stop,
        timeout=timeout,
        max_bytes=config.limits.max_asset_bytes,
    )
    if config.ipfs_provider == "pinata":
        if config.pinata_jwt is None:  # load_config refuses this; a hand-made config might not
            raise IpfsError("IPFS_PROVIDER=pinata needs PINATA_JWT")
        client.uploader = PinataUploader(
            config.pinata_api_url,
            config.pinata_jwt,
            client.session,
            policy=client.policy,
            stop=stop,
            timeout=timeout,
        )
    return client
