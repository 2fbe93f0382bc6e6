"""Device-code login (wire protocol §5): three JSON endpoints for the CLI, two HTML pages.

Removed as a whole by ``DISABLE_DEVICE_CODE``.  All five routes are unauthenticated.
"""

import secrets

from flask import current_app, g, render_template, url_for
from flask.views import MethodView

from app.api import Blueprint
from app.auth import public
from app.auth.device import services
from app.auth.device.schemas import (
    DeviceCodeCreatedSchema,
    DeviceCodeCreateSchema,
    DeviceCodeRefSchema,
    DevicePageQuerySchema,
    EmailSentSchema,
    PollResultSchema,
    SubmitEmailSchema,
    VerifyQuerySchema,
)
from app.auth.tokens import hash_secret
from app.errors import AppError
from app.ratelimit import client_address, limit

blp = Blueprint("device_code", __name__, template_folder="templates",
                description="Device-code login for the cueapi CLI.")

#: OpenAPI description of the two browser pages.
HTML_PAGE = {"content": {"text/html": {"schema": {"type": "string"}}}}
#: A refusal before the page is rendered (e.g. a NUL in the query) is the JSON envelope.
HTML_OR_ENVELOPE = {"content": {"text/html": {"schema": {"type": "string"}},
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}}


def _body_key(field: str):
    """Rate-limit key from a validated body field, hashed so no address lands in the store."""

    def key() -> str:
        value = str(g.json_body.get(field, "")).strip().lower()
        return f"{field}:{hash_secret(value)}"

    return key


def render_page(template: str, status: int, **context):
    """An HTML response that cannot be framed, cached or leak its URL (tokens) as a referrer."""
    nonce = secrets.token_urlsafe(16)
    response = current_app.make_response(
        (render_template(template, nonce=nonce, **context), status))
    response.headers.update({
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
            "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    })
    return response


@blp.route("/v1/auth/device-code")
class DeviceCodes(MethodView):
    @public
    @blp.arguments(DeviceCodeCreateSchema)
    @blp.response(201, DeviceCodeCreatedSchema)
    @limit("5/hour", key=client_address, scope="device-code")
    def post(self, body):
        """Start a CLI login: register a device code and get the approval page's URL."""
        return services.create_device_code(body["device_code"], current_app.config["BASE_URL"])


@blp.route("/v1/auth/device-code/submit-email")
class SubmitEmail(MethodView):
    @public
    @blp.arguments(SubmitEmailSchema)
    @blp.response(200, EmailSentSchema)
    @limit("10/hour", key=client_address, scope="device-code-email-addr")
    @limit("3/hour", key=_body_key("email"), scope="device-code-email")
    def post(self, body):
        """Send the magic login link for a pending device code to an e-mail address."""
        return services.submit_email(body["device_code"], body["email"],
                                     current_app.config["BASE_URL"])


@blp.route("/v1/auth/device-code/poll")
class Poll(MethodView):
    @public
    @blp.arguments(DeviceCodeRefSchema)
    @blp.response(200, PollResultSchema)
    @limit("30/minute", key=_body_key("device_code"), scope="device-code-poll")
    def post(self, body):
        """Poll a device code; returns the credentials once, when the login is approved."""
        return services.poll_device_code(body["device_code"],
                                         secret=current_app.config["SESSION_SECRET"])


@blp.route("/auth/device")
class DevicePage(MethodView):
    @public
    @blp.arguments(DevicePageQuerySchema, location="query")
    @blp.doc(responses={"200": {"description": "The e-mail form, or the code's state: sent, "
                                               "approved, expired, unknown (HTML)", **HTML_PAGE},
                        "400": {"description": "A refused query", **HTML_OR_ENVELOPE},
                        "404": {"description": "No code in the query (HTML)", **HTML_PAGE}})
    def get(self, query):
        """Browser page where the user enters the e-mail that approves a CLI login (HTML)."""
        code = query["code"]
        state = services.device_page_state(code)
        # Any code gets its page (as upstream): it shows the code and what state it is in.
        status = 200 if code else 404
        return render_page("device_code/device.html", status, code=code, state=state,
                           submit_url=url_for("device_code.SubmitEmail"))


@blp.route("/v1/auth/verify")
class Verify(MethodView):
    @public
    @blp.arguments(VerifyQuerySchema, location="query")
    @blp.doc(responses={"200": {"description": "Login approved (HTML)", **HTML_PAGE},
                        "400": {"description": "Invalid, used or expired link (HTML)",
                                **HTML_OR_ENVELOPE},
                        "403": {"description": "Unknown e-mail and sign-up closed (HTML)",
                                **HTML_PAGE}})
    def get(self, query):
        """Magic link from the login e-mail: approves the CLI login (HTML)."""
        config = current_app.config
        try:
            approval = services.verify_device_code(
                query["device_code"], query["token"], secret=config["SESSION_SECRET"],
                allow_signup=config["ALLOW_REGISTER"] or config["ENV"] == "development")
        except AppError as exc:
            return render_page("device_code/verify.html", exc.status, ok=False,
                               message=exc.message, error_code=exc.code)
        return render_page("device_code/verify.html", 200, ok=True, email=approval.email,
                           new_user=approval.new_user)
