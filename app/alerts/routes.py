"""``GET /v1/alerts`` and the alert-webhook secret (``/v1/auth/alert-webhook-secret``)."""

from flask.views import MethodView

from app.alerts import services
from app.alerts.models import ALERT_TYPES
from app.alerts.schemas import (
    AlertListQuerySchema,
    AlertListSchema,
    AlertWebhookSecretSchema,
    RegeneratedAlertWebhookSecretSchema,
)
from app.api import Blueprint
from app.auth import auth_required, current_identity
from app.auth.routes import CONFIRM_HEADER, require_confirmation
from app.db import read_only
from app.errors import BadRequest

blp = Blueprint("alerts", __name__, description="Alerts raised by outcome reports.")

CONFIRM_DOC = {"in": "header", "name": CONFIRM_HEADER, "required": True,
               "schema": {"type": "string", "enum": ["true"]}}


def _alert_dict(alert) -> dict:
    return {"id": str(alert.id), "cue_id": alert.cue_id,
            "execution_id": str(alert.execution_id) if alert.execution_id else None,
            "alert_type": alert.alert_type, "severity": alert.severity,
            "message": alert.message, "metadata": alert.meta,
            "acknowledged": alert.acknowledged, "created_at": alert.created_at}


@blp.route("/v1/alerts")
class Alerts(MethodView):
    @read_only
    @auth_required
    @blp.arguments(AlertListQuerySchema, location="query")
    @blp.response(200, AlertListSchema)
    def get(self, query):
        """List your alerts, newest first."""
        alert_type = query.get("alert_type")
        if alert_type and alert_type not in ALERT_TYPES:
            raise BadRequest("invalid_filter",
                             f"alert_type must be one of: {', '.join(sorted(ALERT_TYPES))}")
        rows, total = services.list_alerts(
            current_identity.user_id, alert_type=alert_type, since=query.get("since"),
            limit=query["limit"], offset=query["offset"])
        return {"alerts": [_alert_dict(a) for a in rows], "total": total,
                "limit": query["limit"], "offset": query["offset"]}


@blp.route("/v1/auth/alert-webhook-secret")
class AlertWebhookSecret(MethodView):
    @auth_required
    @blp.response(200, AlertWebhookSecretSchema)
    def get(self):
        """The secret that signs this account's alert webhooks (created on first read)."""
        return {"alert_webhook_secret": services.alert_webhook_secret(current_identity.user)}


@blp.route("/v1/auth/alert-webhook-secret/regenerate")
class AlertWebhookSecretRegenerate(MethodView):
    @auth_required
    @blp.doc(parameters=[CONFIRM_DOC])
    @blp.response(200, RegeneratedAlertWebhookSecretSchema)
    def post(self):
        """Replace the alert-webhook signing secret (needs `X-Confirm-Destructive: true`)."""
        require_confirmation()
        secret = services.regenerate_alert_webhook_secret(current_identity.user)
        return {"alert_webhook_secret": secret, "previous_secret_revoked": True}
