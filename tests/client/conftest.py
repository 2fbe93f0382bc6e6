"""Fixtures for the SDK tests: the real app on a loopback port, with the wire recorded.

``served(app)`` wraps the app in :class:`WireRecorder` (a WSGI middleware that records each
request's method, path and headers as the server received them, and the response status and
headers) and serves it with the ``live_server`` fixture.  Assertions about headers read the
recorder, never the client's own settings.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

import pytest


@dataclass
class Exchange:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    raw_uri: str = ""
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)


class WireRecorder:
    """WSGI middleware recording what actually crossed the wire."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        headers = {}
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                headers[key[5:].replace("_", "-").lower()] = value
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
                headers[key.replace("_", "-").lower()] = value
        exchange = Exchange(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""),
                            environ.get("QUERY_STRING", ""), headers,
                            raw_uri=environ.get("RAW_URI") or environ.get("REQUEST_URI", ""))
        with self._lock:
            self.exchanges.append(exchange)

        def recording_start_response(status, response_headers, exc_info=None):
            exchange.status = int(status.split()[0])
            exchange.response_headers = {k.lower(): v for k, v in response_headers}
            return start_response(status, response_headers, exc_info)

        return self.wsgi_app(environ, recording_start_response)

    def to(self, path_prefix: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.path.startswith(path_prefix)]

    @property
    def last(self) -> Exchange:
        return self.exchanges[-1]


class FaultInjector:
    """WSGI middleware answering the next ``count`` requests to ``path`` with ``status``
    (the wire envelope and the given headers) before the app sees them; then it passes
    everything through.  ``count=None`` means every request."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app
        self.rules: list[dict] = []

    def fail(self, path: str, status: int, code: str, count: int | None = 1,
             headers: dict[str, str] | None = None) -> None:
        self.rules.append({"path": path, "status": status, "code": code, "count": count,
                           "headers": headers or {}})

    def __call__(self, environ, start_response):
        for rule in self.rules:
            if environ.get("PATH_INFO") == rule["path"] and rule["count"] != 0:
                if rule["count"] is not None:
                    rule["count"] -= 1
                body = json.dumps({"error": {"code": rule["code"], "message": "injected",
                                             "status": rule["status"]}}).encode()
                start_response(f"{rule['status']} Injected", [
                    ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                    ("X-Request-Id", "injected-request-id"), *rule["headers"].items()])
                return [body]
        return self.wsgi_app(environ, start_response)


@dataclass
class Served:
    url: str
    wire: WireRecorder
    faults: FaultInjector


@pytest.fixture
def served(live_server):
    """``served(app)`` → :class:`Served` (url, wire recorder, fault injector)."""

    def _serve(app) -> Served:
        faults = FaultInjector(app.wsgi_app)
        wire = WireRecorder(faults)
        app.wsgi_app = wire
        server = live_server(app)
        return Served(server.url, wire, faults)

    return _serve


def routes_of(app) -> set[tuple[str, str]]:
    """``{(METHOD, rule)}`` mounted on ``app``."""
    return {(method, rule.rule) for rule in app.url_map.iter_rules()
            for method in rule.methods - {"HEAD", "OPTIONS"}}


def require_routes(app, *pairs: tuple[str, str]) -> None:
    """Skip (naming what is missing) unless every ``(METHOD, rule)`` is mounted on ``app``."""
    missing = [p for p in pairs if p not in routes_of(app)]
    if missing:
        pytest.skip("server routes not mounted yet: " + ", ".join(f"{m} {r}" for m, r in missing))
