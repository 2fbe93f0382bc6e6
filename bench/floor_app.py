"""The floors of the chosen stack, served exactly like Cueline.

``/floor`` does only what any authenticated endpoint on this stack must: look the caller's key
up through Flask-SQLAlchemy's ORM and count the request against the caller's own bucket with
Cueline's limiter (one call to ``RATELIMIT_STORAGE_URI``, ``memory://`` unless set: one
``EVALSHA`` on Redis; limit headers), as Cueline does — no business logic, no schema, no error
envelope.  Its ratio to the bare ceiling bounds what any
endpoint built on these libraries can reach on the same machine.

``POST /floor-message`` is that floor for a message send: the caller's key lookup also reads the
two agents the send names (as Cueline's does), the same ownership checks, then Cueline's own
write statement (the message, its ``message.delivered`` event and its monthly counter in one
statement, no transaction) and the message as JSON — no schema, idempotency, authorization
backend or hooks.

``GET /floor-cues?limit=20`` is that floor for a page of cues: the caller's key lookup also reads
the page (a LATERAL subquery of the caller's newest cues, the user's cue counter joined in, as
Cueline reads them: one statement), then every cue as the wire's JSON object built by hand —
no schema, query validation or hooks.

``PUT /floor-upsert/<id>`` runs the statement of Cueline's ``PUT /v1/internal/users/{id}`` (the
same upsert, built once, without a transaction) through the Flask-SQLAlchemy session and
answers with the row as JSON: no credential check, body validation, response schema, audit
trail or other request hooks.  It is what that endpoint costs before any of its features.
"""

import functools
import hashlib
import os
import secrets
import uuid
from datetime import UTC, date, datetime, timedelta

from flask import Flask, g, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String, Uuid, bindparam, select, true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.ratelimit import Bucket, RequestLimiter


class Base(DeclarativeBase):
    pass


orm = SQLAlchemy(model_class=Base)


class User(orm.Model):
    """The columns of Cueline's ``users`` table this route reads."""

    __tablename__ = "users"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    slug: Mapped[str] = mapped_column(String)
    plan: Mapped[str] = mapped_column(String)
    api_key_hash: Mapped[str] = mapped_column(String(64))
    rate_limit_per_minute: Mapped[int]


app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get("DATABASE_URL", "sqlite://")
orm.init_app(app)


