"""The options of a manual fire beyond ``send_at`` (a Cueline extension; upstream core drops
them): ``payload_override`` with ``merge_strategy``, and ``idempotency_key``.

* ``payload_override`` is stored on the execution (never on the cue) with its strategy:
  ``merge`` (the default) shallow-merges it over the cue's payload, the override winning on
  each key; ``replace`` delivers the override alone.  The combined payload obeys the cue
  payload rules (JSON, no NUL, at most 1 MiB); it is what the webhook body and the claimable
  listing carry (:func:`app.scheduling.models.effective_payload`).
* ``idempotency_key`` (≤256 characters) makes a fire safe to retry: within
  :data:`IDEMPOTENCY_WINDOW` the same key on the same cue with the same options returns the
  execution the first fire created, and different options are ``409
  idempotency_key_conflict``.  Uniqueness is the primary key of ``fire_idempotency_keys``, so
  concurrent fires with one key create one execution; a key older than the window is free again.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

from sqlalchemy import delete

from app.errors import Conflict
from app.extensions import db
from app.scheduling.models import Execution, FireIdempotencyKey

IDEMPOTENCY_WINDOW = timedelta(hours=24)
MAX_IDEMPOTENCY_KEY = 256


def fingerprint(payload_override: dict | None, merge_strategy: str | None,
                send_at: datetime | None) -> str:
    """SHA-256 over the options that must match for a replay (``send_at`` normalised to UTC)."""
    material = {"payload_override": payload_override, "merge_strategy": merge_strategy,
                "send_at": send_at.isoformat() if send_at is not None else None}
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def replayed_fire(cue_id: str, key: str, digest: str, now: datetime) -> Execution | None:
    """The execution an earlier fire with ``key`` created, while the key is in its window.

    ``None`` when the key is unused or its window passed (the spent row is deleted then, so
    the key can be used again); ``409 idempotency_key_conflict`` when the options differ.
    """
    row = db.session.get(FireIdempotencyKey, (cue_id, key))
    if row is None:
        return None
    if row.created_at <= now - IDEMPOTENCY_WINDOW:
        db.session.execute(
            delete(FireIdempotencyKey)
            .where(FireIdempotencyKey.cue_id == cue_id, FireIdempotencyKey.key == key,
                   FireIdempotencyKey.created_at <= now - IDEMPOTENCY_WINDOW)
            .execution_options(synchronize_session=False))
        db.session.expunge(row)
        return None
    if row.fingerprint != digest:
        raise Conflict("idempotency_key_conflict",
                       "This idempotency_key was already used to fire this cue with different "
                       "options in the last 24 hours; use a new key for a new fire")
    return db.session.get(Execution, row.execution_id)


def key_row(cue_id: str, key: str, digest: str, execution_id, now: datetime
            ) -> FireIdempotencyKey:
    """The row that spends ``key`` on ``execution_id`` (added in the execution's transaction)."""
    return FireIdempotencyKey(cue_id=cue_id, key=key, execution_id=execution_id,
                              fingerprint=digest, created_at=now)


def is_key_violation(columns: set[str]) -> bool:
    """True when a unique violation's columns are a fire idempotency key's."""
    return "fire_idempotency_keys.key" in columns


def prune_keys(now: datetime) -> int:
    """Delete the keys whose window passed (one indexed statement); return how many."""
    result = db.session.execute(
        delete(FireIdempotencyKey)
        .where(FireIdempotencyKey.created_at <= now - IDEMPOTENCY_WINDOW)
        .execution_options(synchronize_session=False))
    db.session.commit()
    return result.rowcount or 0
