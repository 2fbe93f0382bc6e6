"""The recipient's inbox and the sender's sent view (wire §10.6).

An inbox poll moves due ``queued`` messages to ``delivered`` with a guarded
``UPDATE … WHERE delivery_state = 'queued' … RETURNING id`` over candidates picked (on
PostgreSQL) with ``FOR UPDATE SKIP LOCKED`` in the same transaction, so two concurrent pollers
never both take the same message: a row is in exactly one poll's ``RETURNING`` set.

A poll takes the newest due queued messages up to the end of the page it returns
(``offset + limit``), not every queued message: what it takes is what it shows, and older
queued messages wait for the next poll instead of being marked delivered unseen.  Messages a
poll took stay in its answer even when the state filter asks for ``queued`` but not
``delivered``; such a filter also leaves out ``queued`` rows the poll did not take (another
poll may be taking them), which makes ``state=queued`` a "give me what is new" poll whose
answers are disjoint between concurrent pollers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, false, func, or_, select, update

from app.db import dialect_name, utcnow
from app.errors import BadRequest
from app.extensions import db
from app.messaging.addressing import resolve_agent, resolve_owned_agent
from app.messaging.services.agents import touch_presence
from app.messaging.models import DELIVERY_STATES, Message

INBOX_DEFAULT_STATES = tuple(s for s in DELIVERY_STATES if s not in ("acked", "expired"))
#: Most messages one poll moves to ``delivered`` (bounds the id list on a huge ``offset``).
MAX_FLIP_PER_POLL = 5000


def parse_states(text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma list of delivery states, or ``400 invalid_state_filter`` naming the bad ones."""
    if text is None or not text.strip():
        return default
    states = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [s for s in states if s not in DELIVERY_STATES]
    if unknown or not states:
        raise BadRequest("invalid_state_filter",
                         f"Unknown state(s) {', '.join(unknown) or text!r}; use a comma list of "
                         f"{', '.join(DELIVERY_STATES)}")
    return states


@dataclass(frozen=True)
class MessagePage:
    messages: list[Message] | None
    total: int
    limit: int
    offset: int

    def as_body(self) -> dict[str, Any]:
        if self.messages is None:
            return {"count": self.total}
        return {"messages": self.messages, "total": self.total, "limit": self.limit,
                "offset": self.offset}


def _due(now: datetime):
    return or_(Message.send_at.is_(None), Message.send_at <= now)


def _page(conditions: list, limit: int, offset: int) -> tuple[list[Message], int]:
    where = and_(*conditions)
    total = db.session.execute(select(func.count()).select_from(Message).where(where)
                               ).scalar_one()
    rows = db.session.execute(
        select(Message).where(where)
        .order_by(Message.created_at.desc(), Message.id.desc()).limit(limit).offset(offset)
    ).scalars().all()
    return list(rows), total


def _flip_queued(agent_id: str, filters: list, now: datetime, count: int) -> list[str]:
    """Atomically move the newest ``count`` due ``queued`` messages of this inbox to
    ``delivered``; return their ids (disjoint between concurrent callers)."""
    candidates = (
        select(Message.id)
        .where(Message.to_agent_id == agent_id, Message.delivery_state == "queued",
               _due(now), *filters)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(min(count, MAX_FLIP_PER_POLL))
    )
    if dialect_name() == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    # Two statements, not UPDATE … WHERE id IN (SELECT … LIMIT … SKIP LOCKED): PostgreSQL may
    # re-run such a subquery while rechecking rows and take more than the limit.
    ids = db.session.execute(candidates).scalars().all()
    if not ids:
        return []
    result = db.session.execute(
        update(Message)
        .where(Message.id.in_(ids), Message.delivery_state == "queued")
        .values(delivery_state="delivered", delivered_at=now)
        .returning(Message.id)
        .execution_options(synchronize_session=False)
    )
    return [row[0] for row in result]


def list_inbox(user_id: uuid.UUID, ref: str, query: dict[str, Any]) -> MessagePage:
    """The recipient view of one of the caller's agents (soft-deleted agents included).

    Non-count polls deliver due queued messages up to the end of the page (when ``queued`` is
    in the state filter) and bump the agent's ``last_seen_at``; ``count_only`` has no side
    effects.
    """
    agent = resolve_owned_agent(user_id, ref, include_deleted=True)
    states = parse_states(query.get("state"), INBOX_DEFAULT_STATES)
    now = utcnow()
    filters: list = []
    if query.get("since") is not None:
        filters.append(Message.created_at > query["since"])
    if query.get("thread_id"):
        filters.append(Message.thread_id == query["thread_id"])
    if query.get("counterpart"):
        counterpart = resolve_agent(query["counterpart"], include_deleted=True)
        filters.append(Message.from_agent_id == counterpart.id)
    base = [Message.to_agent_id == agent.id, _due(now), *filters]

    if query.get("count_only"):
        total = db.session.execute(
            select(func.count()).select_from(Message)
            .where(*base, Message.delivery_state.in_(states))).scalar_one()
        db.session.rollback()
        return MessagePage(None, total, query["limit"], query["offset"])

    taken: list[str] = []
    if "queued" in states:
        taken = _flip_queued(agent.id, filters, now, query["offset"] + query["limit"])
    touch_presence(agent, now)
    db.session.commit()
    state_match = Message.delivery_state.in_(states)
    if "queued" in states and "delivered" not in states:
        # A "what is new" poll: it shows what it took (now delivered) and no queued row,
        # since a queued row may be one another poller is taking right now.
        others = [s for s in states if s != "queued"]
        state_match = Message.delivery_state.in_(others) if others else false()
        if taken:
            state_match = or_(state_match, Message.id.in_(taken))
    messages, total = _page([*base, state_match], query["limit"], query["offset"])
    return MessagePage(messages, total, query["limit"], query["offset"])


def list_sent(user_id: uuid.UUID, ref: str, query: dict[str, Any]) -> MessagePage:
    """The sender view of one of the caller's agents: no side effects, every state by default,
    scheduled messages included."""
    agent = resolve_owned_agent(user_id, ref, include_deleted=True)
    states = parse_states(query.get("state"), DELIVERY_STATES)
    conditions = [Message.from_agent_id == agent.id, Message.user_id == user_id,
                  Message.delivery_state.in_(states)]
    if query.get("since") is not None:
        conditions.append(Message.created_at > query["since"])
    if query.get("thread_id"):
        conditions.append(Message.thread_id == query["thread_id"])
    if query.get("counterpart"):
        counterpart = resolve_agent(query["counterpart"], include_deleted=True)
        conditions.append(Message.to_agent_id == counterpart.id)
    if query.get("count_only"):
        total = db.session.execute(select(func.count()).select_from(Message)
                                   .where(*conditions)).scalar_one()
        db.session.rollback()
        return MessagePage(None, total, query["limit"], query["offset"])
    messages, total = _page(conditions, query["limit"], query["offset"])
    return MessagePage(messages, total, query["limit"], query["offset"])
