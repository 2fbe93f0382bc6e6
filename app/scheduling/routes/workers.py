"""``/v1/worker/heartbeat`` and ``/v1/workers``: pull-worker liveness (wire §9)."""

from __future__ import annotations

from flask.views import MethodView

from app.api import Blueprint
from app.auth import auth_required, current_identity
from app.scheduling.schemas.workers import (
    WorkerHeartbeatAckSchema,
    WorkerHeartbeatSchema,
    WorkerListSchema,
)
from app.scheduling.services import workers as services
from app.db import read_only

blp = Blueprint("workers", __name__, url_prefix="/v1",
                description="Pull workers (cueapi-worker daemons) and their heartbeats.")


@blp.route("/worker/heartbeat")
class WorkerHeartbeat(MethodView):
    @auth_required
    @blp.arguments(WorkerHeartbeatSchema)
    @blp.response(200, WorkerHeartbeatAckSchema)
    def post(self, body):
        """Record that a worker is alive and which handlers it runs."""
        now = services.record_worker_heartbeat(current_identity.user, body["worker_id"],
                                               body.get("handlers"))
        return {"acknowledged": True, "server_time": now}


@blp.route("/workers")
class Workers(MethodView):
    @read_only
    @auth_required
    @blp.response(200, WorkerListSchema)
    def get(self):
        """List your workers, most recent heartbeat first."""
        return {"workers": services.list_workers(current_identity.user)}


@blp.route("/workers/<worker_id>")
class WorkerById(MethodView):
    @auth_required
    @blp.response(204)
    def delete(self, worker_id):
        """Forget a worker."""
        services.delete_worker(current_identity.user, worker_id)
