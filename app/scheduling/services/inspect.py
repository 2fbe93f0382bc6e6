"""Operator look-ups across every user (``flask cues …``, ``flask executions show``).

These never run behind an HTTP route: they serve the operator CLI, which acts with the
database's authority, so they skip the ownership checks of :mod:`.lookup` on purpose.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, select

from app.errors import NotFound
from app.extensions import db
from app.scheduling import totals
from app.scheduling.models import Cue, Execution
from app.scheduling.services.lookup import parse_execution_id
from app.users.models import User


@dataclass(frozen=True)
class CueTimeline:
    """A cue, its owner, its newest executions (newest first) and how many it has."""

    cue: Cue
    owner: User
    executions: list[Execution]
    total_executions: int


def find_cues(owner: User | None = None, status: str | None = None,
              limit: int = 50) -> list[tuple[Cue, User]]:
    """Cues (newest first) with their owners, optionally one user's and in one status."""
    query = select(Cue, User).join(User, User.id == Cue.user_id)
    if owner is not None:
        query = query.where(Cue.user_id == owner.id)
    if status:
        query = query.where(Cue.status == status)
    rows = db.session.execute(query.order_by(Cue.created_at.desc(), Cue.id).limit(limit)).all()
    return [(cue, user) for cue, user in rows]


def cue_timeline(cue_id: str, limit: int = 20) -> CueTimeline:
    """Cue ``cue_id`` of any user with its ``limit`` newest executions, or ``404``."""
    row = db.session.execute(select(Cue, User).join(User, User.id == Cue.user_id)
                             .where(Cue.id == cue_id[:16])).first() if cue_id else None
    if row is None or len(cue_id) > 16:
        raise NotFound("cue_not_found", f"Cue {cue_id!r} not found")
    cue, owner = row
    executions = list(db.session.scalars(
        select(Execution).where(Execution.cue_id == cue.id)
        .order_by(Execution.scheduled_for.desc()).limit(limit)))
    return CueTimeline(cue, owner, executions, totals.cue_executions(cue.id))


def execution_with_cue(execution_id: str) -> tuple[Execution, Cue, User]:
    """Execution ``execution_id`` of any user, its cue and the cue's owner, or ``404``."""
    parsed = parse_execution_id(execution_id)
    row = None
    if parsed is not None:
        row = db.session.execute(
            select(Execution, Cue, User).join(Cue, Cue.id == Execution.cue_id)
            .join(User, User.id == Cue.user_id).where(Execution.id == parsed)).first()
    if row is None:
        raise NotFound("execution_not_found", f"Execution {execution_id!r} not found")
    return row[0], row[1], row[2]


def find_user(ref: str) -> User:
    """The user whose id, e-mail address or slug is ``ref``, or ``404 user_not_found``."""
    ref = ref.strip()
    try:
        user = db.session.get(User, uuid.UUID(ref))
    except ValueError:
        user = db.session.scalar(select(User).where(
            (func.lower(User.email) == ref.lower()) | (User.slug == ref)))
    if user is None:
        raise NotFound("user_not_found", f"No user with id, e-mail or slug {ref!r}")
    return user
