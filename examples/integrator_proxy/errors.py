"""Error responses of the proxy, in the same envelope Cueline uses.

Upstream client errors (400/402/403/404/409/413/422/429) pass through with Cueline's code and
message: they describe the caller's own request.  Everything that is Cueline's or the proxy's
fault — 5xx, a refused service credential (401), no connection — becomes ``502 upstream_error``
with a fixed message; the upstream text, which the end user has no use for, is only logged.
"""

from __future__ import annotations

import logging

import cueline
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

PASS_THROUGH = {400, 402, 403, 404, 409, 413, 422, 429}


class ProxyError(Exception):
    """An error the proxy answers itself."""

    def __init__(self, status: int, code: str, message: str, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def _envelope(status: int, code: str, message: str, headers=None, **extra):
    response = jsonify({"error": {"code": code, "message": message, "status": status, **extra}})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ProxyError)
    def _proxy_error(exc: ProxyError):
        return _envelope(exc.status, exc.code, exc.message, **exc.extra)

    @app.errorhandler(cueline.APIError)
    def _upstream_answer(exc: cueline.APIError):
        if exc.status in PASS_THROUGH:
            extra = dict(exc.extra)
            if exc.details:
                extra["details"] = exc.details
            headers = {}
            if exc.status == 429 and exc.headers.get("Retry-After"):
                headers["Retry-After"] = exc.headers["Retry-After"]
            return _envelope(exc.status, exc.code, exc.message, headers, **extra)
        log.warning("Cueline answered %s %s (request id %s)", exc.status, exc.code,
                    exc.request_id)
        return _envelope(502, "upstream_error",
                         "The scheduling service could not handle the request; try again later")

    @app.errorhandler(cueline.APIConnectionError)
    def _upstream_unreachable(exc: cueline.APIConnectionError):
        log.warning("Cueline unreachable: %s", exc.message)
        return _envelope(502, "upstream_error",
                         "The scheduling service is unreachable; try again later")

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        return _envelope(exc.code or 500, "http_error", exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error in the proxy")
        return _envelope(500, "internal_error", "An internal error occurred")
