"""Typed errors from real server answers, and the retry policy on 429/503.

429/503 answers come from :class:`tests.client.conftest.FaultInjector` placed in front of the
real app (the app has no reason to shed load in a test); everything else is the app's own answer.
"""

from __future__ import annotations

import socket
import uuid

import cueline
import pytest
from cueline import (
    APIConnectionError,
    Client,
    ConflictError,
    RateLimitError,
    ServerError,
    ValidationError,
)

from tests.helpers import SERVICE_TOKEN


def _no_sleep(client, sleeps):
    client._sleep = sleeps.append  # record the waits instead of sleeping
    return client


def test_conflict_and_validation_errors_carry_code_details_and_request_id(delegation_app,
                                                                            served):
    server = served(delegation_app)
    service = Client(SERVICE_TOKEN, base_url=server.url, service=True)
    first, second = uuid.uuid4(), uuid.uuid4()
    service.internal_users.upsert(first, email="taken@example.com", slug="taken")
    with pytest.raises(ConflictError) as conflict:
        service.internal_users.upsert(second, email="taken@example.com", slug="other")
    err = conflict.value
    assert (err.code, err.status) == ("email_taken", 409)
    assert err.request_id == server.wire.last.response_headers["x-request-id"]
    assert err.request_id and err.request_id in str(err)

    with pytest.raises(ValidationError) as invalid:
        service.internal_users.upsert(second, email="not-an-email", slug="Bad Slug")
    fields = {d["field"] for d in invalid.value.details}
    assert {"body.email", "body.slug"} <= fields
    assert invalid.value.status == 422 and invalid.value.code == "validation_error"


def test_duplicate_registration_is_a_conflict(app, served):
    server = served(app)
    cueline.register("dup@example.com", base_url=server.url)
    with pytest.raises(ConflictError) as info:
        cueline.register("dup@example.com", base_url=server.url)
    assert info.value.code == "duplicate_email"


def test_get_is_retried_after_retry_after_then_succeeds(app, served):
    server = served(app)
    key = cueline.register("retry@example.com", base_url=server.url)["api_key"]
    server.faults.fail("/v1/auth/me", 503, "service_unavailable", count=1,
                       headers={"Retry-After": "2"})
    sleeps: list[float] = []
    client = _no_sleep(Client(key, base_url=server.url), sleeps)
    assert client.auth.me()["email"] == "retry@example.com"
    assert sleeps == [2.0]
    assert [e.status for e in server.wire.to("/v1/auth/me")] == [503, 200]


def test_retries_are_bounded_and_raise_rate_limit_with_retry_after(app, served):
    server = served(app)
    server.faults.fail("/v1/auth/me", 429, "rate_limit_exceeded", count=None,
                       headers={"Retry-After": "1"})
    sleeps: list[float] = []
    client = _no_sleep(Client("cue_sk_" + "1" * 32, base_url=server.url, max_retries=3), sleeps)
    with pytest.raises(RateLimitError) as info:
        client.auth.me()
    assert info.value.retry_after == 1.0 and info.value.code == "rate_limit_exceeded"
    assert sleeps == [1.0, 1.0, 1.0]
    assert len(server.wire.to("/v1/auth/me")) == 4


def test_retry_after_longer_than_the_cap_is_raised_at_once(app, served):
    server = served(app)
    server.faults.fail("/v1/auth/me", 429, "rate_limit_exceeded", count=None,
                       headers={"Retry-After": "3600"})
    sleeps: list[float] = []
    client = _no_sleep(Client("cue_sk_" + "1" * 32, base_url=server.url, max_retry_wait=30),
                       sleeps)
    with pytest.raises(RateLimitError) as info:
        client.auth.me()
    assert info.value.retry_after == 3600.0
    assert sleeps == [] and len(server.wire.to("/v1/auth/me")) == 1


def test_post_without_idempotency_key_is_never_retried(app, served):
    server = served(app)
    server.faults.fail("/v1/auth/session/refresh", 503, "service_unavailable", count=None,
                       headers={"Retry-After": "1"})
    sleeps: list[float] = []
    client = _no_sleep(Client("cue_sk_" + "1" * 32, base_url=server.url), sleeps)
    with pytest.raises(ServerError) as info:
        client.auth.refresh_session()
    assert info.value.status == 503 and info.value.request_id == "injected-request-id"
    assert sleeps == [] and len(server.wire.to("/v1/auth/session/refresh")) == 1


