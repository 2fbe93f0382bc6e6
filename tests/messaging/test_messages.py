"""POST /v1/messages (§10.4), message reads (§10.6) and the delivery state machine (§10.5)."""

from __future__ import annotations

import hashlib
import re
import threading
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import error_of


@pytest.fixture
def alice(party):
    return party("alice@example.com")


@pytest.fixture
def pair(alice):
    return alice.agent("Sender", slug="sender"), alice.agent("Receiver", slug="receiver")


def test_send_returns_full_message(alice, pair):
    sender, receiver = pair
    response = alice.send(sender["id"], receiver["id"], body="x" * 250, subject="Hi",
                          metadata={"k": "v"}, correlation_id="c-1", expects_reply=True)
    assert response.status_code == 201, response.get_json()
    msg = response.get_json()
    assert re.fullmatch(r"msg_[a-z0-9]{12}", msg["id"])
    assert msg["thread_id"] == msg["id"] and msg["reply_to"] is None
    assert msg["user_id"] == alice.id
    assert msg["from_agent_id"] == sender["id"] and msg["to_agent_id"] == receiver["id"]
    assert msg["preview"] == "x" * 200 and msg["body"] == "x" * 250
    assert msg["priority"] == 3 and msg["dispatch_priority_bucket"] == 3
    assert msg["delivery_state"] == "queued" and msg["expects_reply"] is True
    assert msg["metadata"] == {"k": "v"} and msg["correlation_id"] == "c-1"
    assert msg["send_at"] is None and msg["delivered_at"] is None
    created = datetime.fromisoformat(msg["created_at"])
    expires = datetime.fromisoformat(msg["expires_at"])
    assert timedelta(days=29, hours=23) < expires - created <= timedelta(days=30)
    assert "body_received" not in msg


def _request_statements(app, send) -> tuple:
    """``send()``'s response and the statements its request ran (not the audit writer's)."""
    from sqlalchemy import event

    from app.extensions import db

    statements: list[str] = []
    request_thread = threading.get_ident()  # the test client serves requests on this thread

    def record(conn, cursor, statement, *args):
        if threading.get_ident() == request_thread:  # not e.g. the audit trail's writer thread
            statements.append(" ".join(statement.split()))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        response = send()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 201, response.get_json()
    return response, statements


def _agent_reads(statements: list[str]) -> list[str]:
    return [s for s in statements if s.upper().startswith("SELECT") and "FROM agents" in s]


def test_send_by_key_reads_its_agents_with_the_caller(alice, pair, app):
    """By API key, sender and recipient come back with the caller's user row: no agent query
    of its own.  A third agent (reply_to_agent) is read on its own; a repeated one is not."""
    sender, receiver = pair
    alice.send(sender["id"], receiver["id"])  # presence is fresh: the sends below only insert
    response, statements = _request_statements(
        app, lambda: alice.send(sender["id"], receiver["id"], reply_to_agent=sender["id"]))
    assert _agent_reads(statements) == []
    assert "JOIN agents" in statements[0] and "FROM users" in statements[0]
    assert response.get_json()["from_agent_id"] == sender["id"]

    third = alice.agent("Third")
    _response, statements = _request_statements(
        app, lambda: alice.send(sender["id"], receiver["id"], reply_to_agent=third["id"]))
    assert len(_agent_reads(statements)) == 1


def test_send_by_session_reads_the_agents_in_one_query(alice, pair, app):
    """A session's user lookup carries no extras: sender, recipient and reply agent named by id
    are read in one agent query, not one each."""
    from tests.helpers import mint_session

    sender, receiver = pair
    third = alice.agent("Third")
    session = {"Authorization": f"Bearer {mint_session(alice.id)}",
               "X-Cueapi-From-Agent": sender["id"]}
    _response, statements = _request_statements(app, lambda: alice.client.post(
        "/v1/messages", headers=session,
        json={"to": receiver["id"], "body": "hi", "reply_to_agent": third["id"]}))
    assert len(_agent_reads(statements)) == 1


@pytest.mark.parametrize("body", [
    {"to": "receiver@nobody", "body": "hi"},  # slug address: not joined, resolved by slug
    {"to": "agt_000000000000", "body": "hi"},  # no such agent: the join finds nothing
    {"to": ["not", "a", "string"], "body": "hi"},  # invalid: validation answers 422
    "not json at all",  # invalid JSON: 400 invalid_json, as without the join
])
def test_send_with_odd_references_answers_as_before(alice, pair, body):
    """References the caller's join cannot use leave the answers unchanged."""
    sender, _receiver = pair
    headers = {**alice.headers, "X-Cueapi-From-Agent": sender["id"]}
    if isinstance(body, str):
        response = alice.client.post("/v1/messages", headers={
            **headers, "Content-Type": "application/json"}, data=body)
        assert response.status_code == 400 and error_of(response)["code"] == "invalid_json"
        return
    response = alice.client.post("/v1/messages", headers=headers, json=body)
    if isinstance(body["to"], list):
        assert response.status_code in (400, 422), response.get_json()
    else:
        assert response.status_code == 404 and error_of(response)["code"] == "agent_not_found"


