"""Schedule arithmetic: time zones, cron expressions and the next run of a cue.

Cron expressions are evaluated by ``croniter`` in the cue's IANA time zone (so ``0 9 * * *`` in
``Europe/Paris`` follows daylight saving); every stored time is UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from app.errors import AppError, BadRequest

MAX_CRON_LENGTH = 255


def as_utc(value: datetime) -> datetime:
    """A timezone-aware UTC datetime; naive input is taken to be UTC (wire §1.5)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def zone(name: str) -> ZoneInfo:
    """The ``ZoneInfo`` for ``name`` or ``422 invalid_timezone``."""
    try:
        if not name or "\x00" in name or len(name) > 64:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise AppError("invalid_timezone", f"Unknown timezone {name!r}; use an IANA name such "
                       "as 'UTC' or 'Europe/Paris'", 422) from None


def check_cron(expression: str | None) -> str:
    """Return ``expression`` stripped if croniter accepts it, else ``400 invalid_schedule``."""
    if not expression or not isinstance(expression, str) or not expression.strip():
        raise BadRequest("invalid_schedule", "schedule.cron is required for recurring cues")
    expression = " ".join(expression.split())
    if len(expression) > MAX_CRON_LENGTH or not croniter.is_valid(expression):
        raise BadRequest("invalid_schedule", f"schedule.cron {expression!r} is not a valid cron "
                         "expression (5 fields, optionally a 6th for seconds)")
    return expression


def next_cron_time(expression: str, timezone: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` matching ``expression`` in ``timezone`` (UTC)."""
    local = as_utc(after).astimezone(zone(timezone))
    try:
        result = croniter(expression, local).get_next(datetime)
    except (CroniterError, ValueError, KeyError) as exc:
        raise BadRequest("invalid_schedule",
                         f"schedule.cron {expression!r} never matches a time") from exc
    return as_utc(result)


def latest_cron_times(expression: str, timezone: str, start: datetime, end: datetime,
                      limit: int) -> list[datetime]:
    """The ``limit`` most recent matching times in ``[start, end]`` (UTC), oldest first.

    Walks backwards from ``end`` so a cue that fell a million slots behind costs ``limit``
    steps, not a million.
    """
    start, end = as_utc(start), as_utc(end)
    local_end = (end + timedelta(microseconds=1)).astimezone(zone(timezone))
    times: list[datetime] = []
    try:
        iterator = croniter(expression, local_end)
        while len(times) < limit:
            current = as_utc(iterator.get_prev(datetime))
            if current < start:
                break
            times.append(current)
    except (CroniterError, ValueError, KeyError) as exc:
        raise BadRequest("invalid_schedule",
                         f"schedule.cron {expression!r} never matches a time") from exc
    return sorted(times)
