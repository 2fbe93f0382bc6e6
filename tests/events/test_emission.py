"""Every new message emits ``message.delivered`` in the same write as the message (wire §11.1):
no event without its message, no message without its event, none for a replay."""

from __future__ import annotations

import threading

import httpx
import pytest
from sqlalchemy import func, select

from app.events.emission import delivered_payload, with_inline_body
from app.events.registry import INLINE_BODY_MAX_BYTES
from tests.events.conftest import stored_events, subscribe
from tests.helpers import error_of
from tests.messaging.conftest import Party


def _message_count(app) -> int:
    from app.extensions import db
    from app.messaging.models import Message

    with app.app_context():
        count = db.session.execute(select(func.count()).select_from(Message)).scalar_one()
        db.session.remove()
        return count


def test_send_emits_message_delivered(app, alice, pair):
    sender, recipient = pair
    sent = alice.send(sender["id"], recipient["id"], body="hi", subject="Hello", priority=2,
                      correlation_id="rpc-1").get_json()
    [event] = stored_events(app)
    assert event.event_type == "message.delivered"
    assert event.recipient_agent_id == recipient["id"] and event.priority == 2
    assert event.payload == {
        "message_id": sent["id"], "sender_agent_id": sender["id"],
        "recipient_agent_id": recipient["id"], "thread_id": sent["id"], "reply_to": None,
        "priority": 2, "correlation_id": "rpc-1", "subject": "Hello"}
    reply = alice.send(recipient["id"], sender["id"], body="re", reply_to=sent["id"]).get_json()
    second = stored_events(app, recipient_agent_id=sender["id"])[0]
    assert second.payload["thread_id"] == sent["id"]
    assert second.payload["reply_to"] == sent["id"]
    assert second.payload["message_id"] == reply["id"]


def test_event_carries_the_effective_priority(make_app):
    app = make_app()
    alice = Party(app.test_client())
    sender, recipient = alice.agent("S"), alice.agent("R")
    priorities = []
    for _ in range(6):
        response = alice.send(sender["id"], recipient["id"], priority=5)
        priorities.append(response.get_json()["priority"])
    assert priorities[-1] == 3  # the pair limit downgraded the sixth
    assert [e.payload["priority"] for e in stored_events(app)] == priorities


def test_idempotent_replay_emits_no_second_event(app, alice, pair):
    sender, recipient = pair
    first = alice.send(sender["id"], recipient["id"], headers={"Idempotency-Key": "k1"})
    replay = alice.send(sender["id"], recipient["id"], headers={"Idempotency-Key": "k1"})
    assert first.status_code == 201 and replay.status_code == 200
    assert [e.payload["message_id"] for e in stored_events(app)] == [first.get_json()["id"]]


def test_refused_send_emits_nothing(app, alice, pair):
    sender, recipient = pair
    alice.send(sender["id"], recipient["id"], headers={"Idempotency-Key": "k2"})
    conflict = alice.send(sender["id"], recipient["id"], body="other",
                          headers={"Idempotency-Key": "k2"})
    assert conflict.status_code == 409
    too_big = alice.send(sender["id"], recipient["id"], body="é" * 16385)  # 32,770 bytes
    assert too_big.status_code == 422
    assert len(stored_events(app)) == 1 and _message_count(app) == 1


def test_failing_counter_write_leaves_neither_message_nor_event(app, alice, pair, monkeypatch):
    """The event is written before the monthly counter: a failure of the last part of the
    write must take the message and its event with it."""
    from sqlalchemy import bindparam, insert

    from app.messaging.models import MessageMonthlyCount
    from app.quotas import messages as quotas

    sender, recipient = pair
    broken = insert(MessageMonthlyCount.__table__).values(
        user_id=bindparam("count_user_id"), month=None, count=1)  # NOT NULL violation
    monkeypatch.setattr(quotas, "count_message_write",
                        lambda user_id, now: (broken, {"count_user_id": user_id}))
    response = alice.send(sender["id"], recipient["id"])
    assert response.status_code == 500
    assert stored_events(app) == [] and _message_count(app) == 0


def test_failing_message_insert_leaves_no_event(app, alice, pair, monkeypatch):
    from app.messaging.services import messages

    sender, recipient = pair
    original = messages._message_params

    def without_thread(values):
        return {**original(values), "msg_thread_id": None}  # NOT NULL violation

    monkeypatch.setattr(messages, "_message_params", without_thread)
    assert alice.send(sender["id"], recipient["id"]).status_code == 500
    assert stored_events(app) == [] and _message_count(app) == 0


