"""Live sessions (wire §11.2): register, list, detach, make default or rotate the token, and
heartbeat.

Each write is one transaction.  Unique clashes (a label already active on the agent, a second
default, a cue already bound to an active session) are decided by the partial unique indexes of
:mod:`app.agents_live.models` and answered ``409 live_session_conflict``, also when two requests
race.  The default flip moves the default in one transaction under the agent's lock, so no
reader ever sees zero or two defaults and two concurrent flips leave exactly one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from app.agents_live.models import LiveSession
from app.agents_live.services import lock_agents, owned_agent
from app.db import commit_keeping_state, utcnow, violated_columns
from app.errors import BadRequest, Conflict, NotFound
from app.extensions import db


@dataclass(frozen=True)
class SessionView:
    """A session and the instant its ages are measured from."""

    session: LiveSession
    now: datetime


def _not_found(label: str, ref: str) -> NotFound:
    return NotFound("live_session_not_found",
                    f"No active live session labelled {label[:64]!r} on agent {ref[:80]!r}")


def _active(agent_id: str, label: str) -> list:
    return [LiveSession.agent_id == agent_id, LiveSession.label == label,
            LiveSession.detached_at.is_(None)]


def clash(exc: IntegrityError) -> str:
    """Which unique rule ``exc`` broke: ``cue_id``, ``label``, ``default`` or ``other``."""
    columns = violated_columns(exc)
    if "agent_live_sessions.cue_id" in columns:
        return "cue_id"
    if "agent_live_sessions.label" in columns:
        return "label"
    if columns == {"agent_live_sessions.agent_id"}:
        return "default"
    return "other"


def conflict_from(exc: IntegrityError, label: str, cue_id: str) -> Conflict:
    """The ``409 live_session_conflict`` naming which unique rule ``exc`` broke."""
    messages = {
        "cue_id": f"Cue {cue_id[:128]!r} is already bound to an active live session; detach "
                  "that session first",
        "label": f"This agent already has an active live session labelled {label[:64]!r}; "
                 "detach it first or choose another label",
        "default": "This agent already has a default live session; register this one with "
                   "is_default false, then PATCH it with is_default true to move the default",
    }
    return Conflict("live_session_conflict", messages.get(
        clash(exc), "The live session clashes with an existing one; retry the request"))


def register_session(user_id: uuid.UUID, ref: str, fields: dict[str, Any]) -> SessionView:
    """Register a new active session of the caller's agent ``ref``.

    The session starts on the ``poll`` transport with its heartbeat at now.  Raises
    ``404 agent_not_found`` and ``409 live_session_conflict`` (label, default or cue taken).
    """
    agent = owned_agent(user_id, ref)
    now = utcnow()
    if fields["is_default"]:
        lock_agents([agent.id])  # queue behind a flip in progress instead of deadlocking on it
    session = LiveSession(
        agent_id=agent.id, label=fields["label"], cue_id=fields["cue_id"],
        task_name=fields["task_name"], is_default=fields["is_default"], transport="poll",
        monitor_version=fields.get("monitor_version"),
        session_token=fields.get("session_token"), attached_at=now, last_heartbeat=now,
        created_at=now)
    db.session.add(session)
    try:
        commit_keeping_state()
    except IntegrityError as exc:
        db.session.rollback()
        raise conflict_from(exc, fields["label"], fields["cue_id"]) from None
    return SessionView(session, now)


def list_sessions(user_id: uuid.UUID, ref: str, include_detached: bool) -> list[SessionView]:
    """The agent's sessions, newest first: active ones, or all with ``include_detached``."""
    agent = owned_agent(user_id, ref)
    query = select(LiveSession).where(LiveSession.agent_id == agent.id)
    if not include_detached:
        query = query.where(LiveSession.detached_at.is_(None))
    rows = db.session.execute(
        query.order_by(LiveSession.created_at.desc(), LiveSession.id.desc())).scalars().all()
    now = utcnow()
    return [SessionView(row, now) for row in rows]


def _update_one(agent_id: str, label: str, values: dict[str, Any]) -> LiveSession | None:
    """Apply ``values`` to the agent's active session ``label``; the updated row or None."""
    return db.session.execute(
        update(LiveSession).where(*_active(agent_id, label)).values(**values)
        .returning(LiveSession), execution_options={"populate_existing": True},
    ).scalar_one_or_none()


def detach_session(user_id: uuid.UUID, ref: str, label: str) -> SessionView:
    """Soft-detach the active session ``label``: it keeps its row (history) and loses the
    default.  ``404 live_session_not_found`` when no active session has that label."""
    agent = owned_agent(user_id, ref)
    now = utcnow()
    session = _update_one(agent.id, label, {"detached_at": now, "is_default": False})
    if session is None:
        db.session.rollback()
        raise _not_found(label, ref)
    commit_keeping_state()
    return SessionView(session, now)


def update_session(user_id: uuid.UUID, ref: str, label: str,
                   fields: dict[str, Any]) -> SessionView:
    """Rotate the session token and/or make ``label`` the agent's default session.

    ``is_default: true`` clears the default of every other active session of the agent and
    sets this one's, in one transaction under the agent's lock.  Neither field given →
    ``400 no_mutable_fields``; ``is_default: false`` → ``400 invalid_default_flip`` (a default
    is moved, never just dropped); no active session ``label`` → ``404``, with nothing changed.
    """
    agent = owned_agent(user_id, ref)
    make_default = fields.get("is_default")
    token = fields.get("session_token")
    if make_default is None and token is None:
        raise BadRequest("no_mutable_fields",
                         "Nothing to change: send is_default: true (move the default here) "
                         "and/or session_token (rotate it)")
    if make_default is False:
        raise BadRequest("invalid_default_flip",
                         "is_default: false is not a change you can make alone: make another "
                         "session the default (is_default: true on it) or DELETE this one")
    now = utcnow()
    values: dict[str, Any] = {}
    if token is not None:
        values["session_token"] = token
    if make_default:
        lock_agents([agent.id])
        # Clear the old default first: the partial unique index allows one at any instant.
        db.session.execute(
            update(LiveSession)
            .where(LiveSession.agent_id == agent.id, LiveSession.detached_at.is_(None),
                   LiveSession.is_default.is_(True), LiveSession.label != label)
            .values(is_default=False).execution_options(synchronize_session=False))
        values["is_default"] = True
    session = _update_one(agent.id, label, values)
    if session is None:
        db.session.rollback()  # the cleared default comes back
        raise _not_found(label, ref)
    commit_keeping_state()
    return SessionView(session, now)


def heartbeat_session(user_id: uuid.UUID, ref: str, label: str,
                      monitor_version: str | None) -> SessionView:
    """Record that session ``label`` is alive (and, when given, its monitor version)."""
    agent = owned_agent(user_id, ref)
    now = utcnow()
    values: dict[str, Any] = {"last_heartbeat": now}
    if monitor_version is not None:
        values["monitor_version"] = monitor_version
    session = _update_one(agent.id, label, values)
    if session is None:
        db.session.rollback()
        raise _not_found(label, ref)
    commit_keeping_state()
    return SessionView(session, now)


def detach_agent_sessions(agent_id: str, now: datetime) -> None:
    """Detach every active session of an agent being deleted, inside the caller's transaction,
    so a deleted agent holds no label, default or cue."""
    db.session.execute(
        update(LiveSession)
        .where(LiveSession.agent_id == agent_id, LiveSession.detached_at.is_(None))
        .values(detached_at=now, is_default=False)
        .execution_options(synchronize_session=False))
