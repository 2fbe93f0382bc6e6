"""Bulk user sync (``PUT /v1/internal/users``): up to 1,000 users per call, per-item results.

Built for nightly identity-provider syncs, so it works in a constant number of statements per
call rather than per user: one read of the existing rows (locked on PostgreSQL), one read of the
emails and slugs in use, one multi-row insert, one executemany update.  Every item is validated
and checked on its own; valid items are applied even when others fail.

If the fast path meets a concurrent writer (a unique violation, or a row inserted between the
read and the insert), the transaction is rolled back and the items are applied one by one with
the single upsert, which handles those races itself — slower, never wrong.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from app.auth.tokens import (
    generate_api_key,
    generate_webhook_secret,
    hash_secret,
    key_prefix,
)
from app.db import dialect_name, utcnow
from app.errors import AppError
from app.extensions import db
from app.users.models import User
from app.users.schemas import InternalUserUpsertSchema
from app.users.services import (
    OPTIONAL_UPSERT_FIELDS,
    normalize_email,
    upsert_internal_user,
)

CREATED, UPDATED, UNCHANGED, ERROR = "created", "updated", "unchanged", "error"


@dataclass
class _Item:
    index: int
    raw_id: Any
    user_id: uuid.UUID | None = None
    data: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None

    def fail(self, code: str, message: str, **extra: Any) -> None:
        self.result = {"id": self.raw_id, "status": ERROR,
                       "error": {"code": code, "message": message, **extra}}

    def done(self, status: str) -> None:
        self.result = {"id": str(self.user_id), "status": status}


def _parse(index: int, raw: Any, schema: InternalUserUpsertSchema) -> _Item:
    """Validate one item as the single upsert would (id, then body)."""
    if not isinstance(raw, dict):
        item = _Item(index, None)
        item.fail("validation_error", f"users[{index}] must be an object")
        return item
    item = _Item(index, raw.get("id"))
    try:
        item.user_id = uuid.UUID(str(raw.get("id")))
    except ValueError:
        item.fail("invalid_user_id", f"users[{index}].id must be a UUID")
        return item
    try:
        item.data = schema.load({k: v for k, v in raw.items() if k != "id"})
    except ValidationError as exc:
        details = [{"field": f"users[{index}].{name}", "message": " ".join(map(str, msgs))}
                   for name, msgs in exc.normalized_messages().items()]
        item.fail("validation_error",
                  "; ".join(f"{d['field']}: {d['message']}" for d in details), details=details)
    return item


def _changes(item: _Item, owner: str | None) -> dict[str, Any]:
    """The columns this item sets (email and slug always; optional fields when non-null)."""
    data = item.data
    values = {"email": normalize_email(data["email"]), "slug": data["slug"]}
    values.update({k: data[k] for k in OPTIONAL_UPSERT_FIELDS if data.get(k) is not None})
    if data.get("active") is not None:
        values["active"] = data["active"]
    if owner is not None:
        values["external_owner"] = owner
    return values


def sync_users(raw_items: Sequence[Any], owner: str | None = None) -> dict[str, Any]:
    """Create, update or leave unchanged each described user; return per-item results in order.

    Same rules per item as :func:`app.users.services.upsert_internal_user` (including the owner
    binding when ``owner`` is set); an item repeating an earlier item's id is an error
    (``duplicate_user_id``).  Returns ``{"results": [...], "summary": {...}}``.
    """
    schema = InternalUserUpsertSchema()
    items = [_parse(i, raw, schema) for i, raw in enumerate(raw_items)]
    seen: set[uuid.UUID] = set()
    for item in items:
        if item.result is None:
            if item.user_id in seen:
                item.fail("duplicate_user_id", f"users[{item.index}] repeats the id of an "
                                               "earlier item in this call")
            seen.add(item.user_id)
    pending = [item for item in items if item.result is None]
    if pending:
        try:
            _apply_in_bulk(pending, owner)
        except _Retry:
            db.session.rollback()
            _apply_one_by_one(pending, owner)
    results = [item.result for item in items]
    summary = {status: 0 for status in (CREATED, UPDATED, UNCHANGED, ERROR)}
    for result in results:
        summary[result["status"]] += 1
    return {"results": results, "summary": summary}


class _Retry(Exception):
    """The fast path met a concurrent writer; apply the items one by one instead."""


def _apply_in_bulk(items: list[_Item], owner: str | None) -> None:
    ids = [item.user_id for item in items]
    query = select(User).where(User.id.in_(ids))
    if dialect_name() == "postgresql":
        query = query.with_for_update()
    existing = {user.id: user for user in db.session.scalars(query)}
    changes = {item.index: _changes(item, owner) for item in items}
    emails = {c["email"] for c in changes.values()}
    slugs = {c["slug"] for c in changes.values()}
    email_holder: dict[str, uuid.UUID] = {}
    slug_holder: dict[str, uuid.UUID] = {}
    for user_id, email, slug in db.session.execute(
            select(User.id, User.email, User.slug)
            .where(or_(User.email.in_(emails), User.slug.in_(slugs)))):
        email_holder[email] = user_id
        slug_holder[slug] = user_id

    now = utcnow()
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for item in items:
        values = changes[item.index]
        user = existing.get(item.user_id)
        if user is not None and owner is not None and user.external_owner != owner:
            item.fail("user_owned_by_another_owner",
                      "This user id belongs to another owner")
            continue
        if email_holder.get(values["email"], item.user_id) != item.user_id:
            item.fail("email_taken", "Another user already has this email")
            continue
        if slug_holder.get(values["slug"], item.user_id) != item.user_id:
            item.fail("slug_taken", "Another user already has this slug")
            continue
        # Later items see this item's email and slug as taken, and its old ones as free.
        if user is not None:
            email_holder.pop(user.email, None)
            slug_holder.pop(user.slug, None)
        email_holder[values["email"]] = item.user_id
        slug_holder[values["slug"]] = item.user_id
        if user is None:
            stub_key = generate_api_key()
            inserts.append({**OPTIONAL_UPSERT_FIELDS, "active": True, **values,
                            "id": item.user_id, "api_key_hash": hash_secret(stub_key),
                            "api_key_prefix": key_prefix(stub_key),
                            "webhook_secret": generate_webhook_secret(),
                            "created_at": now, "updated_at": now})
            item.done(CREATED)
        elif all(getattr(user, column) == value for column, value in values.items()):
            item.done(UNCHANGED)
        else:
            updates.append({"id": item.user_id, **values, "updated_at": now})
            item.done(UPDATED)

    try:
        if inserts:
            dialect = postgresql if dialect_name() == "postgresql" else sqlite
            # One statement compiled once; SQLAlchemy batches the rows into multi-row VALUES.
            columns = sorted({key for row in inserts for key in row})
            stmt = (dialect.insert(User.__table__)
                    .on_conflict_do_nothing(index_elements=["id"])
                    .returning(User.__table__.c.id))
            inserted = set(db.session.scalars(
                stmt, [{c: row.get(c) for c in columns} for row in inserts]))
            if len(inserted) != len(inserts):
                raise _Retry()  # a concurrent upsert created one of these ids meanwhile
        if updates:
            db.session.execute(update(User), updates)
        db.session.commit()
    except IntegrityError:
        raise _Retry() from None


def _apply_one_by_one(items: list[_Item], owner: str | None) -> None:
    """The slow, race-proof path: each item in its own transaction via the single upsert."""
    for item in items:
        if item.result is not None and item.result["status"] == ERROR:
            continue
        before = db.session.get(User, item.user_id, populate_existing=True)
        snapshot = (None if before is None else
                    {c: getattr(before, c) for c in _changes(item, owner)})
        try:
            _user, created = upsert_internal_user(item.user_id, item.data, owner=owner)
        except AppError as exc:
            item.fail(exc.code, exc.message)
            continue
        if created:
            item.done(CREATED)
        elif snapshot == _changes(item, owner):
            item.done(UNCHANGED)
        else:
            item.done(UPDATED)
