"""The wallet key from an encrypted JSON keystore, as ``starkli signer keystore new`` writes it.

The format is Web3 Secret Storage v3: a key derived from the password (scrypt, or PBKDF2-HMAC-SHA256)
decrypts the private key with AES-128-CTR, and a Keccak-256 MAC over the derived key's second half and
the ciphertext tells a wrong password from a right one before anything is decrypted. The decrypted key
lives in memory only: nothing here writes it anywhere, and no error message contains it or the password.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from pathlib import Path
from typing import Any

from .errors import ConfigError

SCRYPT_DEFAULTS = {"n": 8192, "r": 8, "p": 1}  # what starkli (eth-keystore) writes
MAX_SCRYPT_MEMORY = 2 << 30  # refuse a keystore that would make scrypt take more than 2 GiB


class KeystoreError(ConfigError):
    """The keystore cannot give a key: wrong password, damaged or unsupported file."""

    def __init__(self, detail: str) -> None:
        super().__init__("WORKER_KEYSTORE", detail)


def read_keystore(path: Path, password: str) -> int:
    """The private key in the keystore file at ``path``."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KeystoreError(f"no keystore at {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise KeystoreError(f"{path} is not a JSON keystore ({type(exc).__name__})") from None
    return decrypt_keystore(document, password, source=str(path))


def decrypt_keystore(document: dict[str, Any], password: str, *, source: str = "the keystore") -> int:
    """The private key of a v3 keystore document; ``KeystoreError`` names what is wrong, never a secret."""
    crypto = document.get("crypto") or document.get("Crypto") if isinstance(document, dict) else None
    if not isinstance(crypto, dict) or document.get("version") != 3:
        raise KeystoreError(f"{source} is not a version 3 keystore (Web3 Secret Storage)")
    try:
        cipher = crypto["cipher"]
        iv = bytes.fromhex(crypto["cipherparams"]["iv"])
        ciphertext = bytes.fromhex(crypto["ciphertext"])
        mac = bytes.fromhex(crypto["mac"])
        kdf, params = crypto["kdf"], crypto["kdfparams"]
    except (KeyError, TypeError, ValueError):
        raise KeystoreError(f"{source} is damaged: a crypto field is missing or not hex") from None
    if cipher != "aes-128-ctr":
        raise KeystoreError(f"{source} uses cipher {cipher!r}; only aes-128-ctr is supported")
    derived = derive_key(kdf, params, password, source)
    if not hmac.compare_digest(keccak256(derived[16:32] + ciphertext), mac):
        raise KeystoreError(f"wrong password for {source} (its MAC does not match)")
    key = int.from_bytes(_aes_ctr(derived[:16], iv, ciphertext), "big")
    if key == 0:
        raise KeystoreError(f"{source} holds an empty key")
    return key


def encrypt_keystore(
    private_key: int,
    password: str,
    *,
    salt: bytes | None = None,
    iv: bytes | None = None,
    n: int = SCRYPT_DEFAULTS["n"],
    r: int = SCRYPT_DEFAULTS["r"],
    p: int = SCRYPT_DEFAULTS["p"],
) -> dict[str, Any]:
    """A v3 keystore (scrypt) for ``private_key``, as starkli writes one; salt and iv random by default."""
    salt = salt if salt is not None else secrets.token_bytes(32)
    iv = iv if iv is not None else secrets.token_bytes(16)
    params = {"dklen": 32, "n": n, "r": r, "p": p, "salt": salt.hex()}
    derived = derive_key("scrypt", params, password, "the new keystore")
    ciphertext = _aes_ctr(derived[:16], iv, private_key.to_bytes(32, "big"))
    return {
        "crypto": {
            "cipher": "aes-128-ctr",
            "cipherparams": {"iv": iv.hex()},
            "ciphertext": ciphertext.hex(),
            "kdf": "scrypt",
            "kdfparams": params,
            "mac": keccak256(derived[16:32] + ciphertext).hex(),
        },
        "id": str(uuid.uuid4()),
        "version": 3,
    }


def derive_key(kdf: str, params: dict[str, Any], password: str, source: str) -> bytes:
    """The KDF's output for ``password``: scrypt or PBKDF2-HMAC-SHA256, with the file's parameters."""
    try:
        salt = bytes.fromhex(params["salt"])
        dklen = int(params.get("dklen", 32))
        if kdf == "scrypt":
            n, r, p = int(params["n"]), int(params["r"]), int(params["p"])
        elif kdf == "pbkdf2":
            count, prf = int(params["c"]), params.get("prf", "hmac-sha256")
        else:
            raise KeystoreError(f"{source} uses KDF {kdf!r}; scrypt and pbkdf2 are supported")
    except (KeyError, TypeError, ValueError):
        raise KeystoreError(f"{source} is damaged: its {kdf} parameters are incomplete") from None
    if dklen < 32:
        raise KeystoreError(f"{source} derives a {dklen}-byte key; 32 are needed")
    secret = password.encode("utf-8")
    if kdf == "pbkdf2":
        if prf != "hmac-sha256":
            raise KeystoreError(f"{source} uses PBKDF2 with {prf!r}; only hmac-sha256 is supported")
        return hashlib.pbkdf2_hmac("sha256", secret, salt, count, dklen)
    if n < 2 or n & (n - 1) or r < 1 or p < 1 or 128 * r * n > MAX_SCRYPT_MEMORY or p > 64:
        raise KeystoreError(f"{source} has scrypt parameters this node refuses (n={n}, r={r}, p={p})")
    # pycryptodome's scrypt, not hashlib's: OpenSSL refuses n >= 2**(16 r), which the standard's own
    # test vector (n=262144, r=1) and some wallets use.
    from Crypto.Protocol.KDF import scrypt

    return scrypt(secret, salt, dklen, N=n, r=r, p=p)  # type: ignore[arg-type,return-value]


def keccak256(data: bytes) -> bytes:
    """Ethereum's Keccak-256 (not SHA3-256: the padding differs), which the keystore's MAC uses."""
    from Crypto.Hash import keccak  # pycryptodome, vendored (starknet-py needs it too)

    return keccak.new(data=data, digest_bits=256).digest()


def _aes_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    from Crypto.Cipher import AES

    return AES.new(key, AES.MODE_CTR, initial_value=iv, nonce=b"").decrypt(data)


def read_password_file(path: Path) -> str:
    """A password file's first line (a trailing newline is not part of the password)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("WORKER_KEYSTORE_PASSWORD_FILE", f"cannot read {path} ({exc.strerror})") from None
    return text.splitlines()[0] if text else ""
