"""Retries with exponential backoff and full jitter, for network errors and 5xx answers only.

A 4xx is the server saying "no" to this request; repeating it changes nothing, so it is never retried.
Jitter keeps many workers that lost the backend at the same moment from coming back in lockstep.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import requests

log = logging.getLogger("veriframe.worker")

T = TypeVar("T")


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
        except (requests.ConnectionError, requests.Timeout, _RetryableStatus) as exc:
            if attempt + 1 >= policy.attempts:
                raise
            delay = policy.delay(attempt)
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


def _short(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 160 else text[:157] + "..."
