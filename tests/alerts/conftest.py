"""Fixtures for alert tests: a controllable clock, an alert webhook receiver, outcome helpers."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import app.db
from tests.helpers import key_headers, register


class Clock:
    """A replacement for :data:`app.db.clock` that moves only when told."""

    def __init__(self):
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(app.db, "clock", fake)
    return fake


class Account:
    """A registered user and helpers to produce outcomes on their worker cues."""

    def __init__(self, client):
        self.client = client
        self.key, _ = register(client)
        self.headers = key_headers(self.key)
        self.id = client.get("/v1/auth/me", headers=self.headers).get_json()["id"]

    def cue(self, name="job", **fields):
        body = {"name": name, "transport": "worker",
                "schedule": {"type": "recurring", "cron": "0 9 * * *"},
                "payload": {"task": name}, **fields}
        response = self.client.post("/v1/cues", json=body, headers=self.headers)
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    def fire(self, cue_id) -> str:
        response = self.client.post(f"/v1/cues/{cue_id}/fire", headers=self.headers)
        assert response.status_code == 200, response.get_json()
        return response.get_json()["id"]

    def outcome(self, cue_id, success=False, **fields) -> str:
        execution_id = self.fire(cue_id)
        response = self.client.post(f"/v1/executions/{execution_id}/outcome",
                                    json={"success": success, **fields}, headers=self.headers)
        assert response.status_code == 200, response.get_json()
        return execution_id

    def alerts(self, query="") -> dict:
        response = self.client.get(f"/v1/alerts{query}", headers=self.headers)
        assert response.status_code == 200, response.get_json()
        return response.get_json()


@pytest.fixture
def account(client):
    return Account(client)


class Receiver:
    """An alert webhook receiver on 127.0.0.1 answering with a programmable status."""

    def __init__(self, status=200):
        self.requests = []
        self.status = status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), raw))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = Receiver()
    yield made
    made.close()
