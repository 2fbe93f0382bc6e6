"""The ``agent_live_sessions`` table: one row per attached (or formerly attached) session.

Every invariant concurrent requests could break is a constraint, so a race ends in a clean
``409``, never in two rows where there must be one:

* among an agent's active (not detached) sessions, a label appears once and at most one is the
  default (partial unique indexes);
* among all active sessions, a ``cue_id`` appears once (a detached session keeps its row as
  history but frees its cue, so it can be registered again);
* a detached session is never the default; an ``ipc`` session always has its daemon and token.

Detaching is soft (``detached_at``), so the history of an agent's sessions stays readable with
``include_detached=true``.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import UTCDateTime, utcnow
from app.extensions import db

TRANSPORTS = ("poll", "ipc")
LABEL_MAX = 64
CUE_ID_MAX = 128
TASK_NAME_MAX = 255
MONITOR_VERSION_MAX = 64
SESSION_TOKEN_MAX = 80
IPC_TOKEN_MAX = 32

_ACTIVE = "detached_at IS NULL"
_ACTIVE_DEFAULT = "is_default AND detached_at IS NULL"


class LiveSession(db.Model):
    """One live session of an agent; with a daemon and an IPC token it is also an attachment."""

    __tablename__ = "agent_live_sessions"
    __table_args__ = (
        Index("uq_agent_live_sessions_agent_id_label_active", "agent_id", "label", unique=True,
              sqlite_where=text(_ACTIVE), postgresql_where=text(_ACTIVE)),
        Index("uq_agent_live_sessions_agent_id_default", "agent_id", unique=True,
              sqlite_where=text(_ACTIVE_DEFAULT), postgresql_where=text(_ACTIVE_DEFAULT)),
        Index("uq_agent_live_sessions_cue_id_active", "cue_id", unique=True,
              sqlite_where=text(_ACTIVE), postgresql_where=text(_ACTIVE)),
        # The list (newest first, detached included on request) and the reconcile look-up.
        Index(None, "agent_id", "created_at"),
        Index(None, "daemon_id"),
        CheckConstraint("transport IN ('poll', 'ipc')", name="transport"),
        CheckConstraint("NOT (is_default AND detached_at IS NOT NULL)",
                        name="detached_not_default"),
        CheckConstraint("(daemon_id IS NULL) = (ipc_session_token IS NULL)",
                        name="daemon_with_token"),
        CheckConstraint("transport = 'poll' OR daemon_id IS NOT NULL", name="ipc_has_daemon"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    agent_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("agents.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(LABEL_MAX))
    cue_id: Mapped[str] = mapped_column(String(CUE_ID_MAX))
    task_name: Mapped[str] = mapped_column(String(TASK_NAME_MAX))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    transport: Mapped[str] = mapped_column(String(8), default="poll")
    monitor_version: Mapped[str | None] = mapped_column(String(MONITOR_VERSION_MAX),
                                                        nullable=True)
    # The monitor's attestation token (live-claim, §8.11); never a credential of this service.
    session_token: Mapped[str | None] = mapped_column(String(SESSION_TOKEN_MAX), nullable=True)
    # Set together by an IPC attach: the daemon holding the session and its token.
    daemon_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    ipc_session_token: Mapped[str | None] = mapped_column(String(IPC_TOKEN_MAX), nullable=True)
    attached_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    detached_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_claim_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_reconciled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def __repr__(self) -> str:  # no tokens
        return f"<LiveSession {self.agent_id} {self.label!r} {self.transport}>"
