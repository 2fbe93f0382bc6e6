"""Quota checks and usage counting, kept out of route bodies.

* :mod:`app.quotas.cues` — ``active_cue_limit`` and the monthly execution limit.
* :mod:`app.quotas.routes` — ``GET /v1/usage`` (mounted even without the cue primitive).
* :func:`usage_counts` — the counts of ``GET /v1/auth/me``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, func, select

from app.auth.identity import CallerExtras

if TYPE_CHECKING:
    from app.users.models import User


@dataclass(frozen=True)
class UsageCounts:
    """Counts shown by ``GET /v1/auth/me``."""

    active_cues: int
    executions_this_month: int


def usage_counts(user: User) -> UsageCounts:
    """This month's counts for ``user``.

    ``active_cues`` counts cues in status ``active`` only (``paused`` ones count against the
    quota but not here, as upstream does); ``executions_this_month`` is the monthly execution
    counter (successful webhook deliveries this UTC month).
    """
    from app.auth.identity import caller_extras
    from app.db import utcnow
    from app.extensions import db
    from app.quotas.cues import month_key

    row = caller_extras(USAGE_WITH_CALLER.name, user.id)
    if row is None:  # not read with the caller's row (a session, a service key's subject)
        row = db.session.execute(_counts_statement(),
                                 {"user_id": user.id, "month": month_key(utcnow())}).one()
    return UsageCounts(active_cues=int(row[0] or 0), executions_this_month=int(row[1] or 0))


def _usage_columns() -> tuple:
    """Both counts as scalar subqueries correlated to ``users.id`` (for the caller's lookup)."""
    from app.scheduling.models import Cue, ExecutionUsage
    from app.users.models import User

    cues, usage, users = Cue.__table__.c, ExecutionUsage.__table__.c, User.__table__.c
    active = (select(func.count()).select_from(Cue.__table__)
              .where(cues.user_id == users.id, cues.status == "active").scalar_subquery())
    executions = (select(usage.executions)
                  .where(usage.user_id == users.id, usage.month == bindparam("usage_month"))
                  .scalar_subquery())
    return active, executions


def _usage_params() -> dict:
    from app.db import utcnow
    from app.quotas.cues import month_key

    return {"usage_month": month_key(utcnow())}


#: ``GET /v1/auth/me`` reads its counts with the caller's key lookup: one round trip, not two.
USAGE_WITH_CALLER = CallerExtras("usage", _usage_columns, _usage_params)


@cache
def _counts_statement():
    """Both counts in one round trip (``/v1/auth/me`` is the hottest authenticated read), built
    once: constructing this statement costs more than running it."""
    from app.scheduling.models import Cue, ExecutionUsage

    # Table columns, not ORM attributes: a plain Core statement skips the ORM's execution path.
    cues, usage = Cue.__table__.c, ExecutionUsage.__table__.c
    active = (select(func.count()).select_from(Cue.__table__)
              .where(cues.user_id == bindparam("user_id"), cues.status == "active")
              .scalar_subquery())
    executions = (select(usage.executions)
                  .where(usage.user_id == bindparam("user_id"),
                         usage.month == bindparam("month")).scalar_subquery())
    return select(active, executions)
