"""``GET /v1/usage`` — mounted in every packaging, including ``DISABLE_CUE_PRIMITIVE=true``."""

from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView

from app.api import Blueprint
from app.auth import auth_required, current_identity
from app.quotas.usage import usage_report

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
