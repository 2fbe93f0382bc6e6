"""``GET /v1/usage`` — mounted in every packaging, including ``DISABLE_CUE_PRIMITIVE=true`` —
and the ``X-CueAPI-Usage-Warning`` header on authenticated responses (wire §1.7)."""

from __future__ import annotations

import logging

import marshmallow as ma
from flask import g
from flask.views import MethodView

from app.api import Blueprint
from app.auth import auth_required, current_identity
from app.quotas.usage import usage_report

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
    @auth_required
    @blp.response(200, UsageSchema)
    def get(self):
        """Your plan, limits and usage this month."""
        from app.ratelimit import current_usage

        return usage_report(current_identity.user, current_usage())


@blp.after_app_request
def _usage_warning(response):
    """``X-CueAPI-Usage-Warning: approaching_limit`` once a caller has used 80 % of this
    month's executions, so clients learn before deliveries stop."""
    identity = g.get("identity")
    user = getattr(identity, "user", None)
    if user is None or response.status_code >= 500:
        return response
    from app.db import utcnow
    from app.quotas.cues import executions_this_month, quotas_enforced

    try:
        limit = user.monthly_execution_limit
        if quotas_enforced() and limit > 0 and \
                executions_this_month(user.id, utcnow()) >= USAGE_WARNING_SHARE * limit:
            response.headers["X-CueAPI-Usage-Warning"] = "approaching_limit"
    except Exception as exc:  # noqa: BLE001 - a warning header must never break a response
        log.warning("usage warning skipped: %s", type(exc).__name__)
    return response
