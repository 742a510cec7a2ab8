"""The devnet VeriFrame backend: the worker-facing part of the published API, served from SQLite.

Same paths, field names and shapes as the deployed backend (see ``shared/veriframe-api``), but stricter
where the deployed one is lax, so a worker that passes here also passes there: challenges are single-use
and expire, Stark signatures are verified against the registered public key, and ``assign``/``complete``
require the worker's own Bearer token. A claim is one conditional UPDATE, so two racing workers can never
both win a job.

With a job lease (``job_lease`` seconds, 0 = none), an assigned job its worker has not completed in time goes
back to ``open`` for another worker. Leases are expired lazily, at the start of every job request and in the
same write transaction, so no background thread is needed and a just-expired job is still claimed by one
worker only. A ``complete`` from a worker that held the job but lost it answers 409.
"""

import hashlib
import logging
import math
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import jwt
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker
from starknet_py.constants import EC_ORDER, FIELD_PRIME
from starknet_py.hash.utils import verify_message_signature

from devnet.keys import StarkKeyPair, load_keypair, new_keypair, save_keypair
from devnet.models import (
    JOB_ASSIGNED,
    JOB_COMPLETED,
    JOB_OPEN,
    MAX_CHAIN_JOB_ID,
    MAX_WEI,
    AuthRequest,
    AuthResponse,
    Challenge,
    ChallengeRequest,
    ChallengeResponse,
    Job,
    JobAssignment,
    JobCompletion,
    JobCreate,
    JobResponse,
    LeaseExpiry,
    RefreshRequest,
    RefreshResponse,
    Worker,
    WorkerRegistration,
    WorkerResponse,
    WorkerUpdate,
    open_database,
    utcnow,
)

logger = logging.getLogger("devnet.backend")

API_PREFIX = "/api/v1"
DB_FILE = "backend.sqlite3"
JWT_SECRET_FILE = "jwt_secret"
ADMIN_FILE = "admin.json"
JWT_ALGORITHM = "HS256"
# Expired challenges are kept this long (answering "expired" rather than "unknown"), then swept.
CHALLENGE_RETENTION = timedelta(hours=1)
_SIGNATURE_R_BOUND = 2**251


