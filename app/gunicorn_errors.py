"""The wire error envelope for requests gunicorn refuses before the app sees them.

Gunicorn parses the request line and headers itself and answers violations of its limits
(``limit_request_line``, ``limit_request_fields``, ``limit_request_field_size``) and malformed
requests with an HTML page.  :func:`install_json_errors`, called from the ``post_worker_init``
hook in ``gunicorn.conf.py``, replaces the function gunicorn writes those pages with, so every
answer a client gets is ``{"error": {"code", "message", "status"}}`` with a stable code:

* ``request_line_too_large`` (400) — method, path and query longer than ``limit_request_line``;
* ``too_many_headers`` (431) — more than ``limit_request_fields`` header fields;
* ``header_field_too_large`` (431) — one header line longer than ``limit_request_field_size``;
* ``headers_too_large`` (431) — any other header-size limit;
* ``invalid_request`` (400) — anything else gunicorn cannot parse; ``internal_error`` (500).

The status codes are gunicorn's own; only the body changes.  The connection is closed after
the answer, as gunicorn does, but gracefully: the write side is shut down first and what the
client is still sending is read and dropped for a moment (at most :data:`DRAIN_BYTES` within
:data:`DRAIN_SECONDS`), because closing a socket with unread input sends a reset, which makes
the client lose the answer before reading it.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

DRAIN_SECONDS = 0.5
DRAIN_BYTES = 1 << 20

#: Messages gunicorn's ``LimitRequestHeaders`` carries, by the code they become.
_HEADER_LIMITS = (("limit request headers fields size", "header_field_too_large"),
                  ("limit request headers fields", "too_many_headers"))


def error_body(status: int, reason: str, detail: str, limits: dict[str, int]) -> dict[str, Any]:
    """The envelope for gunicorn's ``(status, reason, message)`` of a refused request."""
    line, fields, field_size = (limits["limit_request_line"], limits["limit_request_fields"],
                                limits["limit_request_field_size"])
    if status == 431:
        code, message = "headers_too_large", "The request headers are too large"
        for marker, candidate in _HEADER_LIMITS:
            if marker in detail:
                code = candidate
                break
        if code == "too_many_headers":
            message = f"Too many header fields: send at most {fields}"
        elif code == "header_field_too_large":
            message = f"A header line is too long: each may be at most {field_size} bytes"
    elif status == 400 and "Request Line is too large" in detail:
        code = "request_line_too_large"
        message = (f"The request line (method, path and query) is too long: at most {line} "
                   "bytes")
    elif status >= 500:
        code, message = "internal_error", "An internal error occurred"
    else:
        code = "invalid_request"
        message = f"The HTTP request could not be parsed: {detail or reason}"[:300]
    return {"error": {"code": code, "message": message, "status": status}}


def install_json_errors(cfg) -> None:
    """Make this gunicorn worker answer refused requests with the JSON envelope.

    ``cfg`` is the worker's gunicorn config (``worker.cfg``); its limits go into the messages.
    """
    from gunicorn import util

    limits = {name: int(getattr(cfg, name)) for name in
              ("limit_request_line", "limit_request_fields", "limit_request_field_size")}

    def write_json_error(sock, status_int, reason, mesg):
        body = json.dumps(error_body(int(status_int), reason, mesg or "", limits)).encode()
        head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        util.write_nonblock(sock, head.encode("latin-1") + body)
        _drain(sock)

    util.write_error = write_json_error


def _drain(sock) -> None:
    """Half-close ``sock`` and discard pending input briefly, so the answer is not reset."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + DRAIN_SECONDS
        received = 0
        while received < DRAIN_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += len(chunk)
    except OSError:
        pass
