"""Quota checks and usage counting, kept out of route bodies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.users.models import User


@dataclass(frozen=True)
class UsageCounts:
    """Counts shown by ``GET /v1/auth/me``."""

    active_cues: int
    executions_this_month: int


def usage_counts(user: User) -> UsageCounts:
    """This month's counts for ``user``.

    Cues and executions do not exist until the scheduling primitive is installed, so both
    counts are zero here; the scheduling package replaces this with real queries.
    """
    return UsageCounts(active_cues=0, executions_this_month=0)