def test_send_writes_once_without_a_transaction_on_postgresql(alice, pair, app, backend):
    """Message, its message.delivered event, idempotency key and monthly counter: one INSERT
    statement on PostgreSQL, sent without BEGIN/COMMIT; SQLite writes them in one
    transaction."""
    from sqlalchemy import event

    from app.extensions import db

    sender, receiver = pair
    alice.send(sender["id"], receiver["id"])  # presence is fresh: the next send only inserts
    writes: list[str] = []
    in_transaction: list[bool] = []

    request_thread = threading.get_ident()  # the test client serves requests on this thread

    def record(conn, cursor, statement, *args):
        if threading.get_ident() != request_thread:  # e.g. the audit trail's writer thread
            return
        if not statement.lstrip().upper().startswith("SELECT"):
            writes.append(statement.lstrip().split(None, 1)[0].upper())
        dbapi = conn.connection.dbapi_connection
        in_transaction.append(not getattr(dbapi, "autocommit", False))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        response = alice.send(sender["id"], receiver["id"], headers={"Idempotency-Key": "k-1"})
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 201, response.get_json()
    if backend == "postgresql":
        assert writes == ["WITH"] and not any(in_transaction)
    else:
        assert writes == ["INSERT"] * 4 and all(in_transaction)
    replay = alice.send(sender["id"], receiver["id"], headers={"Idempotency-Key": "k-1"})
    assert replay.status_code == 200 and replay.get_json()["id"] == response.get_json()["id"]
    with app.app_context():
        import uuid

        from app.db import utcnow
        from app.quotas.messages import messages_this_month
        assert messages_this_month(uuid.UUID(alice.id), utcnow()) == 2  # the replay adds none


def test_send_by_slug_addresses(alice, pair):
    response = alice.send(f"sender@{alice.slug}", f"receiver@{alice.slug}")
    assert response.status_code == 201
    assert response.get_json()["to_agent_id"] == pair[1]["id"]


