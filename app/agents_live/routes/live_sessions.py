"""``/v1/agents/{ref}/live-sessions``: register, list, detach, update, heartbeat (wire §11.2)."""

from __future__ import annotations

from flask.views import MethodView

from app.agents_live import schemas
from app.agents_live.presenters import live_session_dict
from app.agents_live.services import live_sessions as services
from app.api import Blueprint
from app.auth import auth_required, current_identity
from app.db import read_only, single_statement

blp = Blueprint("live_sessions", __name__, url_prefix="/v1/agents",
                description="Live sessions: labelled attached sessions of an agent, each bound "
                            "to the cue that fires at it, one of them the default.")


def _body(view: services.SessionView) -> dict:
    return live_session_dict(view.session, view.now)


@blp.route("/<ref>/live-sessions")
class LiveSessions(MethodView):
    @auth_required
    @blp.arguments(schemas.LiveSessionCreateSchema)
    @blp.response(201, schemas.LiveSessionSchema)
    def post(self, body, ref):
        """Register a live session (409 live_session_conflict on a taken label, cue or default)."""
        return _body(services.register_session(current_identity.user_id, ref, body))

    @read_only
    @auth_required
    @blp.arguments(schemas.LiveSessionListQuerySchema, location="query")
    @blp.response(200, schemas.LiveSessionSchema(many=True))
    def get(self, query, ref):
        """The agent's live sessions, newest first (include_detached for the history)."""
        return [_body(view) for view in services.list_sessions(
            current_identity.user_id, ref, query["include_detached"])]


@blp.route("/<ref>/live-sessions/<label>")
class LiveSessionByLabel(MethodView):
    @auth_required
    @blp.arguments(schemas.LiveSessionUpdateSchema)
    @blp.response(200, schemas.LiveSessionSchema)
    def patch(self, body, ref, label):
        """Make the session the default (atomically) and/or rotate its session token."""
        return _body(services.update_session(current_identity.user_id, ref, label, body))

    @single_statement
    @auth_required
    @blp.response(200, schemas.LiveSessionSchema)
    def delete(self, ref, label):
        """Detach the session (soft: it stays in the history and loses the default)."""
        return _body(services.detach_session(current_identity.user_id, ref, label))


@blp.route("/<ref>/live-sessions/<label>/heartbeat")
class LiveSessionHeartbeat(MethodView):
    @single_statement
    @auth_required
    @blp.arguments(schemas.LiveSessionHeartbeatSchema)
    @blp.response(200, schemas.LiveSessionSchema)
    def post(self, body, ref, label):
        """Record that the session is alive (optionally its monitor version)."""
        return _body(services.heartbeat_session(current_identity.user_id, ref, label,
                                                body.get("monitor_version")))
