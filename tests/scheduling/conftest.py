"""Fixtures for scheduling tests: a registered user, cue factories and a local receiver."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers import key_headers, register

PUBLIC_URL = "https://192.0.2.10/hook"  # TEST-NET-1 literal: no DNS, not blocked, never routed


def cue_body(**overrides) -> dict:
    """A valid recurring webhook cue body with ``overrides`` applied (``None`` deletes a key)."""
    body = {"name": "nightly", "schedule": {"type": "recurring", "cron": "0 9 * * *"},
            "callback": {"url": PUBLIC_URL}, "payload": {"task": "report"}}
    for key, value in overrides.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


@pytest.fixture
def user(client):
    """(headers, api_key) of a fresh user."""
    api_key, _ = register(client)
    return key_headers(api_key), api_key


@pytest.fixture
def headers(user):
    return user[0]


@pytest.fixture
def make_cue(client, headers):
    """Create a cue through the API; returns the response body (asserting 201)."""

    def _make(**overrides):
        response = client.post("/v1/cues", json=cue_body(**overrides), headers=headers)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    return _make


class _Handler(BaseHTTPRequestHandler):
    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        server = self.server
        server.requests.append({"method": self.command, "path": self.path,
                                "headers": dict(self.headers), "body": raw})
        status = server.statuses.pop(0) if server.statuses else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"ok": status < 300}).encode())
        server.event.set()

    do_POST = do_GET = do_PUT = do_PATCH = _handle

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    """A webhook receiver on 127.0.0.1: ``.url``, ``.requests``, ``.statuses`` (queued codes)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.requests, server.statuses, server.event = [], [], threading.Event()
    server.url = f"http://127.0.0.1:{server.server_port}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