def _user():
    if "user" not in g:
        token = (request.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        digest = hashlib.sha256(token.encode()).hexdigest()
        # Without a transaction, as Cueline runs its reads: no BEGIN or ROLLBACK round trips.
        orm.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        if request.path == "/floor-cues":
            rows = orm.session.execute(_user_and_page(), {
                "key_hash": digest, "limit": request.args.get("limit", 50, type=int),
                "offset": request.args.get("offset", 0, type=int)}).all()
            g.user, g.page = (rows[0][0], rows) if rows else (None, [])
        elif request.path == "/floor-message":
            row = orm.session.execute(_user_and_agents(), {
                "key_hash": digest, "sender": request.headers.get("X-Cueapi-From-Agent"),
                "recipient": (request.get_json(silent=True) or {}).get("to")}).first()
            g.user, g.agents = (row[0], row[1:]) if row is not None else (None, None)
        else:
            g.user = orm.session.execute(
                select(User).where(User.api_key_hash == digest)).scalar_one_or_none()
    return g.user


@functools.cache
def _user_and_agents():
    """The caller's row and the two agents a send names, in one statement (as Cueline reads
    them), as plain columns."""
    from app.messaging.models import Agent

    sender, recipient = Agent.__table__.alias("sender"), Agent.__table__.alias("recipient")
    return (select(User, sender.c.id, sender.c.user_id, sender.c.deleted_at,
                   recipient.c.id, recipient.c.user_id, recipient.c.deleted_at,
                   recipient.c.webhook_url)
            .select_from(User)
            .outerjoin(sender, sender.c.id == bindparam("sender", type_=String()))
            .outerjoin(recipient, recipient.c.id == bindparam("recipient", type_=String()))
            .where(User.api_key_hash == bindparam("key_hash")))


@functools.cache
def _user_and_page():
    """The caller's row with a page of their cues and their cue total, in one statement."""
    from app.scheduling.models import Cue, UserCueTotal

    cues, totals = Cue.__table__, UserCueTotal.__table__
    page = (select(cues).where(cues.c.user_id == User.id)
            .order_by(cues.c.created_at.desc(), cues.c.id.desc())
            .limit(bindparam("limit")).offset(bindparam("offset")).lateral("page"))
    return (select(User, *page.c, totals.c.cues).select_from(User).join(page, true())
            .outerjoin(totals, totals.c.user_id == User.id)
            .where(User.api_key_hash == bindparam("key_hash")))


app.config.update(RATELIMIT_ENABLED=True,
                  RATELIMIT_STORAGE_URI=os.environ.get("RATELIMIT_STORAGE_URI", "memory://"))
limiter = RequestLimiter(app)


@app.before_request
def _limit():
    if request.path in ("/health",) or request.path.startswith("/floor-upsert/"):
        return None
    user = _user()
    bucket = (Bucket(f"user:{user.id}", user.rate_limit_per_minute, "user") if user is not None
              else Bucket(f"addr:{request.remote_addr}", 60, "address"))
    refused, windows = limiter.acquire([bucket])
    g.window = windows[0]
    if refused is not None:
        return {"error": {"code": "rate_limit_exceeded"}}, 429
    return None


@app.after_request
def _headers(response):
    window = g.get("window")
    if window is not None:
        response.headers["X-RateLimit-Limit"] = str(window.per_minute)
        response.headers["X-RateLimit-Remaining"] = str(window.remaining)
        response.headers["X-RateLimit-Reset"] = str(window.reset_at)
    return response


@app.get("/floor")
def floor():
    user = _user()
    if user is None:
        return {"error": {"code": "invalid_api_key"}}, 401
    return {"id": str(user.id), "slug": user.slug, "plan": user.plan}


def _iso(value):
    return value.isoformat() if value is not None else None


@app.get("/floor-cues")
def floor_cues():
    user = _user()
    if user is None:
        return {"error": {"code": "invalid_api_key"}}, 401
    cues = []
    for row in g.page:
        cue = row._mapping
        schedule = {"type": cue["schedule_type"], "timezone": cue["schedule_timezone"]}
        if cue["schedule_cron"] is not None:
            schedule["cron"] = cue["schedule_cron"]
        if cue["schedule_at"] is not None:
            schedule["at"] = _iso(cue["schedule_at"])
        cues.append({
            "id": cue["id"], "name": cue["name"], "description": cue["description"],
            "status": cue["status"], "transport": cue["transport"], "schedule": schedule,
            "callback": {"url": cue["callback_url"], "method": cue["callback_method"],
                         "headers": cue["callback_headers"] or {}},
            "payload": cue["payload"] or {},
            "retry": {"max_attempts": cue["retry_max_attempts"],
                      "backoff_minutes": cue["retry_backoff_minutes"]},
            "next_run": _iso(cue["next_run"]), "last_run": _iso(cue["last_run"]),
            "run_count": cue["run_count"], "fired_count": cue["fired_count"],
            "on_failure": cue["on_failure"],
            "verification": ({"mode": cue["verification_mode"]} if cue["verification_mode"]
                             else None),
            "warning": None, "created_at": _iso(cue["created_at"]),
            "updated_at": _iso(cue["updated_at"])})
    total = g.page[0][-1] if g.page else 0
    return {"cues": cues, "total": total, "limit": request.args.get("limit", 50, type=int),
            "offset": request.args.get("offset", 0, type=int)}


@app.get("/health")
def health():
    return {"status": "healthy"}


@app.put("/floor-upsert/<user_id>")
def floor_upsert(user_id):
    from app.users.services import OPTIONAL_UPSERT_FIELDS, _upsert_statement

    body = request.get_json()
    given = {k: body[k] for k in OPTIONAL_UPSERT_FIELDS if body.get(k) is not None}
    now = datetime.now(UTC)
    stub_key = "cue_sk_" + secrets.token_hex(16)
    values = {**OPTIONAL_UPSERT_FIELDS, "active": True, **given, "id": uuid.UUID(user_id),
              "email": body["email"], "slug": body["slug"],
              "api_key_hash": hashlib.sha256(stub_key.encode()).hexdigest(),
              "api_key_prefix": stub_key[:12], "webhook_secret": "whsec_" + secrets.token_hex(32),
              "created_at": now, "updated_at": now}
    orm.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    row = orm.session.execute(_upsert_statement("postgresql", tuple(sorted(given)), False),
                              {f"new_{k}": v for k, v in values.items()}).one()
    orm.session.commit()
    return {"id": str(row.id), "email": row.email, "slug": row.slug, "plan": row.plan,
            "active_cue_limit": row.active_cue_limit,
            "monthly_execution_limit": row.monthly_execution_limit,
            "monthly_message_limit": row.monthly_message_limit,
            "rate_limit_per_minute": row.rate_limit_per_minute,
            "external_owner": row.external_owner, "active": row.active,
            "created_at": row.created_at.isoformat(), "updated_at": row.updated_at.isoformat(),
            "created": False}


@app.post("/floor-message")
def floor_message():
    from app.events.emission import delivered_payload, with_inline_body
    from app.messaging.services.messages import _SENT_ATTRIBUTES

    user = _user()
    if user is None:
        return {"error": {"code": "invalid_api_key"}}, 401
    sender_id, sender_user, sender_deleted, to_id, to_user, to_deleted, to_hook = g.agents
    if sender_id is None or to_id is None or sender_deleted or to_deleted:
        return {"error": {"code": "agent_not_found"}}, 404
    if sender_user != user.id or to_user != user.id:
        return {"error": {"code": "cross_tenant_messaging_forbidden"}}, 403
    body = request.get_json()
    now = datetime.now(UTC)
    message_id = "msg_" + secrets.token_hex(6)
    values = dict.fromkeys(_SENT_ATTRIBUTES)
    values.update(id=message_id, user_id=user.id, to_user_id=to_user, from_agent_id=sender_id,
                  to_agent_id=to_id, thread_id=message_id, body=body["body"], priority=3,
                  requested_priority=3, expects_reply=False, delivery_state="queued", meta={},
                  dispatch_priority_bucket=3, created_at=now, push_attempts=0,
                  expires_at=now + timedelta(days=30), next_attempt_at=now if to_hook else None)
    params = {f"msg_{k}": v for k, v in values.items()}
    params.update(count_user_id=user.id, count_month=date(now.year, now.month, 1))
    event = delivered_payload(message_id=message_id, sender_agent_id=sender_id,
                              recipient_agent_id=to_id, thread_id=message_id, reply_to=None,
                              priority=3, correlation_id=None, subject=None)
    params.update(ev_type="message.delivered", ev_recipient=to_id, ev_payload=event,
                  ev_payload_inline=with_inline_body(event, body["body"]), ev_at=now,
                  ev_priority=3)
    orm.session.execute(_message_write(), params)
    orm.session.commit()
    return {"id": message_id, "from_agent_id": sender_id, "to_agent_id": to_id,
            "body": body["body"], "delivery_state": "queued", "priority": 3,
            "created_at": now.isoformat(), "expires_at": values["expires_at"].isoformat()}, 201


@functools.cache
def _message_write():
    from app.events.emission import _delivered_insert
    from app.messaging.services.messages import _message_insert
    from app.quotas.messages import _count_statement

    return _count_statement("postgresql").add_cte(
        _message_insert().cte("write_0"), _delivered_insert("postgresql").cte("write_1"))
