"""Cross-user authorization backends (§10.7), their start-up checks, and /v1/info."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app import create_app
from app.messaging.authorization import AuthorizationBackend
from app.outbound.signing import verify_signature
from config import ConfigError
from tests.helpers import error_of
from tests.messaging.conftest import Party

PKG = "app.messaging.authorization"
HOOK_SECRET = "hook-secret-" + "z" * 30


class DenyAllBackend(AuthorizationBackend):
    """A custom backend for the tests: nothing is allowed, not even same-user sends."""

    def authorize(self, request):
        return False


class NotABackend:
    def authorize(self, request):
        return True


def _users(app):
    client = app.test_client()
    a, b = Party(client), Party(client)
    return client, a, b, a.agent("A"), b.agent("B")


def test_same_tenant_is_default(app):
    _client, a, _b, a1, b1 = _users(app)
    r = a.send(a1["id"], b1["id"])
    assert r.status_code == 404 and error_of(r)["code"] == "agent_not_found"
    assert app.test_client().get("/v1/info").get_json()["authorization_backend"] == \
        "SameTenantAuthorizationBackend"


def test_everyone_backend_allows_cross_user_and_recipient_sees_it(make_app):
    app = make_app(AUTHORIZATION_BACKEND=f"{PKG}:EveryoneAuthorizationBackend")
    client, a, b, a1, b1 = _users(app)
    sent = a.send(a1["id"], b1["id"])
    assert sent.status_code == 201
    msg = sent.get_json()
    assert msg["user_id"] == a.id
    inbox = client.get(f"/v1/agents/{b1['id']}/inbox", headers=b.headers).get_json()
    assert [m["id"] for m in inbox["messages"]] == [msg["id"]]
    assert client.get(f"/v1/agents/{a1['id']}/sent", headers=a.headers).get_json()["total"] == 1
    assert client.get("/v1/info").get_json()["authorization_backend"] == \
        "EveryoneAuthorizationBackend"


def test_allowlist_is_directed(make_app, db_url):
    app = make_app()
    _client, a, b, a1, b1 = _users(app)
    allow = make_app(AUTHORIZATION_BACKEND=f"{PKG}:AllowlistAuthorizationBackend",
                     AUTHZ_ALLOWLIST=f" {a.id}:{b.id} ")
    c = allow.test_client()
    assert c.post("/v1/messages", headers={**a.headers, "X-Cueapi-From-Agent": a1["id"]},
                  json={"to": b1["id"], "body": "x"}).status_code == 201
    back = c.post("/v1/messages", headers={**b.headers, "X-Cueapi-From-Agent": b1["id"]},
                  json={"to": a1["id"], "body": "x"})
    assert back.status_code == 404
    # same user always allowed
    a2 = a.agent("A2")
    assert c.post("/v1/messages", headers={**a.headers, "X-Cueapi-From-Agent": a1["id"]},
                  json={"to": a2["id"], "body": "x"}).status_code == 201


def test_custom_backend_is_loaded(make_app):
    app = make_app(AUTHORIZATION_BACKEND="tests.messaging.test_authorization:DenyAllBackend")
    client = app.test_client()
    a = Party(client)
    a1, a2 = a.agent("A1"), a.agent("A2")
    r = a.send(a1["id"], a2["id"])
    assert r.status_code == 403
    assert client.get("/v1/info").get_json()["authorization_backend"] == "DenyAllBackend"


@pytest.mark.parametrize("overrides,needle", [
    ({"AUTHORIZATION_BACKEND": "no_such_module:Thing"}, "cannot import"),
    ({"AUTHORIZATION_BACKEND": "app.messaging.authorization"}, "module.path:ClassName"),
    ({"AUTHORIZATION_BACKEND": f"{PKG}:Missing"}, "has no"),
    ({"AUTHORIZATION_BACKEND": "tests.messaging.test_authorization:NotABackend"},
     "not a subclass"),
    ({"AUTHORIZATION_BACKEND": f"{PKG}:AuthorizationBackend"}, "does not implement"),
    ({"AUTHZ_HOOK_URL": "https://hook.example.com/authz"}, "AUTHZ_HOOK_SECRET"),
    ({"AUTHZ_HOOK_URL": "ftp://x", "AUTHZ_HOOK_SECRET": HOOK_SECRET}, "AUTHZ_HOOK_URL"),
    ({"AUTHORIZATION_BACKEND": f"{PKG}:AllowlistAuthorizationBackend",
      "AUTHZ_ALLOWLIST": "not-a-pair,also:bad"}, "AUTHZ_ALLOWLIST"),
    ({"AUTHZ_HOOK_TIMEOUT_SECONDS": "0"}, "AUTHZ_HOOK_TIMEOUT_SECONDS"),
])
def test_misconfiguration_refuses_start_up(overrides, needle):
    with pytest.raises(ConfigError) as info:
        create_app({"ENV": "test", "DATABASE_URL": "sqlite://", **overrides})
    assert any(needle in p for p in info.value.problems), info.value.problems
    assert HOOK_SECRET not in str(info.value)


class _Hook:
    """A local authorization hook recording what it receives."""

    def __init__(self, decision="allow", delay=0.0, status=200, ttl=60, raw=None):
        self.requests = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                hook.requests.append((dict(self.headers), body))
                time.sleep(delay)
                payload = raw if raw is not None else json.dumps(
                    {"decision": decision, "cache_ttl": ttl}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/authz"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook_app(make_app):
    hooks = []

    def _build(**kwargs):
        timeout = kwargs.pop("timeout", 5.0)
        hook = _Hook(**kwargs)
        hooks.append(hook)
        app = make_app(AUTHZ_HOOK_URL=hook.url, AUTHZ_HOOK_SECRET=HOOK_SECRET,
                       AUTHZ_HOOK_TIMEOUT_SECONDS=timeout)
        return app, hook

    yield _build
    for hook in hooks:
        hook.close()


def test_hook_allows_with_signed_request_and_caches(hook_app):
    app, hook = hook_app(decision="allow", ttl=60)
    client, a, b, a1, b1 = _users(app)
    sent = client.post("/v1/messages", headers={**a.headers, "X-Cueapi-From-Agent": a1["id"],
                                                "Idempotency-Key": "idem-1"},
                       json={"to": b1["id"], "body": "x"})
    assert sent.status_code == 201
    headers, body = hook.requests[0]
    assert json.loads(body) == {"sender_user_id": a.id, "recipient_user_id": b.id,
                                "sender_agent_id": a1["id"], "recipient_agent_id": b1["id"],
                                "message_kind": "message", "idempotency_key": "idem-1"}
    assert body == json.dumps(json.loads(body), sort_keys=True)
    assert verify_signature(HOOK_SECRET, body, headers["X-CueAPI-Timestamp"],
                            headers["X-CueAPI-Signature"])
    assert headers["Content-Type"] == "application/json"
    assert a.send(a1["id"], b1["id"], body="again").status_code == 201
    assert len(hook.requests) == 1  # cached decision
    assert client.get("/v1/info").get_json()["authorization_backend"] == \
        "WebhookAuthorizationBackend"


def test_hook_reply_chain_kind(hook_app):
    app, hook = hook_app(decision="allow", ttl=0)
    _client, a, _b, a1, b1 = _users(app)
    a2 = a.agent("A2")
    assert a.send(a1["id"], a2["id"], reply_to_agent=b1["id"]).status_code == 201
    kinds = [(json.loads(body)["message_kind"], json.loads(body)["recipient_agent_id"])
             for _h, body in hook.requests]
    assert kinds == [("message", a2["id"]), ("reply_chain", b1["id"])]  # same user asked too


@pytest.mark.parametrize("kwargs", [
    {"decision": "deny"},
    {"status": 500},
    {"raw": b"not json"},
    {"raw": b'{"decision": "maybe"}'},
])
def test_hook_denies(hook_app, kwargs):
    app, _hook = hook_app(**kwargs)
    _client, a, _b, a1, b1 = _users(app)
    r = a.send(a1["id"], b1["id"])
    assert r.status_code == 404 and error_of(r)["code"] == "agent_not_found"
    # between two of the caller's own agents a refusal stays a 403 (nothing to hide)
    a2 = a.agent("A2")
    r = a.send(a1["id"], a2["id"])
    assert r.status_code == 403 and error_of(r)["code"] == "cross_tenant_messaging_forbidden"
    assert a1["id"] not in error_of(r)["message"]


def test_hook_timeout_denies(hook_app):
    app, hook = hook_app(decision="allow", delay=2.0, timeout=0.5)
    _client, a, _b, a1, b1 = _users(app)
    started = time.monotonic()
    r = a.send(a1["id"], b1["id"])
    assert r.status_code == 404
    assert time.monotonic() - started < 1.9
    assert len(hook.requests) == 1


def test_hook_unreachable_denies(make_app):
    app = make_app(AUTHZ_HOOK_URL="http://127.0.0.1:9/authz", AUTHZ_HOOK_SECRET=HOOK_SECRET)
    _client, a, _b, a1, b1 = _users(app)
    assert a.send(a1["id"], b1["id"]).status_code == 404
