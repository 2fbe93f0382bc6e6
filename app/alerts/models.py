"""The ``alerts`` table.

An alert belongs to a user and usually names the cue and execution it is about.  Neither is a
foreign key: an alert is history and outlives a deleted cue.  ``delivery_state`` is the alert
webhook's queue — ``pending`` when the owner had an alert webhook URL at creation, then
``sending`` (claimed by a worker), ``delivered`` or ``failed`` (no retry, as the wire protocol
has it); ``NULL`` when there was nothing to deliver to.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, ForeignKey, Index, String, Text, Uuid
from sqlalchemy import false as sql_false
from sqlalchemy.orm import Mapped, mapped_column

from app.db import UTCDateTime, utcnow
from app.extensions import db

ALERT_TYPES = ("outcome_timeout", "verification_failed", "consecutive_failures")
SEVERITIES = ("info", "warning", "critical")
DELIVERY_STATES = ("pending", "sending", "delivered", "failed")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Alert(db.Model):
    """Something about a user's cues they should know (wire §12.6)."""

    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint(_in("alert_type", ALERT_TYPES), name="alert_type"),
        CheckConstraint(_in("severity", SEVERITIES), name="severity"),
        CheckConstraint(_in("delivery_state", DELIVERY_STATES), name="delivery_state"),
        Index(None, "user_id", "created_at"),
        Index(None, "delivery_state", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    cue_id: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    execution_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True, index=True)
    alert_type: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16), default="warning")
    message: Mapped[str] = mapped_column(Text)
    # ``metadata`` is reserved on declarative classes, hence the attribute name.
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON(none_as_null=True),
                                                       nullable=True)
    acknowledged: Mapped[bool] = mapped_column(Boolean, default=False,
                                               server_default=sql_false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivery_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    delivery_claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    delivery_error: Mapped[str | None] = mapped_column(String(500), nullable=True)

    def __repr__(self) -> str:
        return f"<Alert {self.id} {self.alert_type}>"