def test_verify_echo(alice, pair):
    text = "héllo \"quoted\" \\ ünïcode ✓"
    response = alice.send(pair[0]["id"], pair[1]["id"], body=text,
                          headers={"X-CueAPI-Verify-Echo": " True "})
    body = response.get_json()
    assert body["body_received"] == text
    assert body["body_received_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    off = alice.send(pair[0]["id"], pair[1]["id"], headers={"X-CueAPI-Verify-Echo": "yes"})
    assert "body_received" not in off.get_json()


@pytest.mark.parametrize("headers,code,status", [
    ({}, "missing_from_agent", 400),
    ({"X-Cueapi-From-Agent": "bogus"}, "invalid_agent_address", 400),
    ({"X-Cueapi-From-Agent": "agt_000000000000"}, "agent_not_found", 404),
])
def test_sender_errors(alice, pair, client, headers, code, status):
    response = client.post("/v1/messages", headers={**alice.headers, **headers},
                           json={"to": pair[1]["id"], "body": "x"})
    assert response.status_code == status
    assert error_of(response)["code"] == code


def test_processing_order(alice, party, pair, client):
    sender, receiver = pair
    bob = party("bob@example.com")
    bob_agent = bob.agent("Bob")
    long_key = {"Idempotency-Key": "k" * 256}
    big = {"blob": "x" * 10300}
    # invalid key beats metadata size beats ownership
    r = alice.send(bob_agent["id"], "garbage", headers=long_key, metadata=big)
    assert error_of(r)["code"] == "invalid_idempotency_key"
    r = alice.send(bob_agent["id"], "garbage", metadata=big)
    assert r.status_code == 400 and error_of(r)["code"] == "metadata_too_large"
    r = alice.send(bob_agent["id"], "garbage")
    assert r.status_code == 403 and error_of(r)["code"] == "from_agent_not_owned"
    r = alice.send(sender["id"], "garbage")
    assert r.status_code == 400 and error_of(r)["code"] == "invalid_agent_address"
    r = alice.send(sender["id"], "agt_000000000000")
    assert r.status_code == 404 and error_of(r)["code"] == "agent_not_found"
    r = alice.send(sender["id"], receiver["id"], reply_to_agent="agt_000000000000")
    assert r.status_code == 404
    r = alice.send(sender["id"], bob_agent["id"])
    assert r.status_code == 404 and error_of(r)["code"] == "agent_not_found"
    r = alice.send(sender["id"], receiver["id"], reply_to_agent=bob_agent["id"])
    assert r.status_code == 404 and error_of(r)["code"] == "agent_not_found"
    r = alice.send(sender["id"], receiver["id"], reply_to="msg_000000000000")
    assert r.status_code == 404 and error_of(r)["code"] == "reply_to_not_found"


def test_deleted_sender_is_not_found(alice, pair, client):
    client.delete(f"/v1/agents/{pair[0]['id']}", headers=alice.headers)
    r = alice.send(pair[0]["id"], pair[1]["id"])
    assert r.status_code == 404 and error_of(r)["code"] == "agent_not_found"


@pytest.mark.parametrize("fields,field", [
    ({"body": ""}, "body.body"),
    ({"body": "x" * 32769}, "body.body"),
    ({"body": "é" * 16385}, "body.body"),  # 32,770 bytes, fewer than 32,768 characters
    ({"priority": 6}, "body.priority"),
    ({"priority": 0}, "body.priority"),
    ({"reply_to": "not-a-msg"}, "body.reply_to"),
    ({"subject": "s" * 256}, "body.subject"),
    ({"live_fallback_mode": "x"}, "body.live_fallback_mode"),
    ({"metadata": None}, "body.metadata"),
    ({"send_at": "yesterday"}, "body.send_at"),
])
def test_body_validation(alice, pair, fields, field):
    response = alice.send(pair[0]["id"], pair[1]["id"], **fields)
    assert response.status_code == 422, response.get_json()
    assert field in [d["field"] for d in error_of(response)["details"]]


def test_body_at_byte_limit_accepted(alice, pair):
    assert alice.send(pair[0]["id"], pair[1]["id"], body="é" * 16384).status_code == 201


def test_threading(alice, pair):
    sender, receiver = pair
    root = alice.send(sender["id"], receiver["id"]).get_json()
    reply = alice.send(receiver["id"], sender["id"], reply_to=root["id"]).get_json()
    second = alice.send(sender["id"], receiver["id"], reply_to=reply["id"]).get_json()
    assert reply["thread_id"] == root["id"] and reply["reply_to"] == root["id"]
    assert second["thread_id"] == root["id"] and second["reply_to"] == reply["id"]


def test_reply_to_other_tenants_message_is_not_found(alice, party, pair):
    bob = party("bob@example.com")
    b1, b2 = bob.agent("B1"), bob.agent("B2")
    theirs = bob.send(b1["id"], b2["id"]).get_json()
    r = alice.send(pair[0]["id"], pair[1]["id"], reply_to=theirs["id"])
    assert r.status_code == 404 and error_of(r)["code"] == "reply_to_not_found"


def test_reply_to_agent_recorded(alice, pair):
    third = alice.agent("Third")
    msg = alice.send(pair[0]["id"], pair[1]["id"], reply_to_agent=third["id"]).get_json()
    assert msg["reply_to_agent_id"] == third["id"]


def test_send_at_future_is_scheduled_and_hidden(alice, pair, client):
    sender, receiver = pair
    future = (datetime.now(UTC) + timedelta(hours=1)).replace(tzinfo=None).isoformat()
    msg = alice.send(sender["id"], receiver["id"], send_at=future).get_json()
    assert msg["send_at"] is not None
    # naive input is UTC
    assert abs(datetime.fromisoformat(msg["send_at"]) - datetime.fromisoformat(future + "+00:00")
               ) < timedelta(seconds=1)
    past = alice.send(sender["id"], receiver["id"],
                      send_at="2020-01-01T00:00:00Z").get_json()
    assert past["send_at"] is None
    inbox = client.get(f"/v1/agents/{receiver['id']}/inbox", headers=alice.headers).get_json()
    assert [m["id"] for m in inbox["messages"]] == [past["id"]]
    sent = client.get(f"/v1/agents/{sender['id']}/sent", headers=alice.headers).get_json()
    assert {m["id"] for m in sent["messages"]} == {past["id"], msg["id"]}


def test_get_message_visibility(alice, party, pair, client):
    msg = alice.send(pair[0]["id"], pair[1]["id"]).get_json()
    assert client.get(f"/v1/messages/{msg['id']}", headers=alice.headers).status_code == 200
    bob = party("bob@example.com")
    for target in (msg["id"], "msg_000000000000", "garbage", "msg_%00"):
        r = client.get(f"/v1/messages/{target}", headers=bob.headers)
        assert r.status_code == 404
        assert error_of(r)["code"] in ("message_not_found", "http_error")
    r = client.get(f"/v1/messages/{msg['id']}", headers=bob.headers)
    assert error_of(r)["code"] == "message_not_found"


def test_read_and_ack_transitions(alice, pair, client):
    msg = alice.send(pair[0]["id"], pair[1]["id"]).get_json()
    url = f"/v1/messages/{msg['id']}"
    read = client.post(url + "/read", headers=alice.headers, json={})
    assert read.status_code == 200
    body = read.get_json()
    assert body["delivery_state"] == "read" and body["acked_at"] is None
    assert body["read_at"].endswith("Z")
    again = client.post(url + "/read", headers=alice.headers).get_json()
    assert again == body  # idempotent
    ack = client.post(url + "/ack", headers=alice.headers).get_json()
    assert ack["delivery_state"] == "acked" and ack["read_at"] is None and ack["acked_at"]
    assert client.post(url + "/ack", headers=alice.headers).get_json() == ack
    after = client.post(url + "/read", headers=alice.headers)
    assert after.status_code == 409 and error_of(after)["code"] == "invalid_state_transition"
    state = client.get(url, headers=alice.headers).get_json()
    assert state["delivery_state"] == "acked" and state["read_at"] is not None


def test_only_recipient_can_read(alice, party, client, make_app):
    app = make_app(AUTHORIZATION_BACKEND="app.messaging.authorization:EveryoneAuthorizationBackend")
    c = app.test_client()
    from tests.messaging.conftest import Party

    a, b = Party(c), Party(c)
    a1, b1 = a.agent("A"), b.agent("B")
    msg = a.send(a1["id"], b1["id"]).get_json()
    assert c.get(f"/v1/messages/{msg['id']}", headers=b.headers).status_code == 200
    r = c.post(f"/v1/messages/{msg['id']}/read", headers=a.headers)
    assert r.status_code == 403 and error_of(r)["code"] == "not_message_recipient"
    assert c.post(f"/v1/messages/{msg['id']}/ack", headers=b.headers).status_code == 200


def test_expired_message_transitions(alice, pair, client, app):
    msg = alice.send(pair[0]["id"], pair[1]["id"]).get_json()
    from sqlalchemy import update

    from app.extensions import db
    from app.messaging.models import Message

    with app.app_context():
        db.session.execute(update(Message).values(delivery_state="expired"))
        db.session.commit()
    for action in ("read", "ack"):
        r = client.post(f"/v1/messages/{msg['id']}/{action}", headers=alice.headers)
        assert r.status_code == 409 and error_of(r)["code"] == "invalid_state_transition"


def test_foreign_agent_is_indistinguishable_from_a_missing_one(alice, party, pair, client):
    """A refused send to another user's agent answers exactly as a send to no agent: same
    status, code and message, naming only what the caller sent (docs/messaging.md)."""
    sender, receiver = pair
    bob = party("bob-hidden@example.com")
    bob_agent = bob.agent("Bob")
    bob_slug = client.get("/v1/auth/me", headers=bob.headers).get_json()["slug"]
    by_address = f"{bob_agent['slug']}@{bob_slug}"
    missing_address = f"nobody@{bob_slug}"
    for foreign, missing in ((bob_agent["id"], "agt_000000000000"),
                             (by_address, missing_address)):
        hidden = alice.send(sender["id"], foreign)
        absent = alice.send(sender["id"], missing)
        assert hidden.status_code == absent.status_code == 404
        assert hidden.get_json()["error"] == {
            **absent.get_json()["error"],
            "message": absent.get_json()["error"]["message"].replace(missing, foreign)}
        assert bob_agent["id"] not in hidden.get_data(as_text=True) or foreign == bob_agent["id"]
        assert sender["id"] not in hidden.get_data(as_text=True)
        # the reply_to_agent position: a foreign agent is as absent as a missing one, and a
        # refused foreign ``to`` answers before a missing reply_to_agent is looked at
        hidden = alice.send(sender["id"], receiver["id"], reply_to_agent=foreign)
        absent = alice.send(sender["id"], receiver["id"], reply_to_agent=missing)
        assert hidden.get_json()["error"]["message"] == \
            absent.get_json()["error"]["message"].replace(missing, foreign)
        both = alice.send(sender["id"], foreign, reply_to_agent="agt_000000000001")
        assert both.get_json()["error"]["message"] == \
            alice.send(sender["id"], missing, reply_to_agent="agt_000000000001") \
            .get_json()["error"]["message"].replace(missing, foreign)
