"""Retries with exponential backoff and full jitter, for network errors and 5xx/429 answers only.

A ``Retry-After`` header on a 503 or 429 is honoured: the wait is at least what the server asked for.

A 4xx is the server saying "no" to this request; repeating it changes nothing, so it is never retried.
Jitter keeps many workers that lost the backend at the same moment from coming back in lockstep.
"""

from __future__ import annotations

import datetime
import email.utils
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import requests

from ..observe.metrics import METRICS

log = logging.getLogger("veriframe.worker")

T = TypeVar("T")
# Network failures worth another try; a response cut off midway (ChunkedEncodingError) is one of them.
RETRYABLE_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
MAX_RETRY_AFTER = 300.0  # a server asking for more than five minutes is treated as asking for five


class _RetryableStatus(Exception):
    """Raised inside a retried send for an answer worth another try (5xx, 429)."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**attempt)]."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


def retry_after(response: requests.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (a number or an HTTP date), or None."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


def is_retryable_status(status: int) -> bool:
    return status >= 500 or status == 429


def send_with_retries(
    send: Callable[[], requests.Response],
    what: str,
    policy: RetryPolicy,
    stop: threading.Event | None = None,
) -> requests.Response:
    """Sends until the answer is not a 5xx/429 or attempts run out, and returns the last answer.

    The caller judges the answer (a final 5xx included, so it can report the server's words). Raises
    ``requests.RequestException`` when the server could not be reached at all. ``stop`` cuts the waiting
    short when the operator stops the worker.
    """

    def attempt() -> requests.Response:
        response = send()
        if is_retryable_status(response.status_code):
            response.content  # noqa: B018 - read the (small) error body so the connection is released
            raise _RetryableStatus(response)
        return response

    try:
        return call_with_retries(attempt, what, policy, stop)
    except _RetryableStatus as exc:
        return exc.response


def call_with_retries(
    call: Callable[[], T],
    what: str,
    policy: RetryPolicy,
    stop: threading.Event | None = None,
) -> T:
    """Runs ``call`` until it returns, retrying network errors and retryable answers with jittered backoff."""
    for attempt in range(policy.attempts):
        try:
            return call()
        except (*RETRYABLE_ERRORS, _RetryableStatus) as exc:
            if attempt + 1 >= policy.attempts:
                raise
            METRICS.retries.labels(what=retry_kind(what)).inc()
            delay = policy.delay(attempt)
            asked = retry_after(exc.response) if isinstance(exc, _RetryableStatus) else None
            if asked is not None:  # the server said when: wait that long (bounded), not less
                delay = max(delay, min(asked, MAX_RETRY_AFTER))
            log.warning(
                "[Worker] %s failed (%s); retry %d/%d in %.1fs",
                what,
                _short(exc),
                attempt + 1,
                policy.attempts - 1,
                delay,
            )
            if (stop or threading.Event()).wait(delay):
                raise
    raise AssertionError("unreachable")


def retry_kind(what: str) -> str:
    """The ``what`` label of ``veriframe_retries_total``: ``what`` names a job or file, a label must not."""
    if what.split(" ", 1)[0] in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
        return "backend"  # JsonTransport's "METHOD /path"
    if "upload" in what:
        return "ipfs_upload"
    if "download" in what:
        return "ipfs_download"
    return "other"


def _short(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 160 else text[:157] + "..."