class AuthFailure(HTTPException):
    """401 with the reason in ``detail`` and the header RFC 6750 asks for."""

    def __init__(self, detail: str) -> None:
        super().__init__(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


# ------------------------------------------------------------------------------------------------ tokens


@dataclass(frozen=True)
class TokenClaims:
    address: str
    role: str


class TokenIssuer:
    """Issues and checks the HS256 JWTs; claims follow the published ``TokenPayload`` (sub, role, type)."""

    def __init__(self, secret: bytes, access_ttl: int, refresh_ttl: int) -> None:
        self._secret = secret
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl

    def issue(self, address: str, role: str, kind: str) -> str:
        ttl = self.access_ttl if kind == "access" else self.refresh_ttl
        now = time.time()
        claims = {
            "sub": address,
            "role": role,
            "type": kind,
            "iat": int(now),
            # Rounded up: a token must live at least its ttl even when issued late in a second.
            "exp": math.ceil(now + ttl),
            "jti": secrets.token_hex(8),
        }
        return jwt.encode(claims, self._secret, algorithm=JWT_ALGORITHM)

    def check(self, token: str, kind: str) -> TokenClaims:
        """Decode ``token``; raises ``AuthFailure`` when it is invalid, expired or of another type."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[JWT_ALGORITHM],
                options={"require": ["sub", "exp", "iat", "type"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthFailure(f"{kind.capitalize()} token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthFailure(f"Invalid {kind} token") from exc
        if claims.get("type") != kind:
            raise AuthFailure(f"Not an {kind} token" if kind == "access" else f"Not a {kind} token")
        return TokenClaims(address=str(claims["sub"]), role=str(claims.get("role", "worker")))


def _write_private_file(path: Path, text: str) -> bool:
    """Create ``path`` with mode 0600 unless it exists; returns whether this call created it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return True


def load_jwt_secret(data_dir: Path) -> bytes:
    """The signing secret of this devnet, generated on first use so tokens survive a restart."""
    path = data_dir / JWT_SECRET_FILE
    if _write_private_file(path, secrets.token_hex(32) + "\n"):
        logger.info("generated JWT secret in %s", path)
    return bytes.fromhex(path.read_text(encoding="utf-8").strip())


# ------------------------------------------------------------------------------------------------- admin


def ensure_admin(data_dir: Path) -> StarkKeyPair:
    """Create (once) the devnet admin key pair and make sure it is a verified admin worker in the DB."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / ADMIN_FILE
    if path.exists():
        keypair = load_keypair(path)
    else:
        keypair = new_keypair()
        save_keypair(path, keypair)
        logger.info("created devnet admin %s (key in %s)", keypair.address, path)
    engine = open_database(data_dir / DB_FILE)
    try:
        with Session(engine) as session, session.begin():
            admin = session.scalar(select(Worker).where(Worker.address == keypair.address))
            if admin is None:
                admin = Worker(address=keypair.address, registered_at=utcnow())
                session.add(admin)
            admin.public_key = keypair.public_key_hex
            admin.active = True
            admin.is_admin = True
            if not admin.verified:
                admin.verified = True
                admin.verified_at = utcnow()
                admin.verified_by = "devnet"
    finally:
        engine.dispose()
    return keypair


# ------------------------------------------------------------------------------------------------ checks


def challenge_message(address: str, nonce: str, timestamp: str) -> str:
    """A felt the worker signs: the first 31 bytes of sha256, so it always fits below the field prime."""
    digest = hashlib.sha256(f"{address}|{nonce}|{timestamp}".encode()).digest()
    return "0x" + digest[:31].hex()


def parse_felt(text: str) -> int | None:
    """``0x``-prefixed hex below the field prime, else ``None``."""
    if not text.lower().startswith("0x") or len(text) > 66:
        return None
    try:
        value = int(text, 16)
    except ValueError:
        return None
    return value if 0 <= value < FIELD_PRIME else None


def signature_is_valid(message: str, signature: list[str], public_key: str) -> bool:
    """Verify ``[r, s]`` over the message felt; raises ``ValueError`` when either is malformed."""
    if len(signature) != 2:
        raise ValueError("signature must have exactly two components")
    r, s = (int(part, 16) for part in signature)
    if not (1 <= r < _SIGNATURE_R_BOUND and 1 <= s < EC_ORDER):
        raise ValueError("signature component out of range")
    return verify_message_signature(int(message, 16), [r, s], int(public_key, 16))


def _job_uuid(job_id: str) -> str:
    """Canonical id for lookups; anything that is not a UUID cannot name a job, so it is a 404."""
    try:
        return str(uuid.UUID(job_id))
    except ValueError as exc:
        raise HTTPException(status_code=404, detail="Job not found") from exc


def _load_job(session: Session, job_id: str) -> Job:
    job = session.get(Job, _job_uuid(job_id))
    if job is None:
        raise HTTPException(status_code=404, detail="Job not found")
    return job


def _find_worker(session: Session, address: str) -> Worker | None:
    return session.scalar(select(Worker).where(Worker.address == address))


# ------------------------------------------------------------------------------------------------ leases


def expire_leases(session: Session, lease_s: float) -> None:
    """Reopen every job assigned more than ``lease_s`` ago (no-op when 0), recording whose lease it was.

    Runs inside the caller's write transaction (``BEGIN IMMEDIATE`` holds SQLite's write lock), so the
    SELECT and the UPDATE see the same rows and no claim can slip in between. It must run before the caller
    loads any ``Job``: the bulk UPDATE does not refresh objects already in the session.
    """
    if lease_s <= 0:
        return
    now = utcnow()
    overdue = (Job.status == JOB_ASSIGNED, Job.assigned_at < now - timedelta(seconds=lease_s))
    rows = session.execute(select(Job.id, Job.worker_id, Job.assigned_at).where(*overdue)).all()
    if not rows:
        return
    session.execute(
        update(Job)
        .where(*overdue)
        .values(status=JOB_OPEN, worker_id=None, assigned_at=None)
        .execution_options(synchronize_session=False)
    )
    for job_id, worker_id, assigned_at in rows:
        session.add(
            LeaseExpiry(
                job_id=job_id, worker_id=worker_id, assigned_at=assigned_at, expired_at=now, lease_s=lease_s
            )
        )
        logger.info("job %s lease expired after %g s; back to open", job_id, lease_s)


def _lost_lease(session: Session, job_id: str, worker_id: str) -> LeaseExpiry | None:
    """The latest lease this worker held on this job and lost, if any."""
    return session.scalar(
        select(LeaseExpiry)
        .where(LeaseExpiry.job_id == job_id, LeaseExpiry.worker_id == worker_id)
        .order_by(LeaseExpiry.id.desc())
        .limit(1)
    )


def _completion_refusal(session: Session, job: Job, worker: Worker) -> HTTPException | None:
    """Why ``worker`` may not complete ``job`` now (``None`` when it may).

    409 only for "you held it but lost it", so a worker can tell a lost lease from its own mistake; a job
    never assigned keeps the contract's 400, and a repeat from the worker that completed it stays a 400 too
    (the worker then reads the job and finds its own result there).
    """
    if job.status == JOB_ASSIGNED and job.worker_id == worker.id:
        return None
    lost = _lost_lease(session, job.id, worker.id) if job.worker_id != worker.id else None
    if lost is not None:
        expired = f"its lease expired after {lost.lease_s:g} s"
        not_yours = "Job is not assigned to this worker"
        if job.status == JOB_COMPLETED:
            detail = f"Job was already completed by another worker ({expired})"
        elif job.status == JOB_ASSIGNED:
            detail = f"{not_yours} ({expired} and it is now assigned to another worker)"
        else:
            detail = f"{not_yours} ({expired} and it was reopened)"
        return HTTPException(status_code=409, detail=detail)
    if job.worker_id is not None and job.worker_id != worker.id:
        return HTTPException(status_code=403, detail="Job is assigned to another worker")
    return HTTPException(status_code=400, detail="Job is not in assigned status")


# ---------------------------------------------------------------------------------------------- the app


@dataclass(frozen=True)
class BackendState:
    sessions: sessionmaker[Session]
    tokens: TokenIssuer
    challenge_ttl: int
    job_lease: float


def create_backend_app(
    data_dir: Path,
    *,
    access_ttl: int = 3600,
    refresh_ttl: int = 7 * 24 * 3600,
    challenge_ttl: int = 300,
    job_lease: float = 0,
) -> FastAPI:
    """Build the app over ``data_dir`` (created if needed; holds the DB and the JWT secret).

    ``job_lease`` is how many seconds a worker may hold an assigned job before it is reopened; 0 means
    forever, as the deployed backend behaves.
    """
    if job_lease < 0:
        raise ValueError(f"job_lease must be >= 0 seconds, not {job_lease}")
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = open_database(data_dir / DB_FILE)
    state = BackendState(
        sessions=sessionmaker(engine, expire_on_commit=False),
        tokens=TokenIssuer(load_jwt_secret(data_dir), access_ttl, refresh_ttl),
        challenge_ttl=challenge_ttl,
        job_lease=job_lease,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(
        title="VeriFrame devnet backend",
        description="Local stand-in for the FluxFrame/VeriFrame backend (worker-facing API).",
        version="1.0.0",
        lifespan=lifespan,
    )
    app.state.backend = state

    @app.exception_handler(Exception)
    async def _internal_error(_request: Request, _exc: Exception) -> JSONResponse:
        # Only shapes the answer: Starlette re-raises the error afterwards and the server logs it once.
        return JSONResponse(status_code=500, content={"detail": "Internal server error"})

    @app.get("/")
    def root() -> dict[str, str]:
        return {"message": "VeriFrame devnet backend", "api": API_PREFIX, "docs": "/docs"}

    @app.get("/health")
    def health() -> dict[str, str]:
        with state.sessions() as session:
            session.execute(select(1))
        return {"status": "healthy", "service": "veriframe-devnet-backend", "database": "ok"}

    bearer = _bearer_dependency(state.tokens)
    app.include_router(_auth_routes(state, bearer), prefix=f"{API_PREFIX}/auth", tags=["auth"])
    app.include_router(_worker_routes(state, bearer), prefix=f"{API_PREFIX}/workers", tags=["workers"])
    app.include_router(_job_routes(state, bearer), prefix=f"{API_PREFIX}/jobs", tags=["jobs"])
    return app


def _bearer_dependency(tokens: TokenIssuer) -> Callable[..., TokenClaims]:
    scheme = HTTPBearer(auto_error=False)

    def bearer_claims(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(scheme)],
    ) -> TokenClaims:
        if credentials is None:
            raise AuthFailure("Not authenticated: Bearer token required")
        return tokens.check(credentials.credentials, "access")

    return bearer_claims


def _auth_routes(state: BackendState, bearer: Callable[..., TokenClaims]) -> APIRouter:
    router = APIRouter()
    tokens = state.tokens

    @router.post("/challenge", response_model=ChallengeResponse)
    def create_challenge(body: ChallengeRequest) -> ChallengeResponse:
        now = utcnow()
        timestamp = str(int(now.timestamp()))
        nonce = secrets.token_hex(16)
        challenge = Challenge(
            address=body.address,
            message=challenge_message(body.address, nonce, timestamp),
            nonce=nonce,
            timestamp=timestamp,
            created_at=now,
            expires_at=now + timedelta(seconds=state.challenge_ttl),
        )
        with state.sessions.begin() as session:
            session.execute(delete(Challenge).where(Challenge.expires_at < now - CHALLENGE_RETENTION))
            session.add(challenge)
        return ChallengeResponse(
            message=challenge.message,
            timestamp=timestamp,
            nonce=nonce,
            expires_at=challenge.expires_at.isoformat(),
        )

    @router.post("/worker-auth", response_model=AuthResponse)
    def worker_auth(body: AuthRequest) -> AuthResponse:
        # Decide inside one transaction, commit (the challenge is spent either way), then answer.
        worker_out: WorkerResponse | None = None
        with state.sessions.begin() as session:
            refusal = _spend_challenge(session, body)
            worker = _find_worker(session, body.address)
            if refusal is None:
                refusal = _check_worker_signature(worker, body)
            if refusal is None and worker is not None:
                worker.last_seen = utcnow()
                session.flush()
                worker_out = WorkerResponse.model_validate(worker)
        if refusal is not None or worker_out is None:
            logger.info("auth refused for %s: %s", body.address, refusal)
            raise AuthFailure(refusal or "Authentication failed")
        role = "admin" if worker_out.is_admin else "worker"
        logger.info("auth ok for %s (%s)", body.address, role)
        return AuthResponse(
            access_token=tokens.issue(body.address, role, "access"),
            refresh_token=tokens.issue(body.address, role, "refresh"),
            expires_in=tokens.access_ttl,
            worker=worker_out,
        )

    @router.post("/refresh", response_model=RefreshResponse)
    def refresh(body: RefreshRequest) -> RefreshResponse:
        claims = tokens.check(body.refresh_token, "refresh")
        with state.sessions() as session:
            worker = _find_worker(session, claims.address)
            if worker is None or not worker.active:
                raise AuthFailure("Worker unknown or inactive")
            role = "admin" if worker.is_admin else "worker"
        return RefreshResponse(
            access_token=tokens.issue(claims.address, role, "access"), expires_in=tokens.access_ttl
        )

    @router.get("/me", response_model=WorkerResponse)
    def me(claims: Annotated[TokenClaims, Depends(bearer)]) -> WorkerResponse:
        with state.sessions() as session:
            worker = _find_worker(session, claims.address)
            if worker is None:
                raise AuthFailure("Token names an unknown worker")
            return WorkerResponse.model_validate(worker)

    return router


def _spend_challenge(session: Session, body: AuthRequest) -> str | None:
    """Mark the challenge used and say why it cannot be accepted (``None`` when it can)."""
    challenge = session.scalar(
        select(Challenge).where(Challenge.address == body.address, Challenge.message == body.message)
    )
    if challenge is None:
        return "No challenge was issued for this address and message"
    was_used = challenge.used
    challenge.used = True
    if was_used:
        return "Challenge already used"
    if utcnow() >= challenge.expires_at:
        return "Challenge expired"
    if challenge.timestamp != str(body.timestamp):
        return "Challenge timestamp does not match"
    return None


def _check_worker_signature(worker: Worker | None, body: AuthRequest) -> str | None:
    if worker is None:
        return "Worker is not registered; register it with its public_key first"
    if not worker.public_key:
        return "Worker has no public_key on record; cannot verify its signature"
    try:
        valid = signature_is_valid(body.message, body.signature, worker.public_key)
    except ValueError:
        return "Malformed signature: expected [r, s] as hex strings"
    return None if valid else "Invalid signature for this worker's public_key"


def _worker_routes(state: BackendState, bearer: Callable[..., TokenClaims]) -> APIRouter:
    router = APIRouter()

    @router.get("/", response_model=list[WorkerResponse])
    def list_workers(
        skip: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        verified_only: bool = False,
        active_only: bool = True,
        min_reputation: Annotated[int | None, Query(ge=0, le=1000)] = None,
    ) -> list[WorkerResponse]:
        query = select(Worker)
        if verified_only:
            query = query.where(Worker.verified.is_(True))
        if active_only:
            query = query.where(Worker.active.is_(True))
        if min_reputation is not None:
            query = query.where(Worker.reputation >= min_reputation)
        query = query.order_by(Worker.registered_at).offset(skip).limit(limit)
        with state.sessions() as session:
            return [WorkerResponse.model_validate(w) for w in session.scalars(query)]

    @router.post("/register", response_model=WorkerResponse)
    def register(body: WorkerRegistration) -> WorkerResponse:
        if body.public_key is not None and parse_felt(body.public_key) is None:
            raise HTTPException(status_code=400, detail="public_key must be a hex felt (0x...)")
        with state.sessions.begin() as session:
            if _find_worker(session, body.address) is not None:
                raise HTTPException(status_code=400, detail="Worker already registered")
            worker = Worker(**body.model_dump(), registered_at=utcnow())
            session.add(worker)
            session.flush()
            answer = WorkerResponse.model_validate(worker)
        logger.info("registered worker %s", body.address)
        return answer

    @router.get("/{worker_address}", response_model=WorkerResponse)
    def get_worker(worker_address: str) -> WorkerResponse:
        with state.sessions() as session:
            worker = _find_worker(session, worker_address)
            if worker is None:
                raise HTTPException(status_code=404, detail="Worker not found")
            return WorkerResponse.model_validate(worker)

    @router.put("/{worker_address}", response_model=WorkerResponse)
    def update_worker(
        worker_address: str, body: WorkerUpdate, claims: Annotated[TokenClaims, Depends(bearer)]
    ) -> WorkerResponse:
        """Update worker information (only own profile or admin)"""
        if body.public_key is not None and parse_felt(body.public_key) is None:
            raise HTTPException(status_code=400, detail="public_key must be a hex felt (0x...)")
        with state.sessions.begin() as session:
            caller = _find_worker(session, claims.address)
            worker = _find_worker(session, worker_address)
            if worker is None:
                raise HTTPException(status_code=404, detail="Worker not found")
            if caller is None or (caller.id != worker.id and not caller.is_admin):
                raise HTTPException(status_code=403, detail="Not authorized to update this worker")
            for name, value in body.model_dump(exclude_unset=True).items():
                setattr(worker, name, value)
            session.flush()
            answer = WorkerResponse.model_validate(worker)
        logger.info("worker %s updated %s", worker_address, sorted(body.model_dump(exclude_unset=True)))
        return answer

    @router.post("/{worker_address}/verify")
    def verify_worker(worker_address: str, claims: Annotated[TokenClaims, Depends(bearer)]) -> dict[str, Any]:
        with state.sessions.begin() as session:
            admin = _find_worker(session, claims.address)
            if admin is None or not admin.is_admin:
                raise HTTPException(status_code=403, detail="Admin privileges required")
            worker = _find_worker(session, worker_address)
            if worker is None:
                raise HTTPException(status_code=404, detail="Worker not found")
            if not worker.verified:
                worker.verified = True
                worker.verified_at = utcnow()
                worker.verified_by = admin.address
        logger.info("worker %s verified by %s", worker_address, claims.address)
        return {"message": "Worker verified", "address": worker_address}

    return router


@contextmanager
def _jobs_transaction(state: BackendState) -> Iterator[Session]:
    """A write transaction over the jobs that starts by expiring overdue leases.

    A refusal (``HTTPException``) raised inside still commits before it propagates, so the reopenings that
    informed it are kept rather than redone (and logged again) by the next request. Handlers only refuse
    before writing anything of their own.
    """
    refusal: HTTPException | None = None
    with state.sessions.begin() as session:
        expire_leases(session, state.job_lease)
        try:
            yield session
        except HTTPException as exc:
            refusal = exc
    if refusal is not None:
        raise refusal


def _job_routes(state: BackendState, bearer: Callable[..., TokenClaims]) -> APIRouter:
    router = APIRouter()

    @router.get("/", response_model=list[JobResponse])
    def list_jobs(
        skip: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        status: str | None = None,
        creator_address: str | None = None,
        worker_address: str | None = None,
        min_reward: Annotated[int | None, Query(ge=0)] = None,
    ) -> list[JobResponse]:
        query = select(Job)
        if status is not None:
            query = query.where(Job.status == status)
        if creator_address is not None:
            query = query.where(Job.creator_address == creator_address)
        if worker_address is not None:
            query = query.join(Worker, Job.worker_id == Worker.id).where(Worker.address == worker_address)
        if min_reward is not None:
            query = query.where(Job.reward_amount >= min_reward)
        query = query.order_by(Job.created_at, Job.chain_job_id).offset(skip).limit(limit)
        with _jobs_transaction(state) as session:
            return [JobResponse.model_validate(job) for job in session.scalars(query)]

    @router.post("/", response_model=JobResponse)
    def create_job(body: JobCreate) -> JobResponse:
        # Checked here rather than in JobCreate so the served schema stays the published one.
        if not 0 <= body.chain_job_id <= MAX_CHAIN_JOB_ID:
            raise HTTPException(status_code=400, detail=f"chain_job_id must be in [0, {MAX_CHAIN_JOB_ID}]")
        if not 0 <= body.reward_amount <= MAX_WEI:
            raise HTTPException(status_code=400, detail="reward_amount must be a non-negative u256")
        with state.sessions.begin() as session:
            if _find_worker(session, body.creator_address) is None:
                raise HTTPException(status_code=400, detail="Unknown creator_address")
            if session.scalar(select(Job.id).where(Job.chain_job_id == body.chain_job_id)) is not None:
                raise HTTPException(status_code=400, detail="Job with this chain_job_id already exists")
            job = Job(
                **body.model_dump(),
                full_asset_cid=body.asset_cid_part1 + (body.asset_cid_part2 or ""),
                created_at=utcnow(),
                status=JOB_OPEN,
            )
            session.add(job)
            session.flush()
            answer = JobResponse.model_validate(job)
        logger.info("job %s created (chain id %d)", answer.id, body.chain_job_id)
        return answer

    @router.get("/available", response_model=list[JobResponse])
    def available_jobs(
        worker_address: str | None = None,
        skip: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> list[JobResponse]:
        query = select(Job).where(Job.status == JOB_OPEN)
        with _jobs_transaction(state) as session:
            if worker_address is not None:
                worker = _find_worker(session, worker_address)
                if worker is None or not worker.verified or not worker.active:
                    return []
                query = query.where(Job.min_reputation <= worker.reputation)
            query = query.order_by(Job.created_at, Job.chain_job_id).offset(skip).limit(limit)
            return [JobResponse.model_validate(job) for job in session.scalars(query)]

    @router.get("/{job_id}", response_model=JobResponse)
    def get_job(job_id: str) -> JobResponse:
        with _jobs_transaction(state) as session:
            return JobResponse.model_validate(_load_job(session, job_id))

    @router.post("/{job_id}/assign", response_model=JobResponse)
    def assign_job(
        job_id: str, body: JobAssignment, claims: Annotated[TokenClaims, Depends(bearer)]
    ) -> JobResponse:
        if claims.address != body.worker_address:
            raise HTTPException(status_code=403, detail="Token does not belong to worker_address")
        with _jobs_transaction(state) as session:
            job = _load_job(session, job_id)
            worker = _find_worker(session, body.worker_address)
            if worker is None:
                raise HTTPException(status_code=404, detail="Worker not found")
            if not worker.verified or not worker.active:
                raise HTTPException(status_code=400, detail="Worker is not eligible (not verified or active)")
            if worker.reputation < job.min_reputation:
                raise HTTPException(status_code=400, detail="Worker reputation too low for this job")
            # The claim itself: only the UPDATE that still finds the job open wins.
            claimed = session.execute(
                update(Job)
                .where(Job.id == job.id, Job.status == JOB_OPEN)
                .values(status=JOB_ASSIGNED, worker_id=worker.id, assigned_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            won = claimed.rowcount == 1
            if won:
                worker.last_seen = utcnow()
                session.refresh(job)
                answer = JobResponse.model_validate(job)
        if not won:
            logger.info("claim of job %s by %s lost: not open", job_id, body.worker_address)
            raise HTTPException(status_code=400, detail="Job is not available for assignment")
        logger.info("job %s claimed by %s", answer.id, body.worker_address)
        return answer

    @router.post("/{job_id}/complete", response_model=JobResponse)
    def complete_job(
        job_id: str, body: JobCompletion, claims: Annotated[TokenClaims, Depends(bearer)]
    ) -> JobResponse:
        if body.worker_address is not None and body.worker_address != claims.address:
            raise HTTPException(status_code=403, detail="Token does not belong to worker_address")
        with _jobs_transaction(state) as session:
            job = _load_job(session, job_id)
            worker = _find_worker(session, claims.address)
            if worker is None:
                raise HTTPException(status_code=404, detail="Worker not found")
            refusal = _completion_refusal(session, job, worker)
            if refusal is not None:
                logger.info("completion of job %s by %s refused: %s", job_id, claims.address, refusal.detail)
                raise refusal
            done = session.execute(
                update(Job)
                .where(Job.id == job.id, Job.status == JOB_ASSIGNED, Job.worker_id == worker.id)
                .values(
                    status=JOB_COMPLETED,
                    result_cid_part1=body.result_cid_part1,
                    result_cid_part2=body.result_cid_part2,
                    full_result_cid=body.result_cid_part1 + (body.result_cid_part2 or ""),
                    quality_score=body.quality_score,
                    completed_at=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
            if done.rowcount != 1:
                raise HTTPException(status_code=400, detail="Job is not in assigned status")
            session.refresh(job)
            # Safe read-modify-write: the transaction holds SQLite's write lock (BEGIN IMMEDIATE).
            worker.jobs_completed += 1
            worker.total_earnings += job.reward_amount
            worker.last_seen = utcnow()
            answer = JobResponse.model_validate(job)
        logger.info(
            "job %s completed by %s: %s (quality %d)",
            answer.id,
            claims.address,
            answer.full_result_cid,
            body.quality_score,
        )
        return answer

    return router
