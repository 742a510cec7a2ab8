"""The devnet backend over real HTTP, with real Stark keys, checked against the published API.

Every answer a test receives is validated against the published OpenAPI schema for its path and status
(errors the document does not list must still be ``{"detail": "..."}``), so the worker that passes
against this backend speaks the deployed backend's language too.
"""

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from jsonschema import Draft202012Validator, FormatChecker

from devnet.__main__ import argument_parser
from devnet.backend import create_backend_app, ensure_admin
from devnet.keys import StarkKeyPair, load_keypair, new_keypair, sign
from devnet.process import running_devnet

from .servers import serve_app

OPENAPI_PATH = Path(__file__).resolve().parents[2] / "shared" / "veriframe-api" / "openapi.json"
API = "/api/v1"
HTTP_TIMEOUT_S = 10
RACE_ROUNDS = 10
# What the backend answers for a status the published document does not list (400, 401, 403, 404).
ERROR_SCHEMA = {
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"type": "string", "minLength": 1}},
}
CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
OTHER_CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
# Jobs in the lease tests are held for LEASE_S, then left alone for LEASE_WAIT_S: safely past the lease.
LEASE_S = 1
LEASE_WAIT_S = 1.5
LOG_WAIT_S = 5.0

_chain_ids = count(1000)


def _load_published() -> dict[str, Any] | None:
    if not OPENAPI_PATH.exists():
        return None
    return json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))


PUBLISHED = _load_published()
needs_published = pytest.mark.skipif(PUBLISHED is None, reason=f"{OPENAPI_PATH} not present")


# ---------------------------------------------------------------------------------------------- client


