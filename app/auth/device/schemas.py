"""Schemas of the device-code login flow and of the session endpoints."""

import marshmallow as ma
from marshmallow import fields, validate

from app.api import BaseSchema


class DeviceCodeCreateSchema(BaseSchema):
    """Body of ``POST /v1/auth/device-code``; the length is checked by the service (400)."""

    device_code = fields.String(required=True, metadata={
        "description": "Caller-chosen code, 6–128 characters (the CLI sends codes like ABCD-EFGH)"})


class DeviceCodeCreatedSchema(ma.Schema):
    verification_url = fields.String(required=True, metadata={
        "description": "Page the user opens in a browser to approve this login"})
    expires_in = fields.Integer(required=True, metadata={"description": "Seconds (900)"})


class DeviceCodeRefSchema(BaseSchema):
    """Body of ``POST /v1/auth/device-code/poll``."""

    device_code = fields.String(required=True)


class SubmitEmailSchema(BaseSchema):
    """Body of ``POST /v1/auth/device-code/submit-email``."""

    device_code = fields.String(required=True)
    email = fields.Email(required=True, validate=validate.Length(max=255))


class EmailSentSchema(ma.Schema):
    status = fields.String(required=True, metadata={"description": "Always `email_sent`"})


class PollResultSchema(ma.Schema):
    """Poll answer; only ``status`` is always present."""

    status = fields.String(required=True, metadata={
        "description": "pending, email_sent, approved, claimed or expired"})
    email = fields.String(metadata={"description": "Present when approved"})
    api_key = fields.String(metadata={
        "description": "New user's key, or an existing user's revealable key (returned once)"})
    session_token = fields.String(metadata={
        "description": "One-time token for POST /v1/auth/session (returned once)"})
    existing_user = fields.Boolean(metadata={
        "description": "True when approved for an existing user whose key cannot be revealed"})


class VerifyQuerySchema(BaseSchema):
    """Query of the magic link; problems are shown on the HTML page, never as a 422."""

    token = fields.String(load_default="")
    device_code = fields.String(load_default="")


class DevicePageQuerySchema(BaseSchema):
    """Query of the browser page."""

    code = fields.String(load_default="")


class SessionExchangeSchema(BaseSchema):
    """Body of ``POST /v1/auth/session``."""

    token = fields.String(required=True, metadata={
        "description": "The 64-hex one-time session token from an approved device-code poll"})


class SessionTokenSchema(ma.Schema):
    session_token = fields.String(required=True, metadata={"description": "HS256 JWT, 24 h"})
    email = fields.String(required=True)
