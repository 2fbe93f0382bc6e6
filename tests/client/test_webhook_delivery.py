"""End to end: a cue created with the SDK is delivered by Cueline to a receiver on a loopback
port, and the SDK's verifier accepts exactly what arrived (and rejects it with the wrong secret).

The delivery attempt is run in-process with the scheduling package's own dispatcher functions
(the same ones ``flask worker run`` uses), so no background process is needed.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cueline
import pytest
from cueline.webhooks import construct_event, verify_webhook

from app.auth.tokens import generate_webhook_secret
from tests.client.conftest import require_routes


class Receiver:
    """A tiny HTTP server on 127.0.0.1 recording each request's headers and raw body."""

    def __init__(self):
        self.requests: list[tuple[dict[str, str], bytes]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_sdk_verifies_a_real_cue_delivery(make_app, served, receiver):
    app = make_app(ALLOW_PRIVATE_CALLBACK_URLS=True)
    require_routes(app, ("POST", "/v1/cues"), ("POST", "/v1/cues/<cue_id>/fire"),
                   ("GET", "/v1/auth/webhook-secret"))
    jobs = pytest.importorskip("app.scheduling.jobs")
    delivery = pytest.importorskip("app.scheduling.delivery")
    server = served(app)
    key = cueline.register("hooks@example.com", base_url=server.url)["api_key"]
    client = cueline.Client(key, base_url=server.url)
    cue = client.cues.create("deliver me", cron="0 3 * * *", callback=receiver.url,
                             payload={"task": "report", "note": "naïve café"})
    fired = client.cues.fire(cue["id"])

    with app.app_context():
        from app.db import utcnow

        claims = jobs.claim_webhook_executions(utcnow(), 10)
        assert len(claims) == 1
        delivery.deliver_webhook(*claims[0])

    assert len(receiver.requests) == 1
    headers, body = receiver.requests[0]
    secret = client.auth.get_webhook_secret()["webhook_secret"]
    event = construct_event(body, headers["x-cueapi-signature"], secret,
                            headers["x-cueapi-timestamp"])
    assert event["execution_id"] == fired["id"] and event["cue_id"] == cue["id"]
    assert event["payload"] == {"task": "report", "note": "naïve café"}
    assert json.loads(body) == event
    assert not verify_webhook(body, headers["x-cueapi-signature"],
                              generate_webhook_secret(), headers["x-cueapi-timestamp"])
    assert client.executions.get(fired["id"])["status"] == "success"

