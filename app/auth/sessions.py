"""``/v1/auth/session``: session JWTs from a device-code login, and their refresh (§4.6–4.7).

Always mounted (``DISABLE_DEVICE_CODE`` leaves it in place, as upstream does).
"""

from flask import current_app
from flask.views import MethodView

from app.api import Blueprint
from app.auth import auth_required, current_identity, public
from app.auth.device import sessions
from app.auth.device.schemas import SessionExchangeSchema, SessionTokenSchema

blp = Blueprint("sessions", __name__, url_prefix="/v1/auth/session",
                description="Session tokens (JWT) for the CLI and browser sessions.")


@blp.route("")
class Session(MethodView):
    @public
    @blp.arguments(SessionExchangeSchema)
    @blp.response(200, SessionTokenSchema)
    def post(self, body):
        """Exchange the one-time token of an approved device-code login for a 24 h session JWT."""
        return sessions.exchange_session_token(body["token"],
                                               secret=current_app.config["SESSION_SECRET"])


@blp.route("/refresh")
class SessionRefresh(MethodView):
    @auth_required("keys:mint")  # minting a session under delegation needs this scope
    @blp.response(200, SessionTokenSchema)
    def post(self):
        """A fresh 24 h session JWT for the caller (any credential; delegated: `keys:mint`)."""
        return sessions.refresh_session(current_identity.user,
                                        secret=current_app.config["SESSION_SECRET"],
                                        minted_by=current_identity.minting_principal)
