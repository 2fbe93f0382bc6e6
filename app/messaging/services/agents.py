"""Agent business rules: create, list, roster, update, soft delete, webhook secrets.

Every function owns its transaction and raises ``AppError`` subclasses; none reads the request.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from app.agents_live.services.live_sessions import detach_agent_sessions
from app.auth.tokens import generate_webhook_secret
from app.db import utcnow, violated_columns
from app.errors import BadRequest, Conflict, NotFound
from app.extensions import db
from app.messaging.addressing import new_id, resolve_owned_agent
from app.messaging.models import AGENT_STATUSES, Agent
from app.outbound.ssrf import validate_url
from app.users.services import base_slug

RESERVED_SLUGS = frozenset({"admin", "api", "auth", "billing", "system", "support"})
AGENT_SLUG_MAX = 64
_SUFFIX_ATTEMPTS = 6
#: Roster presence thresholds (seconds since last seen).
ONLINE_WITHIN = 300
AWAY_WITHIN = 1800
#: The roster ETag buckets ``last_seen_at`` so it changes at most every five minutes.
ETAG_BUCKET_SECONDS = 300


def _slug_in_use(user_id: uuid.UUID, slug: str) -> bool:
    return db.session.execute(
        select(Agent.id).where(Agent.user_id == user_id, Agent.slug == slug,
                               Agent.deleted_at.is_(None))
    ).first() is not None


def _with_suffix(base: str) -> str:
    suffix = "-" + secrets.token_hex(2)
    return base[:AGENT_SLUG_MAX - len(suffix)].rstrip("-") + suffix


def _derive_slug(user_id: uuid.UUID, display_name: str) -> str:
    """A free slug from ``display_name``; reserved or taken slugs get a ``-xxxx`` suffix."""
    base = base_slug(display_name, fallback="agent")
    if base not in RESERVED_SLUGS and not _slug_in_use(user_id, base):
        return base
    for _ in range(_SUFFIX_ATTEMPTS):
        candidate = _with_suffix(base)
        if not _slug_in_use(user_id, candidate):
            return candidate
    return base[:AGENT_SLUG_MAX - 9].rstrip("-") + "-" + secrets.token_hex(4)


def _check_url(url: str) -> str:
    return validate_url(url, field="webhook_url")


def create_agent(user_id: uuid.UUID, data: dict[str, Any]) -> Agent:
    """Create an agent for ``user_id``; mint a ``whsec_`` secret iff a webhook URL is given.

    An explicit reserved slug → ``400 reserved_slug``; an explicit slug already held by one of
    the user's live agents → ``409 slug_taken`` (also under a race, via the partial unique
    index).  A derived slug that collides is re-derived with a suffix instead.
    """
    explicit = data.get("slug")
    if explicit in RESERVED_SLUGS:
        raise BadRequest("reserved_slug", f"The slug {explicit!r} is reserved; choose another")
    url = data.get("webhook_url")
    if url is not None:
        url = _check_url(url)
    for _attempt in range(3):
        if explicit is not None and _slug_in_use(user_id, explicit):
            raise Conflict("slug_taken", f"You already have an agent with slug {explicit!r}")
        slug = explicit or _derive_slug(user_id, data["display_name"])
        agent = Agent(
            id=new_id("agt_"), user_id=user_id, slug=slug, display_name=data["display_name"],
            webhook_url=url, webhook_secret=generate_webhook_secret() if url else None,
            meta=data.get("metadata") or {}, status="online",
        )
        db.session.add(agent)
        try:
            db.session.commit()
            return agent
        except IntegrityError as exc:
            db.session.rollback()
            if "agents.slug" not in violated_columns(exc):
                raise
            if explicit is not None:
                raise Conflict("slug_taken",
                               f"You already have an agent with slug {explicit!r}") from None
            # A concurrent create took the derived slug: derive again.
    raise Conflict("slug_taken", "Could not allocate a unique slug; retry")


@dataclass(frozen=True)
class AgentPage:
    agents: list[Agent]
    total: int
    limit: int
    offset: int


def list_agents(user_id: uuid.UUID, *, status: str | None, include_deleted: bool, limit: int,
                offset: int) -> AgentPage:
    """The user's agents, newest first; unknown ``status`` → ``400 invalid_status``."""
    query = select(Agent).where(Agent.user_id == user_id)
    if status is not None:
        if status not in AGENT_STATUSES:
            raise BadRequest("invalid_status",
                             f"status must be one of {', '.join(AGENT_STATUSES)}")
        query = query.where(Agent.status == status)
    if not include_deleted:
        query = query.where(Agent.deleted_at.is_(None))
    total = db.session.execute(
        select(func.count()).select_from(query.subquery())).scalar_one()
    agents = db.session.execute(
        query.order_by(Agent.created_at.desc(), Agent.id.desc()).limit(limit).offset(offset)
    ).scalars().all()
    return AgentPage(list(agents), total, limit, offset)


def get_agent(user_id: uuid.UUID, ref: str, *, include_deleted: bool = False) -> Agent:
    """One of the user's agents by id or slug address (others' agents → 404)."""
    return resolve_owned_agent(user_id, ref, include_deleted=include_deleted)


_UNSET = object()


