"""Field types shared by the scheduling schemas (timestamps in both wire spellings, HTTP
methods and headers)."""

from __future__ import annotations

from datetime import UTC

import marshmallow as ma
from marshmallow import fields, validate

from app.api import WholeMatch
from app.scheduling.models import CALLBACK_METHODS


class ZDateTime(fields.DateTime):
    """UTC timestamp written ``2026-05-12T09:00:00.123456Z`` (microseconds only when non-zero)."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        if value.tzinfo is UTC:  # what the database hands back: drop "+00:00" (a third cheaper)
            return value.isoformat()[:-6] + "Z"
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        text = value.replace(tzinfo=None).isoformat()
        return text + "Z"


class OffsetDateTime(fields.DateTime):
    """UTC timestamp written with ``+00:00`` (the hand-built spelling of wire §1.5)."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        return (value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


class HttpMethod(fields.String):
    """An HTTP method for ``callback.method``: case-insensitive, one of POST/GET/PUT/PATCH."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs).upper()
        if text not in CALLBACK_METHODS:
            raise ma.ValidationError(f"Must be one of: {', '.join(CALLBACK_METHODS)}.")
        return text


#: An HTTP header name (RFC 9110 token) and a value without control characters: anything else
#: could not be sent, so it is refused when the cue is saved rather than at every delivery.
_HEADER_NAME = WholeMatch(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$",
                               error="Not a valid HTTP header name.")
_HEADER_VALUE = WholeMatch(r"^[^\x00-\x08\x0a-\x1f\x7f]{0,8192}$",
                                error="Header values must not contain control characters.")


def header_map(**kwargs):
    """A JSON object of at most 50 sendable HTTP headers (``callback.headers``)."""
    return fields.Dict(keys=fields.String(validate=_HEADER_NAME),
                       values=fields.String(validate=_HEADER_VALUE),
                       validate=validate.Length(max=50), **kwargs)
