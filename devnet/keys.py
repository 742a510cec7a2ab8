"""Stark-curve key pairs for devnet accounts (the admin, test workers, the demo worker).

The devnet never deploys an account contract, but it hands out the address such a contract *would* have
(the counterfactual OpenZeppelin account address), so addresses look and derive exactly like real ones.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from starknet_py.constants import EC_ORDER
from starknet_py.hash.address import compute_address
from starknet_py.hash.utils import message_signature, private_to_stark_key

logger = logging.getLogger(__name__)

# OpenZeppelin account v0.8.1 (Cairo 1), the account class starknet-devnet predeploys; any fixed OZ class hash
# would do, this one makes the addresses match what a local starknet-devnet computes for the same key.
OZ_ACCOUNT_CLASS_HASH = 0x05B4B537EAA2399E3AA99C4E2E0208EBD6C71BC1467938CD52C798C601E43564


@dataclass(frozen=True)
class StarkKeyPair:
    """A private key, its Stark public key and the account address derived from it."""

    private_key: int
    public_key: int
    address: str

    @property
    def public_key_hex(self) -> str:
        """The public key as the backend stores it (``0x`` + 64 hex digits)."""
        return f"0x{self.public_key:064x}"

    @property
    def private_key_hex(self) -> str:
        return f"0x{self.private_key:064x}"


def account_address(public_key: int) -> str:
    """Counterfactual address of an OZ account for ``public_key`` (salt = public key, deployer 0)."""
    address = compute_address(
        class_hash=OZ_ACCOUNT_CLASS_HASH, constructor_calldata=[public_key], salt=public_key
    )
    return f"0x{address:064x}"


def keypair_from_private_key(private_key: int) -> StarkKeyPair:
    """Derive the public key and address; raises ``ValueError`` for a key outside [1, EC_ORDER)."""
    if not 1 <= private_key < EC_ORDER:
        raise ValueError("private key must be in [1, EC_ORDER)")
    public_key = private_to_stark_key(private_key)
    return StarkKeyPair(private_key=private_key, public_key=public_key, address=account_address(public_key))


def new_keypair() -> StarkKeyPair:
    """A fresh random key pair (``secrets``, so it is fit for a long-lived devnet admin too)."""
    return keypair_from_private_key(secrets.randbelow(EC_ORDER - 1) + 1)


def sign(message_hex: str, private_key: int) -> list[str]:
    """Sign a challenge felt (``0x...``) the way the worker does; returns ``[r_hex, s_hex]``."""
    r, s = message_signature(int(message_hex, 16), private_key)
    return [hex(r), hex(s)]


def save_keypair(path: Path, keypair: StarkKeyPair) -> None:
    """Write the key pair as JSON, readable by the owner only (it holds a private key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "private_key": keypair.private_key_hex,
        "public_key": keypair.public_key_hex,
        "address": keypair.address,
    }
    # Create with 0600 from the start so the key is never briefly world-readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")
    os.chmod(path, 0o600)
    logger.debug("saved key pair for %s to %s", keypair.address, path)


def load_keypair(path: Path) -> StarkKeyPair:
    """Read a key pair written by ``save_keypair``; public key and address are re-derived and checked."""
    data = json.loads(path.read_text(encoding="utf-8"))
    keypair = keypair_from_private_key(int(data["private_key"], 16))
    if int(data.get("public_key", keypair.public_key_hex), 16) != keypair.public_key:
        raise ValueError(f"{path}: public_key does not belong to private_key")
    if "address" in data and int(data["address"], 16) != int(keypair.address, 16):
        raise ValueError(f"{path}: address does not belong to private_key")
    return keypair
