"""Response schemas of the health and information endpoints."""

import marshmallow as ma
from marshmallow import fields, validate

from app.api import BaseSchema


class HealthSchema(ma.Schema):
    """``GET /health``: always 200; ``status`` says whether the service is healthy."""

    status = fields.String(required=True, metadata={"enum": ["healthy", "degraded"]})
    version = fields.String(required=True)
    timestamp = fields.String(required=True)
    services = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                           metadata={"description": "database, postgres, redis, worker"})
    queue = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    poller = fields.Dict()
    workers = fields.Dict()


class StatusSchema(ma.Schema):
    """``GET /status``: 200 healthy, 503 down (no error envelope, like upstream)."""

    status = fields.String(required=True)
    reason = fields.String()


class AuthPathsSchema(ma.Schema):
    per_user_api_key = fields.Boolean(required=True)
    session_token = fields.Boolean(required=True)
    internal_token_with_on_behalf_of = fields.Boolean(required=True)


class InfoSchema(ma.Schema):
    """``GET /v1/info``: what this deployment enables (never a secret)."""

    version = fields.String(required=True)
    authorization_backend = fields.String(required=True)
    authentication_paths = fields.Nested(AuthPathsSchema, required=True)
    disabled_primitives = fields.List(fields.String(), required=True)
    modules = fields.List(fields.String(), metadata={
        "description": "Mounted modules; only with ?include=modules (Cueline extension)"})


class InfoQuerySchema(BaseSchema):
    include = fields.String(validate=validate.OneOf(["modules"]), metadata={
        "description": "`modules` adds the list of mounted modules"})
