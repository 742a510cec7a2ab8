"""What the devnet backend stores (SQLAlchemy rows) and how it serves it (pydantic wire models).

Both halves live here because they must agree field for field: ``Worker`` and ``Job`` hold exactly the
fields of the published ``WorkerResponse`` and ``JobResponse`` schemas, and the pydantic models mirror the
published OpenAPI components (same names, types and defaults) so FastAPI serves the same contract. What the
devnet needs beyond the contract (challenges, expired job leases) lives in tables of its own.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    Boolean,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JOB_OPEN = "open"
JOB_ASSIGNED = "assigned"
JOB_COMPLETED = "completed"

NEW_WORKER_REPUTATION = 500
DEFAULT_MIN_REPUTATION = 400
# Long enough to ride out a burst of concurrent writers (every transaction takes the write lock).
SQLITE_BUSY_TIMEOUT_S = 15.0
# Amounts are u256 on chain; chain job ids must fit SQLite's signed 64-bit INTEGER.
MAX_WEI = 2**256 - 1
MAX_CHAIN_JOB_ID = 2**63 - 1
_WEI_DIGITS = len(str(MAX_WEI))


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


# --------------------------------------------------------------------------------------------------- columns


class UtcDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: SQLite keeps no zone, and the API must always send one."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class WeiAmount(TypeDecorator[int]):
    """A non-negative u256 as a zero-padded decimal string.

    SQLite integers stop at 2**63 (about 9.2 STRK in wei); padding keeps string order equal to numeric
    order, so comparisons in SQL still work.
    """

    impl = String(_WEI_DIGITS)
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Any) -> str | None:
        if value is None:
            return None
        if not 0 <= value <= MAX_WEI:
            raise ValueError(f"amount out of u256 range: {value}")
        return f"{value:0{_WEI_DIGITS}d}"

    def process_result_value(self, value: str | None, dialect: Any) -> int | None:
        return None if value is None else int(value)


# ------------------------------------------------------------------------------------------------------ rows


class Base(DeclarativeBase):
    pass


class Worker(Base):
    """A render node (or the devnet admin), keyed by its Starknet address."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    address: Mapped[str] = mapped_column(String(80), unique=True, index=True)
    public_key: Mapped[str | None] = mapped_column(String(80))
    info_cid: Mapped[str | None] = mapped_column(Text)
    capabilities: Mapped[str | None] = mapped_column(Text)
    hardware_specs: Mapped[str | None] = mapped_column(Text)
    contact_info: Mapped[str | None] = mapped_column(Text)
    registered_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    verified_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    verified_by: Mapped[str | None] = mapped_column(String(80))
    reputation: Mapped[int] = mapped_column(Integer, default=NEW_WORKER_REPUTATION)
    jobs_completed: Mapped[int] = mapped_column(Integer, default=0)
    jobs_failed: Mapped[int] = mapped_column(Integer, default=0)
    total_earnings: Mapped[int] = mapped_column(WeiAmount, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Job(Base):
    """A render job as the backend mirrors it from the chain."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    chain_job_id: Mapped[int] = mapped_column(Integer, unique=True, index=True)
    creator_address: Mapped[str] = mapped_column(String(80), index=True)
    asset_cid_part1: Mapped[str] = mapped_column(Text)
    asset_cid_part2: Mapped[str | None] = mapped_column(Text)
    reward_amount: Mapped[int] = mapped_column(WeiAmount)
    deadline: Mapped[datetime] = mapped_column(UtcDateTime)
    min_reputation: Mapped[int] = mapped_column(Integer, default=DEFAULT_MIN_REPUTATION)
    required_capabilities: Mapped[str | None] = mapped_column(Text)
    full_asset_cid: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    worker_id: Mapped[str | None] = mapped_column(ForeignKey("workers.id"), index=True)
    assigned_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    result_cid_part1: Mapped[str | None] = mapped_column(Text)
    result_cid_part2: Mapped[str | None] = mapped_column(Text)
    full_result_cid: Mapped[str | None] = mapped_column(Text)
    quality_score: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=JOB_OPEN, index=True)


class Challenge(Base):
    """A sign-in challenge; single-use, so a captured signature cannot be replayed."""

    __tablename__ = "challenges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(80), index=True)
    message: Mapped[str] = mapped_column(String(80))
    nonce: Mapped[str] = mapped_column(String(64))
    timestamp: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    used: Mapped[bool] = mapped_column(Boolean, default=False)


class LeaseExpiry(Base):
    """One assignment that ran past its lease and was reopened.

    Kept apart from ``jobs`` (whose row is reset to ``open`` with no worker) so a late ``complete`` can still
    be told "you held this job but lost it" rather than "this job was never assigned"; a table of its own
    also appears in an existing data folder, where a new column would not.
    """

    __tablename__ = "lease_expiries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    worker_id: Mapped[str] = mapped_column(ForeignKey("workers.id"))
    assigned_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expired_at: Mapped[datetime] = mapped_column(UtcDateTime)
    lease_s: Mapped[float] = mapped_column(Float)


def open_database(path: Path) -> Engine:
    """Open (and create) the SQLite file for concurrent use by a threaded server.

    WAL lets readers run beside the writer; every transaction starts with ``BEGIN IMMEDIATE`` so a
    read-then-write (challenge use, counters) is serialised instead of failing with "database is locked".
    """
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Turn off pysqlite's own implicit BEGIN so the "begin" hook below decides how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    Base.metadata.create_all(engine)
    return engine


# ----------------------------------------------------------------------------------------- wire: auth


class ChallengeRequest(BaseModel):
    address: str = Field(description="StarkNet address")


class ChallengeResponse(BaseModel):
    message: str = Field(description="Message to be signed")
    timestamp: str = Field(description="Challenge timestamp")
    nonce: str = Field(description="Random nonce")
    expires_at: str = Field(description="Challenge expiration timestamp")


class AuthRequest(BaseModel):
    address: str = Field(description="StarkNet address")
    message: str = Field(description="Original challenge message")
    signature: list[str] = Field(description="Signature components")
    timestamp: int = Field(description="Challenge timestamp")


class RefreshRequest(BaseModel):
    refresh_token: str = Field(description="Valid refresh token")


class RefreshResponse(BaseModel):
    access_token: str = Field(description="New JWT access token")
    token_type: str = Field(default="bearer", description="Token type")
    expires_in: int = Field(description="Token expiration time in seconds")


# -------------------------------------------------------------------------------------- wire: workers


class WorkerBase(BaseModel):
    address: str = Field(description="StarkNet address of the worker")
    public_key: str | None = Field(default=None, description="Public key for verification")
    info_cid: str | None = Field(default=None, description="IPFS CID for worker information")
    capabilities: str | None = Field(default=None, description="JSON string of worker capabilities")
    hardware_specs: str | None = Field(default=None, description="JSON string of hardware specifications")
    contact_info: str | None = Field(default=None, description="Contact information")


class WorkerRegistration(WorkerBase):
    """Schema for worker registration"""


class WorkerUpdate(BaseModel):
    """Schema for updating worker information"""

    public_key: str | None = None
    info_cid: str | None = None
    capabilities: str | None = None
    hardware_specs: str | None = None
    contact_info: str | None = None
    active: bool | None = None


class WorkerResponse(WorkerBase):
    """Schema for worker API responses"""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    registered_at: datetime
    verified: bool = False
    verified_at: datetime | None = None
    verified_by: str | None = None
    reputation: int = NEW_WORKER_REPUTATION
    jobs_completed: int = 0
    jobs_failed: int = 0
    total_earnings: int = 0
    active: bool = True
    is_admin: bool = False
    last_seen: datetime | None = None


class AuthResponse(BaseModel):
    access_token: str = Field(description="JWT access token")
    refresh_token: str = Field(description="JWT refresh token")
    token_type: str = Field(default="bearer", description="Token type")
    expires_in: int = Field(description="Token expiration time in seconds")
    # The published schema allows a UserResponse here; the devnet has no user accounts, so always null.
    user: None = Field(default=None, description="Authenticated user information")
    worker: WorkerResponse | None = Field(default=None, description="Authenticated worker information")


# ----------------------------------------------------------------------------------------- wire: jobs


class JobBase(BaseModel):
    chain_job_id: int = Field(description="On-chain job ID")
    creator_address: str = Field(description="Address of job creator")
    asset_cid_part1: str = Field(description="First part of asset IPFS CID")
    asset_cid_part2: str | None = Field(default=None, description="Second part of asset IPFS CID")
    reward_amount: int = Field(description="Reward amount in wei")
    deadline: datetime = Field(description="Job deadline")
    min_reputation: int = Field(
        default=DEFAULT_MIN_REPUTATION, description="Minimum worker reputation required"
    )
    required_capabilities: str | None = Field(
        default=None, description="JSON string of required capabilities"
    )


class JobCreate(JobBase):
    """Schema for creating a job"""


class JobResponse(JobBase):
    """Schema for job API responses"""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    full_asset_cid: str | None = None
    created_at: datetime
    worker_id: uuid.UUID | None = None
    assigned_at: datetime | None = None
    completed_at: datetime | None = None
    result_cid_part1: str | None = None
    result_cid_part2: str | None = None
    full_result_cid: str | None = None
    quality_score: int | None = None
    status: str = JOB_OPEN


class JobAssignment(BaseModel):
    worker_address: str = Field(description="Address of the worker to assign")


class JobCompletion(BaseModel):
    result_cid_part1: str = Field(description="First part of result IPFS CID")
    result_cid_part2: str | None = Field(default=None, description="Second part of result IPFS CID")
    quality_score: int = Field(ge=0, le=100, description="Quality score (0-100)")
    worker_address: str | None = Field(default=None, description="Worker who completed the job")
