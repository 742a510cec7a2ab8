"""Kubo-compatible CIDs for files, computed while the bytes stream past.

The worker never trusts a gateway: it re-derives the CID of everything it downloads and compares it
with the CID the job names. That only works if we build exactly the DAG that Kubo's ``ipfs add`` builds
(fixed 256 KiB chunks, balanced layout, 174 links per node, UnixFS-in-dag-pb leaves for CIDv0 and raw
leaves for CIDv1), byte for byte, because a single differing protobuf byte changes the root hash.

Plain Python on purpose (stdlib + ``multiformats``): it runs inside Blender's Python and in the devnet
IPFS node, which uses the same builder to store blocks and ``decode_dag_pb`` to walk them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

from multiformats import CID, multihash, varint

from ..errors import ContentMismatch, InvalidCid, IpfsError

__all__ = [
    "CHUNK_SIZE",
    "MAX_LINKS",
    "BlockSink",
    "CidVerifier",
    "DagPbLink",
    "DagPbNode",
    "UnixfsData",
    "UnixfsFileBuilder",
    "UnixfsType",
    "cid_of_file",
    "decode_dag_pb",
    "decode_unixfs",
    "encode_dag_pb",
    "encode_unixfs",
    "parse_cid",
]

CHUNK_SIZE = 262144  # Kubo's default chunker, "size-262144"
MAX_LINKS = 174  # Kubo's helpers.DefaultLinksPerBlock
_READ_SIZE = 1 << 20

BlockSink = Callable[[CID, bytes], None]

_SHA2_256 = multihash.get("sha2-256")
_SHA2_256_CODE = 0x12
_DAG_PB = 0x70
_RAW = 0x55

# Protobuf tags (field number << 3 | wire type) of the two messages we write.
_PB_DATA = b"\x0a"  # PBNode.Data = 1, bytes
_PB_LINK = b"\x12"  # PBNode.Links = 2, bytes
_LINK_HASH = b"\x0a"  # PBLink.Hash = 1, bytes
_LINK_NAME = b"\x12"  # PBLink.Name = 2, string
_LINK_TSIZE = b"\x18"  # PBLink.Tsize = 3, varint
_FS_TYPE = b"\x08"  # Data.Type = 1, varint
_FS_DATA = b"\x12"  # Data.Data = 2, bytes
_FS_FILESIZE = b"\x18"  # Data.filesize = 3, varint
_FS_BLOCKSIZE = b"\x20"  # Data.blocksizes = 4, varint, repeated and not packed (proto2)

_WIRE_VARINT = 0
_WIRE_I64 = 1
_WIRE_LEN = 2
_WIRE_I32 = 5


class UnixfsType(IntEnum):
    """UnixFS ``Data.DataType``; only ``FILE`` (and legacy ``RAW`` leaves) hold file bytes."""

    RAW = 0
    DIRECTORY = 1
    FILE = 2
    METADATA = 3
    SYMLINK = 4
    HAMT_SHARD = 5


@dataclass(frozen=True)
class DagPbLink:
    """One ``PBLink``. ``name``/``tsize`` are ``None`` when absent: absent and empty hash differently."""

    cid: CID
    name: str | None = ""
    tsize: int | None = None


@dataclass(frozen=True)
class DagPbNode:
    """One ``PBNode``: links in order, then the opaque ``Data`` (a UnixFS message for files)."""

    links: list[DagPbLink] = field(default_factory=list)
    data: bytes | None = None


@dataclass(frozen=True)
class UnixfsData:
    """The UnixFS ``Data`` message, reduced to the fields a file DAG uses."""

    type: int
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: list[int] = field(default_factory=list)


class _Child(NamedTuple):
    cid: bytes  # binary CID: building a multiformats CID object costs ~0.1 ms, so only on demand
    tsize: int  # cumulative serialized size of the child's subtree (PBLink.Tsize)
    file_size: int  # file bytes below the child (UnixFS blocksizes entry)


# --- protobuf ---------------------------------------------------------------------------------------


def _len_field(tag: bytes, payload: bytes) -> bytes:
    return tag + varint.encode(len(payload)) + payload


def encode_unixfs(message: UnixfsData) -> bytes:
    """Serialize a UnixFS ``Data`` message in field order, as Go's generated protobuf code does."""
    parts = [_FS_TYPE, varint.encode(int(message.type))]
    if message.data is not None:  # empty-but-present is two bytes (12 00); Kubo omits nil data
        parts.append(_len_field(_FS_DATA, message.data))
    if message.filesize is not None:
        parts += [_FS_FILESIZE, varint.encode(message.filesize)]
    for size in message.blocksizes:
        parts += [_FS_BLOCKSIZE, varint.encode(size)]
    return b"".join(parts)