def update_agent(user_id: uuid.UUID, ref: str, data: dict[str, Any]) -> Agent:
    """Apply a PATCH: ``webhook_url`` omitted = unchanged, ``None`` = clear URL and secret,
    a string = SSRF-check, set, and mint a secret if the agent has none."""
    agent = resolve_owned_agent(user_id, ref)
    if "display_name" in data:
        agent.display_name = data["display_name"]
    if "status" in data:
        agent.status = data["status"]
    if "metadata" in data:
        agent.meta = data["metadata"] if data["metadata"] is not None else {}
    url = data.get("webhook_url", _UNSET)
    if url is None:
        agent.webhook_url = None
        agent.webhook_secret = None
    elif url is not _UNSET:
        agent.webhook_url = _check_url(url)
        if not agent.webhook_secret:
            agent.webhook_secret = generate_webhook_secret()
    agent.updated_at = utcnow()
    db.session.commit()
    return agent


def delete_agent(user_id: uuid.UUID, ref: str) -> None:
    """Soft-delete the agent (``deleted_at`` set); a second delete is ``404``."""
    agent = resolve_owned_agent(user_id, ref)
    now = utcnow()
    agent.deleted_at = now
    agent.updated_at = now
    detach_agent_sessions(agent.id, now)  # a deleted agent holds no live session, label or cue
    db.session.commit()


def get_webhook_secret(user_id: uuid.UUID, ref: str) -> str:
    """The agent's push signing secret, or ``404 no_webhook_secret``."""
    agent = resolve_owned_agent(user_id, ref)
    db.session.rollback()
    if not agent.webhook_secret:
        raise NotFound("no_webhook_secret", "This agent has no webhook secret (no webhook_url)")
    return agent.webhook_secret


def regenerate_webhook_secret(user_id: uuid.UUID, ref: str, confirmed: bool) -> str:
    """Replace the agent's signing secret; needs confirmation and a webhook URL."""
    if not confirmed:
        raise BadRequest("confirmation_required",
                         "Regenerating invalidates the current secret; send the header "
                         "X-Confirm-Destructive: true to confirm")
    agent = resolve_owned_agent(user_id, ref)
    if not agent.webhook_url:
        db.session.rollback()
        raise Conflict("no_webhook_url", "This agent has no webhook_url to sign pushes for")
    agent.webhook_secret = generate_webhook_secret()
    agent.updated_at = utcnow()
    db.session.commit()
    return agent.webhook_secret


# ---------------------------------------------------------------------------------------------
# Roster

def _relative(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 60:
        return "active now"
    if seconds < 3600:
        return f"{int(seconds // 60)}m ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h ago"
    return f"{int(seconds // 86400)}d ago"


def _presence(agent: Agent, now: datetime) -> tuple[bool, str, float | None]:
    """(online, status, seconds since last seen) as the roster derives them."""
    age = (now - agent.last_seen_at).total_seconds() if agent.last_seen_at else None
    if agent.status in ("away", "offline"):
        return False, agent.status, age
    if age is not None and age <= ONLINE_WITHIN:
        return True, "online", age
    if age is not None and age <= AWAY_WITHIN:
        return False, "away", age
    return False, "offline", age


@dataclass(frozen=True)
class Roster:
    body: dict[str, Any]
    etag: str


def roster(user_id: uuid.UUID) -> Roster:
    """A directory snapshot of the user's live agents (sorted by slug) and its weak ETag."""
    now = utcnow()
    agents = db.session.execute(
        select(Agent).where(Agent.user_id == user_id, Agent.deleted_at.is_(None))
        .order_by(Agent.slug)
    ).scalars().all()
    entries, material = [], []
    for agent in agents:
        online, status, age = _presence(agent, now)
        description = agent.meta.get("description") if isinstance(agent.meta, dict) else None
        entry = {
            "name": agent.slug,
            "display_name": agent.display_name,
            "description": description if isinstance(description, str) else None,
            "online": online,
            "last_seen_relative": _relative(age),
            "preferred_contact": "sync" if agent.webhook_url else "async",
            "status": status,
        }
        entries.append(entry)
        bucket = (int(agent.last_seen_at.timestamp()) // ETAG_BUCKET_SECONDS
                  if agent.last_seen_at else None)
        material.append([agent.id, entry["name"], entry["display_name"], entry["description"],
                         entry["preferred_contact"], agent.status, bucket])
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]
    return Roster({"generated_at": now, "agents": entries}, f'W/"{digest}"')


#: ``last_seen_at`` moves at most this often per agent.  Presence is minutes wide (online while
#: seen in the last 300 s), and every bump is a write to the agent's row that concurrent sends
#: from the same agent would queue behind until their transactions commit.
PRESENCE_RESOLUTION = timedelta(seconds=30)


def touch_presence(agent: Agent, now: datetime) -> None:
    """Bump ``agent``'s ``last_seen_at`` to ``now`` (inside the caller's transaction) unless it
    moved less than :data:`PRESENCE_RESOLUTION` ago.  Presence is not an edit: ``updated_at``
    keeps its value."""
    if agent.last_seen_at is not None and now - agent.last_seen_at < PRESENCE_RESOLUTION:
        return
    db.session.execute(update(Agent).where(Agent.id == agent.id)
                       .values(last_seen_at=now, updated_at=Agent.updated_at))
