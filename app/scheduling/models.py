"""Tables of the scheduling primitive: ``cues``, ``executions``, ``workers`` and the monthly
execution counter.

The executions table doubles as the delivery queue: the unique key on
``(cue_id, scheduled_for)`` makes firing idempotent, and workers claim rows from it (``FOR UPDATE
SKIP LOCKED`` on PostgreSQL).  Columns that are enumerations carry CHECK constraints so a bad
value can never be stored, whatever code path writes it.
"""

from __future__ import annotations

import secrets
import string
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import UTCDateTime, utcnow
from app.extensions import db

CUE_STATUSES = ("active", "paused", "completed", "failed")
TRANSPORTS = ("webhook", "worker")
SCHEDULE_TYPES = ("recurring", "once")
CALLBACK_METHODS = ("POST", "GET", "PUT", "PATCH")
VERIFICATION_MODES = ("none", "require_external_id", "require_result_url", "require_artifacts",
                      "manual")
EXECUTION_STATUSES = ("pending", "delivering", "success", "failed", "retrying", "retry_ready",
                      "missed", "pending_outcome", "outcome_timeout")
OUTCOME_STATES = ("reported_success", "reported_failure", "verified_success",
                  "verification_pending", "verification_failed")
TRIGGERS = ("scheduler", "manual_fire", "replay")
MERGE_STRATEGIES = ("merge", "replace")
#: Executions the operator console lists as failures.  The partial index below has exactly this
#: predicate, and the console's query repeats it verbatim (SQLite uses a partial index only then).
FAILURE_STATUSES = ("failed", "missed", "outcome_timeout")
FAILURE_PREDICATE = "status IN ('failed', 'missed', 'outcome_timeout')"

_ID_ALPHABET = string.ascii_lowercase + string.digits


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def new_cue_id() -> str:
    """``cue_`` + 12 random characters from ``[a-z0-9]``."""
    return "cue_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


class Cue(db.Model):
    """A named schedule owned by a user; it produces executions."""

    __tablename__ = "cues"
    __table_args__ = (
        UniqueConstraint("user_id", "name"),
        CheckConstraint(_in("status", CUE_STATUSES), name="status"),
        CheckConstraint(_in("transport", TRANSPORTS), name="transport"),
        CheckConstraint(_in("schedule_type", SCHEDULE_TYPES), name="schedule_type"),
        CheckConstraint(_in("callback_method", CALLBACK_METHODS), name="callback_method"),
        Index(None, "status", "next_run"),
        # A user's cue page, newest first, read straight off the index; ``status`` rides along
        # (PostgreSQL) so a ``status=`` total is counted from the index alone.
        Index("ix_cues_user_created", "user_id", "created_at", "id",
              postgresql_include=["status"]),
    )

    id: Mapped[str] = mapped_column(String(16), primary_key=True, default=new_cue_id)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="active")
    transport: Mapped[str] = mapped_column(String(10), default="webhook")
    schedule_type: Mapped[str] = mapped_column(String(10))
    schedule_cron: Mapped[str | None] = mapped_column(String(255), nullable=True)
    schedule_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    schedule_timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    callback_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    callback_method: Mapped[str] = mapped_column(String(10), default="POST")
    callback_headers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    retry_max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    retry_backoff_minutes: Mapped[list[int]] = mapped_column(JSON, default=lambda: [1, 5, 15])
    on_failure: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True),
                                                             nullable=True)
    verification_mode: Mapped[str | None] = mapped_column(String(32), nullable=True)
    next_run: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_run: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    run_count: Mapped[int] = mapped_column(Integer, default=0)
    fired_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    executions = relationship("Execution", back_populates="cue", cascade="all, delete-orphan",
                              passive_deletes=True)

    def __repr__(self) -> str:
        return f"<Cue {self.id} {self.status}>"


