"""``/health``, ``/status`` and ``/v1/info`` (no authentication)."""

from flask.views import MethodView

from app.api import Blueprint
from app.auth import public
from app.db import read_only
from app.system import services
from app.system.schemas import HealthSchema, InfoSchema, StatusSchema

blp = Blueprint("system", __name__, description="Health and deployment information.")


@blp.route("/health")
class Health(MethodView):
    @read_only
    @public
    @blp.response(200, HealthSchema)
    def get(self):
        """Liveness and database reachability (always 200; see `status`)."""
        return services.health_report()


@blp.route("/status")
class Status(MethodView):
    @public
    @blp.response(200, StatusSchema)
    @blp.alt_response(503, schema=StatusSchema, description="The database is unreachable")
    def get(self):
        """Readiness: 200 when the database answers, 503 otherwise."""
        if services.database_ok():
            return {"status": "healthy"}
        return {"status": "down", "reason": "database unreachable"}, 503


@blp.route("/v1/info")
class Info(MethodView):
    @public
    @blp.response(200, InfoSchema)
    def get(self):
        """Which authentication paths and modules this deployment enables."""
        return services.deployment_info()
