"""Tables of the operator console: one-time sign-in links and operator sessions.

Both keep only the SHA-256 of their token (the link or cookie holds the token itself), like
every other secret in Cueline.  Rows are pruned when a new link is issued (expired for a day).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.db import UTCDateTime, utcnow
from app.extensions import db

#: How a sign-in link was issued: e-mailed from the sign-in page, or printed by the CLI.
LINK_ORIGINS = ("email", "cli")


class ConsoleLoginLink(db.Model):
    """A one-time sign-in link for an operator; spent by a conditional UPDATE (exactly once)."""

    __tablename__ = "console_login_links"
    __table_args__ = (CheckConstraint("origin IN ('email', 'cli')", name="origin_valid"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(254))
    origin: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ConsoleSession(db.Model):
    """A signed-in operator.  The cookie carries the token; sign-out sets ``revoked_at``."""

    __tablename__ = "console_sessions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
