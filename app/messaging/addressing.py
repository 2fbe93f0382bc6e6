"""Agent addresses (wire §1.4): the opaque ``agt_`` id or ``agent_slug@user_slug``.

Every place that takes an agent reference (path ``{ref}``, ``to``, ``reply_to_agent``,
``counterpart``, ``X-Cueapi-From-Agent``) goes through :func:`resolve_agent`, so the format rule
and the ``400 invalid_agent_address`` / ``404 agent_not_found`` answers are the same everywhere.
"""

from __future__ import annotations

import functools
import re
import secrets
import string
from dataclasses import dataclass

from flask import request
from sqlalchemy import String, bindparam, or_, select
from sqlalchemy.orm import aliased
from sqlalchemy.orm.util import identity_key

from app.api import peek_json_body
from app.auth.identity import CallerExtras
from app.errors import BadRequest, NotFound
from app.extensions import db
from app.messaging.models import Agent
from app.users.models import User

_ID = re.compile(r"agt_[A-Za-z0-9]{12}")
_SLUG_PART = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
_ID_ALPHABET = string.ascii_lowercase + string.digits
_ID_LENGTH = 12
_ID_SPACE = len(_ID_ALPHABET) ** _ID_LENGTH


def new_id(prefix: str) -> str:
    """``prefix`` + 12 random characters from ``[a-z0-9]`` (agent and message ids).

    One draw from the whole id space, written in base 36: every id is equally likely, as with
    twelve separate draws, at a seventh of the cost.
    """
    number = secrets.randbelow(_ID_SPACE)
    chars = []
    for _ in range(_ID_LENGTH):
        number, digit = divmod(number, len(_ID_ALPHABET))
        chars.append(_ID_ALPHABET[digit])
    return prefix + "".join(chars)


@dataclass(frozen=True)
class Address:
    """A parsed reference: either ``agent_id`` or the (agent slug, user slug) pair."""

    agent_id: str | None = None
    agent_slug: str | None = None
    user_slug: str | None = None


def parse_address(ref: str) -> Address:
    """Parse ``ref`` or raise ``400 invalid_agent_address`` saying which forms are accepted."""
    ref = (ref or "").strip()
    if _ID.fullmatch(ref):
        return Address(agent_id=ref)
    agent_slug, at, user_slug = ref.partition("@")
    if at and _SLUG_PART.fullmatch(agent_slug) and _SLUG_PART.fullmatch(user_slug):
        return Address(agent_slug=agent_slug, user_slug=user_slug)
    raise BadRequest("invalid_agent_address",
                     f"{ref[:80]!r} is not an agent address; use an agent id (agt_ followed by "
                     "12 characters) or agent_slug@user_slug")


def prefetch_agents(*refs: str | None) -> list[Agent]:
    """Load every agent named by id among ``refs`` in one query.

    The agents land in the session's identity map, so the :func:`resolve_agent` calls that
    follow (which keep their own order of checks and errors) find them without a round trip
    each.  Agents already in the session (read with the caller, see :data:`SEND_AGENTS`) are
    not read again; anything that is not an agent id is left to those calls.  The identity map
    holds objects weakly: the caller keeps the returned list while it resolves.
    """
    ids = sorted({ref.strip() for ref in refs if ref and _ID.fullmatch(ref.strip())})
    found = {agent_id: db.session.identity_map.get(identity_key(Agent, agent_id))
             for agent_id in ids}
    held = [agent for agent in found.values() if agent is not None]
    missing = [agent_id for agent_id, agent in found.items() if agent is None]
    if len(missing) < 2:  # one is read by resolve_agent's own look-up, at the same cost
        return held
    params = {f"agent_id_{i}": agent_id for i, agent_id in enumerate(missing)}
    return held + list(db.session.execute(_agents_by_ids(len(missing)), params).scalars())


@functools.cache
def _agents_by_ids(count: int):
    """The prefetch for ``count`` ids, built once (a statement costs more to build than to
    run, and an IN list would be rendered afresh on every execution)."""
    return select(Agent).where(or_(*(Agent.id == bindparam(f"agent_id_{i}")
                                     for i in range(count))))


#: The agent references every send carries (wire §10.4): the ``X-Cueapi-From-Agent`` header and
#: the body's ``to``.  The optional ``reply_to_agent`` is left to the send's own look-up: a third
#: joined agent would cost every send twelve more columns.
_SEND_REFERENCES = 2


@functools.cache
def _send_agent_aliases() -> tuple:
    return tuple(aliased(Agent, name=f"send_agent_{i}") for i in range(_SEND_REFERENCES))


def _send_agent_joins() -> tuple:
    return tuple((alias, alias.id == bindparam(f"send_agent_{i}", type_=String()))
                 for i, alias in enumerate(_send_agent_aliases()))


def _send_agent_params() -> dict[str, str | None]:
    """The send's agent ids, from the header and the body (read ahead of its validation: a
    reference that is not an agent id, or a body that is not JSON, joins nothing)."""
    body = peek_json_body()
    refs = (request.headers.get("X-Cueapi-From-Agent"),
            body.get("to") if isinstance(body, dict) else None)
    return {f"send_agent_{i}": ref.strip() if isinstance(ref, str) and _ID.fullmatch(ref.strip())
            else None for i, ref in enumerate(refs)}


#: ``POST /v1/messages`` reads the agents it names with its caller's key or delegated lookup:
#: a send is then two round trips (that look-up and the write), not three.
SEND_AGENTS = CallerExtras("send_agents", _send_agent_aliases, _send_agent_params,
                           _send_agent_joins)


def resolve_agent(ref: str, *, include_deleted: bool = False, what: str = "Agent") -> Agent:
    """The agent ``ref`` names (any owner) or ``404 agent_not_found``.

    A slug address names the live agent with that slug; with ``include_deleted`` and no live
    agent, the most recently deleted one.
    """
    address = parse_address(ref)
    if address.agent_id is not None:
        agent = db.session.get(Agent, address.agent_id)
        if agent is not None and (include_deleted or agent.deleted_at is None):
            return agent
    else:
        query = (
            select(Agent).join(User, User.id == Agent.user_id)
            .where(User.slug == address.user_slug, Agent.slug == address.agent_slug)
            .order_by(Agent.deleted_at.is_not(None), Agent.deleted_at.desc())
        )
        if not include_deleted:
            query = query.where(Agent.deleted_at.is_(None))
        agent = db.session.execute(query.limit(1)).scalar_one_or_none()
        if agent is not None:
            return agent
    raise agent_not_found(ref, what)


def agent_not_found(ref: str, what: str = "Agent") -> NotFound:
    """The ``404 agent_not_found`` for ``ref``: one wording for missing and hidden agents."""
    return NotFound("agent_not_found", f"{what} {ref[:80]!r} not found")


def resolve_owned_agent(user_id, ref: str, *, include_deleted: bool = False) -> Agent:
    """Like :func:`resolve_agent`, but another user's agent is indistinguishable from none."""
    agent = resolve_agent(ref, include_deleted=include_deleted)
    if agent.user_id != user_id:
        raise NotFound("agent_not_found", f"Agent {ref[:80]!r} not found")
    return agent


def agent_address(agent: Agent, user_slug: str) -> str:
    """The slug form of an agent's address."""
    return f"{agent.slug}@{user_slug}"
