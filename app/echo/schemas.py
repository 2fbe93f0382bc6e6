"""Response schemas of ``/v1/echo/{token}``."""

import marshmallow as ma
from marshmallow import fields

from app.scheduling.schemas.fields import OffsetDateTime


class EchoStoredSchema(ma.Schema):
    stored = fields.Boolean(required=True)


class EchoSchema(ma.Schema):
    """``waiting`` until something was posted to the token (within 5 minutes), then
    ``delivered`` with what was received."""

    status = fields.String(required=True, metadata={"enum": ["waiting", "delivered"]})
    payload = fields.Raw(allow_none=True, metadata={"description": "The JSON body received"})
    headers = fields.Dict(keys=fields.String(), values=fields.String(), metadata={
        "description": "Request headers received (lower-case names; credentials redacted)"})
    received_at = OffsetDateTime()
