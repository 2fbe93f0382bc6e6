"""Services of live sessions and IPC attachments, and what both need: agent look-ups and the
lock that serializes changes to one agent's sessions.

Why a lock at all, when constraints already guard every invariant: on PostgreSQL each
statement of a READ COMMITTED transaction sees its own snapshot, so two default flips, or two
reconciles of one daemon, that interleave their statements can trip a unique index (a spurious
409) or deadlock on each other's rows (a 500).  Taking the agent row first, ``FOR NO KEY
UPDATE``, makes such transactions queue instead; the mode does not block the key-share locks
that inserts referencing the agent take, so sends to the agent never wait on it.  On SQLite
writers are serialized by the database itself (the first write of a transaction waits for the
previous writer's commit), so the services there rely on writes that re-check their own
conditions, and on the constraints.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

from sqlalchemy import select

from app.db import dialect_name
from app.errors import BadRequest, NotFound
from app.extensions import db
from app.messaging.addressing import resolve_owned_agent
from app.messaging.models import Agent

_AGENT_ID = re.compile(r"agt_[A-Za-z0-9]{12}")


def owned_agent(user_id: uuid.UUID, ref: str) -> Agent:
    """The caller's live agent named by ``ref`` (id or slug address), else 404.

    A malformed address is ``400 invalid_agent_address``; another user's agent, a deleted one
    and none at all are the same ``404 agent_not_found``.
    """
    return resolve_owned_agent(user_id, ref)


def owned_agent_by_id(user_id: uuid.UUID, ref: str) -> Agent:
    """The caller's live agent by its opaque id only (the attachment routes), else
    ``400 invalid_agent_ref`` for any other form or ``404 agent_not_found``."""
    ref = ref.strip()
    if not _AGENT_ID.fullmatch(ref):
        raise BadRequest("invalid_agent_ref",
                         f"{ref[:80]!r} is not an agent id: these endpoints take the agent's "
                         "opaque id (agt_ followed by 12 letters or digits), not slug@user")
    agent = db.session.get(Agent, ref)
    if agent is None or agent.user_id != user_id or agent.deleted_at is not None:
        raise NotFound("agent_not_found", f"Agent {ref!r} not found")
    return agent


def lock_agents(agent_ids: Iterable[str]) -> None:
    """Serialize this transaction with every other one changing these agents' sessions
    (PostgreSQL; see the module docstring).  Locks are taken in id order, so two callers
    locking overlapping sets never deadlock."""
    ids = sorted(set(agent_ids))
    if not ids or dialect_name() != "postgresql":
        return
    db.session.execute(select(Agent.id).where(Agent.id.in_(ids)).order_by(Agent.id)
                       .with_for_update(key_share=True)).all()
