"""Structured JSON logging: one line per event, one line per request, never a secret.

The request line carries method, path (never the query string: magic links and other tokens
travel there), status, duration, the acting user, the auth path, the acting service principal
and the request id.  Credentials never reach a log record: headers are not logged, SQL
parameters are hidden by the engine options, and exceptions are logged by type and traceback.
PostgreSQL's own error text can still carry row values (a unique violation's ``DETAIL:  Key
(api_key_hash)=(…) already exists``, a bound parameter in ``CONTEXT``), which
``hide_parameters`` does not reach: :func:`scrub_database_detail` removes those parts from every
logged message and traceback.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from datetime import UTC, datetime

from flask import Flask, g, request

REQUEST_LOGGER = logging.getLogger("cueline.request")
_FIELDS = ("method", "path", "status", "duration_ms", "user_id", "auth_path", "principal",
           "request_id", "remote_addr")


#: A ``DETAIL:`` or ``CONTEXT:`` part of a PostgreSQL error, up to the next part of the message,
#: SQLAlchemy's ``[SQL: …]`` / background lines, a blank line (a traceback's next section), or
#: the end.  Values in these parts can span lines, hence the lazy match up to a known boundary.
_DATABASE_DETAIL = re.compile(
    r"^(DETAIL|CONTEXT):.*?(?=^(?:DETAIL|CONTEXT|HINT):|^\[SQL: |^\(Background on this error|"
    r"^\s*$|\Z)", re.MULTILINE | re.DOTALL)


def scrub_database_detail(text: str) -> str:
    """``text`` without the ``DETAIL`` and ``CONTEXT`` parts of PostgreSQL errors (they quote
    row values: key hashes, e-mail addresses, parameters)."""
    if "DETAIL:" not in text and "CONTEXT:" not in text:
        return text
    return _DATABASE_DETAIL.sub(lambda m: f"{m.group(1)}:  (hidden)\n", text)


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub_database_detail(record.getMessage()),
        }
        for field in _FIELDS:
            if hasattr(record, field):
                entry[field] = getattr(record, field)
        if record.exc_info:
            entry["exception"] = scrub_database_detail(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class StderrHandler(logging.StreamHandler):
    """A stream handler that always writes to the *current* ``sys.stderr``."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def configure_logging(app: Flask) -> None:
    """Install the JSON handler on the root logger (once per process) and the request log."""
    root = logging.getLogger()
    if not any(isinstance(h, StderrHandler) for h in root.handlers):
        handler = StderrHandler()
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.setLevel(app.config["LOG_LEVEL"].upper())

    @app.before_request
    def _start_timer():
        g.request_started = time.perf_counter()

    @app.after_request
    def _log_request(response):
        identity = g.get("identity")
        started = g.get("request_started")
        REQUEST_LOGGER.info("request", extra={
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
            "user_id": str(identity.user_id) if identity and identity.user_id else None,
            "auth_path": identity.path.value if identity else None,
            "principal": identity.principal.name if identity and identity.principal else None,
            "request_id": g.get("request_id"),
            "remote_addr": request.remote_addr,
        })
        return response
