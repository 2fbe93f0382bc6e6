"""Body-verify echo (wire §1.10): with ``X-CueAPI-Verify-Echo: true`` a write answers with what
the server received, so a client can detect a body mangled on its way (a shell, a proxy).

Two forms, both built here and nowhere else:

* **String form** (:func:`string_echo`) — a view whose request carries one text field that
  matters (``POST /v1/messages`` echoes its ``body``) puts ``body_received`` = that exact string
  and ``body_received_sha256`` = the SHA-256 hex of its UTF-8 bytes into its own response.
* **Generic form** (:func:`install`, an ``after_request`` hook) — every other 2xx JSON-object
  response to POST / PATCH / PUT gets ``body_received`` = the parsed request JSON (``null`` for
  an empty body, the raw text for a body that is not JSON) and ``body_received_sha256`` =
  SHA-256 of the canonical JSON (keys sorted, ``,`` / ``:`` separators, UTF-8 without ASCII
  escapes) or of the raw bytes when the body is not JSON.  A response that already carries
  ``body_received`` (the string form) is left alone.

An empty body echoes ``null`` with the SHA-256 of empty input (``e3b0c442…b855``), which is
exactly what the protocol specifies for a bare ``POST /v1/cues/{id}/fire``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import marshmallow as ma
from flask import Flask, Response, current_app, request

HEADER = "X-CueAPI-Verify-Echo"
BODY_METHODS = ("POST", "PATCH", "PUT")
#: OpenAPI description of the request header, added to every write operation.
HEADER_PARAMETER = {
    "in": "header", "name": HEADER, "required": False, "schema": {"type": "string",
                                                                   "enum": ["true"]},
    "description": "Body-verify echo: a 2xx answer also carries body_received (what the "
                   "server parsed) and body_received_sha256."}


def requested() -> bool:
    """True when the request asks for the echo (``true``, case-insensitive, trimmed)."""
    return (request.headers.get(HEADER) or "").strip().lower() == "true"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def string_echo(text: str) -> dict[str, str]:
    """The string form: ``text`` exactly as parsed, and the SHA-256 of its UTF-8 bytes."""
    return {"body_received": text, "body_received_sha256": sha256_hex(text.encode("utf-8"))}


def canonical(value: Any) -> bytes:
    """The canonical JSON bytes the generic form hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def generic_echo(raw: bytes) -> dict[str, Any]:
    """The generic form of a request body (see the module docstring)."""
    if not raw.strip():
        return {"body_received": None, "body_received_sha256": sha256_hex(raw)}
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {"body_received": raw.decode("utf-8", "replace"),
                "body_received_sha256": sha256_hex(raw)}
    return {"body_received": parsed, "body_received_sha256": sha256_hex(canonical(parsed))}


def _add_generic_echo(response: Response) -> Response:
    if (request.method not in BODY_METHODS or not requested()
            or not 200 <= response.status_code < 300 or not response.is_json):
        return response
    data = response.get_json(silent=True)
    if not isinstance(data, dict) or "body_received" in data:
        return response
    data.update(generic_echo(request.get_data(cache=True)))
    response.set_data(current_app.json.dumps(data))
    return response


def install(app: Flask) -> None:
    """Register the generic form on ``app``."""
    app.after_request(_add_generic_echo)


def document(operation: dict[str, Any], method: str) -> dict[str, Any]:
    """Add the request header to a write operation's OpenAPI parameters (once)."""
    if method.upper() in BODY_METHODS:
        parameters = operation.setdefault("parameters", [])
        if not any(p.get("in") == "header" and p.get("name", "").lower() == HEADER.lower()
                   for p in parameters if isinstance(p, dict)):
            parameters.append(dict(HEADER_PARAMETER))
    return operation


#: Response schemas of writes, extended with the echo fields (one derived class per schema).
_ECHO_SCHEMAS: dict[type, type] = {}


def with_echo_fields(schema: ma.Schema) -> ma.Schema:
    """``schema`` with the two optional echo fields, so a write's documented answer (which
    rejects unknown keys) admits them."""
    if "body_received" in schema.fields:
        return schema
    base = type(schema)
    derived = _ECHO_SCHEMAS.get(base)
    if derived is None:
        name = base.__name__.removesuffix("Schema") + "VerifyEchoSchema"
        derived = _ECHO_SCHEMAS[base] = type(name, (base,), {
            "__doc__": base.__doc__,
            "body_received": ma.fields.Raw(allow_none=True, metadata={
                "description": f"With {HEADER}: true, the request body as received"}),
            "body_received_sha256": ma.fields.String(metadata={
                "description": f"With {HEADER}: true, SHA-256 of the body as received"}),
        })
    return derived(many=schema.many)
