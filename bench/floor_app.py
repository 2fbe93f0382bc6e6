"""The floor of the chosen stack for an authenticated read, served exactly like Cueline.

``/floor`` does only what any authenticated endpoint on this stack must: look the caller's key
up through Flask-SQLAlchemy's ORM and count the request against the caller's own Flask-Limiter
bucket (Cueline's in-memory storage, sliding-window counter, limit headers), as Cueline does —
no business logic, no schema, no error envelope.  Its ratio to the bare ceiling bounds what any
endpoint built on these libraries can reach on the same machine.
"""

import hashlib
import os
import uuid

from flask import Flask, g, request
from flask_limiter import Limiter
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String, Uuid, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import app.ratelimit as _cueline_ratelimit  # noqa: F401 - registers cueline-memory://


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
        g.user = orm.session.execute(
            select(User).where(User.api_key_hash == digest)).scalar_one_or_none()
    return g.user


def _bucket() -> str:
    user = _user()
    return f"user:{user.id}" if user is not None else f"addr:{request.remote_addr}"


def _limit() -> str:
    user = _user()
    return f"{user.rate_limit_per_minute if user is not None else 60} per minute"


limiter = Limiter(key_func=_bucket, app=app, application_limits=[_limit],
                  storage_uri="cueline-memory://", strategy="sliding-window-counter",
                  headers_enabled=True, retry_after="delta-seconds")


@app.get("/floor")
def floor():
    user = _user()
    if user is None:
        return {"error": {"code": "invalid_api_key"}}, 401
    return {"id": str(user.id), "slug": user.slug, "plan": user.plan}


@app.get("/health")
@limiter.exempt
def health():
    return {"status": "healthy"}
