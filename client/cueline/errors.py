"""Typed exceptions raised by the client.

Every error the server answers with the wire envelope ``{"error": {"code", "message", "status"}}``
becomes an :class:`APIError` subclass chosen by its ``code`` first (so ``cue_limit_exceeded`` is a
quota error even though it is a 403) and by its HTTP status otherwise.  Each carries ``code``,
``message``, ``status``, ``request_id`` (the ``X-Request-Id`` response header, quote it in bug
reports) and any extra keys of the envelope in ``extra``.  Failures that never produced a response
(connection refused, timeouts) are :class:`APIConnectionError`.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import httpx

#: How much of a non-JSON error body is kept on the exception (never put into the message).
_MAX_RAW_BODY = 1000


class CuelineError(Exception):
    """Base class of everything this package raises on purpose."""


class ConfigurationError(CuelineError, ValueError):
    """The client was built or used in a way that cannot work (e.g. a malformed user id)."""


class APIConnectionError(CuelineError):
    """The request did not get an HTTP response (connection failure or timeout)."""

    def __init__(self, message: str, *, timeout: bool = False):
        super().__init__(message)
        self.message = message
        self.timeout = timeout


class APIError(CuelineError):
    """The server answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int,
        request_id: str | None = None,
        details: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
        headers: httpx.Headers | None = None,
        raw_body: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.request_id = request_id
        self.details = details or []
        self.extra = extra or {}
        self.headers = headers if headers is not None else httpx.Headers()
        self.raw_body = raw_body

    def __str__(self) -> str:
        suffix = f" (request id {self.request_id})" if self.request_id else ""
        return f"{self.status} {self.code}: {self.message}{suffix}"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(code={self.code!r}, status={self.status}, "
                f"message={self.message!r}, request_id={self.request_id!r})")


class BadRequestError(APIError):
    """400: the request was understood but refused (e.g. ``invalid_schedule``)."""


class AuthenticationError(APIError):
    """401: missing, wrong, rotated or expired credential."""


class PermissionDeniedError(APIError):
    """403: authenticated, but not allowed to do this."""


class NotFoundError(APIError):
    """404: the resource does not exist or is not visible to the caller."""


class ConflictError(APIError):
    """409: the request conflicts with the current state (duplicate name, already claimed …)."""


class ValidationError(APIError):
    """422: the body or query failed validation; ``details`` lists ``{field, message}``."""


class QuotaExceededError(APIError):
    """A plan quota was reached (``quota_exceeded`` 402; ``extra`` has ``current``/``limit``)."""


class CueLimitExceededError(QuotaExceededError, PermissionDeniedError):
    """403 ``cue_limit_exceeded``: the user's ``active_cue_limit`` is reached."""


class RateLimitError(APIError):
    """429: slow down; ``retry_after`` is the server's ``Retry-After`` in seconds (or None)."""

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("Retry-After"))


class ServerError(APIError):
    """5xx: the server failed; safe to retry idempotent calls later."""


class BodyVerifyMismatchError(CuelineError):
    """The server's ``body_received`` echo differs from the body that was sent."""

    def __init__(self, sent: str, received: Any, *, request_id: str | None = None):
        super().__init__("The server received a different message body than the one sent")
        self.sent = sent
        self.received = received
        self.request_id = request_id


_BY_CODE = {
    "validation_error": ValidationError,
    "quota_exceeded": QuotaExceededError,
    "cue_limit_exceeded": CueLimitExceededError,
    "rate_limit_exceeded": RateLimitError,
    "priority_high_rate_limit": RateLimitError,
}

_BY_STATUS = {
    400: BadRequestError,
    401: AuthenticationError,
    402: QuotaExceededError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: ValidationError,
    429: RateLimitError,
}


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: an integer/decimal or an HTTP date; None when absent/bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from datetime import datetime
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_from_response(response: httpx.Response) -> APIError:
    """Build the typed exception for an error ``response`` (status ≥ 400)."""
    status = response.status_code
    request_id = response.headers.get("X-Request-Id")
    code, message, details, extra, raw = None, None, None, {}, None
    try:
        body = response.json()
    except ValueError:
        body = None
        raw = response.text[:_MAX_RAW_BODY] if response.content else None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code") if isinstance(error.get("code"), str) else None
        message = error.get("message") if isinstance(error.get("message"), str) else None
        if isinstance(error.get("details"), list):
            details = error["details"]
        extra = {k: v for k, v in error.items()
                 if k not in ("code", "message", "status", "details")}
    elif body is not None:
        raw = response.text[:_MAX_RAW_BODY]
    code = code or "http_error"
    message = message or f"HTTP {status} {response.reason_phrase}".strip()
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else APIError
    return cls(message, code=code, status=status, request_id=request_id, details=details,
               extra=extra, headers=response.headers, raw_body=raw)
