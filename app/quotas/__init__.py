"""Quota checks and usage counting, kept out of route bodies.

* :mod:`app.quotas.cues` — ``active_cue_limit`` and the monthly execution limit.
* :mod:`app.quotas.routes` — ``GET /v1/usage`` (mounted even without the cue primitive).
* :func:`usage_counts` — the counts of ``GET /v1/auth/me``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import func, select

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
    from app.db import utcnow
    from app.extensions import db
    from app.quotas.cues import month_key
    from app.scheduling.models import Cue, ExecutionUsage

    # Both counts in one round trip: /v1/auth/me is the hottest authenticated read.
    active = (select(func.count()).select_from(Cue)
              .where(Cue.user_id == user.id, Cue.status == "active").scalar_subquery())
    executions = (select(ExecutionUsage.executions)
                  .where(ExecutionUsage.user_id == user.id,
                         ExecutionUsage.month == month_key(utcnow())).scalar_subquery())
    row = db.session.execute(select(active, executions)).one()
    return UsageCounts(active_cues=int(row[0] or 0), executions_this_month=int(row[1] or 0))
