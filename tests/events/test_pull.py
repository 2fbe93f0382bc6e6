"""The pull stream (``GET /v1/agents/{ref}/events``): cursor, filters, acknowledgement side
effect, concurrent pollers and the long poll."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from app.events import waiting
from tests.events.conftest import stored_events, subscribe
from tests.helpers import error_of
from tests.messaging.conftest import Party


def _events(party, agent_id, **params):
    response = party.client.get(f"/v1/agents/{agent_id}/events", headers=party.headers,
                                query_string=params)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_cursor_pages_in_order(alice, pair):
    sender, recipient = pair
    ids = [alice.send(sender["id"], recipient["id"], body=str(i)).get_json()["id"]
           for i in range(5)]
    first = _events(alice, recipient["id"], limit=2)
    assert [e["payload"]["message_id"] for e in first["events"]] == ids[:2]
    assert first["has_more"] is True and first["next_cursor"] == first["events"][-1]["id"]
    event = first["events"][0]
    assert set(event) == {"id", "event_type", "recipient_agent_id", "payload", "emitted_at"}
    assert event["emitted_at"].endswith("+00:00")
    rest = _events(alice, recipient["id"], since=first["next_cursor"], limit=10)
    assert [e["payload"]["message_id"] for e in rest["events"]] == ids[2:]
    assert rest["has_more"] is False
    empty = _events(alice, recipient["id"], since=rest["next_cursor"])
    assert empty == {"events": [], "next_cursor": None, "has_more": False}
    # The sender sees none of the recipient's events.
    assert _events(alice, sender["id"])["events"] == []


def test_event_type_filter(app, alice, pair):
    from app.db import utcnow
    from app.events.emission import emit
    from app.extensions import db

    sender, recipient = pair
    alice.send(sender["id"], recipient["id"])
    with app.app_context():
        emit("turn.pass", recipient["id"], {"note": "yours"}, emitted_at=utcnow())
        db.session.commit()
    turn = _events(alice, recipient["id"], event_type="turn.pass")["events"]
    assert [e["event_type"] for e in turn] == ["turn.pass"]
    assert len(_events(alice, recipient["id"])["events"]) == 2
    unknown = alice.client.get(f"/v1/agents/{recipient['id']}/events?event_type=message.read",
                               headers=alice.headers)
    assert unknown.status_code == 400 and error_of(unknown)["code"] == "unknown_event_type"


@pytest.mark.parametrize("query, field", [
    ("since=-1", "query.since"), ("since=abc", "query.since"),
    (f"since={2**63}", "query.since"), ("limit=0", "query.limit"), ("limit=1001", "query.limit"),
    ("limit=ten", "query.limit"), ("wait=short", "query.wait"), ("event_type=", "query.event_type"),
    ("cursor=3", "query.cursor"),
])
def test_bad_query_is_422(alice, pair, query, field):
    _, recipient = pair
    response = alice.client.get(f"/v1/agents/{recipient['id']}/events?{query}",
                                headers=alice.headers)
    assert response.status_code == 422, response.get_json()
    assert field in {d["field"] for d in error_of(response)["details"]}


def test_pull_acknowledges_matching_pull_subscriptions(make_app):
    app = make_app(ALLOW_PRIVATE_CALLBACK_URLS=True)
    alice = Party(app.test_client())
    sender, recipient = alice.agent("S"), alice.agent("R")
    delivered = subscribe(alice, recipient["id"]).get_json()
    digest = subscribe(alice, recipient["id"], event_type="message.digest").get_json()
    hook = subscribe(alice, recipient["id"], delivery_target="webhook",
                     webhook_url="http://127.0.0.1:9/h").get_json()
    for _ in range(3):
        alice.send(sender["id"], recipient["id"])

    def acked():
        subs = alice.client.get(f"/v1/agents/{recipient['id']}/subscriptions",
                                headers=alice.headers).get_json()["subscriptions"]
        return {s["id"]: s["last_acked_event_id"] for s in subs}

    page = _events(alice, recipient["id"], limit=2, event_type="message.delivered")
    state = acked()
    assert state[delivered["id"]] == page["next_cursor"]
    assert state[digest["id"]] is None and state[hook["id"]] is None  # other type; webhook
    everything = _events(alice, recipient["id"])
    assert acked()[digest["id"]] == everything["next_cursor"]
    # Reading an older page never moves a watermark back.
    _events(alice, recipient["id"], since=0, limit=1)
    assert acked()[delivered["id"]] == everything["next_cursor"]


def test_events_are_readable_without_a_subscription(alice, pair):
    sender, recipient = pair
    alice.send(sender["id"], recipient["id"])
    assert len(_events(alice, recipient["id"])["events"]) == 1


def test_long_poll_without_threads_answers_at_once(make_app):
    """The test client is not a threaded server: wait=long behaves as a plain poll."""
    app = make_app(EVENTS_LONG_POLL_SECONDS=30)
    alice = Party(app.test_client())
    agent = alice.agent("R")
    started = time.monotonic()
    assert _events(alice, agent["id"], wait="long")["events"] == []
    assert time.monotonic() - started < 25
    assert waiting.waiters.count == 0


def test_two_pollers_read_the_same_stream(make_app, live_server):
    """Pull is a read: concurrent pollers each see every event once, in order."""
    app = make_app(DISABLE_QUOTA_ENFORCEMENT=True)
    alice = Party(app.test_client())
    sender, recipient = alice.agent("S"), alice.agent("R")
    subscribe(alice, recipient["id"])
    sent = [alice.send(sender["id"], recipient["id"], body=str(i)).get_json()["id"]
            for i in range(40)]
    server = live_server(app)
    seen: list[list[str]] = [[], []]
    errors: list[str] = []
    barrier = threading.Barrier(2)

    def poll(index):
        cursor = 0
        with httpx.Client(base_url=server.url, headers=alice.headers, timeout=30,
                          trust_env=False) as http:
            barrier.wait()
            while True:
                r = http.get(f"/v1/agents/{recipient['id']}/events",
                             params={"since": cursor, "limit": 7})
                if r.status_code != 200:
                    errors.append(r.text[:200])
                    return
                page = r.json()
                seen[index].extend(e["payload"]["message_id"] for e in page["events"])
                if not page["has_more"]:
                    return
                cursor = page["next_cursor"]

    threads = [threading.Thread(target=poll, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert seen[0] == sent and seen[1] == sent
    [sub] = alice.client.get(f"/v1/agents/{recipient['id']}/subscriptions",
                             headers=alice.headers).get_json()["subscriptions"]
    assert sub["last_acked_event_id"] == max(e.id for e in stored_events(app))


def _long_poll(server, party, agent_id, results, **params):
    with httpx.Client(base_url=server.url, headers=party.headers, timeout=60,
                      trust_env=False) as http:
        r = http.get(f"/v1/agents/{agent_id}/events", params={"wait": "long", **params})
        results.append((r.status_code, r.json()))


def _wait_for_waiters(count, deadline=20.0):
    end = time.monotonic() + deadline
    while waiting.waiters.count < count:
        assert time.monotonic() < end, "long polls never started waiting"
        time.sleep(0.01)


@pytest.mark.parametrize("recheck", [30.0, 0.2])
def test_long_poll_returns_when_an_event_arrives(make_app, live_server, backend, recheck):
    """Woken by the send (same process), by the PostgreSQL notification, or (recheck) by the
    bounded re-read; the wait itself holds no database connection."""
    app = make_app(EVENTS_LONG_POLL_SECONDS=30, EVENTS_LONG_POLL_RECHECK_SECONDS=recheck)
    alice = Party(app.test_client())
    sender, recipient = alice.agent("S"), alice.agent("R")
    server = live_server(app)
    results: list = []
    poller = threading.Thread(target=_long_poll, args=(server, alice, recipient["id"], results))
    started = time.monotonic()
    poller.start()
    _wait_for_waiters(1)
    with app.app_context():
        from app.extensions import db

        pool = db.engine.pool
    # The waiter registers before its first read; then it gives its connection back.
    end = time.monotonic() + 20
    while pool.checkedout():
        assert time.monotonic() < end, "the waiting poll kept a database connection"
        time.sleep(0.01)
    assert poller.is_alive() and waiting.waiters.count == 1
    sent = alice.send(sender["id"], recipient["id"]).get_json()
    poller.join(40)
    assert not poller.is_alive()
    assert time.monotonic() - started < 30  # returned before the deadline
    [(status, body)] = results
    assert status == 200
    assert [e["payload"]["message_id"] for e in body["events"]] == [sent["id"]]
    assert waiting.waiters.count == 0


def test_long_poll_wakes_on_an_event_from_another_process(make_app, live_server, backend):
    """An event written by another process (here: a plain connection, as the worker's digest
    would) wakes the poll through the notification (PostgreSQL) or the re-check (SQLite)."""
    app = make_app(EVENTS_LONG_POLL_SECONDS=30, EVENTS_LONG_POLL_RECHECK_SECONDS=0.2)
    alice = Party(app.test_client())
    recipient = alice.agent("R")
    server = live_server(app)
    results: list = []
    poller = threading.Thread(target=_long_poll, args=(server, alice, recipient["id"], results))
    poller.start()
    _wait_for_waiters(1)
    if backend == "postgresql":
        end = time.monotonic() + 20
        while not waiting.listener.connected.is_set():
            assert time.monotonic() < end
            time.sleep(0.01)
    from sqlalchemy import create_engine, text

    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO events (event_type, recipient_agent_id, payload, "
                          "emitted_at) VALUES ('turn.pass', :agent, '{}', CURRENT_TIMESTAMP)"),
                     {"agent": recipient["id"]})
    engine.dispose()
    poller.join(40)
    [(status, body)] = results
    assert status == 200 and [e["event_type"] for e in body["events"]] == ["turn.pass"]


def test_long_poll_returns_empty_after_the_wait(make_app, live_server):
    app = make_app(EVENTS_LONG_POLL_SECONDS=0.3, EVENTS_LONG_POLL_RECHECK_SECONDS=0.1)
    alice = Party(app.test_client())
    sender, recipient = alice.agent("S"), alice.agent("R")
    alice.send(sender["id"], recipient["id"])
    cursor = _events(alice, recipient["id"])["next_cursor"]
    server = live_server(app)
    results: list = []
    _long_poll(server, alice, recipient["id"], results, since=cursor)
    assert results == [(200, {"events": [], "next_cursor": None, "has_more": False})]
    # An event for another agent does not end someone else's wait early; a filter applies.
    results.clear()
    _long_poll(server, alice, recipient["id"], results, event_type="turn.pass")
    assert results[0][1]["events"] == []


def test_long_polls_beyond_the_limit_answer_at_once(make_app, live_server):
    app = make_app(EVENTS_LONG_POLL_SECONDS=30, EVENTS_LONG_POLL_MAX_WAITERS=1)
    alice = Party(app.test_client())
    sender, recipient = alice.agent("S"), alice.agent("R")
    server = live_server(app)
    first: list = []
    waiter = threading.Thread(target=_long_poll, args=(server, alice, recipient["id"], first))
    waiter.start()
    _wait_for_waiters(1)
    second: list = []
    _long_poll(server, alice, recipient["id"], second)  # no slot left: answered at once
    assert second == [(200, {"events": [], "next_cursor": None, "has_more": False})]
    assert waiter.is_alive()
    alice.send(sender["id"], recipient["id"])
    waiter.join(40)
    assert len(first[0][1]["events"]) == 1


def test_waiter_limit_leaves_a_thread_free(monkeypatch):
    monkeypatch.setattr(waiting, "thread_capacity", None)
    assert waiting.waiter_limit(100) == 100
    monkeypatch.setattr(waiting, "thread_capacity", 8)
    assert waiting.waiter_limit(100) == 7 and waiting.waiter_limit(3) == 3
    monkeypatch.setattr(waiting, "thread_capacity", 1)
    assert waiting.waiter_limit(100) == 0


def test_cursor_never_passes_an_event_still_being_committed(app, alice, pair, backend):
    """Event ids come from a sequence: a later id can commit first.  A reader only sees events
    whose transaction is older than every one still running, so its cursor can never move
    past an event that appears later."""
    if backend != "postgresql":
        pytest.skip("SQLite runs one writer at a time: ids are assigned in commit order")
    from sqlalchemy import create_engine, text

    sender, recipient = pair
    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    try:
        with engine.connect() as slow:
            slow.execute(text("INSERT INTO events (event_type, recipient_agent_id, payload, "
                              "emitted_at) VALUES ('turn.pass', :agent, '{}', now())"),
                         {"agent": recipient["id"]})  # not committed yet
            sent = alice.send(sender["id"], recipient["id"]).get_json()  # a later id, committed
            page = _events(alice, recipient["id"])
            assert page["events"] == [] and page["next_cursor"] is None
            slow.commit()
        page = _events(alice, recipient["id"])
        assert [e["event_type"] for e in page["events"]] == ["turn.pass", "message.delivered"]
        assert page["events"][1]["payload"]["message_id"] == sent["id"]
    finally:
        engine.dispose()
