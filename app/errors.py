"""Error types and the handlers that turn every failure into the wire envelope.

Every error response has the shape ``{"error": {"code", "message", "status"}}``; validation
failures add ``details`` (a list of ``{"field", "message"}``) and some errors add extra keys inside
``error`` (``limit``, ``current`` …).  Services raise :class:`AppError`; routing, parsing and
unexpected failures are converted here, so no view ever builds an error body by hand.

A browser surface (the operator console) claims a path prefix with :func:`register_html_errors`:
errors under that prefix — including 404/405 for paths no route matches, and refusals of the
app-wide request hooks — are rendered by its own HTML page instead; the envelope stays
everywhere else.
"""

from __future__ import annotations

import logging
from typing import Any

from collections.abc import Callable

from flask import Flask, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class AppError(Exception):
    """An error with a stable wire code.  Subclasses fix the HTTP status."""

    status = 400
    code = "bad_request"
    message = "Bad request"

    def __init__(
        self,
        code: str | None = None,
        message: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ):
        self.code = code or self.code
        self.message = message or self.message
        self.status = status or self.status
        self.headers = headers or {}
        self.extra = extra
        super().__init__(f"{self.code}: {self.message}")

    def to_dict(self) -> dict[str, Any]:
        """The body of the envelope's ``error`` object."""
        return {"code": self.code, "message": self.message, "status": self.status, **self.extra}


class BadRequest(AppError):
    status = 400


class Unauthorized(AppError):
    status = 401
    code = "invalid_api_key"
    message = "Invalid or missing API key"


class Forbidden(AppError):
    status = 403
    code = "forbidden"
    message = "Forbidden"


class NotFound(AppError):
    status = 404
    code = "not_found"
    message = "Not found"


class Conflict(AppError):
    status = 409
    code = "conflict"
    message = "Conflict"


class Gone(AppError):
    status = 410
    code = "gone"
    message = "Gone"


class ValidationFailed(AppError):
    """422 with per-field ``details``; the message names the first failing field."""

    status = 422
    code = "validation_error"

    def __init__(self, details: list[dict[str, str]], code: str | None = None):
        first = details[0] if details else {"field": "", "message": "Invalid input"}
        message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        super().__init__(code=code, message=message, details=details)


class ServiceUnavailable(AppError):
    status = 503
    code = "service_unavailable"
    message = "The service is temporarily unavailable; retry shortly"


def envelope(error: AppError):
    """Build the JSON response for ``error`` (headers included)."""
    response = jsonify({"error": error.to_dict()})
    response.status_code = error.status
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


# ---------------------------------------------------------------------------------------------
# Conversion of framework errors

_LOCATIONS = {"json": "body", "form": "body", "query": "query", "querystring": "query",
              "view_args": "path", "path": "path", "headers": "header", "cookies": "cookie"}


def flatten_messages(messages: Any, prefix: str = "") -> list[dict[str, str]]:
    """Flatten marshmallow/webargs nested messages into ``[{field, message}]``.

    ``{"json": {"schedule": {"type": ["Bad"]}}}`` becomes ``body.schedule.type: Bad``.
    """
    details: list[dict[str, str]] = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            key = str(key)
            if not prefix:
                part = _LOCATIONS.get(key, key)
            elif key == "_schema":
                part = ""
            else:
                part = key
            field = ".".join(p for p in (prefix, part) if p)
            details.extend(flatten_messages(value, field))
    elif isinstance(messages, (list, tuple)):
        for item in messages:
            if isinstance(item, (dict, list, tuple)):
                details.extend(flatten_messages(item, prefix))
            else:
                details.append({"field": prefix, "message": str(item)})
    else:
        details.append({"field": prefix, "message": str(messages)})
    return details


