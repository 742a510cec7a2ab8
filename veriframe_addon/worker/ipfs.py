"""Fetching assets from and storing results in IPFS, trusting no source's bytes without checking the CID.

Downloads go to the gateway first and fall back to the node's RPC API (``/api/v0/cat``). Each source's
stream is written to disk in pieces while ``CidVerifier`` rebuilds the DAG Kubo would have built; only
a file whose recomputed CID equals the job's CID is handed on. A source that serves other bytes is
logged as such and the next source is tried. Uploads stream a multipart body (``/api/v0/add``) and the
CID the node answers with is checked against the one computed locally.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from .cid import CidVerifier, cid_of_file, parse_cid
from .errors import AssetTooLarge, ContentMismatch, IpfsError
from .retry import RetryPolicy, send_with_retries
from .transport import USER_AGENT

log = logging.getLogger("veriframe.worker")

PIECE = 1024 * 1024
ProgressCallback = Callable[[int, int | None], None]


@dataclass(frozen=True)
class Download:
    path: Path
    size: int
    source: str


def gateway_url(gateway: str, cid: str) -> str:
    """``http://host:8080/ipfs`` and ``http://host:8080`` both name the same path gateway."""
    base = gateway.rstrip("/")
    return f"{base}/{cid}" if base.endswith("/ipfs") else f"{base}/ipfs/{cid}"


class IpfsClient:
    """One IPFS RPC API plus one path gateway."""

    def __init__(
        self,
        api_url: str,
        gateway: str,
        *,
        policy: RetryPolicy | None = None,
        stop: threading.Event | None = None,
        timeout: float = 60.0,
        max_bytes: int | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.max_bytes = max_bytes  # MAX_ASSET_MB: checked against the headers, then while streaming
        self.gateway = gateway
        self.policy = policy or RetryPolicy(attempts=3)
        self.stop = stop
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT

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
        sources: tuple[str, ...] = ("gateway", "IPFS API"),
    ) -> Download:
        """Saves the content of ``cid`` to ``dest`` after verifying it; raises ``ContentMismatch`` or
        ``IpfsError`` when none of ``sources`` (tried in order) delivers the right bytes."""
        parse_cid(cid)  # refuse an unverifiable CID before any request
        openers: dict[str, Callable[[], requests.Response]] = {
            "gateway": lambda: self.session.get(
                gateway_url(self.gateway, cid), stream=True, timeout=self.timeout
            ),
            "IPFS API": lambda: self.session.post(
                f"{self.api_url}/api/v0/cat", params={"arg": cid}, stream=True, timeout=self.timeout
            ),
        }
        sources_to_try = [(name, openers[name]) for name in sources]
        errors: list[str] = []
        mismatch: ContentMismatch | None = None
        for name, opener in sources_to_try:
            try:
                size = self._fetch_verified(name, opener, cid, dest, progress)
                return Download(dest, size, name)
            except ContentMismatch as exc:
                log.error("[Worker] Refused %s bytes for %s: they hash to %s", name, cid, exc.actual)
                mismatch = mismatch or exc
            except IpfsError as exc:
                log.warning("[Worker] %s could not deliver %s: %s", name, cid, exc)
                errors.append(f"{name}: {exc}")
        if mismatch is not None:
            raise mismatch
        raise IpfsError(f"IPFS download failed for {cid} ({'; '.join(errors)})")

    def _fetch_verified(
        self,
        name: str,
        opener: Callable[[], requests.Response],
        cid: str,
        dest: Path,
        progress: ProgressCallback | None,
    ) -> int:
        try:
            response = send_with_retries(opener, f"{name} download of {cid}", self.policy, self.stop)
        except requests.RequestException as exc:
            raise IpfsError(f"unreachable ({type(exc).__name__})") from None

        with response:
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
        """Adds ``path`` (CIDv0, Kubo defaults) and returns its CID, checked against a local computation."""
        expected = str(cid_of_file(path, cid_version=0))

        def send() -> requests.Response:
            boundary = secrets.token_hex(16)  # a fresh body generator per attempt
            return self.session.post(
                f"{self.api_url}/api/v0/add",
                params={"cid-version": 0, "pin": "true", "quiet": "true"},
                data=_multipart_body(path, boundary),
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                timeout=self.timeout,
            )

        try:
            response = send_with_retries(send, f"IPFS upload of {path.name}", self.policy, self.stop)
        except requests.RequestException as exc:
            raise IpfsError(f"IPFS API unreachable at {self.api_url} ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise IpfsError(f"IPFS upload failed: HTTP {response.status_code}: {response.text[:200]}")
        try:
            # Kubo answers one JSON object per added entry (more with progress on); the file is the last.
            answer = json.loads(response.text.strip().splitlines()[-1])
            cid = str(answer["Hash"])
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise IpfsError(f"IPFS upload answered with no CID: {response.text[:200]}") from exc
        if cid != expected:
            raise ContentMismatch(expected, cid, source="IPFS API add")
        return cid

    def close(self) -> None:
        self.session.close()


def _content_length(response: requests.Response) -> int | None:
    """The size a source announces: Kubo's ``X-Content-Length`` (its ``cat`` streams chunked) or HTTP's."""
    for header in ("X-Content-Length", "Content-Length"):
        value = response.headers.get(header)
        if value and value.isdigit():
            return int(value)
    return None


def _multipart_body(path: Path, boundary: str) -> Iterator[bytes]:
    """A streamed multipart/form-data body with one ``file`` part, read from disk in pieces."""
    yield (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    with path.open("rb") as file:
        while piece := file.read(PIECE):
            yield piece
    yield f"\r\n--{boundary}--\r\n".encode()
