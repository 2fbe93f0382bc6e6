"""``/v1/cues``: create, list, get, update, delete and fire cues (wire §7)."""

from __future__ import annotations

from flask.views import MethodView

from app.api import Blueprint
from app.auth import auth_required, current_identity
from app.auth.identity import fetch_with_caller
from app.scheduling.presenters import cue_dict, execution_dict
from app.scheduling.schemas.cues import (
    CueCreateSchema,
    CueDetailQuerySchema,
    CueDetailSchema,
    CueListQuerySchema,
    CueListSchema,
    CueSchema,
    CueUpdateSchema,
    FiredSchema,
    FireSchema,
)
from app.scheduling.services import cues as services
from app.db import read_only

blp = Blueprint("cues", __name__, url_prefix="/v1/cues",
                description="Cues: named schedules that fire webhooks or queue worker jobs.")


@blp.route("")
class Cues(MethodView):
    @auth_required
    @blp.arguments(CueCreateSchema)
    @blp.response(201, CueSchema)
    def post(self, body):
        """Create a cue."""
        cue, warning = services.create_cue(current_identity.user, body)
        return cue_dict(cue, warning=warning)

    @fetch_with_caller(services.cue_page_with_caller)
    @read_only
    @auth_required
    @blp.arguments(CueListQuerySchema, location="query")
    @blp.response(200, CueListSchema)
    def get(self, query):
        """List your cues, newest first."""
        rows, total = services.list_cues(current_identity.user, query.get("status"),
                                         query["limit"], query["offset"])
        return {"cues": [cue_dict(c) for c in rows], "total": total, "limit": query["limit"],
                "offset": query["offset"]}


@blp.route("/<cue_id>")
class CueById(MethodView):
    @read_only
    @auth_required
    @blp.arguments(CueDetailQuerySchema, location="query")
    @blp.response(200, CueDetailSchema)
    def get(self, query, cue_id):
        """Get a cue with a page of its executions."""
        cue, executions, total = services.cue_detail(
            current_identity.user, cue_id, query["execution_limit"], query["execution_offset"])
        return cue_dict(cue) | {"executions": [execution_dict(e) for e in executions],
                                "execution_total": total,
                                "execution_limit": query["execution_limit"],
                                "execution_offset": query["execution_offset"]}

    @auth_required
    @blp.arguments(CueUpdateSchema)
    @blp.response(200, CueSchema)
    def patch(self, body, cue_id):
        """Update a cue (also pause and resume)."""
        return cue_dict(services.update_cue(current_identity.user, cue_id, body))

    @auth_required
    @blp.response(204)
    def delete(self, cue_id):
        """Delete a cue and its executions."""
        services.delete_cue(current_identity.user, cue_id)


@blp.route("/<cue_id>/fire")
class CueFire(MethodView):
    @auth_required
    @blp.arguments(FireSchema)
    @blp.response(200, FiredSchema)
    def post(self, body, cue_id):
        """Fire a cue now (or at send_at), whatever its status or schedule."""
        execution = services.fire_cue(
            current_identity.user, cue_id, body.get("send_at"),
            payload_override=body.get("payload_override"),
            merge_strategy=body.get("merge_strategy"),
            idempotency_key=body.get("idempotency_key"))
        result = {"id": str(execution.id), "cue_id": execution.cue_id,
                  "scheduled_for": execution.scheduled_for, "status": execution.status,
                  "triggered_by": execution.triggered_by}
        # X-CueAPI-Verify-Echo is answered by app.verify_echo (a bare fire echoes null and the
        # SHA-256 of empty input, as §1.10 specifies).
        return result
