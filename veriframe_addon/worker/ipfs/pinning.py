"""Storing a result in IPFS: through a Kubo RPC API (``/api/v0/add``) or Pinata's pinning API.

Either way the file is streamed from disk as a multipart body, and the CID the service answers with is
checked against the CIDv0 computed here (Kubo's defaults), so a service that stored other bytes, or
chunked them differently, is caught before the CID is reported to the backend. Credentials (the RPC
API's ``Authorization`` value, Pinata's JWT) go only to the service they are for, and appear in no
message.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol

import requests

from ..errors import ContentMismatch, IpfsCredentialsRefused, IpfsError
from ..net.retry import RetryPolicy, send_with_retries
from .cid import cid_of_file

PIECE = 1024 * 1024
REFUSED = (401, 403)


class Uploader(Protocol):
    """Stores a file and returns its CIDv0, checked against the local computation."""

    @property
    def where(self) -> str:
        """The service in words, for messages: ``IPFS API http://...`` or ``Pinata https://...``."""
        ...

    def upload(self, path: Path) -> str: ...


class _FileSender:
    """What both uploaders share: one streamed multipart POST with retries, and the status checks.

    ``name`` says who answered in messages; ``refused`` turns a 401/403 into the error naming the
    credential to fix.
    """

    name = "IPFS"

    def __init__(
        self,
        api_url: str,
        session: requests.Session,
        headers: Mapping[str, str],
        *,
        policy: RetryPolicy,
        stop: threading.Event | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.session = session
        self._headers = dict(headers)
        self.policy = policy
        self.stop = stop
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.api_url!r})"

    @property
    def where(self) -> str:
        return f"{self.name} {self.api_url}"

    def refused(self, status: int) -> IpfsCredentialsRefused:
        raise NotImplementedError

    def _post(
        self,
        endpoint: str,
        path: Path,
        params: Mapping[str, object] | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """POSTs ``path`` to ``endpoint``; the 200 answer, or an ``IpfsError`` saying what went wrong."""

        def send() -> requests.Response:
            boundary = secrets.token_hex(16)  # a fresh body generator per attempt
            return self.session.post(
                f"{self.api_url}{endpoint}",
                params=params,
                data=multipart_body(path, boundary, fields),
                headers={**self._headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
                timeout=self.timeout,
            )

        try:
            response = send_with_retries(send, f"{self.name} upload of {path.name}", self.policy, self.stop)
        except requests.RequestException as exc:
            raise IpfsError(f"{self.name} unreachable at {self.api_url} ({type(exc).__name__})") from None
        if response.status_code in REFUSED:
            raise self.refused(response.status_code)
        if response.status_code != 200:
            raise IpfsError(f"{self.name} upload failed: HTTP {response.status_code}: {response.text[:200]}")
        return response


class KuboUploader(_FileSender):
    """``/api/v0/add`` on a Kubo RPC API, with an ``Authorization`` header when the API needs one."""

    name = "IPFS API"

    def __init__(
        self,
        api_url: str,
        session: requests.Session,
        *,
        authorization: str | None = None,
        policy: RetryPolicy,
        stop: threading.Event | None = None,
        timeout: float = 60.0,
    ) -> None:
        headers = {"Authorization": authorization} if authorization else {}
        super().__init__(api_url, session, headers, policy=policy, stop=stop, timeout=timeout)

    def refused(self, status: int) -> IpfsCredentialsRefused:
        return api_refused(status)

    def upload(self, path: Path) -> str:
        """Adds ``path`` (CIDv0, Kubo defaults, pinned) and returns its CID."""
        expected = str(cid_of_file(path, cid_version=0))
        response = self._post("/api/v0/add", path, params={"cid-version": 0, "pin": "true", "quiet": "true"})
        try:
            # Kubo answers one JSON object per added entry (more with progress on); the file is the last.
            answer = json.loads(response.text.strip().splitlines()[-1])
            cid = str(answer["Hash"])
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise IpfsError(f"IPFS upload answered with no CID: {response.text[:200]}") from exc
        if cid != expected:
            raise ContentMismatch(expected, cid, source="IPFS API add")
        return cid


class PinataUploader(_FileSender):
    """Pinata's ``POST /pinning/pinFileToIPFS`` (multipart ``file`` plus ``pinataOptions``), JWT-authorised.

    ``cidVersion`` 0 is asked for explicitly, so the answer's ``IpfsHash`` can be compared with the
    CIDv0 computed here.
    """

    name = "Pinata"

    def __init__(
        self,
        api_url: str,
        jwt: str,
        session: requests.Session,
        *,
        policy: RetryPolicy,
        stop: threading.Event | None = None,
        timeout: float = 60.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {jwt}"}
        super().__init__(api_url, session, headers, policy=policy, stop=stop, timeout=timeout)

    def refused(self, status: int) -> IpfsCredentialsRefused:
        return IpfsCredentialsRefused(
            f"Pinata refused the upload (HTTP {status}): check PINATA_JWT", "PINATA_JWT"
        )

    def upload(self, path: Path) -> str:
        """Pins ``path`` on Pinata and returns its CID (``IpfsHash``)."""
        expected = str(cid_of_file(path, cid_version=0))
        fields = {
            "pinataOptions": json.dumps({"cidVersion": 0}),
            "pinataMetadata": json.dumps({"name": path.name}),
        }
        response = self._post("/pinning/pinFileToIPFS", path, fields=fields)
        try:
            cid = str(response.json()["IpfsHash"])
        except (ValueError, KeyError, TypeError) as exc:
            raise IpfsError(f"Pinata answered with no IpfsHash: {response.text[:200]}") from exc
        if cid != expected:
            raise ContentMismatch(expected, cid, source="Pinata pinFileToIPFS")
        return cid


def api_refused(status: int) -> IpfsCredentialsRefused:
    """What a 401/403 from the RPC API means to an operator (the credentials are never part of it)."""
    return IpfsCredentialsRefused(
        f"the IPFS API refused the request (HTTP {status}): check IPFS_API_AUTH", "IPFS_API_AUTH"
    )


def multipart_body(path: Path, boundary: str, fields: Mapping[str, str] | None = None) -> Iterator[bytes]:
    """A streamed multipart/form-data body: text ``fields`` first, then one ``file`` part read in pieces."""
    for name, value in (fields or {}).items():
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n').encode()
    yield (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    with path.open("rb") as file:
        while piece := file.read(PIECE):
            yield piece
    yield f"\r\n--{boundary}--\r\n".encode()
