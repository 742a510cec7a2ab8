"""The render receipt: who rendered which scene, with which Blender and settings, into which pixels.

A receipt is a JSON object; its canonical form (sorted keys, no spaces, UTF-8) hashes to a felt the way
the login challenge does (the first 31 bytes of SHA-256, so it stays below the field prime), and the
worker's Stark key signs that felt. starknet-py's signatures are deterministic (RFC 6979), so the same
receipt always gets the same signature and a re-run upload the same bytes and CID.

What a receipt proves: the holder of the worker's key says it rendered this job's scene into these
pixels with these settings. What it does not: that the node rendered only once, or did not pick the
better of two renders; a re-render (``verify --rerender``) is the check of the pixels themselves.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .png_chunks import image_sha256, read_itxt, with_itxt

RECEIPT_KEYWORD = "VeriFrame-Receipt"
RECEIPT_FORMAT = 1


@dataclass(frozen=True)
class SignedReceipt:
    receipt: dict[str, Any]
    signature: tuple[str, str]  # r, s as hex

    def to_text(self) -> str:
        return json.dumps({"receipt": self.receipt, "signature": list(self.signature)}, sort_keys=True)

    @classmethod
    def from_text(cls, text: str) -> SignedReceipt:
        document = json.loads(text)
        receipt, signature = document["receipt"], document["signature"]
        if not isinstance(receipt, dict) or not (isinstance(signature, list) and len(signature) == 2):
            raise ValueError("a receipt chunk must hold a receipt object and a two-part signature")
        return cls(receipt, (str(signature[0]), str(signature[1])))


def build_receipt(
    *,
    png: bytes,
    job_id: str,
    asset_cid: str,
    worker_address: str,
    blender: str,
    engine: str,
    device: str,
    frame: int,
    resolution: tuple[int, int],
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The receipt of a render whose PNG bytes are ``png`` (any receipt already in it is ignored)."""
    return {
        "format": RECEIPT_FORMAT,
        "job_id": job_id,
        "asset_cid": asset_cid,
        "worker_address": worker_address,
        "blender": blender,
        "engine": engine,
        "device": device,
        "frame": frame,
        "resolution": list(resolution),
        "settings": settings,
        "image_sha256": image_sha256(png),
    }


def canonical(receipt: dict[str, Any]) -> bytes:
    return json.dumps(receipt, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def receipt_felt(receipt: dict[str, Any]) -> str:
    """The hex felt that is signed: the first 31 bytes of SHA-256 of the canonical JSON."""
    return "0x" + hashlib.sha256(canonical(receipt)).digest()[:31].hex()


def signature_valid(signed: SignedReceipt, public_key: int) -> bool:
    from starknet_py.hash.utils import verify_message_signature

    try:
        r, s = (int(part, 16) for part in signed.signature)
    except ValueError:
        return False
    return bool(verify_message_signature(int(receipt_felt(signed.receipt), 16), [r, s], public_key))


def embed(png: bytes, signed: SignedReceipt) -> bytes:
    """The PNG with the signed receipt as its ``VeriFrame-Receipt`` chunk; the pixels are untouched."""
    return with_itxt(png, RECEIPT_KEYWORD, signed.to_text())


def extract(png: bytes) -> SignedReceipt | None:
    """The signed receipt in a PNG, or None when it carries none. ``ValueError`` if it is malformed."""
    text = read_itxt(png, RECEIPT_KEYWORD)
    return None if text is None else SignedReceipt.from_text(text)
