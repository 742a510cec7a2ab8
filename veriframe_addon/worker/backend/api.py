"""The job calls a worker makes, exactly as the published VeriFrame API spells them.

Paths, field names and status codes follow ``shared/veriframe-api``: ``/jobs/available`` without a
trailing slash, job UUIDs in paths, the result CID split 31/31 because a Cairo short string holds at most
31 characters. Every call carries the bearer token; a 401 renews it once and repeats the call.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from ..errors import BackendError
from ..net.transport import JsonTransport
from .auth import AuthSession

log = logging.getLogger("veriframe.worker")

FELT_STRING_LIMIT = 31
# Answers to assign that mean "someone else got there first" or "not for you": normal, try the next job.
LOST_RACE_STATUSES = {400, 404, 409}


@dataclass(frozen=True)
class Job:
    """The parts of a backend ``JobResponse`` the worker acts on."""

    id: str
    asset_cid: str
    reward: int
    status: str
    required_capabilities: str | None
    raw: dict[str, Any]
    creator: str | None = None  # the creator's StarkNet address

    @classmethod
    def from_response(cls, body: dict[str, Any]) -> Job:
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise BackendError(f"the backend sent a job without an id: {str(body)[:200]}")
        full = body.get("full_asset_cid") or ""
        if not full:
            full = (body.get("asset_cid_part1") or "") + (body.get("asset_cid_part2") or "")
        reward = body.get("reward_amount")
        return cls(
            id=body["id"],
            asset_cid=full.strip(),
            reward=reward if isinstance(reward, int) else 0,
            status=str(body.get("status") or ""),
            required_capabilities=body.get("required_capabilities"),
            raw=body,
            creator=body.get("creator_address") if isinstance(body.get("creator_address"), str) else None,
        )


def split_cid(cid: str) -> tuple[str, str | None]:
    """``cid[:31], cid[31:] or None``: the two felt-sized halves the backend stores."""
    return cid[:FELT_STRING_LIMIT], cid[FELT_STRING_LIMIT:] or None


class BackendClient:
    """Registration, discovery, claim and completion against one backend, as one worker."""

    def __init__(self, transport: JsonTransport, auth: AuthSession) -> None:
        self.transport = transport
        self.auth = auth
        self.address = auth.address

    def register(self, capabilities: dict[str, Any], hardware_specs: dict[str, Any]) -> bool:
        """Registers this worker with its public key; returns False when it was registered already.

        Registering before the first sign-in matters: the deployed backend creates a key-less record for
        an unknown address at sign-in, after which registration answers 400 "already registered".
        """
        try:
            self.transport.request(
                "POST",
                "/workers/register",
                json={
                    "address": self.address,
                    "public_key": self.auth.signer.public_key,
                    "capabilities": json.dumps(capabilities, sort_keys=True),
                    "hardware_specs": json.dumps(hardware_specs, sort_keys=True),
                },
            )
        except BackendError as exc:
            if exc.status == 400 and "already registered" in str(exc.detail).lower():
                return False
            raise
        return True

    def update(self, **fields: str) -> dict[str, Any]:
        """Changes this worker's own record (``PUT /workers/{address}``: capabilities, hardware_specs,
        active, ...); returns the record the backend now holds."""
        return self._authed("PUT", f"/workers/{self.address}", json=fields)

    def me(self) -> dict[str, Any]:
        return self._authed("GET", "/auth/me")

    def available_jobs(self, limit: int = 50) -> list[Job]:
        body = self._authed(
            "GET", "/jobs/available", params={"worker_address": self.address, "skip": 0, "limit": limit}
        )
        if not isinstance(body, list):
            raise BackendError(
                f"/jobs/available answered with something that is not a list: {str(body)[:200]}"
            )
        return [Job.from_response(item) for item in body]

    def get_job(self, job_id: str) -> Job:
        return Job.from_response(self._authed("GET", f"/jobs/{job_id}"))

    def assign(self, job_id: str) -> Job:
        return Job.from_response(
            self._authed("POST", f"/jobs/{job_id}/assign", json={"worker_address": self.address})
        )

    def complete(self, job_id: str, result_cid: str, quality_score: int) -> Job:
        part1, part2 = split_cid(result_cid)
        body = {
            "result_cid_part1": part1,
            "result_cid_part2": part2,
            "quality_score": max(0, min(100, int(quality_score))),
            "worker_address": self.address,
        }
        return Job.from_response(self._authed("POST", f"/jobs/{job_id}/complete", json=body))

    def _authed(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return self.transport.request(method, path, token=self.auth.bearer(), **kwargs)
        except BackendError as exc:
            if exc.status != 401:
                raise
            log.info("[Worker] %s %s refused the token (401); renewing it and retrying once", method, path)
            self.auth.invalidate()
            return self.transport.request(method, path, token=self.auth.bearer(), **kwargs)
