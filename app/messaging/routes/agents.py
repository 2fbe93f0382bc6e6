"""``/v1/agents``: agents, roster, webhook secrets, inbox and sent views."""

from flask import Response, request
from flask.views import MethodView

from app.api import Blueprint
from app.auth import auth_required, current_identity
from app.messaging import schemas
from app.messaging.services import agents as agent_services
from app.messaging.services import inbox as inbox_services

blp = Blueprint("agents", __name__, url_prefix="/v1/agents",
                description="Agents: addressable identities that send and receive messages.")


@blp.route("")
class Agents(MethodView):
    @auth_required
    @blp.arguments(schemas.AgentListQuerySchema, location="query")
    @blp.response(200, schemas.AgentListSchema)
    def get(self, query):
        """List your agents, newest first."""
        page = agent_services.list_agents(
            current_identity.user_id, status=query.get("status"),
            include_deleted=query["include_deleted"], limit=query["limit"],
            offset=query["offset"])
        # Secrets are never listed.
        return {"agents": [_with_secret(agent, None) for agent in page.agents],
                "total": page.total, "limit": page.limit, "offset": page.offset}

    @auth_required
    @blp.arguments(schemas.AgentCreateSchema)
    @blp.response(201, schemas.AgentSchema)
    def post(self, body):
        """Create an agent; the response shows its webhook secret once."""
        agent = agent_services.create_agent(current_identity.user_id, body)
        return _with_secret(agent, agent.webhook_secret)


@blp.route("/roster")
class Roster(MethodView):
    @auth_required
    @blp.doc(parameters=[{"in": "header", "name": "If-None-Match", "required": False,
                          "schema": {"type": "string"},
                          "description": "The ETag of a roster you hold; 304 if unchanged."}])
    @blp.response(200, schemas.RosterSchema)
    @blp.alt_response(304, description="Not modified (empty body)")
    def get(self):
        """Directory of your live agents with presence (supports If-None-Match)."""
        roster = agent_services.roster(current_identity.user_id)
        headers = {"ETag": roster.etag, "Cache-Control": "private, max-age=300"}
        if (request.headers.get("If-None-Match") or "").strip() == roster.etag:
            return Response(status=304, headers=headers)
        return roster.body, 200, headers


@blp.route("/<ref>")
class AgentByRef(MethodView):
    @auth_required
    @blp.arguments(schemas.IncludeDeletedQuerySchema, location="query")
    @blp.response(200, schemas.AgentSchema)
    def get(self, query, ref):
        """One of your agents by id or slug@user-slug."""
        agent = agent_services.get_agent(current_identity.user_id, ref,
                                         include_deleted=query["include_deleted"])
        return _with_secret(agent, None)

    @auth_required
    @blp.arguments(schemas.AgentUpdateSchema)
    @blp.response(200, schemas.AgentSchema)
    def patch(self, body, ref):
        """Update an agent; webhook_url null clears the URL and its secret."""
        agent = agent_services.update_agent(current_identity.user_id, ref, body)
        return _with_secret(agent, None)

    @auth_required
    @blp.response(204)
    def delete(self, ref):
        """Soft-delete an agent."""
        agent_services.delete_agent(current_identity.user_id, ref)


@blp.route("/<ref>/webhook-secret")
class AgentWebhookSecret(MethodView):
    @auth_required
    @blp.response(200, schemas.AgentWebhookSecretSchema)
    def get(self, ref):
        """The secret that signs pushes to this agent."""
        return {"webhook_secret": agent_services.get_webhook_secret(current_identity.user_id,
                                                                    ref)}


@blp.route("/<ref>/webhook-secret/regenerate")
class AgentWebhookSecretRegenerate(MethodView):
    @auth_required
    @blp.doc(parameters=[{"in": "header", "name": "X-Confirm-Destructive", "required": True,
                          "schema": {"type": "string", "enum": ["true"]}}])
    @blp.response(200, schemas.AgentWebhookSecretSchema)
    def post(self, ref):
        """Replace the push signing secret (needs X-Confirm-Destructive: true)."""
        confirmed = request.headers.get("X-Confirm-Destructive") == "true"
        return {"webhook_secret": agent_services.regenerate_webhook_secret(
            current_identity.user_id, ref, confirmed)}


@blp.route("/<ref>/inbox")
class AgentInbox(MethodView):
    @auth_required
    @blp.arguments(schemas.MessageListQuerySchema, location="query")
    @blp.response(200, schemas.MessageListSchema)
    def get(self, query, ref):
        """Messages to this agent; a poll delivers the queued ones."""
        return inbox_services.list_inbox(current_identity.user_id, ref, query).as_body()


@blp.route("/<ref>/sent")
class AgentSent(MethodView):
    @auth_required
    @blp.arguments(schemas.MessageListQuerySchema, location="query")
    @blp.response(200, schemas.MessageListSchema)
    def get(self, query, ref):
        """Messages this agent sent."""
        return inbox_services.list_sent(current_identity.user_id, ref, query).as_body()


def _with_secret(agent, secret):
    """The agent as the response shows it: the secret only where the protocol reveals it."""
    return {
        "id": agent.id, "user_id": agent.user_id, "slug": agent.slug,
        "display_name": agent.display_name, "webhook_url": agent.webhook_url,
        "webhook_secret": secret, "meta": agent.meta, "status": agent.status,
        "deleted_at": agent.deleted_at, "created_at": agent.created_at,
        "updated_at": agent.updated_at,
    }
