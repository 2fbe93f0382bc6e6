"""Agents and messages through the SDK, against the real messaging routes."""

from __future__ import annotations

import hashlib
import uuid

import cueline
import pytest
from cueline import Client, ConflictError, NotFoundError, PermissionDeniedError

from tests.client.conftest import require_routes
from tests.helpers import SERVICE_TOKEN

AGENT_ROUTES = (("POST", "/v1/agents"), ("GET", "/v1/agents"), ("GET", "/v1/agents/roster"),
                ("GET", "/v1/agents/<ref>"), ("PATCH", "/v1/agents/<ref>"),
                ("DELETE", "/v1/agents/<ref>"))
MESSAGE_ROUTES = (("POST", "/v1/messages"), ("GET", "/v1/messages/<msg_id>"),
                  ("POST", "/v1/messages/<msg_id>/read"), ("POST", "/v1/messages/<msg_id>/ack"),
                  ("GET", "/v1/agents/<ref>/inbox"), ("GET", "/v1/agents/<ref>/sent"))


def _user_client(url: str) -> Client:
    key = cueline.register(f"m-{uuid.uuid4().hex[:8]}@example.com", base_url=url)["api_key"]
    return Client(key, base_url=url)


def test_agent_lifecycle_and_roster_etag(app, served):
    require_routes(app, *AGENT_ROUTES)
    server = served(app)
    client = _user_client(server.url)
    agent = client.agents.create("Planner Bot", metadata={"description": "plans"})
    assert agent["id"].startswith("agt_") and agent["slug"] == "planner-bot"
    assert client.agents.get(agent["id"])["display_name"] == "Planner Bot"
    me = client.auth.me()
    assert client.agents.get(f"planner-bot@{me['slug']}")["id"] == agent["id"]

    listed = client.agents.list(limit=10)
    assert listed["total"] == 1 and listed["agents"][0]["id"] == agent["id"]

    roster = client.agents.roster()
    assert roster["etag"] and [a["name"] for a in roster["agents"]] == ["planner-bot"]
    assert client.agents.roster(if_none_match=roster["etag"]) is None
    assert server.wire.last.status == 304
    assert server.wire.last.headers["if-none-match"] == roster["etag"]

    updated = client.agents.update(agent["id"], display_name="Planner", status="away")
    assert (updated["display_name"], updated["status"]) == ("Planner", "away")
    assert server.wire.last.method == "PATCH"

    with pytest.raises(ConflictError) as info:
        client.agents.create("Another", slug="planner-bot")
    assert info.value.code == "slug_taken"

    assert client.agents.delete(agent["id"]) is None
    assert server.wire.last.status == 204
    with pytest.raises(NotFoundError) as info:
        client.agents.get(agent["id"])
    assert info.value.code == "agent_not_found"


def test_send_read_ack_with_echo_idempotency_inbox_and_sent(app, served):
    require_routes(app, *AGENT_ROUTES, *MESSAGE_ROUTES)
    server = served(app)
    client = _user_client(server.url)
    alice = client.agents.create("Alice")
    bob = client.agents.create("Bob")

    text = "Bonjour — ünïcode body"
    sent = client.messages.send(alice["id"], bob["id"], text, subject="hi",
                                idempotency_key="msg-1")
    wire = server.wire.last.headers
    assert wire["x-cueapi-from-agent"] == alice["id"]
    assert wire["idempotency-key"] == "msg-1" and wire["x-cueapi-verify-echo"] == "true"
    assert sent["body"] == text and sent["body_received"] == text
    assert sent["body_received_sha256"] == hashlib.sha256(text.encode()).hexdigest()

    replay = client.messages.send(alice["id"], bob["id"], text, subject="hi",
                                  idempotency_key="msg-1", verify=False)
    assert replay["id"] == sent["id"] and server.wire.last.status == 200
    assert "x-cueapi-verify-echo" not in server.wire.last.headers
    with pytest.raises(ConflictError) as info:
        client.messages.send(alice["id"], bob["id"], "different", idempotency_key="msg-1")
    assert info.value.code == "idempotency_key_conflict"

    assert client.agents.inbox(bob["id"], count_only=True) == {"count": 1}
    inbox = client.agents.inbox(bob["id"], limit=5)
    assert [m["id"] for m in inbox["messages"]] == [sent["id"]]
    assert inbox["messages"][0]["delivery_state"] == "delivered"
    assert client.agents.sent(alice["id"])["total"] == 1

    assert client.messages.get(sent["id"])["thread_id"] == sent["id"]
    assert client.messages.mark_read(sent["id"])["delivery_state"] == "read"
    acked = client.messages.ack(sent["id"])
    assert acked["delivery_state"] == "acked" and acked["acked_at"]
    assert client.agents.inbox(bob["id"], count_only=True) == {"count": 0}


def test_messaging_under_delegation_is_scoped_to_the_acting_user(delegation_app, served):
    require_routes(delegation_app, *AGENT_ROUTES, *MESSAGE_ROUTES)
    server = served(delegation_app)
    service = Client(SERVICE_TOKEN, base_url=server.url, service=True)
    a, b = uuid.uuid4(), uuid.uuid4()
    for n, uid in enumerate((a, b)):
        service.internal_users.upsert(uid, email=f"d{n}@example.com", slug=f"d{n}")
    as_a, as_b = service.as_user(a), service.as_user(b)
    a1, a2 = as_a.agents.create("One"), as_a.agents.create("Two")
    b1 = as_b.agents.create("Other")
    msg = as_a.messages.send(a1["id"], a2["id"], "private")
    assert server.wire.last.headers["x-on-behalf-of"] == str(a)

    with pytest.raises(NotFoundError):
        as_b.messages.get(msg["id"])
    with pytest.raises(NotFoundError):
        as_b.agents.get(a1["id"])
    with pytest.raises(PermissionDeniedError) as info:
        as_b.messages.send(a1["id"], b1["id"], "spoofed sender")
    assert info.value.code == "from_agent_not_owned"
    with pytest.raises(NotFoundError) as info:
        as_a.messages.send(a1["id"], b1["id"], "cross tenant")
    assert info.value.code == "agent_not_found"
    assert as_b.agents.list()["total"] == 1


def test_agent_webhook_secret_get_and_regenerate(make_app, served):
    app = make_app(ALLOW_PRIVATE_CALLBACK_URLS=True)
    require_routes(app, *AGENT_ROUTES, ("GET", "/v1/agents/<ref>/webhook-secret"),
                   ("POST", "/v1/agents/<ref>/webhook-secret/regenerate"))
    server = served(app)
    client = _user_client(server.url)
    agent = client.agents.create("Pushed", webhook_url="http://127.0.0.1:9/hook")
    assert agent["webhook_secret"].startswith("whsec_")
    assert client.agents.get_webhook_secret(agent["id"]) == {
        "webhook_secret": agent["webhook_secret"]}
    fresh = client.agents.regenerate_webhook_secret(agent["id"])["webhook_secret"]
    assert fresh.startswith("whsec_") and fresh != agent["webhook_secret"]
    assert server.wire.last.headers["x-confirm-destructive"] == "true"
    cleared = client.agents.update(agent["id"], webhook_url=None)
    assert cleared["webhook_url"] is None
    with pytest.raises(NotFoundError) as info:
        client.agents.get_webhook_secret(agent["id"])
    assert info.value.code == "no_webhook_secret"
