"""The worker's event jobs: webhook subscriptions (wire §13.4) with a loopback receiver, the
circuit breaker, priority-4 debounce, digests and retention."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from cueapi import verify_webhook
from sqlalchemy import select, update

from app.events.models import Event, Subscription
from app.extensions import db
from app.worker import Job
from app.worker.loop import Worker
from tests.events.conftest import stored_events, subscribe
from tests.messaging.conftest import Party

DISPATCH = (Job("event_webhooks", "app.events.jobs:dispatch_webhooks"),)
DIGESTS = (Job("event_digests", "app.events.jobs:emit_digests"),)


@pytest.fixture
def hook_app(make_app):
    return make_app(ALLOW_PRIVATE_CALLBACK_URLS=True, DISABLE_QUOTA_ENFORCEMENT=True)


def _run(app, jobs, rounds=1):
    worker = Worker(app, jobs)
    try:
        for _ in range(rounds):
            worker.run_once()
            assert worker.pool.wait_idle(30)
    finally:
        worker.pool.close()


def _subscription(app, sub_id):
    import uuid

    with app.app_context():
        row = db.session.get(Subscription, uuid.UUID(sub_id))
        db.session.expunge_all()
        db.session.remove()
        return row


def test_webhook_receives_signed_batches(hook_app, receivers):
    receiver = receivers()
    alice = Party(hook_app.test_client())
    sender, recipient = alice.agent("S"), alice.agent("R")
    sub = subscribe(alice, recipient["id"], delivery_target="webhook", webhook_url=receiver.url,
                    inline_body=True).get_json()
    sent = [alice.send(sender["id"], recipient["id"], body=f"héllo {i}").get_json()["id"]
            for i in range(3)]
    _run(hook_app, DISPATCH)
    [(headers, raw)] = receiver.requests
    body = json.loads(raw)
    events = stored_events(hook_app)
    assert body["delivery_id"] == f"dlv_{sub['id']}_{events[0].id}_{events[-1].id}"
    assert body["subscription_id"] == sub["id"]
    assert [e["payload"]["message_id"] for e in body["events"]] == sent
    assert body["events"][0]["payload"]["body"] == "héllo 0"
    assert set(body["events"][0]) == {"id", "event_type", "payload", "emitted_at"}
    assert headers["Content-Type"] == "application/json"
    assert headers["X-CueAPI-Event-Count"] == "3"
    assert headers["User-Agent"] == "CueAPI/1.0"
    # The official SDK's verifier accepts it (it re-serialises; the raw body is canonical too).
    assert verify_webhook(raw.decode(), headers["X-CueAPI-Signature"], sub["webhook_secret"],
                          timestamp=headers["X-CueAPI-Timestamp"])
    state = _subscription(hook_app, sub["id"])
    assert state.last_dispatched_event_id == events[-1].id == state.last_acked_event_id
    assert state.consecutive_failures == 0 and state.claimed_until is None
    # Nothing new: nothing sent again.
    _run(hook_app, DISPATCH)
    assert len(receiver.requests) == 1


def test_batches_hold_at_most_50_events(hook_app, receivers):
    receiver = receivers()
    alice = Party(hook_app.test_client())
    sender, recipient = alice.agent("S"), alice.agent("R")
    subscribe(alice, recipient["id"], delivery_target="webhook", webhook_url=receiver.url)
    for i in range(60):
        alice.send(sender["id"], recipient["id"], body=str(i))
    _run(hook_app, DISPATCH, rounds=3)
    counts = [len(json.loads(raw)["events"]) for _headers, raw in receiver.requests]
    assert counts == [50, 10]
    ids = [e["id"] for _h, raw in receiver.requests for e in json.loads(raw)["events"]]
    assert ids == sorted(ids) and len(set(ids)) == 60


def test_failures_retry_the_same_events_then_the_breaker_pauses(hook_app, receivers):
    receiver = receivers(statuses=[500])
    alice = Party(hook_app.test_client())
    sender, recipient = alice.agent("S"), alice.agent("R")
    sub = subscribe(alice, recipient["id"], delivery_target="webhook",
                    webhook_url=receiver.url).get_json()
    alice.send(sender["id"], recipient["id"])
    _run(hook_app, DISPATCH, rounds=12)
    assert len(receiver.requests) == 10  # paused after the tenth failure
    bodies = {raw for _h, raw in receiver.requests}
    assert len(bodies) == 1  # the same batch every time
    state = _subscription(hook_app, sub["id"])
    assert state.consecutive_failures == 10 and state.last_dispatched_event_id is None
    assert state.paused_until is not None
    listed = alice.client.get(f"/v1/agents/{recipient['id']}/subscriptions",
                              headers=alice.headers).get_json()["subscriptions"][0]
    assert listed["consecutive_failures"] == 10 and listed["paused_until"].endswith("+00:00")
    # An hour later it is tried again; success resets the count.
    receiver.statuses = [200]
    with hook_app.app_context():
        db.session.execute(update(Subscription).values(
            paused_until=state.paused_until - timedelta(hours=1, seconds=1)))
        db.session.commit()
    _run(hook_app, DISPATCH)
    state = _subscription(hook_app, sub["id"])
    assert len(receiver.requests) == 11 and state.consecutive_failures == 0
    assert state.last_dispatched_event_id is not None


def test_blocked_destination_at_delivery_counts_as_a_failure(make_app, receivers, monkeypatch):
    """The SSRF rules are checked again at delivery (a name that now resolves to a blocked
    address is refused without a request)."""
    import ipaddress

    from app.outbound import ssrf

    app = make_app(ENV="production", DISABLE_QUOTA_ENFORCEMENT=True)
    alice = Party(app.test_client())
    sender, recipient = alice.agent("S"), alice.agent("R")
    monkeypatch.setattr(ssrf, "resolve_addresses",
                        lambda host: [ipaddress.ip_address("93.184.216.34")])
    sub = subscribe(alice, recipient["id"], delivery_target="webhook",
                    webhook_url="https://hooks.example.com/x").get_json()
    assert sub["webhook_url"] == "https://hooks.example.com"
    alice.send(sender["id"], recipient["id"])
    monkeypatch.setattr(ssrf, "resolve_addresses",
                        lambda host: [ipaddress.ip_address("169.254.169.254")])
    _run(app, DISPATCH)
    state = _subscription(app, sub["id"])
    assert state.consecutive_failures == 1 and state.last_dispatched_event_id is None


def test_detached_subscription_is_not_sent(hook_app, receivers):
    receiver = receivers()
    alice = Party(hook_app.test_client())
    sender, recipient = alice.agent("S"), alice.agent("R")
    sub = subscribe(alice, recipient["id"], delivery_target="webhook",
                    webhook_url=receiver.url).get_json()
    alice.send(sender["id"], recipient["id"])
    alice.client.delete(f"/v1/agents/{recipient['id']}/subscriptions/{sub['id']}",
                        headers=alice.headers)
    _run(hook_app, DISPATCH)
    assert receiver.requests == []


def test_two_workers_never_send_one_batch_twice(hook_app, receivers):
    receiver = receivers(delay=0.5)
    alice = Party(hook_app.test_client())
    sender, recipient = alice.agent("S"), alice.agent("R")
    subscribe(alice, recipient["id"], delivery_target="webhook", webhook_url=receiver.url)
    alice.send(sender["id"], recipient["id"])
    first, second = Worker(hook_app, DISPATCH), Worker(hook_app, DISPATCH)
    try:
        first.run_once()
        second.run_once()  # the first holds the lease while its request is in flight
        receiver.gate.set()
        assert first.pool.wait_idle(30) and second.pool.wait_idle(30)
    finally:
        first.pool.close()
        second.pool.close()
    assert len(receiver.requests) == 1


def test_priority_4_is_debounced(make_app, receivers):
    app = make_app(ALLOW_PRIVATE_CALLBACK_URLS=True, DISABLE_QUOTA_ENFORCEMENT=True,
                   PRIORITY_4_DEBOUNCE_SECONDS=600)
    receiver = receivers()
    alice = Party(app.test_client())
    sender, recipient = alice.agent("S"), alice.agent("R")
    sub = subscribe(alice, recipient["id"], delivery_target="webhook",
                    webhook_url=receiver.url).get_json()
    alice.send(sender["id"], recipient["id"], priority=4, body="first")
    _run(app, DISPATCH)
    assert len(receiver.requests) == 1
    alice.send(sender["id"], recipient["id"], priority=3, body="three")
    alice.send(sender["id"], recipient["id"], priority=4, body="second")
    alice.send(sender["id"], recipient["id"], priority=5, body="after")
    _run(app, DISPATCH, rounds=2)
    # Inside the window only the events before the priority-4 one go; the rest wait.
    assert len(receiver.requests) == 2
    assert [e["payload"]["priority"] for e in json.loads(receiver.requests[1][1])["events"]] \
        == [3]
    state = _subscription(app, sub["id"])
    assert state.claimed_until is not None  # held to the end of the window
    with app.app_context():
        db.session.execute(update(Subscription).values(
            priority_4_dispatched_at=state.priority_4_dispatched_at - timedelta(seconds=601),
            claimed_until=None))
        db.session.commit()
    _run(app, DISPATCH)
    assert [e["payload"]["priority"] for e in json.loads(receiver.requests[2][1])["events"]] \
        == [4, 5]


def test_digest_bundles_low_priority_deliveries(hook_app):
    alice = Party(hook_app.test_client())
    sender, recipient, other = alice.agent("S"), alice.agent("R"), alice.agent("O")
    low = [alice.send(sender["id"], recipient["id"], priority=p, subject=f"s{p}").get_json()
           for p in (1, 2, 2)]
    alice.send(sender["id"], recipient["id"], priority=3)
    alice.send(sender["id"], other["id"], priority=1)
    _run(hook_app, DIGESTS)
    digests = stored_events(hook_app, event_type="message.digest")
    assert {d.recipient_agent_id for d in digests} == {recipient["id"], other["id"]}
    [mine] = [d for d in digests if d.recipient_agent_id == recipient["id"]]
    payload = mine.payload
    assert payload["recipient_agent_id"] == recipient["id"] and payload["bundle_count"] == 3
    assert [m["message_id"] for m in payload["bundled_messages"]] == [m["id"] for m in low]
    assert payload["bundled_messages"][0] == {
        "message_id": low[0]["id"], "sender_agent_id": sender["id"], "subject": "s1",
        "priority": 1, "emitted_at": payload["bundled_messages"][0]["emitted_at"]}
    assert payload["digest_period_start"] <= payload["digest_period_end"]
    # Bundled once: the next period has nothing new to bundle.
    _run(hook_app, DIGESTS)
    assert len(stored_events(hook_app, event_type="message.digest")) == 2
    # The digest is pulled like any event, and the bundled events stay in the stream.
    pulled = alice.client.get(f"/v1/agents/{recipient['id']}/events?event_type=message.digest",
                              headers=alice.headers).get_json()["events"]
    assert [e["payload"]["bundle_count"] for e in pulled] == [3]
    assert len(stored_events(hook_app, recipient_agent_id=recipient["id"])) == 5


def test_digest_waits_for_the_minimum_batch(make_app):
    app = make_app(DIGEST_MIN_BATCH_SIZE=2, DISABLE_QUOTA_ENFORCEMENT=True)
    alice = Party(app.test_client())
    sender, recipient = alice.agent("S"), alice.agent("R")
    alice.send(sender["id"], recipient["id"], priority=1)
    _run(app, DIGESTS)
    assert stored_events(app, event_type="message.digest") == []
    alice.send(sender["id"], recipient["id"], priority=2)
    _run(app, DIGESTS)
    [digest] = stored_events(app, event_type="message.digest")
    assert digest.payload["bundle_count"] == 2


def test_retention_deletes_old_events(hook_app):
    alice = Party(hook_app.test_client())
    sender, recipient = alice.agent("S"), alice.agent("R")
    alice.send(sender["id"], recipient["id"])
    alice.send(sender["id"], recipient["id"])
    with hook_app.app_context():
        oldest = db.session.execute(select(Event.id).order_by(Event.id)).scalars().first()
        from app.db import utcnow

        db.session.execute(update(Event).where(Event.id == oldest).values(
            emitted_at=utcnow() - timedelta(days=8)))
        db.session.commit()
    _run(hook_app, (Job("event_retention", "app.events.jobs:prune_events"),))
    assert [e.id for e in stored_events(hook_app)] != [] and \
        oldest not in [e.id for e in stored_events(hook_app)]
    assert len(stored_events(hook_app)) == 1


def test_jobs_are_in_the_jobs_table():
    from app.worker import JOBS

    names = {job.name: job for job in JOBS}
    assert names["event_digests"].interval == "DIGEST_PERIOD_SECONDS"
    assert {"event_webhooks", "event_retention"} <= set(names)
