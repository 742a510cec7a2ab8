"""Signing in to the backend with the worker's Stark key, and keeping the session alive.

Flow: ``POST /auth/challenge`` -> sign the felt ``message`` (Stark-curve ECDSA, starknet-py's
``message_signature``) -> ``POST /auth/worker-auth`` -> access + refresh tokens. An access token that is
about to expire, or that the backend refuses with 401, is renewed through ``/auth/refresh``; when that
fails too, the worker signs a fresh challenge. The private key never leaves ``StarkSigner``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import AuthError, BackendError
from ..net.transport import JsonTransport

log = logging.getLogger("veriframe.worker")


class StarkSigner:
    """Holds the private key and signs challenge felts; nothing else in the worker sees the key."""

    def __init__(self, private_key: int) -> None:
        self._private_key = private_key

    def __repr__(self) -> str:
        return "StarkSigner(<private key hidden>)"

    @property
    def public_key(self) -> str:
        from starknet_py.hash.utils import private_to_stark_key  # heavy import, paid once on first use

        return hex(private_to_stark_key(self._private_key))

    def sign(self, message: str) -> list[str]:
        """Signs the hex felt ``message`` and returns ``[r, s]`` as hex strings, the backend's format."""
        from starknet_py.hash.utils import message_signature

        try:
            felt = int(message, 16)
        except (TypeError, ValueError):
            raise AuthError(f"the backend's challenge {message!r} is not a hex felt") from None
        r, s = message_signature(felt, self._private_key)
        return [hex(r), hex(s)]


@dataclass
class _Tokens:
    access: str
    refresh: str | None
    expires_at: float


def token_preview(token: str) -> str:
    """Enough of a token to tell two apart in a log, never enough to use it."""
    return token[:12] + "..."


class AuthSession:
    """Hands out a valid bearer token, renewing it before it expires or after the backend refuses it."""

    def __init__(
        self,
        transport: JsonTransport,
        address: str,
        signer: StarkSigner,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.transport = transport
        self.address = address
        self.signer = signer
        self.clock = clock
        self.worker: dict[str, Any] | None = None
        self._tokens: _Tokens | None = None
        self._lock = threading.Lock()

    @property
    def signed_in(self) -> bool:
        return self._tokens is not None

    def bearer(self) -> str:
        """A token good for the next call: signs in, or refreshes one close to expiry, as needed."""
        with self._lock:
            if self._tokens is None:
                self._sign_in()
            elif self.clock() >= self._tokens.expires_at:
                log.info("[Worker] Access token expired; renewing it")
                self._renew()
            assert self._tokens is not None
            return self._tokens.access

    def invalidate(self) -> None:
        """Called after a 401: the next ``bearer()`` renews the token instead of trusting its expiry time."""
        with self._lock:
            if self._tokens is not None:
                self._tokens.expires_at = 0.0

    def sign_in(self) -> dict[str, Any]:
        """Signs a fresh challenge now; returns the backend's worker record."""
        with self._lock:
            self._sign_in()
        assert self.worker is not None
        return self.worker

    def _renew(self) -> None:
        tokens = self._tokens
        if tokens is not None and tokens.refresh:
            try:
                body = self.transport.request("POST", "/auth/refresh", json={"refresh_token": tokens.refresh})
                self._tokens = _Tokens(
                    access=_field(body, "access_token", str),
                    refresh=tokens.refresh,
                    expires_at=self._expiry(body),
                )
                log.info("[Worker] Token refreshed. Token: %s", token_preview(self._tokens.access))
                return
            except BackendError as exc:
                if exc.status is None or exc.status >= 500:
                    raise
                log.info("[Worker] Refresh refused (%s); signing a new challenge", exc.detail)
        self._sign_in()

    def _sign_in(self) -> None:
        log.info("[Worker] Requesting auth challenge for %s", self.address)
        try:
            challenge = self.transport.request("POST", "/auth/challenge", json={"address": self.address})
            message = _field(challenge, "message", str)
            timestamp = int(_field(challenge, "timestamp", str))
            body = self.transport.request(
                "POST",
                "/auth/worker-auth",
                json={
                    "address": self.address,
                    "message": message,
                    "signature": self.signer.sign(message),
                    "timestamp": timestamp,
                },
            )
        except BackendError as exc:
            if exc.status in {400, 401, 403, 404}:
                raise AuthError(
                    f"Authentication failed for {self.address}: {exc.detail} "
                    "(check WORKER_ADDRESS and WORKER_PRIVATE_KEY match a registered worker)",
                    exc.status,
                    exc.detail,
                ) from exc
            raise
        except ValueError as exc:
            raise AuthError(f"the backend's challenge has a malformed timestamp: {exc}") from None
        self._tokens = _Tokens(
            access=_field(body, "access_token", str),
            refresh=body.get("refresh_token") if isinstance(body, dict) else None,
            expires_at=self._expiry(body),
        )
        worker = body.get("worker") if isinstance(body, dict) else None
        self.worker = worker if isinstance(worker, dict) else None
        log.info("[Worker] Successfully authenticated. Token: %s", token_preview(self._tokens.access))

    def _expiry(self, body: dict[str, Any]) -> float:
        lifetime = float(_field(body, "expires_in", int))
        # Renew a little early so a token never expires between the check and the call it is used for.
        return self.clock() + lifetime - min(60.0, lifetime / 10)


def _field(body: Any, name: str, kind: type) -> Any:
    if not isinstance(body, dict) or not isinstance(body.get(name), kind):
        raise BackendError(f"the backend's answer has no {kind.__name__} {name!r}: {str(body)[:200]}")
    return body[name]