def _encode_link(cid: bytes, name: str | None, tsize: int | None) -> bytes:
    body = [_len_field(_LINK_HASH, cid)]
    if name is not None:  # Kubo always writes it, so its links carry an empty Name: 12 00
        body.append(_len_field(_LINK_NAME, name.encode()))
    if tsize is not None:
        body += [_LINK_TSIZE, varint.encode(tsize)]
    return _len_field(_PB_LINK, b"".join(body))


def _encode_node(links: list[bytes], data: bytes | None) -> bytes:
    return b"".join([*links, _len_field(_PB_DATA, data)] if data is not None else links)


def encode_dag_pb(node: DagPbNode) -> bytes:
    """Serialize a ``PBNode`` canonically: all Links (field 2) first, then Data (field 1)."""
    links = [_encode_link(bytes(link.cid), link.name, link.tsize) for link in node.links]
    return _encode_node(links, node.data)


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    try:
        value, size, _ = varint.decode_raw(buf[pos : pos + 10])
    except ValueError as exc:
        raise IpfsError(f"malformed protobuf varint at byte {pos}: {exc}") from exc
    return value, pos + size


def _fields(block: bytes | memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield ``(field number, wire type, value)``; length-delimited values come as views into ``block``."""
    buf = memoryview(block)
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _WIRE_VARINT:
            value, pos = _read_varint(buf, pos)
            yield number, wire, value
        elif wire == _WIRE_LEN:
            size, pos = _read_varint(buf, pos)
            if pos + size > end:
                raise IpfsError(f"malformed protobuf: field {number} runs past the end of the block")
            yield number, wire, buf[pos : pos + size]
            pos += size
        elif wire in (_WIRE_I64, _WIRE_I32):  # unknown fixed-width fields: skip
            pos += 8 if wire == _WIRE_I64 else 4
            if pos > end:
                raise IpfsError(f"malformed protobuf: field {number} runs past the end of the block")
        else:
            raise IpfsError(f"malformed protobuf: unsupported wire type {wire} for field {number}")


def _expect(wire: int, wanted: int, what: str) -> None:
    if wire != wanted:
        raise IpfsError(f"malformed protobuf: {what} has wire type {wire}")


def _decode_link(payload: memoryview) -> DagPbLink:
    cid: CID | None = None
    name: str | None = None
    tsize: int | None = None
    for number, wire, value in _fields(payload):
        if number == 1:
            _expect(wire, _WIRE_LEN, "PBLink.Hash")
            cid = _cid_from_bytes(bytes(value))  # type: ignore[arg-type]
        elif number == 2:
            _expect(wire, _WIRE_LEN, "PBLink.Name")
            try:
                name = bytes(value).decode()  # type: ignore[arg-type]
            except UnicodeDecodeError as exc:
                raise IpfsError("malformed dag-pb: link name is not UTF-8") from exc
        elif number == 3:
            _expect(wire, _WIRE_VARINT, "PBLink.Tsize")
            tsize = value  # type: ignore[assignment]
    if cid is None:
        raise IpfsError("malformed dag-pb: link without Hash")
    return DagPbLink(cid=cid, name=name, tsize=tsize)


def decode_dag_pb(block: bytes) -> DagPbNode:
    """Parse a dag-pb block; raises ``IpfsError`` if it is not one."""
    links: list[DagPbLink] = []
    data: bytes | None = None
    for number, wire, value in _fields(block):
        if number == 2:
            _expect(wire, _WIRE_LEN, "PBNode.Links")
            links.append(_decode_link(value))  # type: ignore[arg-type]
        elif number == 1:
            _expect(wire, _WIRE_LEN, "PBNode.Data")
            data = bytes(value)  # type: ignore[arg-type]
        else:
            raise IpfsError(f"malformed dag-pb: unknown field {number}")
    return DagPbNode(links=links, data=data)


def decode_unixfs(data: bytes) -> UnixfsData:
    """Parse the UnixFS ``Data`` message found in a dag-pb node's Data; unknown fields are skipped."""
    kind: int | None = None
    payload: bytes | None = None
    filesize: int | None = None
    blocksizes: list[int] = []
    for number, wire, value in _fields(data):
        if number == 1:
            _expect(wire, _WIRE_VARINT, "Data.Type")
            kind = value  # type: ignore[assignment]
        elif number == 2:
            _expect(wire, _WIRE_LEN, "Data.Data")
            payload = bytes(value)  # type: ignore[arg-type]
        elif number == 3:
            _expect(wire, _WIRE_VARINT, "Data.filesize")
            filesize = value  # type: ignore[assignment]
        elif number == 4:
            if wire == _WIRE_LEN:  # tolerate the packed form other encoders may write
                packed = memoryview(value)  # type: ignore[arg-type]
                pos = 0
                while pos < len(packed):
                    size, pos = _read_varint(packed, pos)
                    blocksizes.append(size)
            else:
                _expect(wire, _WIRE_VARINT, "Data.blocksizes")
                blocksizes.append(value)  # type: ignore[arg-type]
    if kind is None:
        raise IpfsError("malformed UnixFS data: no Type")
    return UnixfsData(type=kind, data=payload, filesize=filesize, blocksizes=blocksizes)


# --- CIDs -------------------------------------------------------------------------------------------


_SHA2_256_PREFIX = b"\x12\x20"  # multihash: sha2-256, 32 bytes
_CID_PREFIXES = {
    (0, _DAG_PB): _SHA2_256_PREFIX,
    (1, _DAG_PB): b"\x01\x70" + _SHA2_256_PREFIX,
    (1, _RAW): b"\x01\x55" + _SHA2_256_PREFIX,
}


def _make_cid(version: int, codec: int, digest: bytes) -> CID:
    mh = multihash.wrap(digest, _SHA2_256)
    if version == 0:
        return CID("base58btc", 0, "dag-pb", mh)
    return CID("base32", 1, "raw" if codec == _RAW else "dag-pb", mh)


def _cid_from_bytes(raw: bytes) -> CID:
    try:
        cid = CID.decode(raw)
    except (ValueError, KeyError) as exc:
        raise IpfsError(f"malformed dag-pb: link hash is not a CID ({exc})") from exc
    return cid if cid.version == 0 else cid.set(base="base32")


def _check_supported(cid: CID, text: str) -> CID:
    if cid.hashfun.code != _SHA2_256_CODE or len(cid.raw_digest) != 32:
        raise InvalidCid(f"{text}: hash {cid.hashfun.name} is not supported (only sha2-256)")
    if cid.codec.code not in (_DAG_PB, _RAW):
        raise InvalidCid(f"{text}: codec {cid.codec.name} is not supported (only dag-pb and raw)")
    return cid


def parse_cid(text: str) -> CID:
    """Parse a CID string the worker can verify: sha2-256, dag-pb or raw, CIDv0 or any-base CIDv1."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidCid(f"not a CID: {text!r}")
    try:
        cid = CID.decode(text.strip())
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidCid(f"not a CID: {text!r} ({exc})") from exc
    return _check_supported(cid, text)


def _same_cid(a: CID, b: CID) -> bool:
    return bytes(a) == bytes(b)  # ignores the multibase a CIDv1 happens to be written in


# --- the builder ------------------------------------------------------------------------------------


class UnixfsFileBuilder:
    """Builds Kubo's default DAG for one file, fed in pieces.

    Leaves are hashed as soon as a chunk is complete and internal nodes as soon as 174 siblings exist,
    so memory stays at one chunk plus at most 174 child entries per tree level, whatever the file
    size. Grouping bottom-up in 174s this way yields the same tree as Kubo's top-down balanced builder:
    all leaves at one depth, every node full except the last one on each level.
    """

    def __init__(
        self,
        cid_version: int = 0,
        *,
        chunk_size: int = CHUNK_SIZE,
        max_links: int = MAX_LINKS,
        block_sink: BlockSink | None = None,
        raw_leaves: bool | None = None,
    ) -> None:
        if cid_version not in (0, 1):
            raise ValueError(f"cid_version must be 0 or 1, not {cid_version!r}")
        if chunk_size < 1 or max_links < 2:
            raise ValueError("chunk_size must be >= 1 and max_links >= 2")
        self._version = cid_version
        self._raw_leaves = cid_version == 1 if raw_leaves is None else raw_leaves
        self._chunk_size = chunk_size
        self._max_links = max_links
        self._sink = block_sink
        self._buf = bytearray()
        self._levels: list[list[_Child]] = [[]]  # _levels[0] holds leaves, _levels[1] their parents, ...
        self._leaf_count = 0
        self._file_size = 0
        self._node_prefix = _CID_PREFIXES[cid_version, _DAG_PB]
        self._root: _Child | None = None

    @property
    def file_size(self) -> int:
        """File bytes fed so far."""
        return self._file_size

    @property
    def dag_size(self) -> int:
        """Kubo's ``Size``: the root's cumulative serialized size (its Tsize). Known after ``finish``."""
        if self._root is None:
            raise RuntimeError("dag_size is known only after finish()")
        return self._root.tsize

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Feed the next piece of the file; any piece size gives the same result."""
        if self._root is not None:
            raise RuntimeError("update() after finish()")
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        size = len(view)
        self._file_size += size
        chunk = self._chunk_size
        pos = 0
        if self._buf:  # complete the chunk a previous piece started
            pos = min(chunk - len(self._buf), size)
            self._buf += view[:pos]
            if len(self._buf) < chunk:
                return
            with memoryview(self._buf) as pending:
                self._add_leaf(pending)
            self._buf.clear()
        while size - pos >= chunk:  # whole chunks straight from the caller's buffer, no copy
            self._add_leaf(view[pos : pos + chunk])
            pos += chunk
        if pos < size:
            self._buf += view[pos:]

    def finish(self) -> CID:
        """Hash the last chunk and close every level; returns the root CID. Call once."""
        if self._root is not None:
            raise RuntimeError("finish() called twice")
        if self._buf or self._leaf_count == 0:  # an empty file is one empty leaf, as in Kubo
            with memoryview(self._buf) as pending:
                self._add_leaf(pending)
            self._buf.clear()
        level = 0
        while True:
            pending = self._levels[level]
            higher = any(self._levels[level + 1 :])
            if not higher and len(pending) == 1:
                self._root = pending[0]
                return _cid_from_bytes(self._root.cid)
            if pending:  # a short last group still gets its own node when levels exist above it
                self._add_parent(level, pending)
            level += 1

    def _add_leaf(self, chunk: memoryview) -> None:
        self._leaf_count += 1
        size = len(chunk)
        if self._raw_leaves:
            digest = hashlib.sha256(chunk).digest()
            if self._sink is not None:
                self._sink(_make_cid(1, _RAW, digest), bytes(chunk))
            self._push(0, _Child(_CID_PREFIXES[1, _RAW] + digest, size, size))
            return
        # Kubo leaves: PBNode{Data: UnixFS{Type: File, Data: chunk, filesize}}. Hashing the framing
        # around the chunk avoids copying 256 KiB into a new block when nobody stores it.
        # The empty file's leaf has no Data field at all (08 02 18 00), not an empty one (12 00).
        fs_head = _FS_TYPE + b"\x02" + (_FS_DATA + varint.encode(size) if size else b"")
        fs_tail = _FS_FILESIZE + varint.encode(size)
        head = _PB_DATA + varint.encode(len(fs_head) + size + len(fs_tail)) + fs_head
        hasher = hashlib.sha256(head)
        hasher.update(chunk)
        hasher.update(fs_tail)
        digest = hasher.digest()
        if self._sink is not None:
            self._sink(_make_cid(self._version, _DAG_PB, digest), b"".join((head, chunk, fs_tail)))
        self._push(0, _Child(self._node_prefix + digest, len(head) + size + len(fs_tail), size))

    def _push(self, level: int, child: _Child) -> None:
        group = self._levels[level]
        group.append(child)
        if len(group) == self._max_links:
            self._add_parent(level, group)

    def _add_parent(self, level: int, children: list[_Child]) -> None:
        file_size = sum(c.file_size for c in children)
        data = encode_unixfs(
            UnixfsData(type=UnixfsType.FILE, filesize=file_size, blocksizes=[c.file_size for c in children])
        )
        block = _encode_node([_encode_link(c.cid, "", c.tsize) for c in children], data)
        digest = hashlib.sha256(block).digest()
        if self._sink is not None:
            self._sink(_make_cid(self._version, _DAG_PB, digest), block)
        self._levels[level] = []
        if level + 1 == len(self._levels):
            self._levels.append([])
        tsize = len(block) + sum(c.tsize for c in children)
        self._push(level + 1, _Child(self._node_prefix + digest, tsize, file_size))


def cid_of_file(path: str | os.PathLike[str], cid_version: int = 0) -> CID:
    """The CID ``ipfs add`` (``--cid-version=1`` for 1) would print for the file at ``path``."""
    builder = UnixfsFileBuilder(cid_version)
    buffer = bytearray(_READ_SIZE)
    with open(path, "rb") as file, memoryview(buffer) as view:
        while count := file.readinto(buffer):
            builder.update(view[:count])
    return builder.finish()


def cid_of_bytes(data: bytes, cid_version: int = 0) -> CID:
    """The CID ``ipfs add`` would print for ``data`` (small, in-memory content such as probes)."""
    builder = UnixfsFileBuilder(cid_version)
    builder.update(data)
    return builder.finish()


class CidVerifier:
    """Checks a stream against an expected CID, so a download is verified as it arrives.

    The DAG parameters are inferred from the expected CID: CIDv0 means dag-pb leaves, CIDv1 means raw
    leaves (Kubo's default for ``--cid-version=1``). Pass ``raw_leaves=False`` for content added with
    ``--cid-version=1 --raw-leaves=false``; nothing in the root CID tells the two apart.
    """

    def __init__(self, expected: str | CID, source: str = "", *, raw_leaves: bool | None = None) -> None:
        if isinstance(expected, CID):
            self._expected = _check_supported(expected, str(expected))
        else:
            self._expected = parse_cid(expected)
        self._expected_text = str(expected).strip()
        self._source = source
        self._builder = UnixfsFileBuilder(self._expected.version, raw_leaves=raw_leaves)

    @property
    def file_size(self) -> int:
        """Bytes checked so far."""
        return self._builder.file_size

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Feed the next piece of the downloaded content."""
        self._builder.update(data)

    def verify(self) -> CID:
        """Returns the CID when the content matches; raises ``ContentMismatch`` when it does not."""
        actual = self._builder.finish()
        if not _same_cid(actual, self._expected):
            raise ContentMismatch(self._expected_text, str(actual), self._source)
        return actual
