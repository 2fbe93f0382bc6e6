"""Helpers shared by the tests: registering users, building headers, reading envelopes."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

from werkzeug.serving import WSGIRequestHandler, make_server

from app.auth.tokens import issue_session_token

SERVICE_TOKEN = "svc-test-token-" + "x" * 40
SESSION_SECRET = "test-session-secret-" + "y" * 32




def register(client, email: str | None = None) -> tuple[str, dict]:
    """Register a user; return (api_key, response body)."""
    email = email or f"user-{uuid.uuid4().hex[:8]}@example.com"
    response = client.post("/v1/auth/register", json={"email": email})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    return body["api_key"], body


def key_headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def service_headers(user_id=None, token: str = SERVICE_TOKEN, style: str = "bearer") -> dict:
    headers = ({"Authorization": f"Bearer {token}"} if style == "bearer"
               else {"X-Service-Key": token})
    if user_id is not None:
        headers["X-On-Behalf-Of"] = str(user_id)
    return headers


def user_id_of(client, api_key: str) -> str:
    return client.get("/v1/auth/me", headers=key_headers(api_key)).get_json()["id"]


def mint_session(user_id, email: str = "x@example.com", secret: str = SESSION_SECRET,
                 now: datetime | None = None, **kwargs) -> str:
    """A session JWT as the login flow would issue it."""
    return issue_session_token(str(user_id), email, secret, now or datetime.now(UTC), **kwargs)


def error_of(response) -> dict:
    """The ``error`` object of an envelope response (asserting its shape)."""
    body = response.get_json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["status"] == response.status_code
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    return error


class QuietHandler(WSGIRequestHandler):
    """No access log: the app's own request log is the one under test."""

    def log_request(self, *args, **kwargs):
        pass


class LiveServer:
    """A WSGI app served on 127.0.0.1 in a background thread (real HTTP for real clients)."""

    def __init__(self, app):
        self.server = make_server("127.0.0.1", 0, app, threaded=True,
                                  request_handler=QuietHandler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.thread.join(timeout=10)




def clear_of_window_boundary(margin: float = 5.0) -> None:
    """Wait, if need be, until at least ``margin`` seconds remain in the current minute.

    The rate limiter's sliding-window counter works in windows aligned to the minute: just
    after a boundary, the previous window's count is already weighted down, so a request that
    a test expects to be refused may pass.  Tests that count requests to a limit start here.
    """
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.05)
