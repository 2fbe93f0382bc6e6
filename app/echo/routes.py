"""``/v1/echo/{token}``: store a request (no authentication) and read it back (any credential).

The ``cueapi quickstart`` command creates a one-off cue whose callback is
``<api base>/echo/qs-…`` and polls the ``GET`` until the delivery shows up.
"""

import marshmallow as ma
from flask import g, request
from flask.views import MethodView

from app.api import Blueprint, parse_json_bytes
from app.auth import auth_required, public
from app.echo import services
from app.echo.schemas import EchoSchema, EchoStoredSchema
from app.errors import BadRequest
from app.ratelimit import client_address, limit

blp = Blueprint("echo", __name__, url_prefix="/v1/echo",
                description="A short-lived mailbox for testing deliveries (quickstart).")

ANY_JSON = {"required": True, "content": {"application/json": {"schema": {}}}}


def _json_body():
    """The body as JSON whatever its content type (a cue may label it anything)."""
    body = g.get("json_body", ma.missing)
    if body is not ma.missing:
        return body
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise BadRequest("invalid_json", "The echo body must be a JSON document")
    return parse_json_bytes(raw)


@blp.route("/<token>")
class EchoByToken(MethodView):
    @public
    @blp.doc(requestBody=ANY_JSON)
    @blp.response(200, EchoStoredSchema)
    @blp.alt_response(413, description="Body over 1,000,000 bytes (payload_too_large)")
    @limit("10/hour", key=client_address, scope="echo")
    def post(self, token):
        """Store a JSON body for five minutes under a token of 16+ characters (no auth)."""
        services.check_token(token)
        services.check_size(request.content_length or len(request.get_data(cache=True)))
        payload = _json_body()
        services.store_echo(token, payload, services.stored_headers(request.headers))
        return {"stored": True}

    @auth_required
    @blp.response(200, EchoSchema)
    def get(self, token):
        """What was stored under a token, or `waiting` (any credential may read)."""
        return services.read_echo(token)
