"""A Kubo-compatible IPFS node for the devnet: blocks on disk, Kubo's RPC subset, a path gateway.

The worker talks to it exactly as it talks to Kubo (``/api/v0/add``, ``/api/v0/cat``, ``/ipfs/<cid>``),
and the CIDs it hands out are the ones ``ipfs add`` would print, because it stores the blocks of the
very DAG the worker's ``UnixfsFileBuilder`` builds. No networking, pinning or garbage collection: every
block added stays, and only what was added here can be read.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import NamedTuple, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from multiformats import CID, multihash
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from veriframe_addon.worker.config import parse_authorization
from veriframe_addon.worker.errors import InvalidCid, IpfsError
from veriframe_addon.worker.ipfs.cid import (
    UnixfsFileBuilder,
    UnixfsType,
    decode_dag_pb,
    decode_unixfs,
    parse_cid,
)

__all__ = ["BlockNotFound", "BlockStore", "NotAFile", "create_gateway_app", "create_rpc_app"]

logger = logging.getLogger("devnet.ipfs")

_READ_SIZE = 1 << 20
_DAG_PB = 0x70
_RAW = 0x55
_FILE_TYPES = (UnixfsType.FILE, UnixfsType.RAW)
_KNOWN_TYPES = frozenset(int(kind) for kind in UnixfsType)
DEVNET_VERSION = "devnet-0.1.0"


class BlockNotFound(KeyError):
    """The store has no block for ``cid`` (Kubo offline: "block was not found locally")."""

    def __init__(self, cid: CID) -> None:
        super().__init__(str(cid))
        self.cid = cid


class NotAFile(IpfsError):
    """The CID names a UnixFS directory, symlink or other non-file node; this node only serves files."""


class _FileNode(NamedTuple):
    data: bytes  # file bytes held by the node itself (a raw leaf's whole block)
    children: list[CID]
    sizes: list[int] | None  # file bytes below each child, when the node records them
    filesize: int | None


class Readable(Protocol):
    """Anything with a binary ``read(n)``: an open file, a SpooledTemporaryFile, a socket file."""

    def read(self, size: int = -1, /) -> bytes: ...


def _canonical(cid: CID) -> str:
    # One file name per block however the CID was written: CIDv0 in base58btc, CIDv1 in base32.
    return str(cid) if cid.version == 0 else str(cid.set(base="base32"))


def _aliases(cid: CID) -> list[CID]:
    """The CIDs that name the same dag-pb block; Kubo keys blocks by multihash, so both forms resolve."""
    if cid.codec.code != _DAG_PB:
        return [cid]
    if cid.version == 0:
        return [cid, CID("base32", 1, "dag-pb", cid.digest)]
    return [cid, CID("base58btc", 0, "dag-pb", cid.digest)]


class BlockStore:
    """Content-addressed blocks as files under ``root/blocks``, named by their canonical CID."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.blocks_dir = self.root / "blocks"
        self.blocks_dir.mkdir(parents=True, exist_ok=True)

    def _path(self, cid: CID) -> Path:
        return self.blocks_dir / _canonical(cid)

    def put(self, cid: CID, block: bytes) -> None:
        """Store ``block`` under ``cid``; written to a temporary file and renamed, so never half there."""
        if hashlib.sha256(block).digest() != cid.raw_digest:
            raise IpfsError(f"block does not hash to {cid}")
        path = self._path(cid)
        if path.exists():
            return
        fd, tmp = tempfile.mkstemp(dir=self.blocks_dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(block)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def has(self, cid: CID) -> bool:
        """Whether the block for ``cid`` (or its CIDv0/CIDv1 twin) is stored."""
        return any(self._path(alias).exists() for alias in _aliases(cid))

    def get(self, cid: CID) -> bytes:
        """The stored block; raises ``BlockNotFound`` (a ``KeyError``) for an unknown CID."""
        for alias in _aliases(cid):
            try:
                return self._path(alias).read_bytes()
            except FileNotFoundError:
                continue
        raise BlockNotFound(cid)

    def add_stream(
        self, readable: Readable, cid_version: int = 0, *, raw_leaves: bool | None = None
    ) -> tuple[CID, int, int]:
        """Chunk, store and link a stream as ``ipfs add`` would; returns (root CID, file size, dag size)."""
        builder = UnixfsFileBuilder(cid_version, raw_leaves=raw_leaves, block_sink=self.put)
        while piece := readable.read(_READ_SIZE):
            builder.update(piece)
        root = builder.finish()
        return root, builder.file_size, builder.dag_size

    def _file_node(self, cid: CID) -> _FileNode:
        """Read one block of a file DAG: a raw leaf, or a UnixFS file node (data, then children)."""
        block = self.get(cid)
        if cid.codec.code == _RAW:
            return _FileNode(block, [], [], len(block))
        if cid.codec.code != _DAG_PB:
            raise NotAFile(f"{cid} is {cid.codec.name}, not a UnixFS file")
        node = decode_dag_pb(block)
        if node.data is None:
            raise NotAFile(f"{cid} is a dag-pb node without UnixFS data")
        meta = decode_unixfs(node.data)
        if meta.type not in _FILE_TYPES:
            kind = UnixfsType(meta.type).name.lower() if meta.type in _KNOWN_TYPES else f"type-{meta.type}"
            raise NotAFile(f"{cid} is a UnixFS {kind} node, not a file")
        children = [link.cid for link in node.links]
        sizes = meta.blocksizes if len(meta.blocksizes) == len(children) else None
        return _FileNode(meta.data or b"", children, sizes, meta.filesize)

    def file_size(self, cid: CID) -> int:
        """The file's size, as recorded in its root node (one block read when Kubo wrote it)."""
        node = self._file_node(cid)
        if node.filesize is not None:
            return node.filesize
        return len(node.data) + sum(self._child_sizes(node))

    def _child_sizes(self, node: _FileNode) -> list[int]:
        if node.sizes is not None:
            return node.sizes
        return [self.file_size(child) for child in node.children]

    def iter_file(self, cid: CID, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Yield the file's bytes in order, one block's worth at a time; subtrees before ``offset`` are
        skipped by their UnixFS blocksizes, unread. Raises ``BlockNotFound`` for a missing block."""
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        if length == 0:
            return
        yield from self._walk(cid, offset, None if length is None else offset + length)

    def _walk(self, cid: CID, start: int, end: int | None) -> Iterator[bytes]:
        """The bytes of the subtree at ``cid`` in ``[start, end)``, positions relative to the subtree."""
        node = self._file_node(cid)
        data = node.data
        if data:
            whole = start == 0 and (end is None or end >= len(data))
            piece = data if whole else data[start:end]
            if piece:
                yield piece
        pos = len(data)
        if not node.children:
            return
        for child, size in zip(node.children, self._child_sizes(node), strict=True):
            if end is not None and pos >= end:
                return
            if pos + size > start:
                yield from self._walk(child, max(start - pos, 0), None if end is None else end - pos)
            pos += size


# --- Kubo RPC ---------------------------------------------------------------------------------------


class _BadArgument(Exception):
    """A query argument Kubo would refuse with 400 and Code 1."""


def _kubo_error(message: str, status: int = 500, code: int = 0) -> JSONResponse:
    return JSONResponse({"Message": message, "Code": code, "Type": "error"}, status_code=status)


def _bool_arg(request: Request, name: str, default: bool) -> bool:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise _BadArgument(f"invalid boolean for option {name!r}: {value!r}")


def _int_arg(request: Request, name: str, default: int | None) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise _BadArgument(f"invalid integer for option {name!r}: {value!r}") from None
    if number < 0:
        raise _BadArgument(f"option {name!r} must not be negative")
    return number


def _cid_arg(text: str) -> CID:
    """A CID from ``arg``; accepts ``/ipfs/<cid>`` as Kubo does, but no sub-paths."""
    cid_text = text.removeprefix("/ipfs/").rstrip("/")
    if "/" in cid_text:
        raise InvalidCid(f"{text}: paths inside a DAG are not supported by the devnet node")
    return parse_cid(cid_text)


def _pick_upload(form: FormData) -> UploadFile | None:
    field = form.get("file")
    if isinstance(field, UploadFile):
        return field
    for _, value in form.multi_items():
        if isinstance(value, UploadFile):  # Kubo takes the file part whatever it is called
            return value
    return None


def _logged(pieces: Iterator[bytes], cid: CID) -> Iterator[bytes]:
    """Log a failure mid-stream once: the status line is already sent, so the client only sees a cut."""
    try:
        yield from pieces
    except (KeyError, IpfsError, OSError) as exc:
        logger.error("stream of %s broke off: %s", cid, exc)
        raise


def create_rpc_app(store: BlockStore, *, required_auth: str | None = None) -> FastAPI:
    """Kubo's RPC subset the worker uses. POST only, like Kubo (GET answers 405).

    With ``required_auth`` (``Bearer <token>``, ``Basic <base64>`` or ``user:password``, the forms of
    the worker's ``IPFS_API_AUTH``) every call without that exact ``Authorization`` header is answered
    401, as a remote node behind an authenticating reverse proxy would (Kubo's own
    ``API.Authorizations`` refuses such calls as well).
    """
    app = FastAPI(title="VeriFrame devnet IPFS RPC", docs_url=None, redoc_url=None, openapi_url=None)
    if required_auth is not None:
        expected = parse_authorization(required_auth, "--ipfs-api-auth").encode()

        @app.middleware("http")
        async def authorize(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                # Neither header is logged: both are credentials.
                logger.warning("refused %s: %s Authorization", request.url.path, "wrong" if given else "no")
                refused = _kubo_error("401 Unauthorized: this API needs an Authorization header", status=401)
                scheme = expected.split(b" ", 1)[0].decode()
                refused.headers["WWW-Authenticate"] = f'{scheme} realm="devnet IPFS RPC"'
                return refused
            return await call_next(request)

    # A stable legacy-style (Qm...) peer ID derived from the store folder; nothing ever dials it.
    peer_digest = hashlib.sha256(str(store.root.resolve()).encode()).digest()
    peer_id = str(CID("base58btc", 0, "dag-pb", multihash.wrap(peer_digest, "sha2-256")))

    @app.exception_handler(_BadArgument)
    async def bad_argument(_: Request, exc: _BadArgument) -> JSONResponse:
        return _kubo_error(str(exc), status=400, code=1)

    @app.post("/api/v0/add")
    async def add(request: Request) -> Response:
        cid_version = _int_arg(request, "cid-version", 0)
        if cid_version not in (0, 1):
            raise _BadArgument(f"unknown CID version {cid_version}")
        raw_leaves = _bool_arg(request, "raw-leaves", cid_version == 1)
        for accepted in ("pin", "quiet", "progress"):  # accepted for compatibility; nothing to do here
            _bool_arg(request, accepted, False)
        async with request.form() as form:
            upload = _pick_upload(form)
            if upload is None:
                raise _BadArgument("file argument 'path' is required")
            # The upload is spooled by the form parser; read it in pieces off the event loop.
            try:
                root, file_size, dag_size = await run_in_threadpool(
                    store.add_stream, upload.file, cid_version, raw_leaves=raw_leaves
                )
            except (OSError, IpfsError) as exc:
                logger.error("add of %s failed: %s", upload.filename, exc)
                return _kubo_error(f"add failed: {exc}")
            name = upload.filename or str(root)
        logger.info("added %s (%d bytes, cid-version %d) as %s", name, file_size, cid_version, root)
        return JSONResponse({"Name": name, "Hash": str(root), "Size": str(dag_size)})

    @app.post("/api/v0/cat")
    async def cat(request: Request) -> Response:
        arg = request.query_params.get("arg")
        if not arg:
            raise _BadArgument("argument 'ipfs-path' is required")
        offset = _int_arg(request, "offset", 0) or 0
        length = _int_arg(request, "length", None)
        try:
            cid = _cid_arg(arg)
            size = await run_in_threadpool(store.file_size, cid)
        except InvalidCid as exc:
            return _kubo_error(f"invalid path {arg!r}: {exc}")
        except BlockNotFound as exc:
            return _kubo_error(f"block was not found locally (offline): ipld: could not find {exc.cid}")
        except IpfsError as exc:
            return _kubo_error(str(exc))
        served = max(0, size - offset) if length is None else max(0, min(length, size - offset))
        return StreamingResponse(
            _logged(store.iter_file(cid, offset, length), cid),
            media_type="text/plain",
            headers={"X-Content-Length": str(served), "X-Stream-Output": "1"},
        )

    @app.post("/api/v0/version")
    async def version() -> dict[str, str]:
        return {"Version": DEVNET_VERSION, "Commit": "", "Repo": "16", "System": "python", "Golang": ""}

    @app.post("/api/v0/id")
    async def identity() -> dict[str, object]:
        return {
            "ID": peer_id,
            "PublicKey": "",
            "Addresses": [],
            "AgentVersion": f"veriframe/{DEVNET_VERSION}",
            "ProtocolVersion": "ipfs/0.1.0",
            "Protocols": [],
        }

    return app


# --- gateway ----------------------------------------------------------------------------------------


def create_gateway_app(store: BlockStore) -> FastAPI:
    """A read-only path gateway: ``GET``/``HEAD /ipfs/<cid>`` for files only."""
    app = FastAPI(title="VeriFrame devnet IPFS gateway", docs_url=None, redoc_url=None, openapi_url=None)

    @app.api_route("/ipfs/{cid_text}", methods=["GET", "HEAD"])
    async def ipfs_path(cid_text: str, request: Request) -> Response:
        try:
            cid = parse_cid(cid_text)
            size = await run_in_threadpool(store.file_size, cid)
        except InvalidCid as exc:
            return PlainTextResponse(f"invalid CID: {exc}\n", status_code=400)
        except BlockNotFound:
            return PlainTextResponse(f"ipfs resolve /ipfs/{cid_text}: block not found\n", status_code=404)
        except NotAFile as exc:
            return PlainTextResponse(f"{exc}\n", status_code=501)
        except IpfsError as exc:
            logger.error("gateway cannot serve %s: %s", cid_text, exc)
            return PlainTextResponse(f"{exc}\n", status_code=500)
        headers = {
            "Content-Length": str(size),
            "X-Ipfs-Path": f"/ipfs/{cid_text}",
            "Etag": f'"{cid_text}"',
            "Cache-Control": "public, max-age=29030400, immutable",
        }
        if request.method == "HEAD":
            return Response(headers=headers, media_type="application/octet-stream")
        return StreamingResponse(
            _logged(store.iter_file(cid), cid), headers=headers, media_type="application/octet-stream"
        )

    return app
