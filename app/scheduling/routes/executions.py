"""``/v1/executions``: listing, the worker pull protocol, outcomes and verification (wire §8)."""

from __future__ import annotations

from flask import request
from flask.views import MethodView

from app.api import BaseSchema, Blueprint
from app.auth import auth_required, current_identity
from app.scheduling.presenters import execution_dict
from app.scheduling.schemas.cues import ExecutionSchema, FiredSchema
from app.scheduling.schemas.executions import (
    ClaimableListSchema,
    ClaimableQuerySchema,
    ClaimedSchema,
    ClaimSchema,
    EvidenceSchema,
    ExecutionListQuerySchema,
    ExecutionListSchema,
    HeartbeatAckSchema,
    LiveClaimedSchema,
    LiveClaimSchema,
    OutcomeRecordedSchema,
    OutcomeSchema,
    OutcomeStateSchema,
    VerifiedSchema,
    VerifySchema,
)
from app.scheduling.services import executions as services
from app.scheduling.services import verification
from app.db import read_only

blp = Blueprint("executions", __name__, url_prefix="/v1/executions",
                description="Executions: each firing of a cue, and the worker pull protocol.")


def _claimed(execution) -> dict:
    from flask import current_app

    return {"claimed": True, "execution_id": str(execution.id),
            "lease_seconds": current_app.config["WORKER_CLAIM_TIMEOUT_SECONDS"]}


@blp.route("")
class Executions(MethodView):
    @read_only
    @auth_required
    @blp.arguments(ExecutionListQuerySchema, location="query")
    @blp.response(200, ExecutionListSchema)
    def get(self, query):
        """List your executions, newest first."""
        rows, total, oldest = services.list_executions(current_identity.user, query)
        return {"executions": [execution_dict(e) for e in rows], "total": total,
                "limit": query["limit"], "offset": query["offset"],
                "has_more": query["offset"] + len(rows) < total, "oldest_claimed_at": oldest}


@blp.route("/claimable")
class Claimable(MethodView):
    @auth_required
    @blp.arguments(ClaimableQuerySchema, location="query")
    @blp.response(200, ClaimableListSchema)
    def get(self, query):
        """Due worker executions waiting to be claimed, oldest first."""
        return {"executions": services.list_claimable(current_identity.user, query.get("task"))}


@blp.route("/claim")
class ClaimNext(MethodView):
    @auth_required
    @blp.arguments(ClaimSchema)
    @blp.response(200, ClaimedSchema)
    def post(self, body):
        """Claim the oldest due worker execution."""
        return _claimed(services.claim_next(current_identity.user, body["worker_id"]))


@blp.route("/<execution_id>")
class ExecutionById(MethodView):
    @read_only
    @auth_required
    @blp.response(200, ExecutionSchema)
    def get(self, execution_id):
        """Get one execution."""
        from app.scheduling.services.lookup import get_execution

        return execution_dict(get_execution(current_identity.user, execution_id))


@blp.route("/<execution_id>/claim")
class ClaimOne(MethodView):
    @auth_required
    @blp.arguments(ClaimSchema)
    @blp.response(200, ClaimedSchema)
    def post(self, body, execution_id):
        """Claim one pending worker execution."""
        return _claimed(services.claim_execution(current_identity.user, execution_id,
                                                 body["worker_id"]))


@blp.route("/<execution_id>/heartbeat")
class ExecutionHeartbeat(MethodView):
    @auth_required
    @blp.arguments(BaseSchema)
    @blp.response(200, HeartbeatAckSchema)
    def post(self, _body, execution_id):
        """Extend the lease on a claimed execution."""
        execution, until = services.heartbeat_execution(
            current_identity.user, execution_id, request.headers.get("X-Worker-Id"))
        return {"execution_id": str(execution.id), "lease_extended_until": until,
                "acknowledged": True}


@blp.route("/<execution_id>/outcome")
class ExecutionOutcome(MethodView):
    @auth_required
    @blp.arguments(OutcomeSchema)
    @blp.response(200, OutcomeRecordedSchema)
    def post(self, body, execution_id):
        """Report the outcome of an execution (once)."""
        execution, state = services.record_outcome(current_identity.user, execution_id, body)
        return {"execution_id": str(execution.id), "outcome_recorded": True,
                "outcome_state": state, "reason": None}


@blp.route("/<execution_id>/replay")
class ExecutionReplay(MethodView):
    @auth_required
    @blp.response(200, FiredSchema)
    def post(self, execution_id):
        """Run a finished execution again as a new execution."""
        original, fresh = services.replay_execution(current_identity.user, execution_id)
        return {"id": str(fresh.id), "cue_id": fresh.cue_id,
                "scheduled_for": fresh.scheduled_for, "status": fresh.status,
                "triggered_by": "replay", "replayed_from": str(original.id)}


@blp.route("/<execution_id>/verify")
class ExecutionVerify(MethodView):
    @auth_required
    @blp.arguments(VerifySchema)
    @blp.response(200, VerifiedSchema)
    def post(self, body, execution_id):
        """Accept or reject a reported outcome."""
        execution = verification.verify_execution(current_identity.user, execution_id,
                                              body["valid"], body.get("reason"))
        return {"execution_id": str(execution.id), "outcome_state": execution.outcome_state,
                "valid": body["valid"], "reason": body.get("reason")}


@blp.route("/<execution_id>/verification-pending")
class ExecutionVerificationPending(MethodView):
    @auth_required
    @blp.response(200, OutcomeStateSchema)
    def post(self, execution_id):
        """Mark a reported outcome as awaiting verification."""
        execution = verification.mark_verification_pending(current_identity.user, execution_id)
        return {"execution_id": str(execution.id), "outcome_state": execution.outcome_state}


@blp.route("/<execution_id>/evidence")
class ExecutionEvidence(MethodView):
    @auth_required
    @blp.arguments(EvidenceSchema)
    @blp.response(200, OutcomeStateSchema)
    def patch(self, body, execution_id):
        """Attach evidence to a reported outcome."""
        execution = verification.update_evidence(current_identity.user, execution_id, body)
        return {"execution_id": str(execution.id), "outcome_state": execution.outcome_state,
                "evidence_updated": True}


@blp.route("/<execution_id>/live-claim")
class ExecutionLiveClaim(MethodView):
    @auth_required
    @blp.arguments(LiveClaimSchema)
    @blp.response(200, LiveClaimedSchema)
    def post(self, body, execution_id):
        """Attest that a live session claimed this execution (first token wins)."""
        execution, at = verification.attest_live_claim(current_identity.user, execution_id,
                                                       body["session_token"])
        return {"attested": True, "execution_id": str(execution.id), "live_claimed_at": at}
