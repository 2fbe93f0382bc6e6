"""``GET /v1/usage`` — mounted in every packaging, including ``DISABLE_CUE_PRIMITIVE=true`` —
and the ``X-CueAPI-Usage-Warning`` header on authenticated responses (wire §1.7)."""

from __future__ import annotations

import logging
import threading
import time

import marshmallow as ma
from flask import g
from flask.views import MethodView

from app.api import Blueprint
from app.auth import auth_required, current_identity
from app.quotas.usage import usage_report
from app.db import read_only

log = logging.getLogger(__name__)

#: Share of ``monthly_execution_limit`` from which responses carry the usage warning.
USAGE_WARNING_SHARE = 0.8

blp = Blueprint("usage", __name__, url_prefix="/v1", description="Plan usage this month.")


class UsageSchema(ma.Schema):
    """Usage this month (wire §12.1); ``period``, ``cues.active`` and ``executions.percentage``
    are deprecated aliases kept for older clients."""

    plan = ma.fields.String()
    billing_period = ma.fields.Dict()
    period = ma.fields.Dict()
    cues = ma.fields.Dict()
    executions = ma.fields.Dict()
    outcomes = ma.fields.Dict()
    rate_limit = ma.fields.Dict()
    upgrade_url = ma.fields.String(allow_none=True)


@blp.route("/usage")
class Usage(MethodView):
    @read_only
    @auth_required
    @blp.response(200, UsageSchema)
    def get(self):
        """Your plan, limits and usage this month."""
        from app.ratelimit import current_usage

        return usage_report(current_identity.user, current_usage())


#: How long a worker process reuses a user's monthly execution count for the warning header.
USAGE_WARNING_TTL_SECONDS = 10.0
_usage_cache: dict[tuple, tuple[float, int]] = {}
_usage_cache_lock = threading.Lock()


def _cached_executions(user_id, now) -> int:
    """This month's execution count, re-read at most every ``USAGE_WARNING_TTL_SECONDS``.

    The warning header is advisory, so a few seconds of staleness is fine, and it spares every
    authenticated request a database round trip.
    """
    from app.quotas.cues import executions_this_month, month_key

    key = (user_id, month_key(now))
    tick = time.monotonic()
    with _usage_cache_lock:
        cached = _usage_cache.get(key)
    if cached is not None and tick - cached[0] < USAGE_WARNING_TTL_SECONDS:
        return cached[1]
    count = executions_this_month(user_id, now)
    with _usage_cache_lock:
        if len(_usage_cache) > 10_000:
            _usage_cache.clear()
        _usage_cache[key] = (tick, count)
    return count


@blp.after_app_request
def _usage_warning(response):
    """``X-CueAPI-Usage-Warning: approaching_limit`` once a caller has used 80 % of this
    month's executions, so clients learn before deliveries stop."""
    identity = g.get("identity")
    user = getattr(identity, "user", None)
    if user is None or response.status_code >= 500:
        return response
    from app.db import utcnow
    from app.quotas.cues import quotas_enforced

    try:
        limit = user.monthly_execution_limit
        if quotas_enforced() and limit > 0 and \
                _cached_executions(user.id, utcnow()) >= USAGE_WARNING_SHARE * limit:
            response.headers["X-CueAPI-Usage-Warning"] = "approaching_limit"
    except Exception as exc:  # noqa: BLE001 - a warning header must never break a response
        log.warning("usage warning skipped: %s", type(exc).__name__)
    return response