class Api:
    """HTTP client that checks each answer's status and validates its body against the published schema."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._validators: dict[tuple[str, str, int], Draft202012Validator | None] = {}

    def send(
        self,
        method: str,
        template: str,
        *,
        path: dict[str, str] | None = None,
        token: str | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = self.base_url + template.format(**(path or {}))
        # No shared requests.Session: sends happen from several threads in the race test.
        return requests.request(method, url, headers=headers, timeout=HTTP_TIMEOUT_S, **kwargs)

    def expect(self, response: requests.Response, method: str, template: str, status: int) -> Any:
        assert response.status_code == status, f"{method} {template}: {response.status_code} {response.text}"
        body = response.json()
        validator = self._validator(method, template, status)
        if validator is not None:
            errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
            assert not errors, f"{method} {template} {status}: " + "; ".join(
                f"{list(e.path)}: {e.message}" for e in errors
            )
        return body

    def call(self, method: str, template: str, status: int, **kwargs: Any) -> Any:
        return self.expect(self.send(method, template, **kwargs), method, template, status)

    def _validator(self, method: str, template: str, status: int) -> Draft202012Validator | None:
        key = (method, template, status)
        if key not in self._validators:
            self._validators[key] = _published_validator(method, template, status)
        return self._validators[key]


def _published_validator(method: str, template: str, status: int) -> Draft202012Validator | None:
    """The published response schema for path+method+status, ``$ref``s resolved from its components."""
    if PUBLISHED is None:
        return None
    operation = PUBLISHED["paths"][template][method.lower()]
    response = operation["responses"].get(str(status))
    if response is None:
        assert status >= 400, f"{method} {template}: {status} is not a published answer"
        schema: dict[str, Any] = dict(ERROR_SCHEMA)
    else:
        schema = dict(response["content"]["application/json"]["schema"])
    # Local "#/components/schemas/..." refs resolve against the root of the schema being validated.
    schema["components"] = PUBLISHED["components"]
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


# --------------------------------------------------------------------------------------------- actions


@dataclass
class Backend:
    api: Api
    admin: StarkKeyPair
    admin_token: str


def register(api: Api, keypair: StarkKeyPair, **extra: Any) -> dict[str, Any]:
    body = {"address": keypair.address, "public_key": keypair.public_key_hex, **extra}
    return api.call("POST", f"{API}/workers/register", 200, json=body)


def challenge(api: Api, address: str) -> dict[str, Any]:
    return api.call("POST", f"{API}/auth/challenge", 200, json={"address": address})


def auth_body(ch: dict[str, Any], address: str, signature: list[str]) -> dict[str, Any]:
    return {
        "address": address,
        "message": ch["message"],
        "signature": signature,
        "timestamp": int(ch["timestamp"]),
    }


def sign_in(api: Api, keypair: StarkKeyPair) -> dict[str, Any]:
    ch = challenge(api, keypair.address)
    body = auth_body(ch, keypair.address, sign(ch["message"], keypair.private_key))
    return api.call("POST", f"{API}/auth/worker-auth", 200, json=body)


def refused_sign_in(api: Api, body: dict[str, Any]) -> str:
    return api.call("POST", f"{API}/auth/worker-auth", 401, json=body)["detail"]


def verify(backend: Backend, address: str) -> None:
    backend.api.call(
        "POST",
        f"{API}/workers/{{worker_address}}/verify",
        200,
        path={"worker_address": address},
        token=backend.admin_token,
    )


def new_worker(backend: Backend, *, verified: bool = True) -> tuple[StarkKeyPair, str]:
    """A registered (and by default verified) worker and its access token."""
    keypair = new_keypair()
    register(backend.api, keypair)
    if verified:
        verify(backend, keypair.address)
    return keypair, sign_in(backend.api, keypair)["access_token"]


def create_job(backend: Backend, **overrides: Any) -> dict[str, Any]:
    body = {
        "chain_job_id": next(_chain_ids),
        "creator_address": backend.admin.address,
        "asset_cid_part1": CID[:31],
        "asset_cid_part2": CID[31:],
        "reward_amount": 10**19,  # above SQLite's 64-bit integers on purpose
        "deadline": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        "required_capabilities": json.dumps({"engine": "CYCLES", "frame": 1}),
        **overrides,
    }
    return backend.api.call("POST", f"{API}/jobs/", 200, json=body)


def assign(api: Api, job_id: str, address: str, token: str | None, status: int) -> dict[str, Any]:
    return api.call(
        "POST",
        f"{API}/jobs/{{job_id}}/assign",
        status,
        path={"job_id": job_id},
        json={"worker_address": address},
        token=token,
    )


def complete(api: Api, job_id: str, token: str | None, status: int, **extra: Any) -> dict[str, Any]:
    body = {"result_cid_part1": CID[:31], "result_cid_part2": CID[31:], "quality_score": 87, **extra}
    return api.call(
        "POST", f"{API}/jobs/{{job_id}}/complete", status, path={"job_id": job_id}, json=body, token=token
    )


def available(api: Api, address: str | None = None) -> list[dict[str, Any]]:
    params = {"worker_address": address} if address else {}
    return api.call("GET", f"{API}/jobs/available", 200, params=params)


def get_worker(api: Api, address: str) -> dict[str, Any]:
    return api.call("GET", f"{API}/workers/{{worker_address}}", 200, path={"worker_address": address})


def get_job(api: Api, job_id: str) -> dict[str, Any]:
    return api.call("GET", f"{API}/jobs/{{job_id}}", 200, path={"job_id": job_id})


Racer = tuple[StarkKeyPair, str]


def claim_at_once(api: Api, job_id: str, racers: list[Racer]) -> dict[str, requests.Response]:
    """Every racer sends its assign from its own thread, released together by a barrier."""
    barrier = threading.Barrier(len(racers))
    responses: dict[str, requests.Response] = {}

    def claim(keypair: StarkKeyPair, token: str) -> None:
        barrier.wait(timeout=HTTP_TIMEOUT_S)
        responses[keypair.address] = api.send(
            "POST",
            f"{API}/jobs/{{job_id}}/assign",
            path={"job_id": job_id},
            json={"worker_address": keypair.address},
            token=token,
        )

    threads = [threading.Thread(target=claim, args=racer) for racer in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HTTP_TIMEOUT_S * 2)
    return responses


# -------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def start_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Backend]]:
    """Start a devnet backend (fresh data dir, optional ttl or lease overrides) until the test ends."""
    with ExitStack() as stack:

        def start(**options: float) -> Backend:
            data_dir = tmp_path_factory.mktemp("backend")
            admin = ensure_admin(data_dir)
            api = Api(stack.enter_context(serve_app(create_backend_app(data_dir, **options))))
            return Backend(api=api, admin=admin, admin_token=sign_in(api, admin)["access_token"])

        yield start


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """One backend shared by the tests that need no special ttl; each test makes its own workers."""
    data_dir = tmp_path_factory.mktemp("shared-backend")
    admin = ensure_admin(data_dir)
    with serve_app(create_backend_app(data_dir)) as url:
        api = Api(url)
        yield Backend(api=api, admin=admin, admin_token=sign_in(api, admin)["access_token"])


# ----------------------------------------------------------------------------------------------- tests


@needs_published
def test_served_schemas_match_published(backend: Backend) -> None:
    served = requests.get(backend.api.base_url + "/openapi.json", timeout=HTTP_TIMEOUT_S).json()
    assert PUBLISHED is not None
    for path, operations in served["paths"].items():
        for method in operations:
            assert method in PUBLISHED["paths"].get(path, {}), f"{method.upper()} {path} is not published"
    for name in ("WorkerResponse", "JobResponse", "WorkerRegistration", "JobCreate", "AuthRequest",
                 "ChallengeResponse", "RefreshResponse", "JobAssignment", "JobCompletion"):  # fmt: skip
        mine, theirs = served["components"]["schemas"][name], PUBLISHED["components"]["schemas"][name]
        assert mine["properties"] == theirs["properties"], name
        assert sorted(mine.get("required", [])) == sorted(theirs.get("required", [])), name


def test_full_flow(backend: Backend) -> None:
    api = backend.api
    assert api.call("GET", "/health", 200)["status"] == "healthy"
    api.call("GET", "/", 200)
    worker = new_keypair()
    specs = json.dumps({"gpu": "RTX 4090", "ram_gb": 64})
    registered = register(api, worker, capabilities=json.dumps(["CYCLES", "EEVEE"]), hardware_specs=specs)
    assert registered["address"] == worker.address
    assert registered["public_key"] == worker.public_key_hex
    assert (registered["reputation"], registered["verified"], registered["active"]) == (500, False, True)
    assert registered["hardware_specs"] == specs
    again = api.call("POST", f"{API}/workers/register", 400, json={"address": worker.address})
    assert again["detail"] == "Worker already registered"

    verify(backend, worker.address)
    auth = sign_in(api, worker)
    assert auth["token_type"] == "bearer"
    assert auth["expires_in"] == 3600
    assert auth["user"] is None
    assert auth["worker"]["address"] == worker.address
    assert auth["worker"]["last_seen"] is not None
    token = auth["access_token"]
    me = api.call("GET", f"{API}/auth/me", 200, token=token)
    assert me["verified"] is True
    assert me["verified_by"] == backend.admin.address

    job = create_job(backend)
    assert job["status"] == "open"
    assert job["full_asset_cid"] == CID
    assert job["id"] in [j["id"] for j in available(api, worker.address)]
    assert job["id"] in [j["id"] for j in available(api)]

    claimed = assign(api, job["id"], worker.address, token, 200)
    assert claimed["status"] == "assigned"
    assert claimed["worker_id"] == me["id"]
    assert claimed["assigned_at"] is not None
    assert job["id"] not in [j["id"] for j in available(api, worker.address)]

    done = complete(api, job["id"], token, 200, worker_address=worker.address)
    assert done["status"] == "completed"
    assert done["full_result_cid"] == CID
    assert (done["result_cid_part1"], done["result_cid_part2"]) == (CID[:31], CID[31:])
    assert done["quality_score"] == 87
    assert done["completed_at"] is not None
    assert done["worker_id"] == me["id"]
    assert get_job(api, job["id"]) == done

    after = get_worker(api, worker.address)
    assert after["jobs_completed"] == 1
    assert after["total_earnings"] == 10**19
    mine = api.call("GET", f"{API}/jobs/", 200, params={"worker_address": worker.address})
    assert [j["id"] for j in mine] == [job["id"]]
    completed = api.call("GET", f"{API}/jobs/", 200, params={"status": "completed"})
    assert job["id"] in [j["id"] for j in completed]


def test_sign_in_refusals(backend: Backend) -> None:
    api = backend.api
    worker, other = new_keypair(), new_keypair()
    register(api, worker)

    ch = challenge(api, worker.address)
    r, s = sign(ch["message"], worker.private_key)
    tampered = auth_body(ch, worker.address, [hex(int(r, 16) ^ 1), s])
    assert "Invalid signature" in refused_sign_in(api, tampered)

    ch = challenge(api, worker.address)
    by_other_key = auth_body(ch, worker.address, sign(ch["message"], other.private_key))
    assert "Invalid signature" in refused_sign_in(api, by_other_key)
    # That failed attempt spent the challenge: the right signature over it is now refused too.
    correct = auth_body(ch, worker.address, sign(ch["message"], worker.private_key))
    assert refused_sign_in(api, correct) == "Challenge already used"

    ch = challenge(api, worker.address)
    correct = auth_body(ch, worker.address, sign(ch["message"], worker.private_key))
    api.call("POST", f"{API}/auth/worker-auth", 200, json=correct)
    assert refused_sign_in(api, correct) == "Challenge already used"

    ch = challenge(api, worker.address)
    wrong_time = auth_body(ch, worker.address, sign(ch["message"], worker.private_key))
    wrong_time["timestamp"] += 1
    assert "timestamp" in refused_sign_in(api, wrong_time)

    ch = challenge(api, worker.address)
    assert "Malformed" in refused_sign_in(api, auth_body(ch, worker.address, ["0xzz", "0x1"]))

    ch = challenge(api, other.address)  # never registered
    unregistered = auth_body(ch, other.address, sign(ch["message"], other.private_key))
    assert "not registered" in refused_sign_in(api, unregistered)

    ch = challenge(api, worker.address)
    forged = auth_body(ch, worker.address, sign(ch["message"], worker.private_key))
    forged["message"] = "0x" + "00" * 31
    assert "No challenge" in refused_sign_in(api, forged)
    assert ch["expires_at"].endswith("+00:00")
    assert len(ch["message"]) == 64


def test_expired_challenge(start_backend: Callable[..., Backend]) -> None:
    backend = start_backend(challenge_ttl=1)
    worker = new_keypair()
    register(backend.api, worker)
    ch = challenge(backend.api, worker.address)
    time.sleep(1.2)
    body = auth_body(ch, worker.address, sign(ch["message"], worker.private_key))
    assert refused_sign_in(backend.api, body) == "Challenge expired"


def test_expired_access_token_and_refresh(start_backend: Callable[..., Backend]) -> None:
    backend = start_backend(access_ttl=1)
    api = backend.api
    worker = new_keypair()
    register(api, worker)
    verify(backend, worker.address)
    auth = sign_in(api, worker)
    job = create_job(backend)

    expires = jwt.decode(auth["access_token"], options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, expires - time.time()) + 0.1)
    assert "expired" in assign(api, job["id"], worker.address, auth["access_token"], 401)["detail"]
    api.call("GET", f"{API}/auth/me", 401, token=auth["access_token"])

    api.call("POST", f"{API}/auth/refresh", 401, json={"refresh_token": auth["access_token"]})
    api.call("POST", f"{API}/auth/refresh", 401, json={"refresh_token": "not-a-jwt"})
    renewed = api.call("POST", f"{API}/auth/refresh", 200, json={"refresh_token": auth["refresh_token"]})
    assert (renewed["token_type"], renewed["expires_in"]) == ("bearer", 1)
    assert assign(api, job["id"], worker.address, renewed["access_token"], 200)["status"] == "assigned"
    # A refresh token is not an access token.
    api.call("GET", f"{API}/auth/me", 401, token=auth["refresh_token"])


def test_tokens_and_ids_are_checked(backend: Backend) -> None:
    api = backend.api
    alice, alice_token = new_worker(backend)
    bob, bob_token = new_worker(backend)
    job = create_job(backend)

    assign(api, job["id"], alice.address, None, 401)
    assign(api, job["id"], alice.address, "garbage", 401)
    assert "Token" in assign(api, job["id"], alice.address, bob_token, 403)["detail"]
    missing = "00000000-0000-4000-8000-000000000000"
    assert assign(api, missing, alice.address, alice_token, 404)["detail"] == "Job not found"
    assert assign(api, "42", alice.address, alice_token, 404)["detail"] == "Job not found"
    api.call("GET", f"{API}/jobs/{{job_id}}", 404, path={"job_id": "not-a-uuid"})
    api.call("GET", f"{API}/workers/{{worker_address}}", 404, path={"worker_address": "0x123"})

    verify_path = f"{API}/workers/{{worker_address}}/verify"
    api.call("POST", verify_path, 401, path={"worker_address": bob.address})
    api.call("POST", verify_path, 403, path={"worker_address": bob.address}, token=alice_token)
    api.call("POST", verify_path, 404, path={"worker_address": "0x123"}, token=backend.admin_token)

    assign(api, job["id"], alice.address, alice_token, 200)
    assert complete(api, job["id"], bob_token, 403)["detail"] == "Job is assigned to another worker"
    complete(api, job["id"], alice_token, 403, worker_address=bob.address)
    complete(api, job["id"], None, 401)


def test_eligibility_and_status_rules(backend: Backend) -> None:
    api = backend.api
    newcomer, newcomer_token = new_worker(backend, verified=False)
    job = create_job(backend)
    assert available(api, newcomer.address) == []
    assert available(api, "0x" + "9" * 64) == []
    detail = assign(api, job["id"], newcomer.address, newcomer_token, 400)["detail"]
    assert detail == "Worker is not eligible (not verified or active)"

    worker, token = new_worker(backend)
    demanding = create_job(backend, min_reputation=600)
    assert demanding["id"] not in [j["id"] for j in available(api, worker.address)]
    assert demanding["id"] in [j["id"] for j in available(api)]
    detail = assign(api, demanding["id"], worker.address, token, 400)["detail"]
    assert detail == "Worker reputation too low for this job"

    assert complete(api, job["id"], token, 400)["detail"] == "Job is not in assigned status"
    assign(api, job["id"], worker.address, token, 200)
    assert (
        assign(api, job["id"], worker.address, token, 400)["detail"] == "Job is not available for assignment"
    )
    complete(api, job["id"], token, 200)
    assert complete(api, job["id"], token, 400)["detail"] == "Job is not in assigned status"
    complete(api, job["id"], token, 422, quality_score=101)
    assert get_worker(api, worker.address)["jobs_completed"] == 1


def test_registration_and_job_creation_errors(backend: Backend) -> None:
    api = backend.api
    bad_key = {"address": new_keypair().address, "public_key": "not-hex"}
    assert "public_key" in api.call("POST", f"{API}/workers/register", 400, json=bad_key)["detail"]
    api.call("POST", f"{API}/workers/register", 422, json={"public_key": "0x1"})

    job = create_job(backend)
    duplicate = {**{k: job[k] for k in ("chain_job_id", "asset_cid_part1", "reward_amount", "deadline")}}
    duplicate["creator_address"] = backend.admin.address
    assert "chain_job_id" in api.call("POST", f"{API}/jobs/", 400, json=duplicate)["detail"]
    unknown_creator = {**duplicate, "chain_job_id": next(_chain_ids), "creator_address": "0x77"}
    assert "creator" in api.call("POST", f"{API}/jobs/", 400, json=unknown_creator)["detail"]
    api.call("POST", f"{API}/jobs/", 422, json={"chain_job_id": 1})


def assert_one_winner(
    api: Api, job_id: str, responses: dict[str, requests.Response], ids: dict[str, str], when: str
) -> None:
    """Exactly one claim won (200), every other lost with the contract's 400, and the job is the winner's."""
    statuses = sorted(r.status_code for r in responses.values())
    assert statuses == [200] + [400] * (len(responses) - 1), f"{when}: {statuses}"
    winner = next(address for address, r in responses.items() if r.status_code == 200)
    for address, response in responses.items():
        api.expect(response, "POST", f"{API}/jobs/{{job_id}}/assign", response.status_code)
        if address != winner:
            assert response.json()["detail"] == "Job is not available for assignment"
    stored = get_job(api, job_id)
    assert (stored["status"], stored["worker_id"]) == ("assigned", ids[winner])


def test_two_workers_racing_for_one_job(backend: Backend) -> None:
    api = backend.api
    racers = [new_worker(backend) for _ in range(2)]
    ids = {kp.address: get_worker(api, kp.address)["id"] for kp, _ in racers}

    for round_no in range(RACE_ROUNDS):
        job = create_job(backend)
        responses = claim_at_once(api, job["id"], racers)
        assert len(responses) == len(racers), f"round {round_no}: a claim did not return"

        assert_one_winner(api, job["id"], responses, ids, f"round {round_no}")


# ---------------------------------------------------------------------------------------------- leases


def _job_ids(jobs: list[dict[str, Any]]) -> list[str]:
    return [job["id"] for job in jobs]


def test_expired_lease_reopens_job_and_refuses_late_complete(start_backend: Callable[..., Backend]) -> None:
    backend = start_backend(job_lease=LEASE_S)
    api = backend.api
    (alice, alice_token), (bob, bob_token), (_carol, carol_token) = (new_worker(backend) for _ in range(3))
    bob_id = get_worker(api, bob.address)["id"]
    job = create_job(backend)
    assign(api, job["id"], alice.address, alice_token, 200)
    assert job["id"] not in _job_ids(available(api))

    time.sleep(LEASE_WAIT_S)
    assert job["id"] in _job_ids(available(api, bob.address))
    reopened = get_job(api, job["id"])
    assert (reopened["status"], reopened["worker_id"], reopened["assigned_at"]) == ("open", None, None)
    assert job["id"] in _job_ids(api.call("GET", f"{API}/jobs/", 200, params={"status": "open"}))
    late = complete(api, job["id"], alice_token, 409, worker_address=alice.address)["detail"]
    assert late == "Job is not assigned to this worker (its lease expired after 1 s and it was reopened)"

    # Bob completes right after claiming, well inside his own lease.
    assert assign(api, job["id"], bob.address, bob_token, 200)["worker_id"] == bob_id
    late = complete(api, job["id"], alice_token, 409)["detail"]
    assert late == (
        "Job is not assigned to this worker"
        " (its lease expired after 1 s and it is now assigned to another worker)"
    )
    bobs_result = {"result_cid_part1": OTHER_CID[:31], "result_cid_part2": OTHER_CID[31:]}
    done = complete(api, job["id"], bob_token, 200, worker_address=bob.address, **bobs_result)
    assert (done["status"], done["full_result_cid"], done["worker_id"]) == ("completed", OTHER_CID, bob_id)

    late = complete(api, job["id"], alice_token, 409)["detail"]
    assert late == "Job was already completed by another worker (its lease expired after 1 s)"
    # The cases without a lost lease keep their answers: Bob's repeat (the worker then reads the job and
    # finds its own result) and Carol, who never held the job.
    repeat = complete(api, job["id"], bob_token, 400, **bobs_result)["detail"]
    assert repeat == "Job is not in assigned status"
    assert complete(api, job["id"], carol_token, 403)["detail"] == "Job is assigned to another worker"

    time.sleep(LEASE_WAIT_S)  # a completed job has no lease to lose
    stored = get_job(api, job["id"])
    assert (stored["status"], stored["full_result_cid"]) == ("completed", OTHER_CID)
    assert stored["worker_id"] == bob_id
    assert get_worker(api, alice.address)["jobs_completed"] == 0
    assert get_worker(api, bob.address)["jobs_completed"] == 1


def test_without_lease_an_assigned_job_stays_assigned(backend: Backend) -> None:
    api = backend.api
    worker, token = new_worker(backend)
    job = create_job(backend)
    claimed = assign(api, job["id"], worker.address, token, 200)

    time.sleep(LEASE_WAIT_S)
    assert job["id"] not in _job_ids(available(api))
    stored = get_job(api, job["id"])
    assert (stored["status"], stored["worker_id"], stored["assigned_at"]) == (
        "assigned",
        claimed["worker_id"],
        claimed["assigned_at"],
    )
    assert complete(api, job["id"], token, 200)["status"] == "completed"


def test_racing_for_a_just_expired_job(start_backend: Callable[..., Backend]) -> None:
    backend = start_backend(job_lease=LEASE_S)
    api = backend.api
    holder, holder_token = new_worker(backend)
    racers = [new_worker(backend) for _ in range(10)]
    ids = {kp.address: get_worker(api, kp.address)["id"] for kp, _ in racers}
    job = create_job(backend)
    assign(api, job["id"], holder.address, holder_token, 200)

    # Nothing reads the jobs meanwhile, so the lease is expired by one of the racing claims themselves.
    time.sleep(LEASE_WAIT_S)
    responses = claim_at_once(api, job["id"], racers)
    assert len(responses) == len(racers), "a claim did not return"
    assert_one_winner(api, job["id"], responses, ids, "after the lease expired")
    assert "now assigned to another worker" in complete(api, job["id"], holder_token, 409)["detail"]


def test_a_worker_updates_its_own_record_only(backend: Backend) -> None:
    """``PUT /workers/{address}`` as published: the worker's own token (or an admin's) changes the record;
    another worker's token gets 403, no token 401/403, an unknown address 404."""
    api = backend.api
    template = f"{API}/workers/{{worker_address}}"
    worker, token = new_worker(backend)
    other, other_token = new_worker(backend)
    mine, theirs = {"worker_address": worker.address}, {"worker_address": other.address}
    change = {"capabilities": '{"blender_versions": ["4.5.15"]}', "hardware_specs": '{"cpu_count": 2}'}
    updated = api.call("PUT", template, 200, path=mine, token=token, json=change)
    assert {key: updated[key] for key in change} == change
    stored = api.call("GET", template, 200, path=mine)
    assert stored["capabilities"] == change["capabilities"] and stored["public_key"] == updated["public_key"]
    refused = api.send("PUT", template, path=mine, token=other_token, json=change)
    assert refused.status_code == 403, refused.text
    assert api.send("PUT", template, path=mine, json=change).status_code in (401, 403)
    by_admin = api.call("PUT", template, 200, path=theirs, token=backend.admin_token, json={"active": False})
    assert by_admin["active"] is False
    nobody = {"worker_address": "0x" + "9" * 63}
    assert api.send("PUT", template, path=nobody, token=backend.admin_token, json={}).status_code == 404


