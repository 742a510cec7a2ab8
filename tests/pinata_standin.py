"""A stand-in for Pinata (pinning API and gateway) on 127.0.0.1, because the real service cannot be reached
from the machines these tests run on.

It follows the shapes of Pinata's documented pinning endpoint that the worker uses, and nothing more:

- ``POST /pinning/pinFileToIPFS`` with ``Authorization: Bearer <JWT>`` (anything else: 401), a multipart
  body with the file in the ``file`` field and optional ``pinataOptions`` (JSON, ``{"cidVersion": 0}``)
  and ``pinataMetadata`` (JSON, ``{"name": ...}``) fields;
- the answer ``{"IpfsHash": <CID>, "PinSize": <DAG size>, "Timestamp": <ISO 8601>}`` (plus
  ``"isDuplicate": true`` for content already pinned);
- a separate path gateway, ``GET /ipfs/<cid>``, as Pinata's gateway is a separate host.

Uploads are chunked and stored with the devnet's ``BlockStore`` (Kubo's defaults), in a store of the
stand-in's own, so content pinned here is not on the devnet's IPFS node. Unlike the real service, which
this stand-in does not claim to copy, it uses CIDv1 when ``pinataOptions`` names no ``cidVersion``, so a
client that forgot to ask for CIDv0 gets a CID other than the one it computed and notices.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from devnet.ipfs_node import BlockStore, create_gateway_app

from .servers import serve_app


@dataclass
class PinataStandin:
    api_url: str  # what PINATA_API_URL points at
    gateway_url: str  # an IPFS_GATEWAY entry: http://127.0.0.1:<port>/ipfs
    store: BlockStore
    pins: list[dict[str, Any]] = field(default_factory=list)  # one per accepted upload
    refused: list[str] = field(default_factory=list)  # why each refused call was refused


def _error(status: int, reason: str, details: str) -> JSONResponse:
    return JSONResponse({"error": {"reason": reason, "details": details}}, status_code=status)


def create_pinata_app(store: BlockStore, jwt: str, standin: PinataStandin) -> FastAPI:
    app = FastAPI(title="Pinata stand-in", docs_url=None, redoc_url=None, openapi_url=None)
    expected = f"Bearer {jwt}".encode()

    @app.post("/pinning/pinFileToIPFS")
    async def pin_file(request: Request) -> JSONResponse:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            standin.refused.append("wrong JWT" if given else "no Authorization")
            return _error(401, "INVALID_CREDENTIALS", "Invalid/expired credentials")
        async with request.form() as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                return _error(400, "INVALID_REQUEST", "no file in the 'file' field")
            try:
                options = json.loads(str(form.get("pinataOptions") or "{}"))
                metadata = json.loads(str(form.get("pinataMetadata") or "{}"))
            except ValueError:
                return _error(400, "INVALID_REQUEST", "pinataOptions/pinataMetadata must be JSON")
            cid_version = options.get("cidVersion", 1)
            if cid_version not in (0, 1):
                return _error(400, "INVALID_REQUEST", "cidVersion must be 0 or 1")
            root, size, dag_size = await run_in_threadpool(store.add_stream, upload.file, cid_version)
            name = metadata.get("name") or upload.filename
        duplicate = any(pin["cid"] == str(root) for pin in standin.pins)
        standin.pins.append({"cid": str(root), "cid_version": cid_version, "name": name, "size": size})
        answer: dict[str, Any] = {
            "IpfsHash": str(root),
            "PinSize": dag_size,
            "Timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        if duplicate:
            answer["isDuplicate"] = True
        return JSONResponse(answer)

    return app


@contextmanager
def pinata_standin(root: Path, jwt: str) -> Iterator[PinataStandin]:
    """The stand-in's API and gateway, each a real HTTP server on 127.0.0.1, until the block ends."""
    store = BlockStore(root)
    standin = PinataStandin(api_url="", gateway_url="", store=store)
    with serve_app(create_pinata_app(store, jwt, standin)) as api, serve_app(create_gateway_app(store)) as gw:
        standin.api_url = api
        standin.gateway_url = f"{gw}/ipfs"
        yield standin
