"""A PNG as its chunks: the hash of the image data, and a text chunk added or read before ``IEND``.

The image hash covers the ``IHDR`` and ``IDAT`` chunks (type and data, in order): the header and the
compressed pixels. Any metadata chunk a tool adds or removes leaves it unchanged; one pixel changed, or
the same pixels compressed differently, changes it.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterator

SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_CHUNKS = (b"IHDR", b"IDAT")


class PngError(ValueError):
    """The bytes are not a well-formed PNG."""


def chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Each chunk as (type, data), checking lengths and CRCs; stops after ``IEND``."""
    if not data.startswith(SIGNATURE):
        raise PngError("not a PNG file (its first 8 bytes are not the PNG signature)")
    position = len(SIGNATURE)
    while position + 12 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length] or b"\0\0\0\0")
        if len(body) != length or zlib.crc32(kind + body) != crc:
            raise PngError(f"the {kind.decode('latin-1')!r} chunk at byte {position} is damaged")
        yield kind, body
        position += 12 + length
        if kind == b"IEND":
            return
    raise PngError("the PNG ends without an IEND chunk")


def image_sha256(data: bytes) -> str:
    """SHA-256 (hex) of the IHDR and IDAT chunks: what a receipt says the pixels are."""
    digest = hashlib.sha256()
    for kind, body in chunks(data):
        if kind in IMAGE_CHUNKS:
            digest.update(kind + body)
    return digest.hexdigest()


def dimensions(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk (which a well-formed PNG has first)."""
    for kind, body in chunks(data):
        if kind == b"IHDR" and len(body) >= 8:
            width, height = struct.unpack(">II", body[:8])
            return width, height
        break
    raise PngError("the PNG does not begin with an IHDR chunk")


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def itxt_body(keyword: str, text: str) -> bytes:
    """An uncompressed ``iTXt`` chunk's data: keyword, no language tag, UTF-8 text."""
    return keyword.encode("latin-1") + b"\0\0\0" + b"\0" + b"\0" + text.encode("utf-8")


def read_itxt(data: bytes, keyword: str) -> str | None:
    """The text of the first uncompressed ``iTXt`` chunk named ``keyword``, or None."""
    wanted = keyword.encode("latin-1") + b"\0"
    for kind, body in chunks(data):
        if kind == b"iTXt" and body.startswith(wanted):
            rest = body[len(wanted) :]
            if rest[:1] != b"\0":  # compressed: this module never writes one
                continue
            _language, _, rest = rest[2:].partition(b"\0")
            _translated, _, text = rest.partition(b"\0")
            return text.decode("utf-8")
    return None


def with_itxt(data: bytes, keyword: str, text: str) -> bytes:
    """``data`` with one ``iTXt`` chunk ``keyword`` holding ``text`` just before ``IEND`` (any earlier
    chunk of that keyword dropped), every other chunk byte for byte as it was."""
    return _rebuild(data, keyword, chunk(b"iTXt", itxt_body(keyword, text)))


def without_itxt(data: bytes, keyword: str) -> bytes:
    """``data`` with every ``iTXt`` chunk named ``keyword`` removed."""
    return _rebuild(data, keyword, b"")


def _rebuild(data: bytes, keyword: str, before_end: bytes) -> bytes:
    named = keyword.encode("latin-1") + b"\0"
    out = [SIGNATURE]
    for kind, body in chunks(data):
        if kind == b"iTXt" and body.startswith(named):
            continue
        if kind == b"IEND":
            out.append(before_end)
        out.append(chunk(kind, body))
    return b"".join(out)
