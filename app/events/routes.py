"""``/v1/agents/{ref}/subscriptions`` and ``/v1/agents/{ref}/events`` (wire §11.1)."""

from flask import request
from marshmallow import RAISE
from flask.views import MethodView

from app.api import Blueprint
from app.auth import auth_required, current_identity
from app.db import read_only, single_statement
from app.events import schemas, services

blp = Blueprint("events", __name__, url_prefix="/v1/agents",
                description="Events and subscriptions: message.delivered, digests, turn passes "
                            "by pull or signed webhook.")


@blp.route("/<ref>/subscriptions")
class Subscriptions(MethodView):
    @auth_required
    @blp.arguments(schemas.SubscriptionCreateSchema)
    @blp.response(201, schemas.SubscriptionSchema)
    def post(self, body, ref):
        """Subscribe an agent to an event type; a webhook one shows its secret once."""
        subscription = services.create_subscription(current_identity.user_id, ref, body)
        return _shown(subscription, subscription.webhook_secret)

    @read_only
    @auth_required
    @blp.response(200, schemas.SubscriptionListSchema)
    def get(self, ref):
        """The agent's active subscriptions, oldest first."""
        subscriptions = services.list_subscriptions(current_identity.user_id, ref)
        return {"subscriptions": [_shown(s, None) for s in subscriptions]}


@blp.route("/<ref>/subscriptions/<subscription_id>")
class SubscriptionById(MethodView):
    @single_statement
    @auth_required
    @blp.response(200, schemas.DetachedSchema)
    def delete(self, ref, subscription_id):
        """Detach a subscription (idempotent)."""
        services.detach_subscription(current_identity.user_id, ref, subscription_id)
        return {"detached": True}


@blp.route("/<ref>/subscriptions/<subscription_id>/ack")
class SubscriptionAck(MethodView):
    @auth_required
    @blp.arguments(schemas.AckSchema)
    @blp.response(200, schemas.AckedSchema)
    def patch(self, body, ref, subscription_id):
        """Acknowledge events up to an id (the watermark never moves back)."""
        services.acknowledge(current_identity.user_id, ref, subscription_id,
                             body["acked_event_id"])
        return {"acked": True}


@blp.route("/<ref>/events")
class Events(MethodView):
    @single_statement
    @auth_required
    @blp.arguments(schemas.EventQuerySchema, location="query", unknown=RAISE)
    @blp.response(200, schemas.EventPageSchema)
    def get(self, query, ref):
        """Pull the agent's events after a cursor; wait=long waits up to 30 s for one."""
        page = services.pull_events(
            current_identity.user_id, ref, since=query["since"], limit=query["limit"],
            event_type=query.get("event_type"), wait=query.get("wait") == "long",
            # Only a threaded server can keep serving others while this request waits.
            can_wait=bool(request.environ.get("wsgi.multithread")))
        return page.as_body()


def _shown(subscription, secret):
    """The subscription as responses show it: URL redacted, secret only where revealed."""
    return {
        "id": subscription.id, "subscriber_agent_id": subscription.subscriber_agent_id,
        "event_type": subscription.event_type, "delivery_target": subscription.delivery_target,
        "webhook_url": services.redact_url(subscription.webhook_url), "webhook_secret": secret,
        "inline_body": subscription.inline_body,
        "last_dispatched_event_id": subscription.last_dispatched_event_id,
        "last_dispatched_at": subscription.last_dispatched_at,
        "last_acked_event_id": subscription.last_acked_event_id,
        "consecutive_failures": subscription.consecutive_failures,
        "paused_until": subscription.paused_until, "created_at": subscription.created_at,
        "detached_at": subscription.detached_at,
    }