def test_post_with_idempotency_key_is_retried(app, served):
    server = served(app)
    server.faults.fail("/v1/messages", 503, "service_unavailable", count=None,
                       headers={"Retry-After": "0"})
    sleeps: list[float] = []
    client = _no_sleep(Client("cue_sk_" + "1" * 32, base_url=server.url, max_retries=2),
                       sleeps)
    with pytest.raises(ServerError):
        client.messages.send("agt_aaaaaaaaaaaa", "agt_bbbbbbbbbbbb", "hi",
                             idempotency_key="k-1")
    sent = server.wire.to("/v1/messages")
    assert len(sent) == 3 and sleeps == [0.0, 0.0]
    assert {e.headers["idempotency-key"] for e in sent} == {"k-1"}

    server.wire.exchanges.clear()
    with pytest.raises(ServerError):
        client.messages.send("agt_aaaaaaaaaaaa", "agt_bbbbbbbbbbbb", "hi")
    assert len(server.wire.to("/v1/messages")) == 1


def test_put_is_retried_without_a_key(delegation_app, served):
    server = served(delegation_app)
    user_id = uuid.uuid4()
    server.faults.fail(f"/v1/internal/users/{user_id}", 503, "service_unavailable", count=1)
    sleeps: list[float] = []
    service = _no_sleep(Client(SERVICE_TOKEN, base_url=server.url, service=True,
                               retry_backoff=0.25), sleeps)
    body = service.internal_users.upsert(user_id, email="put@example.com", slug="put")
    assert body["created"] is True
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 0.25  # backoff without Retry-After


def test_non_json_error_body_is_kept_out_of_the_message(app, served):
    server = served(app)
    client = Client("cue_sk_" + "1" * 32, base_url=server.url)
    with pytest.raises(cueline.NotFoundError) as info:
        client._request(cueline._base.Call("GET", "/no/such/route"))
    assert info.value.code == "http_error" and info.value.status == 404


def test_unreachable_server_is_a_connection_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = Client("cue_sk_" + "1" * 32, base_url=f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(APIConnectionError) as info:
        client.auth.me()
    assert "cue_sk_" not in str(info.value)


def test_real_rate_limit_from_the_server(make_app, served):
    server = served(make_app(RATELIMIT_ENABLED=True, RATE_LIMIT_ANONYMOUS_PER_MINUTE=2))
    sleeps: list[float] = []
    client = _no_sleep(Client("not-a-key", base_url=server.url, max_retries=1),
                       sleeps)
    for _ in range(2):
        with pytest.raises(cueline.AuthenticationError):
            client.auth.me()
    with pytest.raises(RateLimitError) as info:
        client.auth.me()
    limited = server.wire.to("/v1/auth/me")[2:]
    assert [e.status for e in limited] == [429, 429]  # one retry after Retry-After
    # The retry waited the first 429's Retry-After; the second may be a second shorter.
    assert len(sleeps) == 1 and 0 <= sleeps[0] - info.value.retry_after <= 1
    assert info.value.retry_after > 0
    assert info.value.request_id == limited[-1].response_headers["x-request-id"]

    impatient = _no_sleep(Client("not-a-key", base_url=server.url,
                                 max_retry_wait=0.5), sleeps)  # below any Retry-After
    with pytest.raises(RateLimitError):
        impatient.auth.me()
    assert len(sleeps) == 1 and len(server.wire.to("/v1/auth/me")) == 5


class _TamperEcho:
    """Middleware changing the server's ``body_received`` echo (a mangling hop)."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        import json

        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers

        body = b"".join(self.wsgi_app(environ, capture))
        if environ["PATH_INFO"] == "/v1/messages" and body:
            data = json.loads(body)
            if "body_received" in data:
                data["body_received"] += " (mangled)"
                body = json.dumps(data).encode()
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        start_response(captured["status"], headers + [("Content-Length", str(len(body)))])
        return [body]


def test_body_echo_mismatch_raises(app, served):
    app.wsgi_app = _TamperEcho(app.wsgi_app)
    server = served(app)
    key = cueline.register("echo@example.com", base_url=server.url)["api_key"]
    client = Client(key, base_url=server.url)
    sender, recipient = client.agents.create("Sender"), client.agents.create("Recipient")
    with pytest.raises(cueline.BodyVerifyMismatchError) as info:
        client.messages.send(sender["id"], recipient["id"], "exact text")
    assert info.value.sent == "exact text" and info.value.received.endswith("(mangled)")
    # verify=False accepts whatever came back.
    sent = client.messages.send(sender["id"], recipient["id"], "exact text", verify=False)
    assert sent["body"] == "exact text"


def test_the_sdk_imports_without_flask():
    import subprocess
    import sys

    code = ("import sys, cueline, cueline.webhooks; "
            "assert not any(m == 'flask' or m.startswith(('flask.', 'app.')) "
            "for m in sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")
