"""``GET /v1/usage``: this month's cue, execution and outcome counts against the plan limits."""

from __future__ import annotations

import calendar
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select

from app.db import utcnow
from app.extensions import db
from app.quotas.cues import counted_cues, executions_this_month
from app.scheduling.models import Cue, Execution
from app.users.models import User


def _percent(used: int, limit: int) -> float:
    return (used / limit * 100.0) if limit > 0 else 0.0


def _month_bounds(now: datetime) -> tuple[date, date, datetime]:
    first = now.date().replace(day=1)
    last = first.replace(day=calendar.monthrange(first.year, first.month)[1])
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return first, last, start


def outcome_counts(user: User, month_start: datetime) -> dict[str, int]:
    """This month's executions of the user's cues: reported / succeeded / failed outcomes.

    ``failed`` also counts ``failed`` and ``missed`` executions that never got an outcome.
    """
    reported = Execution.outcome_state.is_not(None)
    succeeded = Execution.outcome_state.in_(("reported_success", "verified_success",
                                             "verification_pending"))
    failed = or_(Execution.outcome_state.in_(("reported_failure", "verification_failed")),
                 and_(Execution.outcome_state.is_(None),
                      Execution.status.in_(("failed", "missed"))))
    row = db.session.execute(
        select(func.coalesce(func.sum(case((reported, 1), else_=0)), 0),
               func.coalesce(func.sum(case((succeeded, 1), else_=0)), 0),
               func.coalesce(func.sum(case((failed, 1), else_=0)), 0))
        .select_from(Execution).join(Cue, Cue.id == Execution.cue_id)
        .where(Cue.user_id == user.id, Execution.created_at >= month_start)).one()
    return {"reported": int(row[0]), "succeeded": int(row[1]), "failed": int(row[2])}


def usage_report(user: User, rate_usage: int, now: datetime | None = None) -> dict[str, Any]:
    """The body of ``GET /v1/usage`` (wire §12.1) for ``user`` at ``now``.

    ``cues.used`` counts ``active`` + ``paused`` cues (what ``active_cue_limit`` is checked
    against); ``GET /v1/auth/me``'s ``active_cues`` counts ``active`` only, as upstream does.

    With ``DISABLE_QUOTA_ENFORCEMENT=true`` nothing is limited, and the report says so instead
    of showing the plan's numbers as if they applied: each ``limit`` is ``0`` (the wire rule
    already reads a limit ≤ 0 as "none": ``percent_used`` 0, and the ``cueapi`` CLI and SDK
    treat it the same way), ``remaining`` is ``null``, ``unlimited`` is ``true``, and
    ``will_exceed_limit`` is ``false``.  The counts are reported either way.
    """
    from app.quotas.cues import quotas_enforced

    now = now or utcnow()
    enforced = quotas_enforced()
    first, last, month_start = _month_bounds(now)
    days_in_month = last.day
    days_elapsed = now.day
    cues_used = counted_cues(user.id)
    executions_used = executions_this_month(user.id, now)
    cue_limit = user.active_cue_limit if enforced else 0
    execution_limit = user.monthly_execution_limit if enforced else 0
    projected = round(executions_used / days_elapsed * days_in_month) if days_elapsed else 0
    period = {"start": first.isoformat(), "end": last.isoformat()}
    return {
        "plan": user.plan,
        "billing_period": period | {"days_remaining": days_in_month - now.day},
        "period": dict(period),
        "cues": {"used": cues_used, "active": cues_used, "limit": cue_limit,
                 "remaining": max(cue_limit - cues_used, 0) if enforced else None,
                 "percent_used": round(_percent(cues_used, cue_limit)),
                 "unlimited": not enforced},
        "executions": {"used": executions_used, "limit": execution_limit,
                       "remaining": max(execution_limit - executions_used, 0) if enforced
                       else None,
                       "percent_used": round(_percent(executions_used, execution_limit)),
                       "percentage": round(_percent(executions_used, execution_limit), 1),
                       "projected_month_end": projected,
                       "will_exceed_limit": enforced and projected > execution_limit,
                       "unlimited": not enforced},
        "outcomes": outcome_counts(user, month_start),
        "rate_limit": {"requests_per_minute": user.rate_limit_per_minute,
                       "current_usage": rate_usage},
        "upgrade_url": None,
    }