def test_data_folder_is_accepted_before_and_after_the_command() -> None:
    """``python -m devnet serve --data DIR`` (as documented) and ``--data DIR serve`` mean the same; the
    tests' own devnet starts with the first form (devnet/process.py)."""
    parser = argument_parser()
    assert parser.parse_args(["serve", "--data", "after"]).data == "after"
    assert parser.parse_args(["--data", "before", "serve"]).data == "before"
    assert parser.parse_args(["--data", "before", "jobs"]).data == "before"  # not reset by the command
    assert parser.parse_args(["submit", "scene.blend", "--data", "d"]).data == "d"
    assert parser.parse_args(["jobs"]).data is None  # then $DEVNET_DATA or the default


def test_serve_job_lease_flag(tmp_path: Path) -> None:
    """``python -m devnet serve --job-lease`` reaches the backend, and each reopening is logged."""
    with running_devnet(tmp_path / "devnet", extra_args=("--job-lease", str(LEASE_S))) as devnet:
        api = Api(devnet.backend_url.removesuffix(API))
        admin = load_keypair(devnet.data / "admin.json")
        backend = Backend(api=api, admin=admin, admin_token=sign_in(api, admin)["access_token"])
        worker, token = new_worker(backend)
        job = create_job(backend)
        assign(api, job["id"], worker.address, token, 200)
        time.sleep(LEASE_WAIT_S)
        assert get_job(api, job["id"])["status"] == "open"

        expected = f"job {job['id']} lease expired after 1 s; back to open"
        deadline = time.monotonic() + LOG_WAIT_S
        while not any(expected in line for line in devnet.log_lines) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(expected in line for line in devnet.log_lines), "\n".join(devnet.log_lines[-20:])
