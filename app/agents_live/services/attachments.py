"""IPC attachments (wire §11.3): a local daemon attaches, detaches and reconciles the live
sessions it delivers over IPC, and fires of their cues ask for IPC delivery (§7.8).

An attachment is a row of ``agent_live_sessions`` with a daemon id and a daemon-issued token.
Attaching label *L* of an agent:

* no active session *L* → a new session on the ``ipc`` transport, bound to no cue (its
  ``cue_id`` is the token); ``main`` becomes the default when the agent has none;
* an active session *L* registered through ``/live-sessions`` and held by no daemon → the daemon
  takes it over: the session moves to ``ipc`` and keeps its cue, default and attestation token;
* an active session *L* of the same daemon → superseded: the old row is detached and a new one
  takes its place (same cue, default, attestation token), reporting ``supersedes_token``;
* an active session *L* of another daemon → ``409 attachment_exists`` and nothing changes.

Reconcile applies a daemon's whole local view in one transaction: rows it lists move to
``ipc``, rows of that daemon it does not list fall back to ``poll``.  Everything is scoped to
the caller's agents: a daemon id names a daemon *of this user*.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy import case, exists, select, update
from sqlalchemy.exc import IntegrityError

from app.agents_live.models import LiveSession
from app.agents_live.schemas import AttachmentExistsBodySchema
from app.agents_live.services import lock_agents, owned_agent_by_id
from app.agents_live.services.live_sessions import clash, conflict_from
from app.db import commit_keeping_state, utcnow
from app.errors import BadRequest, Conflict
from app.extensions import db
from app.messaging.models import Agent

log = logging.getLogger(__name__)

DAEMON_HEADER = "X-CueAPI-Daemon-Id"
#: Attempts of an attach that lost a race (another writer changed the label in between).
_ATTEMPTS = 4
_HINT = ("DELETE /v1/agents/{ref}/attachments/<existing_token> from the daemon holding it, or "
         "detach the session with DELETE /v1/agents/{ref}/live-sessions/{label}, then attach "
         "again; if existing_daemon_id is not yours, the session has moved to another machine")


class AttachmentExists(Conflict):
    """409 whose body is the wire's ``attachment_exists`` shape: the holder's details instead
    of ``message`` and ``status`` (§11.3 defines it so; daemons parse these keys)."""

    code = "attachment_exists"

    def __init__(self, existing: LiveSession, ref: str):
        super().__init__(message="Another daemon holds this label")
        self.body = _EXISTS_SCHEMA.dump({
            "code": self.code,
            "existing_token": existing.ipc_session_token,
            "existing_daemon_id": str(existing.daemon_id),
            "existing_attached_at": existing.attached_at,
            "existing_last_reconciled_at": existing.last_reconciled_at,
            "hint": _HINT.format(ref=ref, label=existing.label),
        })

    def to_dict(self) -> dict[str, Any]:
        return self.body


_EXISTS_SCHEMA = AttachmentExistsBodySchema()


class _LostRace(Exception):
    """The row read a moment ago changed before the guarded write: read again."""


def parse_daemon_id(raw: str | None) -> uuid.UUID:
    """The ``X-CueAPI-Daemon-Id`` header as a UUID, else ``400 missing_daemon_id`` /
    ``400 invalid_daemon_id``."""
    if not raw:
        raise BadRequest("missing_daemon_id",
                         f"The {DAEMON_HEADER} header is required: generate a UUID once when "
                         "the daemon is installed and send it on every attach, delete and "
                         "reconcile")
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        raise BadRequest("invalid_daemon_id",
                         f"The {DAEMON_HEADER} header must be a UUID") from None


def attach(user_id: uuid.UUID, ref: str, daemon_id: uuid.UUID,
           fields: dict[str, Any]) -> tuple[LiveSession, str | None]:
    """Attach label ``fields["label"]`` of agent ``ref`` (an ``agt_`` id) for ``daemon_id``.

    Returns the attached row and the token it superseded (or None).  See the module docstring
    for the four cases.  Raises ``400 invalid_agent_ref``, ``404 agent_not_found``,
    ``409 attachment_exists`` (another daemon holds the label) and ``409
    live_session_conflict`` (the token is already another active session's cue).
    """
    agent = owned_agent_by_id(user_id, ref)
    for _attempt in range(_ATTEMPTS):
        lock_agents([agent.id])
        try:
            result = _attach_once(agent, daemon_id, fields, ref)
            commit_keeping_state()
            return result
        except _LostRace:
            db.session.rollback()
        except IntegrityError as exc:
            db.session.rollback()
            if clash(exc) in ("cue_id", "other"):
                raise conflict_from(exc, fields["label"], fields["ipc_session_token"]) from None
            # A label or default taken by a concurrent writer: the next read sees it.
    raise Conflict("live_session_conflict",
                   "The session changed concurrently several times; retry the attach")


def _attach_once(agent: Agent, daemon_id: uuid.UUID, fields: dict[str, Any],
                 ref: str) -> tuple[LiveSession, str | None]:
    now = utcnow()
    label, token = fields["label"], fields["ipc_session_token"]
    attached_at = fields.get("attached_at") or now
    existing = db.session.execute(
        select(LiveSession).where(LiveSession.agent_id == agent.id, LiveSession.label == label,
                                  LiveSession.detached_at.is_(None)),
        execution_options={"populate_existing": True}).scalar_one_or_none()
    if existing is None:
        has_default = db.session.execute(select(exists().where(
            LiveSession.agent_id == agent.id, LiveSession.detached_at.is_(None),
            LiveSession.is_default.is_(True)))).scalar()
        session = LiveSession(
            agent_id=agent.id, label=label, cue_id=token, task_name=fields["task_name"],
            is_default=label == "main" and not has_default, transport="ipc",
            daemon_id=daemon_id, ipc_session_token=token, attached_at=attached_at,
            last_reconciled_at=now, monitor_version=fields.get("monitor_version"),
            created_at=now)
        db.session.add(session)
        db.session.flush()
        return session, None
    if existing.daemon_id is None:
        # A session registered through /live-sessions: this daemon takes it over.
        taken = db.session.execute(
            update(LiveSession)
            .where(LiveSession.id == existing.id, LiveSession.detached_at.is_(None),
                   LiveSession.daemon_id.is_(None))
            .values(transport="ipc", daemon_id=daemon_id, ipc_session_token=token,
                    task_name=fields["task_name"], attached_at=attached_at,
                    last_reconciled_at=now,
                    monitor_version=fields.get("monitor_version") or existing.monitor_version)
            .returning(LiveSession), execution_options={"populate_existing": True},
        ).scalar_one_or_none()
        if taken is None:
            raise _LostRace
        return taken, None
    if existing.daemon_id != daemon_id:
        error = AttachmentExists(existing, ref)  # built before the rollback expires the row
        db.session.rollback()
        raise error
    # The same daemon again: the old row is detached first (freeing its label, default and
    # cue), then the new one takes them over.  The detach only applies if the default and
    # attestation token are still what was read, so what is carried over is never stale.
    detached = db.session.execute(
        update(LiveSession).where(
            LiveSession.id == existing.id, LiveSession.detached_at.is_(None),
            LiveSession.is_default.is_(existing.is_default),
            LiveSession.session_token.is_not_distinct_from(existing.session_token))
        .values(detached_at=now, is_default=False)
        .execution_options(synchronize_session=False)).rowcount
    if detached != 1:
        raise _LostRace
    bound_to_cue = existing.cue_id != existing.ipc_session_token
    session = LiveSession(
        agent_id=agent.id, label=label, cue_id=existing.cue_id if bound_to_cue else token,
        task_name=fields["task_name"], is_default=existing.is_default, transport="ipc",
        daemon_id=daemon_id, ipc_session_token=token, attached_at=attached_at,
        last_reconciled_at=now,
        monitor_version=fields.get("monitor_version") or existing.monitor_version,
        session_token=existing.session_token, last_heartbeat=existing.last_heartbeat,
        last_claim_at=existing.last_claim_at, created_at=now)
    db.session.add(session)
    db.session.flush()
    log.info("attachment superseded", extra={"agent_id": agent.id, "label": label,
                                             "daemon_id": str(daemon_id)})
    return session, existing.ipc_session_token


def delete_attachment(user_id: uuid.UUID, ref: str, daemon_id: uuid.UUID, token: str) -> bool:
    """Detach this daemon's active attachment ``token`` of agent ``ref``.

    True when this call detached it; False when nothing was left to detach (already deleted,
    superseded, never existed, or held by another daemon), which the route answers with
    ``{"deleted": false, "reason": "already_deleted"}``.
    """
    agent = owned_agent_by_id(user_id, ref)
    detached = db.session.execute(
        update(LiveSession)
        .where(LiveSession.agent_id == agent.id, LiveSession.ipc_session_token == token,
               LiveSession.daemon_id == daemon_id, LiveSession.detached_at.is_(None))
        .values(detached_at=utcnow(), is_default=False)
        .execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    return detached > 0


def reconcile(user_id: uuid.UUID, daemon_id: uuid.UUID,
              body: dict[str, Any]) -> dict[str, Any]:
    """Apply a daemon's full local view of its attachments, atomically.

    Each active session of this daemon (on the caller's agents) whose (label, token) pair is in
    ``body["attachments"]`` moves to ``ipc`` with its ``task_name`` from the batch and
    ``last_reconciled_at`` now (``upserted_count``); every other ``ipc`` session of the daemon
    falls back to ``poll`` (``downgraded_count``).  Entries matching no session are skipped:
    a reconcile never creates attachments (its entries name no agent), the daemon attaches
    them first.  Header and body must name the same daemon (``400 daemon_id_mismatch``).
    """
    if body["daemon_id"] != daemon_id:
        raise BadRequest("daemon_id_mismatch",
                         f"The {DAEMON_HEADER} header and body.daemon_id must be the same "
                         "daemon id")
    now = utcnow()
    mine = [LiveSession.daemon_id == daemon_id, LiveSession.detached_at.is_(None),
            Agent.user_id == user_id]
    agent_ids = db.session.execute(
        select(LiveSession.agent_id).join(Agent, Agent.id == LiveSession.agent_id)
        .where(*mine).distinct()).scalars().all()
    lock_agents(agent_ids)  # two reconciles of one daemon queue instead of deadlocking
    rows = db.session.execute(
        select(LiveSession.id, LiveSession.label, LiveSession.ipc_session_token)
        .join(Agent, Agent.id == LiveSession.agent_id)
        .where(*mine, LiveSession.agent_id.in_(agent_ids))).all() if agent_ids else []
    listed = {(entry["label"], entry["ipc_session_token"]): entry["task_name"]
              for entry in body["attachments"]}
    by_task: dict[str, list[uuid.UUID]] = defaultdict(list)
    stale: list[uuid.UUID] = []
    for row in rows:
        task_name = listed.get((row.label, row.ipc_session_token))
        if task_name is not None:
            by_task[task_name].append(row.id)
        else:
            # Whatever its transport was when read: the guarded UPDATE below decides (and
            # counts), so a reconcile is right also when its read was older than its write.
            stale.append(row.id)
    upserted = 0
    for task_name, ids in by_task.items():
        upserted += db.session.execute(
            update(LiveSession)
            .where(LiveSession.id.in_(ids), LiveSession.detached_at.is_(None))
            .values(transport="ipc", last_reconciled_at=now, task_name=task_name)
            .execution_options(synchronize_session=False)).rowcount
    downgraded = 0
    if stale:
        downgraded = db.session.execute(
            update(LiveSession)
            .where(LiveSession.id.in_(stale), LiveSession.detached_at.is_(None),
                   LiveSession.transport == "ipc")
            .values(transport="poll").execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    return {"daemon_id": str(daemon_id), "reconciled_at": body["reconciled_at"],
            "upserted_count": upserted, "downgraded_count": downgraded}


def requested_delivery_mode(cue: Any):
    """The ``delivery_mode_requested`` of a new manual execution of ``cue``, as a SQL
    expression: ``'ipc'`` when an active session of one of the cue owner's live agents is bound
    to the cue on the ``ipc`` transport, else NULL (wire §7.8).

    An expression rather than a value so the look-up runs inside the execution's INSERT: the
    fire costs no extra round trip, and the answer is the one true when the row is written.
    """
    bound = exists().where(
        LiveSession.cue_id == cue.id, LiveSession.transport == "ipc",
        LiveSession.detached_at.is_(None), Agent.id == LiveSession.agent_id,
        Agent.user_id == cue.user_id, Agent.deleted_at.is_(None))
    return case((bound, "ipc"), else_=None)