class Execution(db.Model):
    """One firing of a cue: a queue entry while pending, a record once finished."""

    __tablename__ = "executions"
    __table_args__ = (
        UniqueConstraint("cue_id", "scheduled_for"),
        CheckConstraint(_in("status", EXECUTION_STATUSES), name="status"),
        CheckConstraint(_in("triggered_by", TRIGGERS), name="triggered_by"),
        CheckConstraint(_in("payload_merge_strategy", MERGE_STRATEGIES),
                        name="payload_merge_strategy"),
        Index(None, "status", "scheduled_for"),
        Index(None, "status", "next_retry_at"),
        # The console's failure list, newest first; small (failures only), so cheap to maintain.
        Index("ix_executions_failures", "scheduled_for", "id",
              postgresql_where=text(FAILURE_PREDICATE), sqlite_where=text(FAILURE_PREDICATE)),
        # A cue's executions newest first (ties on ``created_at`` sorted incrementally), and the
        # oldest claim of a cue's executions (only worker cues' executions are ever claimed).
        Index("ix_executions_cue_created", "cue_id", "created_at"),
        Index("ix_executions_cue_claimed", "cue_id", "claimed_at",
              postgresql_where=text("claimed_at IS NOT NULL"),
              sqlite_where=text("claimed_at IS NOT NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    cue_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("cues.id", ondelete="CASCADE"))
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(20), default="pending")
    triggered_by: Mapped[str] = mapped_column(String(20), default="scheduler")
    replayed_from: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    http_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    response_body: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    next_retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    claimed_by_worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True),
                                                          nullable=True)
    outcome_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True),
                                                           nullable=True)
    # "ipc" when a manual fire found the cue bound to an IPC live session (wire §7.8): a
    # signal for the daemon, not part of the wire execution object.
    delivery_mode_requested: Mapped[str | None] = mapped_column(String(8), nullable=True)
    # A manual fire's ``payload_override`` and how it combines with the cue's payload
    # (``merge``: shallow, the override wins; ``replace``); NULL = the cue's payload as is.
    payload_override: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True),
                                                                   nullable=True)
    payload_merge_strategy: Mapped[str | None] = mapped_column(String(10), nullable=True)
    # Live-claim attestation (wire §8.11): the first session token to attest wins.
    live_claim_session_token: Mapped[str | None] = mapped_column(String(128), nullable=True)
    live_claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    cue = relationship("Cue", back_populates="executions")

    def delivered_payload(self, cue_payload: dict[str, Any] | None) -> dict[str, Any]:
        """The payload this execution delivers, given its cue's current payload."""
        return effective_payload(cue_payload, self.payload_override,
                                 self.payload_merge_strategy)

    def __repr__(self) -> str:
        return f"<Execution {self.id} {self.status}>"


def effective_payload(cue_payload: dict[str, Any] | None, override: dict[str, Any] | None,
                      strategy: str | None) -> dict[str, Any]:
    """What an execution delivers: the cue's payload, or with a fire's override applied
    (``replace`` uses the override alone; ``merge`` is shallow and the override wins)."""
    base = cue_payload if isinstance(cue_payload, dict) else {}
    if override is None:
        return base
    if strategy == "replace":
        return override
    return {**base, **override}


class UserCueTotal(db.Model):
    """How many cues a user has: kept by database triggers (see :mod:`app.scheduling.totals`),
    never written by the application.  No row means none."""

    __tablename__ = "user_cue_totals"

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    cues: Mapped[int] = mapped_column(BigInteger, default=0)


class CueExecutionTotal(db.Model):
    """How many executions a cue has: kept by database triggers like :class:`UserCueTotal`."""

    __tablename__ = "cue_execution_totals"

    cue_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("cues.id", ondelete="CASCADE"), primary_key=True)
    executions: Mapped[int] = mapped_column(BigInteger, default=0)


class FireIdempotencyKey(db.Model):
    """An ``idempotency_key`` a manual fire used: one execution per (cue, key) for 24 hours.

    The primary key makes concurrent fires with one key create one execution; rows older than
    the window are free again (reused, or deleted by the retention job).
    """

    __tablename__ = "fire_idempotency_keys"

    cue_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("cues.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    execution_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("executions.id", ondelete="CASCADE"))
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class Worker(db.Model):
    """A pull worker (``cueapi-worker`` daemon) of a user, known by its caller-chosen id."""

    __tablename__ = "workers"
    __table_args__ = (UniqueConstraint("user_id", "worker_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    worker_id: Mapped[str] = mapped_column(String(255))
    handlers: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    last_heartbeat: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ExecutionUsage(db.Model):
    """Successful webhook deliveries per user and calendar month (the monthly execution counter).

    Kept as a counter rather than counted from ``executions`` because deleting a cue cascades
    its executions away, which must not hand the user back quota.  ``limit_reached_at`` starts
    the 24 h grace period of the monthly execution limit.
    """

    __tablename__ = "execution_usage"

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # "YYYY-MM"
    executions: Mapped[int] = mapped_column(Integer, default=0)
    limit_reached_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
