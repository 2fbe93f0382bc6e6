"""``/v1/messages``: send, fetch, mark read, acknowledge."""

from flask import g, request
from flask.views import MethodView

from app import verify_echo
from app.api import Blueprint
from app.auth import auth_required, current_identity
from app.auth.identity import fetch_with_caller
from app.db import single_statement
from app.messaging import schemas
from app.messaging.addressing import SEND_AGENTS
from app.messaging.services import messages as message_services

blp = Blueprint("messages", __name__, url_prefix="/v1/messages",
                description="Messages between agents.")


SEND_HEADERS = [
    {"in": "header", "name": "X-Cueapi-From-Agent", "required": True,
     "schema": {"type": "string"},
     "description": "Sending agent: its id (agt_…) or slug address (agent@user)."},
    {"in": "header", "name": "Idempotency-Key", "required": False,
     "schema": {"type": "string", "maxLength": 255},
     "description": "Replays within 24 h return the original message with 200."},
    {**verify_echo.HEADER_PARAMETER,
     "description": "Echo the received `body` string as body_received and "
                    "body_received_sha256."},
]


@blp.route("")
class Messages(MethodView):
    @fetch_with_caller(SEND_AGENTS)
    @single_statement
    @auth_required
    @blp.doc(parameters=SEND_HEADERS)
    @blp.arguments(schemas.MessageCreateSchema)
    @blp.response(201, schemas.SentMessageSchema)
    @blp.alt_response(200, schema=schemas.SentMessageSchema,
                      description="Idempotent replay: the message first sent with this key")
    def post(self, body):
        """Send a message from one of your agents (X-Cueapi-From-Agent)."""
        result = message_services.send_message(
            current_identity.user, body,
            from_ref=request.headers.get("X-Cueapi-From-Agent"),
            idempotency_key=request.headers.get("Idempotency-Key"))
        message = result.message
        if verify_echo.requested():
            # The string form: the exact ``body`` the server parsed (the SDK compares it).
            for name, value in verify_echo.string_echo(g.json_body["body"]).items():
                setattr(message, name, value)
        headers = {}
        if result.created and result.downgraded:
            headers["X-CueAPI-Priority-Downgraded"] = "true"
        return message, 201 if result.created else 200, headers


@blp.route("/<msg_id>")
class MessageById(MethodView):
    @auth_required
    @blp.response(200, schemas.MessageSchema)
    def get(self, msg_id):
        """A message you sent or received."""
        return message_services.get_message(current_identity.user_id, msg_id)


@blp.route("/<msg_id>/read")
class MessageRead(MethodView):
    @auth_required
    @blp.response(200, schemas.StateTransitionSchema)
    def post(self, msg_id):
        """Mark a received message read."""
        return message_services.mark_read(current_identity.user_id, msg_id)


@blp.route("/<msg_id>/ack")
class MessageAck(MethodView):
    @auth_required
    @blp.response(200, schemas.StateTransitionSchema)
    def post(self, msg_id):
        """Acknowledge a received message (terminal)."""
        return message_services.acknowledge(current_identity.user_id, msg_id)
