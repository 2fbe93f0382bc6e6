"""Idempotency-Key on POST /v1/messages: replay, conflict, window, and concurrency."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.helpers import error_of


@pytest.fixture
def alice(party):
    return party("alice@example.com")


@pytest.fixture
def pair(alice):
    return alice.agent("Sender"), alice.agent("Receiver")


def _count(client, alice, agent):
    return client.get(f"/v1/agents/{agent['id']}/sent?count_only=true",
                      headers=alice.headers).get_json()["count"]


def test_replay_returns_original_with_200(alice, pair, client):
    key = {"Idempotency-Key": "order-42"}
    first = alice.send(pair[0]["id"], pair[1]["id"], body="pay", headers=key)
    assert first.status_code == 201
    again = alice.send(pair[0]["id"], pair[1]["id"], body="pay", headers=key,
                       expects_reply=True, correlation_id="ignored")  # not fingerprinted
    assert again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.get_json()["idempotency_key"] == "order-42"
    assert _count(client, alice, pair[0]) == 1
    me = client.get("/v1/auth/me", headers=alice.headers)
    assert me.status_code == 200


def test_different_content_conflicts(alice, pair):
    key = {"Idempotency-Key": "k1"}
    assert alice.send(pair[0]["id"], pair[1]["id"], body="a", headers=key).status_code == 201
    for change in ({"body": "b"}, {"body": "a", "subject": "s"}, {"body": "a", "priority": 2},
                   {"body": "a", "metadata": {"x": 1}}):
        r = alice.send(pair[0]["id"], pair[1]["id"], headers=key, **change)
        assert r.status_code == 409, change
        assert error_of(r)["code"] == "idempotency_key_conflict"


def test_keys_are_per_user(alice, pair, party):
    bob = party("bob@example.com")
    b1, b2 = bob.agent("B1"), bob.agent("B2")
    key = {"Idempotency-Key": "shared"}
    a = alice.send(pair[0]["id"], pair[1]["id"], headers=key)
    b = bob.send(b1["id"], b2["id"], headers=key)
    assert a.status_code == b.status_code == 201
    assert a.get_json()["id"] != b.get_json()["id"]


def test_key_older_than_window_is_free(alice, pair, app, client):
    key = {"Idempotency-Key": "old"}
    first = alice.send(pair[0]["id"], pair[1]["id"], body="a", headers=key).get_json()
    from sqlalchemy import update

    from app.extensions import db
    from app.messaging.models import MessageIdempotencyKey

    with app.app_context():
        db.session.execute(update(MessageIdempotencyKey).values(
            created_at=datetime.now(UTC) - timedelta(hours=25)))
        db.session.commit()
    second = alice.send(pair[0]["id"], pair[1]["id"], body="different", headers=key)
    assert second.status_code == 201
    assert second.get_json()["id"] != first["id"]
    replay = alice.send(pair[0]["id"], pair[1]["id"], body="different", headers=key)
    assert replay.status_code == 200 and replay.get_json()["id"] == second.get_json()["id"]


def test_concurrent_sends_with_one_key_create_one_message(alice, pair, app, live_server,
                                                          client):
    server = live_server(app)
    headers = {**alice.headers, "X-Cueapi-From-Agent": pair[0]["id"],
               "Idempotency-Key": "race-1"}
    barrier = threading.Barrier(8)
    results = []

    def worker():
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as http:
            barrier.wait()
            r = http.post("/v1/messages", headers=headers,
                          json={"to": pair[1]["id"], "body": "once"})
            results.append((r.status_code, r.json().get("id")))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(s for s, _ in results)
    assert statuses.count(201) == 1 and statuses.count(200) == 7, results
    assert len({mid for _, mid in results}) == 1
    assert _count(client, alice, pair[0]) == 1


def test_concurrent_reuse_of_an_expired_key(alice, pair, app, live_server, client):
    key = {"Idempotency-Key": "stale"}
    old = alice.send(pair[0]["id"], pair[1]["id"], body="old", headers=key).get_json()
    from sqlalchemy import update

    from app.extensions import db
    from app.messaging.models import MessageIdempotencyKey

    with app.app_context():
        db.session.execute(update(MessageIdempotencyKey).values(
            created_at=datetime.now(UTC) - timedelta(hours=25)))
        db.session.commit()
    server = live_server(app)
    headers = {**alice.headers, "X-Cueapi-From-Agent": pair[0]["id"], **key}
    barrier = threading.Barrier(6)
    results = []

    def worker():
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as http:
            barrier.wait()
            r = http.post("/v1/messages", headers=headers,
                          json={"to": pair[1]["id"], "body": "new"})
            results.append((r.status_code, r.json().get("id")))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(s for s, _ in results) == [200] * 5 + [201], results
    ids = {mid for _, mid in results}
    assert len(ids) == 1 and old["id"] not in ids
