"""JSON over HTTP to the backend: one place for timeouts, retries and turning error answers into facts.

Auth and the job API both go through ``JsonTransport.request``; it knows nothing of tokens beyond
putting one in the ``Authorization`` header it is given.
"""

from __future__ import annotations

import threading
from typing import Any

import requests

from ..errors import BackendError
from .retry import RetryPolicy, send_with_retries

USER_AGENT = "VeriFrame-Worker/0.1 (+blender-extension)"


class JsonTransport:
    """Sends JSON requests under one base URL (``.../api/v1``) with retry on network errors and 5xx."""

    def __init__(
        self,
        base_url: str,
        *,
        policy: RetryPolicy | None = None,
        stop: threading.Event | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.policy = policy or RetryPolicy()
        self.stop = stop
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> Any:
        """Returns the decoded JSON body of a 2xx answer; raises ``BackendError`` with status and detail."""
        url = self.base_url + path
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        what = f"{method} {path}"

        def send() -> requests.Response:
            return self.session.request(
                method, url, json=json, params=params, headers=headers, timeout=self.timeout
            )

        try:
            response = send_with_retries(send, what, self.policy, self.stop)
        except requests.RequestException as exc:
            raise BackendError(f"{what}: backend unreachable at {self.base_url} ({exc})") from exc

        if response.status_code >= 400:
            detail = _detail(response)
            raise BackendError(
                f"{what} -> HTTP {response.status_code}: {detail}", response.status_code, detail
            )
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise BackendError(f"{what}: the backend answered with something that is not JSON") from exc

    def close(self) -> None:
        self.session.close()


def _detail(response: requests.Response) -> str:
    """The server's own words: FastAPI's ``detail`` (a string, or a list of validation errors)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason or ""
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg')}"
            if isinstance(item, dict)
            else str(item)
            for item in detail
        )
    return str(detail)
