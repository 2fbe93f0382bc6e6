"""The per-app flask-smorest ``Api``, the ``Blueprint`` every domain uses, and body parsing.

Request bodies are parsed once, in a ``before_request`` hook, the way CueAPI clients send them:
JSON when the content type is ``application/json`` / ``+json`` *or absent*.  Doing it before the
view runs gives the wire protocol's precedence (malformed JSON 400 before authentication 401
before schema validation 422) and lets the arguments parser reuse the result.
"""

from __future__ import annotations

import json
import math
from typing import Any

import flask_smorest
import marshmallow as ma
from flask import Flask, g, request
from flask_smorest.utils import resolve_schema_instance
from webargs.flaskparser import FlaskParser

from app import dumping
from app.errors import BadRequest, NotFound

#: Deepest JSON nesting accepted in a request body.
MAX_JSON_DEPTH = 64
#: Largest value an ``Integer`` column holds on PostgreSQL (and the bound of every integer a
#: request may carry into one, so an overflow is a 422 naming the field, never a 500).
INT32_MAX = 2**31 - 1
_BODY_METHODS = ("POST", "PUT", "PATCH")


class BaseSchema(ma.Schema):
    """Base for request schemas: unknown keys are ignored unless a schema says otherwise."""

    class Meta:
        unknown = ma.EXCLUDE


class WholeMatch(ma.validate.Regexp):
    r"""``validate.Regexp`` that must match the whole value.

    ``Regexp`` uses ``re.match``, whose ``$`` also matches before a final newline, so
    ``"slug\n"`` would pass ``^[a-z]+$``.  Patterns keep the ``^…$`` spelling because the OpenAPI
    document publishes them and JSON Schema patterns are ECMA-262 (no ``\Z``).
    """

    def __call__(self, value):
        if self.regex.fullmatch(value) is None:
            raise ma.ValidationError(self._format_error(value))
        return value


class StrictSchema(ma.Schema):
    """Base for request schemas whose wire contract rejects unknown keys (422)."""

    class Meta:
        unknown = ma.RAISE


class ErrorBodySchema(ma.Schema):
    code = ma.fields.String(required=True, metadata={"description": "Stable snake_case code"})
    message = ma.fields.String(required=True)
    status = ma.fields.Integer(required=True)
    details = ma.fields.List(ma.fields.Dict(), metadata={"description": "Validation errors"})


class ErrorEnvelopeSchema(ma.Schema):
    """The wire error envelope (documentation only)."""

    error = ma.fields.Nested(ErrorBodySchema, required=True)


