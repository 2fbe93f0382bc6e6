"""Ownership-checked fetches: another user's cue or execution is indistinguishable from none."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from app.errors import NotFound
from app.extensions import db
from app.scheduling.models import Cue, Execution
from app.users.models import User


def parse_execution_id(value: str) -> uuid.UUID | None:
    """The UUID in ``value`` or ``None`` when it is not one (→ 404, never 500)."""
    try:
        return uuid.UUID(str(value))
    except (ValueError, AttributeError, TypeError):
        return None


def get_cue(user: User, cue_id: str, *, for_update: bool = False) -> Cue:
    """The caller's cue ``cue_id`` or ``404 cue_not_found``."""
    query = select(Cue).where(Cue.id == cue_id, Cue.user_id == user.id)
    if for_update:
        query = query.with_for_update()
    cue = db.session.scalar(query) if len(cue_id) <= 16 else None
    if cue is None:
        raise NotFound("cue_not_found", f"Cue {cue_id!r} not found")
    return cue


def get_execution(user: User, execution_id: str, *, for_update: bool = False) -> Execution:
    """The caller's execution (owned through its cue) or ``404 execution_not_found``."""
    parsed = parse_execution_id(execution_id)
    execution = None
    if parsed is not None:
        query = (select(Execution).join(Cue, Cue.id == Execution.cue_id)
                 .where(Execution.id == parsed, Cue.user_id == user.id))
        if for_update:
            query = query.with_for_update(of=Execution)
        execution = db.session.scalar(query)
    if execution is None:
        raise NotFound("execution_not_found", f"Execution {execution_id!r} not found")
    return execution
