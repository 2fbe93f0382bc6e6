"""Message push delivery (§10.9, §13.3) run through the worker's job machinery."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cueapi import verify_webhook
from sqlalchemy import func, select, update

from app.extensions import db
from app.messaging.models import Message
from app.worker import Job
from app.worker.loop import Worker
from tests.messaging.conftest import Party

PUSH_JOBS = (Job("message_push", "app.messaging.jobs:deliver_pushes"),
             Job("message_push_recovery", "app.messaging.jobs:recover_stale_pushes"))


class Receiver:
    """A loopback push receiver answering with a programmable list of statuses."""

    def __init__(self, statuses=(200,), headers=None, delay=0.0):
        self.requests = []
        self.statuses = list(statuses)
        self.gate = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), raw))
                if delay:
                    receiver.gate.wait(delay)
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else \
                    receiver.statuses[0]
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/push"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    made = []

    def _make(**kwargs):
        receiver = Receiver(**kwargs)
        made.append(receiver)
        return receiver

    yield _make
    for receiver in made:
        receiver.close()


@pytest.fixture
def push_app(make_app):
    return make_app(ALLOW_PRIVATE_CALLBACK_URLS=True,
                    AUTHORIZATION_BACKEND="app.messaging.authorization:"
                                          "EveryoneAuthorizationBackend")


def run_worker(app, jobs=PUSH_JOBS):
    worker = Worker(app, jobs=jobs)
    try:
        worker.run_once()
        assert worker.pool.wait_idle(30)
    finally:
        worker.pool.close()
    return worker


def state_of(app, message_id):
    with app.app_context():
        message = db.session.get(Message, message_id)
        db.session.expunge(message)
        return message


def set_message(app, message_id, **values):
    with app.app_context():
        db.session.execute(update(Message).where(Message.id == message_id).values(**values))
        db.session.commit()


def test_push_is_signed_and_sdk_verifies_it(push_app, receivers):
    receiver = receivers()
    client = push_app.test_client()
    alice, bob = Party(client), Party(client)
    sender = alice.agent("Sender", slug="sender")
    target = bob.agent("Target", slug="target", webhook_url=receiver.url)
    msg = alice.send(sender["id"], target["id"], body="héllo ✓", subject="S",
                     metadata={"z": 1, "a": [1, 2]}).get_json()
    run_worker(push_app)
    assert len(receiver.requests) == 1
    headers, raw = receiver.requests[0]
    assert verify_webhook(raw, headers["X-CueAPI-Signature"], target["webhook_secret"],
                          headers["X-CueAPI-Timestamp"])
    assert not verify_webhook(raw, headers["X-CueAPI-Signature"], "whsec_" + "0" * 64,
                              headers["X-CueAPI-Timestamp"])
    body = json.loads(raw)
    assert raw.decode() == json.dumps(body, sort_keys=True)  # canonical bytes, ASCII-escaped
    assert body["from"] == {"agent_id": sender["id"], "slug": f"sender@{alice.slug}"}
    assert body["to"] == {"agent_id": target["id"], "slug": f"target@{bob.slug}"}
    assert body["id"] == msg["id"] and body["thread_id"] == msg["id"]
    assert body["body"] == "héllo ✓" and body["subject"] == "S" and body["priority"] == 3
    assert body["metadata"] == {"z": 1, "a": [1, 2]} and body["reply_to"] is None
    assert body["created_at"].endswith("+00:00")
    assert headers["User-Agent"] == "CueAPI/1.0"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-CueAPI-Event-Type"] == "message.created"
    assert headers["X-CueAPI-Message-Id"] == msg["id"]
    assert headers["X-CueAPI-Agent-Id"] == target["id"]
    assert headers["X-CueAPI-Thread-Id"] == msg["id"]
    assert headers["X-CueAPI-Attempt"] == "1"
    stored = state_of(push_app, msg["id"])
    assert stored.delivery_state == "delivered" and stored.delivered_at is not None
    # nothing more to do
    run_worker(push_app)
    assert len(receiver.requests) == 1


def test_retry_after_then_budget_exhausted(push_app, receivers):
    receiver = receivers(statuses=(503,), headers={"Retry-After": "600"})
    client = push_app.test_client()
    alice = Party(client)
    a, b = alice.agent("A"), alice.agent("B", webhook_url=receiver.url)
    msg = alice.send(a["id"], b["id"]).get_json()
    before = datetime.now(UTC)
    run_worker(push_app)
    stored = state_of(push_app, msg["id"])
    assert stored.delivery_state == "retry_ready" and stored.push_attempts == 1
    wait = stored.next_attempt_at - before
    assert timedelta(seconds=590) < wait < timedelta(seconds=660)  # max(1 min, Retry-After)
    assert "503" in stored.message_dispatch_error
    run_worker(push_app)  # not due yet
    assert len(receiver.requests) == 1
    for attempt in (2, 3, 4):
        set_message(push_app, msg["id"], next_attempt_at=datetime.now(UTC))
        run_worker(push_app)
        assert receiver.requests[-1][0]["X-CueAPI-Attempt"] == str(attempt)
    stored = state_of(push_app, msg["id"])
    assert stored.delivery_state == "failed" and stored.failed_at is not None
    assert len(receiver.requests) == 4
    # a failed push stays in the inbox
    inbox = client.get(f"/v1/agents/{b['id']}/inbox", headers=alice.headers).get_json()
    assert [m["delivery_state"] for m in inbox["messages"]] == ["failed"]


def test_backoff_schedule(push_app, receivers):
    receiver = receivers(statuses=(500,))
    client = push_app.test_client()
    alice = Party(client)
    a, b = alice.agent("A"), alice.agent("B", webhook_url=receiver.url)
    msg = alice.send(a["id"], b["id"]).get_json()
    for minutes in (1, 5, 15):
        started = datetime.now(UTC)
        run_worker(push_app)
        stored = state_of(push_app, msg["id"])
        assert stored.delivery_state == "retry_ready"
        delay = (stored.next_attempt_at - started).total_seconds()
        assert minutes * 60 - 1 <= delay <= minutes * 60 + 30, (minutes, delay)
        set_message(push_app, msg["id"], next_attempt_at=datetime.now(UTC))


@pytest.mark.parametrize("status", [404, 401, 302])
def test_terminal_status_fails_at_once(push_app, receivers, status):
    receiver = receivers(statuses=(status,))
    client = push_app.test_client()
    alice = Party(client)
    a, b = alice.agent("A"), alice.agent("B", webhook_url=receiver.url)
    msg = alice.send(a["id"], b["id"]).get_json()
    run_worker(push_app)
    stored = state_of(push_app, msg["id"])
    assert stored.delivery_state == "failed" and stored.push_attempts == 1


def test_cleared_webhook_leaves_message_for_polling(push_app, receivers):
    receiver = receivers()
    client = push_app.test_client()
    alice = Party(client)
    a, b = alice.agent("A"), alice.agent("B", webhook_url=receiver.url)
    msg = alice.send(a["id"], b["id"]).get_json()
    client.patch(f"/v1/agents/{b['id']}", headers=alice.headers, json={"webhook_url": None})
    run_worker(push_app)
    assert receiver.requests == []
    stored = state_of(push_app, msg["id"])
    assert stored.delivery_state == "queued" and stored.next_attempt_at is None
    inbox = client.get(f"/v1/agents/{b['id']}/inbox", headers=alice.headers).get_json()
    assert inbox["messages"][0]["delivery_state"] == "delivered"


def test_deleted_recipient_gets_no_push(push_app, receivers):
    receiver = receivers()
    client = push_app.test_client()
    alice = Party(client)
    a, b = alice.agent("A"), alice.agent("B", webhook_url=receiver.url)
    msg = alice.send(a["id"], b["id"]).get_json()
    client.delete(f"/v1/agents/{b['id']}", headers=alice.headers)
    run_worker(push_app)
    assert receiver.requests == []
    assert state_of(push_app, msg["id"]).delivery_state == "queued"


def test_polled_message_is_not_pushed(push_app, receivers):
    receiver = receivers()
    client = push_app.test_client()
    alice = Party(client)
    a, b = alice.agent("A"), alice.agent("B", webhook_url=receiver.url)
    alice.send(a["id"], b["id"])
    client.get(f"/v1/agents/{b['id']}/inbox", headers=alice.headers)
    run_worker(push_app)
    assert receiver.requests == []


def test_scheduled_message_is_pushed_only_when_due(push_app, receivers):
    receiver = receivers()
    client = push_app.test_client()
    alice = Party(client)
    a, b = alice.agent("A"), alice.agent("B", webhook_url=receiver.url)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    msg = alice.send(a["id"], b["id"], send_at=later).get_json()
    run_worker(push_app)
    assert receiver.requests == []
    set_message(push_app, msg["id"], send_at=datetime.now(UTC) - timedelta(seconds=1),
                next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
    run_worker(push_app)
    assert len(receiver.requests) == 1


def test_read_during_push_is_not_overwritten(push_app, receivers):
    receiver = receivers(delay=5.0)
    client = push_app.test_client()
    alice = Party(client)
    a, b = alice.agent("A"), alice.agent("B", webhook_url=receiver.url)
    msg = alice.send(a["id"], b["id"]).get_json()
    worker = Worker(push_app, jobs=PUSH_JOBS[:1])
    try:
        worker.run_once()
        for _ in range(100):
            if receiver.requests:
                break
            threading.Event().wait(0.05)
        assert state_of(push_app, msg["id"]).delivery_state == "delivering"
        read = client.post(f"/v1/messages/{msg['id']}/read", headers=alice.headers)
        assert read.status_code == 200
        receiver.gate.set()
        assert worker.pool.wait_idle(30)
    finally:
        worker.pool.close()
    assert state_of(push_app, msg["id"]).delivery_state == "read"


def test_per_user_concurrency_cap_defers(make_app, receivers):
    app = make_app(ALLOW_PRIVATE_CALLBACK_URLS=True, MAX_CONCURRENT_DELIVERIES_PER_USER=1)
    receiver = receivers()
    client = app.test_client()
    alice = Party(client)
    a, b = alice.agent("A"), alice.agent("B", webhook_url=receiver.url)
    first = alice.send(a["id"], b["id"]).get_json()
    second = alice.send(a["id"], b["id"]).get_json()
    from app.messaging.services.delivery import claim_pushes

    with app.app_context():
        claimed = claim_pushes(10)
    assert len(claimed) == 1
    states = {m: state_of(app, m) for m in (first["id"], second["id"])}
    deferred = [m for m in states.values() if m.delivery_state == "queued"]
    assert len(deferred) == 1 and deferred[0].push_attempts == 0
    assert deferred[0].next_attempt_at > datetime.now(UTC) + timedelta(seconds=20)


def test_stale_delivering_is_recovered(push_app, receivers):
    receiver = receivers()
    client = push_app.test_client()
    alice = Party(client)
    a, b = alice.agent("A"), alice.agent("B", webhook_url=receiver.url)
    retry = alice.send(a["id"], b["id"], body="retry").get_json()
    dead = alice.send(a["id"], b["id"], body="dead").get_json()
    fresh = alice.send(a["id"], b["id"], body="fresh").get_json()
    old = datetime.now(UTC) - timedelta(seconds=301)
    set_message(push_app, retry["id"], delivery_state="delivering", claimed_at=old,
                push_attempts=2)
    set_message(push_app, dead["id"], delivery_state="delivering", claimed_at=old,
                push_attempts=4)
    set_message(push_app, fresh["id"], delivery_state="delivering",
                claimed_at=datetime.now(UTC), push_attempts=1)
    from app.messaging.services.delivery import recover_stale_pushes

    with push_app.app_context():
        assert recover_stale_pushes() == 2
    assert state_of(push_app, retry["id"]).delivery_state == "retry_ready"
    assert state_of(push_app, dead["id"]).delivery_state == "failed"
    assert state_of(push_app, fresh["id"]).delivery_state == "delivering"
    run_worker(push_app, jobs=PUSH_JOBS[:1])
    assert state_of(push_app, retry["id"]).delivery_state == "delivered"
    assert receiver.requests[0][0]["X-CueAPI-Attempt"] == "3"


def test_shutdown_releases_in_flight_push(push_app, receivers):
    receiver = receivers(delay=10.0)
    client = push_app.test_client()
    alice = Party(client)
    a, b = alice.agent("A"), alice.agent("B", webhook_url=receiver.url)
    msg = alice.send(a["id"], b["id"]).get_json()
    push_app.config["WORKER_SHUTDOWN_GRACE_SECONDS"] = 0.2
    worker = Worker(push_app, jobs=PUSH_JOBS[:1])
    worker.run_once()
    for _ in range(100):
        if receiver.requests:
            break
        threading.Event().wait(0.05)
    worker.shutdown()
    stored = state_of(push_app, msg["id"])
    assert stored.delivery_state == "retry_ready" and stored.push_attempts == 0
    receiver.gate.set()


def test_claim_with_nothing_due(push_app):
    with push_app.app_context():
        from app.messaging.services.delivery import claim_pushes

        assert claim_pushes(5) == []
        assert claim_pushes(0) == []


def test_running_worker_loop_delivers_pushes(push_app, receivers):
    """The real loop (as ``flask worker run`` runs it) picks up a push sent while it runs."""
    receiver = receivers()
    client = push_app.test_client()
    alice = Party(client)
    a, b = alice.agent("A"), alice.agent("B", webhook_url=receiver.url)
    worker = Worker(push_app, jobs=PUSH_JOBS)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        msg = alice.send(a["id"], b["id"]).get_json()
        for _ in range(200):
            if state_of(push_app, msg["id"]).delivery_state == "delivered":
                break
            threading.Event().wait(0.05)
    finally:
        worker.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert state_of(push_app, msg["id"]).delivery_state == "delivered"
    assert len(receiver.requests) == 1


def test_concurrent_claimers_never_claim_one_push_twice(make_app, receivers):
    app = make_app(ALLOW_PRIVATE_CALLBACK_URLS=True, DISABLE_QUOTA_ENFORCEMENT=True)
    receiver = receivers()
    client = app.test_client()
    alice = Party(client)
    a, b = alice.agent("A"), alice.agent("B", webhook_url=receiver.url)
    sent = {alice.send(a["id"], b["id"], body=str(i)).get_json()["id"] for i in range(40)}
    from app.messaging.services.delivery import claim_pushes

    claims: list[list[str]] = [[] for _ in range(4)]
    barrier = threading.Barrier(4)
    errors = []

    def claimer(index):
        try:
            with app.app_context():
                barrier.wait()
                while True:
                    got = claim_pushes(3)
                    if not got:
                        remaining = db.session.execute(
                            select(func.count()).select_from(Message)
                            .where(Message.delivery_state == "queued")).scalar_one()
                        db.session.rollback()
                        if remaining == 0:
                            return
                    claims[index].extend(mid for mid, _attempt in got)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(repr(exc))

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    flat = [mid for ids in claims for mid in ids]
    assert len(flat) == len(set(flat)) == 40
    assert set(flat) == sent