def from_http_exception(error: HTTPException) -> AppError:
    """Translate a werkzeug/flask-smorest HTTP exception into an :class:`AppError`."""
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    messages = data.get("messages")
    if status == 422 and messages:
        return ValidationFailed(flatten_messages(messages))
    if status == 400 and messages:
        # webargs reports unparsable JSON this way; the body pre-parser normally wins first.
        return BadRequest("invalid_json", "Request body is not valid JSON")
    if status == 429:
        from app.metrics import count_rate_limit_refusal
        from app.ratelimit import global_retry_after, retry_message

        count_rate_limit_refusal("user" if g.get("identity") is not None else "address")
        return AppError("rate_limit_exceeded",
                        retry_message(global_retry_after(),
                                      f"Too many requests ({error.description})"), 429)
    if status == 413:
        return AppError("request_too_large", "Request body exceeds 1048576 bytes", 413)
    headers = {k: v for k, v in error.get_headers() if k.lower() not in ("content-type",
                                                                           "content-length")}
    return AppError("http_error", error.name, status, headers=headers)


_HTML_ERRORS = "cueline_html_errors"


def register_html_errors(app: Flask, prefix: str, render: Callable[[AppError], Any]) -> None:
    """Render errors of requests under ``prefix`` (the path itself or below it) with ``render``
    instead of the JSON envelope."""
    app.extensions.setdefault(_HTML_ERRORS, []).append((prefix.rstrip("/"), render))


def respond(error: AppError):
    """The response for ``error``: the envelope, or the HTML page of a browser surface."""
    path = request.path
    for prefix, render in current_app.extensions.get(_HTML_ERRORS, ()):
        if path == prefix or path.startswith(prefix + "/"):
            return render(error)
    return envelope(error)


def register_error_handlers(app: Flask) -> None:
    """Route every error, expected or not, through :func:`respond` (the envelope)."""

    @app.errorhandler(AppError)
    def _app_error(error: AppError):
        return respond(error)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        return respond(from_http_exception(error))

    @app.errorhandler(Exception)
    def _unhandled(error: Exception):
        if isinstance(error, HTTPException):  # pragma: no cover - handled above
            return respond(from_http_exception(error))
        translated = _translate_database_error(error)
        if translated is not None:
            return respond(translated)
        log.exception("unhandled error (request id %s)", g.get("request_id", "-"))
        return respond(AppError("internal_error", "An internal error occurred", 500))


def _translate_database_error(error: Exception) -> AppError | None:
    """Database unreachable or connection lost → 503 in the envelope instead of a 500.

    Every way a lost connection surfaces is covered: a statement on a connection SQLAlchemy
    recognised as disconnected (``connection_invalidated``), a session left unusable by an
    earlier one (``PendingRollbackError``), the pool's own refusals (``TimeoutError`` when
    exhausted, ``DisconnectionError``), and any psycopg ``OperationalError`` /
    ``InterfaceError`` (connection failures, admin shutdown, "the connection is closed").
    """
    from sqlalchemy.exc import (
        DBAPIError,
        DisconnectionError,
        PendingRollbackError,
    )
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from app.extensions import db

    if isinstance(error, PendingRollbackError):
        # A connection died earlier in this request; discard it and let the client retry.
        _discard_session(db)
        log.warning("database connection lost earlier in the request")
        return ServiceUnavailable()
    if isinstance(error, PoolTimeout | DisconnectionError):
        log.warning("database pool unavailable: %s", type(error).__name__)
        return ServiceUnavailable()
    if not isinstance(error, DBAPIError):
        return None
    if error.connection_invalidated:
        _discard_session(db)
        log.warning("database connection lost: %s", type(error.orig).__name__)
        return ServiceUnavailable()
    if _is_connection_error(error) or _is_psycopg_connection_error(error.orig):
        _discard_session(db)
        log.warning("database unavailable: %s", type(error.orig).__name__)
        return ServiceUnavailable()
    return None


def _discard_session(db) -> None:
    """Roll the request's session back without letting a dead connection raise again."""
    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001 - the connection is gone; the pool replaces it
        log.debug("rollback after a lost connection failed", exc_info=True)


def _is_psycopg_connection_error(orig: BaseException | None) -> bool:
    """psycopg's connection-level errors (its ``OperationalError`` and ``InterfaceError``)."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - SQLite-only installs
        return False
    return isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError)


def _is_connection_error(error: Exception) -> bool:
    """True when a DBAPI error means the database cannot be reached at all."""
    from sqlalchemy.exc import OperationalError

    if not isinstance(error, OperationalError):
        return False
    text = str(getattr(error, "orig", error)).lower()
    return any(s in text for s in ("connection", "could not connect", "server closed",
                                   "terminating", "timeout expired", "the database system"))