def test_inline_body_only_for_inline_subscribers(app, party):
    alice = party()
    sender = alice.agent("S")
    plain, inline = alice.agent("Plain"), alice.agent("Inline")
    subscribe(alice, plain["id"])
    subscribe(alice, inline["id"], inline_body=True)
    # A detached inline subscription no longer embeds.
    other = alice.agent("Detached")
    sub = subscribe(alice, other["id"], inline_body=True).get_json()
    alice.client.delete(f"/v1/agents/{other['id']}/subscriptions/{sub['id']}",
                        headers=alice.headers)
    # An inline subscription to another type does not embed in message.delivered.
    digest_only = alice.agent("Digest")
    subscribe(alice, digest_only["id"], event_type="message.digest", inline_body=True)
    for agent in (plain, inline, other, digest_only):
        alice.send(sender["id"], agent["id"], body="the body")
    payloads = {e.recipient_agent_id: e.payload for e in stored_events(app)}
    assert "body" not in payloads[plain["id"]]
    assert payloads[inline["id"]]["body"] == "the body"
    assert "body" not in payloads[other["id"]] and "body" not in payloads[digest_only["id"]]


def test_inline_body_at_the_limit(app, alice, pair):
    sender, recipient = pair
    subscribe(alice, recipient["id"], inline_body=True)
    exactly = "a" * (INLINE_BODY_MAX_BYTES - 4) + "éé"  # 32,768 bytes, 32,766 characters
    assert len(exactly.encode()) == INLINE_BODY_MAX_BYTES
    assert alice.send(sender["id"], recipient["id"], body=exactly).status_code == 201
    [event] = stored_events(app)
    assert event.payload["body"] == exactly and "body_omitted" not in event.payload


def test_inline_body_cut_off_counts_utf8_bytes():
    """A body over 32 KiB in UTF-8 but within 32,768 characters is not embedded.  (The send
    refuses such a body with 422, see above; the cut-off itself counts bytes.)"""
    payload = delivered_payload(message_id="msg_x", sender_agent_id="agt_a",
                                recipient_agent_id="agt_b", thread_id="msg_x", reply_to=None,
                                priority=3, correlation_id=None, subject=None)
    body = "é" * 16385  # 16,385 characters, 32,770 bytes
    assert len(body) <= 32768 < len(body.encode())
    assert with_inline_body(payload, body) == {**payload, "body_omitted": "size_too_large",
                                               "body_size_bytes": 32770}
    assert with_inline_body(payload, "x" * 32768)["body"] == "x" * 32768
    assert "body" not in payload  # the plain payload is left as it was


def test_scheduled_message_emits_at_send_time(app, alice, pair):
    sender, recipient = pair
    response = alice.send(sender["id"], recipient["id"], send_at="2099-01-01T00:00:00Z")
    assert response.status_code == 201
    [event] = stored_events(app)
    assert event.payload["message_id"] == response.get_json()["id"]


def test_send_racing_a_subscription_delete(make_app, live_server):
    """Sends keep succeeding, each with exactly one event, while the recipient's inline
    subscription is deleted and recreated under them."""
    app = make_app(DISABLE_QUOTA_ENFORCEMENT=True)
    alice = Party(app.test_client())
    sender, recipient = alice.agent("S"), alice.agent("R")
    server = live_server(app)
    stop = threading.Event()
    errors: list[str] = []
    sent: list[str] = []

    def churn():
        with httpx.Client(base_url=server.url, headers=alice.headers, timeout=30,
                          trust_env=False) as http:
            while not stop.is_set():
                r = http.post(f"/v1/agents/{recipient['id']}/subscriptions",
                              json={"event_type": "message.delivered",
                                    "delivery_target": "pull", "inline_body": True})
                if r.status_code not in (201, 409):
                    errors.append(f"create {r.status_code} {r.text[:200]}")
                for sub in http.get(f"/v1/agents/{recipient['id']}/subscriptions").json()[
                        "subscriptions"]:
                    d = http.delete(f"/v1/agents/{recipient['id']}/subscriptions/{sub['id']}")
                    if d.status_code != 200:
                        errors.append(f"delete {d.status_code}")

    def send(index):
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False,
                          headers={**alice.headers, "X-Cueapi-From-Agent": sender["id"]}) as http:
            for i in range(15):
                r = http.post("/v1/messages", json={"to": recipient["id"], "body": f"{index}-{i}"})
                if r.status_code != 201:
                    errors.append(f"send {r.status_code} {r.text[:200]}")
                else:
                    sent.append(r.json()["id"])

    churner = threading.Thread(target=churn)
    churner.start()
    senders = [threading.Thread(target=send, args=(i,)) for i in range(3)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(120)
    stop.set()
    churner.join(60)
    assert not errors, errors[:5]
    events = stored_events(app)
    assert sorted(e.payload["message_id"] for e in events) == sorted(sent)
    assert len(sent) == 45
    for event in events:  # embedded or not, a payload is always whole
        assert "body" not in event.payload or event.payload["body"].count("-") == 1


@pytest.mark.parametrize("deleted", ["recipient", "sender"])
def test_events_go_with_their_agent_row(app, alice, pair, deleted):
    """Agents are soft-deleted, so their events stay readable to their owner."""
    sender, recipient = pair
    alice.send(sender["id"], recipient["id"])
    target = recipient if deleted == "recipient" else sender
    alice.client.delete(f"/v1/agents/{target['id']}", headers=alice.headers)
    response = alice.client.get(f"/v1/agents/{recipient['id']}/events", headers=alice.headers)
    assert response.status_code == 200, error_of(response)
    assert len(response.get_json()["events"]) == 1
