"""``/health``, ``/status`` and ``/v1/info`` (no authentication)."""

from flask.views import MethodView

from app.api import Blueprint
from app.auth import public
from app.db import read_only
from app.system import services
from app.system.schemas import HealthSchema, InfoQuerySchema, InfoSchema, StatusSchema

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
    @blp.arguments(InfoQuerySchema, location="query")
    @blp.response(200, InfoSchema)
    def get(self, query):
        """Which authentication paths this deployment enables and which primitives it has off."""
        return services.deployment_info(include_modules=query.get("include") == "modules")
