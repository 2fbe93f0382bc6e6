"""IPC attachments of a local daemon: attach, delete, reconcile (wire §11.3).

Every route needs the ``X-CueAPI-Daemon-Id`` header (the daemon's UUID), and ``{ref}`` is the
agent's opaque ``agt_`` id.  Checks run in the wire's order: credential (401), body or path
(422), daemon header (400), agent (400/404).
"""

from __future__ import annotations

import re

from flask import jsonify, request
from flask.views import MethodView

from app.agents_live import schemas
from app.agents_live.presenters import attachment_dict
from app.agents_live.services import attachments as services
from app.api import Blueprint
from app.auth import auth_required, current_identity
from app.db import single_statement
from app.errors import ValidationFailed

blp = Blueprint("ipc_attachments", __name__, url_prefix="/v1/agents",
                description="IPC attachments: a local daemon delivering an agent's live "
                            "sessions over IPC attaches, detaches and reconciles them.")

DAEMON_PARAMETER = {
    "in": "header", "name": services.DAEMON_HEADER, "required": True,
    "schema": {"type": "string", "format": "uuid"},
    "description": "The daemon's id: a UUID generated once when it is installed "
                   "(400 missing_daemon_id / invalid_daemon_id)."}
_TOKEN = re.compile(schemas.IPC_TOKEN_PATTERN)


def _daemon_id():
    return services.parse_daemon_id(request.headers.get(services.DAEMON_HEADER))


@blp.route("/<ref>/attachments")
class Attachments(MethodView):
    @auth_required
    @blp.doc(parameters=[DAEMON_PARAMETER])
    @blp.arguments(schemas.AttachmentCreateSchema)
    @blp.response(201, schemas.AttachmentSchema)
    @blp.alt_response(409, schema=schemas.AttachmentConflictSchema, description=(
        "attachment_exists: another daemon holds the label (this body has no message or "
        "status); live_session_conflict (usual envelope): the token is already another "
        "session's cue"))
    def post(self, body, ref):
        """Attach a live session for this daemon (supersedes its own earlier attach)."""
        daemon_id = _daemon_id()
        session, superseded = services.attach(current_identity.user_id, ref, daemon_id, body)
        return attachment_dict(session, superseded)


@blp.route("/<ref>/attachments/<token>")
class AttachmentByToken(MethodView):
    @single_statement
    @auth_required
    @blp.doc(parameters=[DAEMON_PARAMETER])
    @blp.response(204)
    @blp.alt_response(200, schema=schemas.AttachmentDeletedSchema,
                      description="Nothing left to delete (already deleted or superseded)")
    def delete(self, ref, token):
        """Detach this daemon's attachment: 204, or 200 when it was already gone."""
        if not (26 <= len(token) <= 32 and _TOKEN.match(token)):
            raise ValidationFailed([{"field": "path.token", "message": schemas.IPC_TOKEN_ERROR}])
        daemon_id = _daemon_id()
        if services.delete_attachment(current_identity.user_id, ref, daemon_id, token):
            return None
        return jsonify({"deleted": False, "reason": "already_deleted"})


@blp.route("/reconcile-attachments")
class ReconcileAttachments(MethodView):
    @auth_required
    @blp.doc(parameters=[DAEMON_PARAMETER])
    @blp.arguments(schemas.ReconcileSchema)
    @blp.response(200, schemas.ReconcileResultSchema)
    def post(self, body):
        """Apply the daemon's whole view: listed sessions to ipc, the rest of its to poll."""
        daemon_id = _daemon_id()
        return services.reconcile(current_identity.user_id, daemon_id, body)
