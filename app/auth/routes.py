"""``/v1/auth``: registration and the caller's own account."""

from flask import current_app
from flask.views import MethodView

from app.api import Blueprint
from app.auth import auth_required, current_identity, public
from app.auth.schemas import MeSchema, RegisteredSchema, RegisterSchema
from app.errors import NotFound
from app.users import services

blp = Blueprint("auth", __name__, url_prefix="/v1/auth", description="Accounts and credentials.")


@blp.route("/register")
class Register(MethodView):
    @public
    @blp.arguments(RegisterSchema)
    @blp.response(201, RegisteredSchema)
    def post(self, body):
        """Sign up with an e-mail address; returns the API key once."""
        config = current_app.config
        if not config["ALLOW_REGISTER"] and config["ENV"] != "development":
            raise NotFound("not_found", "Registration is disabled on this server")
        new = services.register_user(body["email"])
        return {"api_key": new.api_key, "email": new.user.email}


@blp.route("/me")
class Me(MethodView):
    @auth_required
    @blp.response(200, MeSchema)
    def get(self):
        """The caller's account, limits and usage this month."""
        return services.account_summary(current_identity.user) | {
            "auth_path": current_identity.path.value}