class BodyParser(FlaskParser):
    """webargs parser that reads the body pre-parsed by :func:`parse_json_body`."""

    def load_json(self, req, schema):
        body = g.get("json_body", ma.missing)
        return body

    def load_json_or_form(self, req, schema):
        return self.load_json(req, schema)


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest blueprint using :class:`BodyParser` and compiled response dumps.

    Response schemas get the compiled ``dump`` of :mod:`app.dumping` (same output as
    marshmallow's, a fraction of the cost); the schema still documents the response.
    """

    ARGUMENTS_PARSER = BodyParser()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._prepare_doc_cbks.append(self._verify_echo_doc)

    @staticmethod
    def _verify_echo_doc(doc, doc_info, *, method, **_kwargs):
        """Document the body-verify echo header on every write (see app.verify_echo)."""
        from app import verify_echo

        manual = doc_info.get("manual_doc", {})
        # Manual parameters replace generated ones when the two are merged: add it there.
        verify_echo.document(manual if "parameters" in manual else doc, method)
        return doc

    def arguments(self, schema, *args, **kwargs):
        # webargs instantiates a schema class on every request (a third of a small body's
        # parsing cost); request schemas keep no per-load state, so one instance serves all.
        return super().arguments(resolve_schema_instance(schema), *args, **kwargs)

    def response(self, status_code, schema=None, **kwargs):
        if schema is None:
            return super().response(status_code, schema, **kwargs)
        schema = resolve_schema_instance(schema)

        def decorator(func):
            documented = schema
            if func.__name__ in ("post", "patch", "put") and 200 <= int(status_code) < 300:
                # A write's success answer may carry the body-verify echo fields.
                from app import verify_echo

                documented = verify_echo.with_echo_fields(schema)
            return super(Blueprint, self).response(status_code, dumping.install(documented),
                                                   **kwargs)(func)

        return decorator


class Api(flask_smorest.Api):
    """flask-smorest Api whose errors are rendered by ``app.errors`` (the wire envelope)."""

    ERROR_SCHEMA = ErrorEnvelopeSchema

    def _register_error_handlers(self):
        """Errors are handled by app.errors.register_error_handlers, not by smorest."""


def view_handler() -> Any:
    """The function that will answer the current request (a MethodView's method for its HTTP
    method, HEAD falling back to GET), or None when no view matched."""
    from flask import current_app

    view = current_app.view_functions.get(request.endpoint)
    view_class = getattr(view, "view_class", None)
    if view_class is None:
        return view
    method = request.method.lower()
    handler = getattr(view_class, method, None)
    if handler is None and method == "head":  # MethodView answers HEAD with its GET
        handler = getattr(view_class, "get", None)
    return handler


def _check_json(value: Any, depth: int = 0) -> None:
    """Reject bodies nested too deeply or carrying NUL characters (no column can store them)."""
    if depth > MAX_JSON_DEPTH:
        raise BadRequest("invalid_json",
                         f"Request body is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise BadRequest("invalid_json",
                             "Request body must not contain NUL (\\u0000) characters")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_json(key, depth + 1)
            _check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)


def _is_json_mimetype(mimetype: str) -> bool:
    return not mimetype or mimetype == "application/json" or mimetype.endswith("+json")


def parse_json_body() -> None:
    """``before_request``: parse the JSON body into ``g.json_body`` (or reject it with 400)."""
    if "\x00" in request.path:
        raise NotFound("http_error", "Not Found")
    for values in request.args.listvalues():
        if any("\x00" in v for v in values):
            raise BadRequest("invalid_query", "Query parameters must not contain NUL characters")
    g.json_body, error = _parsed_body()
    if error is not None:
        raise error


def peek_json_body() -> Any:
    """The request's JSON body, for a look-up that runs before :func:`parse_json_body`
    (``ma.missing`` when there is none or it is invalid; never raises).  The body is parsed
    once: the hook reuses this parse and reports its error in the hook's place."""
    return _parsed_body()[0]


def _parsed_body() -> tuple[Any, BadRequest | None]:
    # Kept with the request, not in ``g``: a request made inside another one's application
    # context (the test client does) shares its ``g``.
    cached = request.environ.get(_PARSED_BODY)
    if cached is None:
        try:
            cached = (_read_json_body(), None)
        except BadRequest as exc:
            cached = (ma.missing, exc)
        request.environ[_PARSED_BODY] = cached
    return cached


_PARSED_BODY = "cueline.parsed_body"


class _NonFiniteNumber(ValueError):
    """A ``NaN`` / ``Infinity`` literal or a number too large for a float (``1e400``)."""


def _refuse_constant(name: str):
    # Python's json module accepts NaN, Infinity and -Infinity; JSON (RFC 8259) does not, and
    # no column or JSON document in PostgreSQL can store them.
    raise _NonFiniteNumber(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFiniteNumber(f"the number {text[:40]} is out of range")
    return value


def _read_json_body() -> Any:
    """The JSON body, ``ma.missing`` when the request carries none, or 400 ``invalid_json``."""
    if request.method not in _BODY_METHODS:
        return ma.missing
    form_encoded = request.mimetype == "application/x-www-form-urlencoded"
    if not (_is_json_mimetype(request.mimetype) or form_encoded):
        return ma.missing
    raw = request.get_data(cache=True)
    if not raw.strip():
        return ma.missing
    if form_encoded and raw.lstrip()[:1] not in (b"{", b"["):
        # ``curl -d '{…}'`` labels JSON as a form; a real form body is left alone.
        return ma.missing
    return parse_json_bytes(raw)


def parse_json_bytes(raw: bytes) -> Any:
    """Parse a JSON document with the body rules (depth, no NUL) or raise 400 ``invalid_json``."""
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant,
                          parse_float=_finite_float)
    except _NonFiniteNumber as exc:
        raise BadRequest("invalid_json", f"Request body is not valid JSON: {exc}") from None
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("invalid_json", "Request body is not valid JSON") from None
    except RecursionError:
        raise BadRequest(
            "invalid_json", f"Request body is nested deeper than {MAX_JSON_DEPTH} levels"
        ) from None
    _check_json(body)
    return body


#: Where ``/docs`` loads Swagger UI's scripts and styles from (this app, never a CDN).
SWAGGER_UI_ASSETS_URL = "/docs/"
#: The Swagger UI files ``/docs`` uses: nothing else in the package directory is served.
SWAGGER_UI_ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js",
                               "swagger-ui-standalone-preset.js", "favicon-16x16.png",
                               "favicon-32x32.png"})


def swagger_ui_dist() -> str:
    """The directory of Swagger UI's distribution files, from the ``flask-swagger-ui`` package
    (only its files are used; it tracks Swagger UI releases and needs nothing but Flask)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("flask_swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("flask-swagger-ui is not installed (pip install -e .)")
    return os.path.join(list(spec.submodule_search_locations)[0], "dist")


def swagger_ui_asset(filename: str):
    """A Swagger UI asset for ``/docs`` (cached for a day; unknown names are 404)."""
    from flask import send_from_directory

    if filename not in SWAGGER_UI_ASSETS:
        raise NotFound("not_found", "Not found")
    return send_from_directory(swagger_ui_dist(), filename, max_age=86400)


def build_api(app: Flask, security_schemes: dict[str, dict], security: list[dict]) -> Api:
    """Create the Api for ``app`` with the security schemes its flags enable."""
    docs = app.config["ENV"] != "production"
    app.config.update(
        API_TITLE="Cueline",
        API_VERSION=app.config.get("VERSION", "0"),
        OPENAPI_VERSION="3.0.3",
        API_SPEC_OPTIONS={
            "security": security,
            "info": {"description": "Scheduling and messaging for AI agents "
                                    "(CueAPI wire protocol)."},
        },
        OPENAPI_URL_PREFIX="/" if docs else None,
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        # Served by this app from an installed package, so /docs works on an air-gapped host.
        OPENAPI_SWAGGER_UI_URL=SWAGGER_UI_ASSETS_URL,
    )
    api = Api(app)
    if docs:
        app.add_url_rule(SWAGGER_UI_ASSETS_URL + "<path:filename>", "swagger_ui_asset",
                         swagger_ui_asset)
    for name, scheme in security_schemes.items():
        api.spec.components.security_scheme(name, scheme)
    return api
