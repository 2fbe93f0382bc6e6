"""Subscription routes (wire §11.1): create, list, detach, ack, and every error code."""

from __future__ import annotations

import threading
import uuid

import httpx
import pytest

from tests.events.conftest import subscribe
from tests.helpers import error_of
from tests.messaging.conftest import Party


def test_create_pull_subscription(alice, pair):
    _, agent = pair
    response = subscribe(alice, agent["id"], inline_body=True)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert set(body) == {"id", "subscriber_agent_id", "event_type", "delivery_target",
                         "webhook_url", "webhook_secret", "inline_body",
                         "last_dispatched_event_id", "last_dispatched_at",
                         "last_acked_event_id", "consecutive_failures", "paused_until",
                         "created_at", "detached_at"}
    assert uuid.UUID(body["id"])
    assert body["subscriber_agent_id"] == agent["id"]
    assert body["delivery_target"] == "pull" and body["webhook_secret"] is None
    assert body["inline_body"] is True and body["consecutive_failures"] == 0
    assert body["created_at"].endswith("+00:00")


def test_create_webhook_subscription_shows_secret_once(make_app, monkeypatch):
    app = make_app(ALLOW_PRIVATE_CALLBACK_URLS=True)
    alice = Party(app.test_client())
    agent = alice.agent("R")
    response = subscribe(alice, agent["id"], delivery_target="webhook",
                         webhook_url="http://127.0.0.1:9/hooks/x?token=secret")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["webhook_secret"].startswith("whsec_") and len(body["webhook_secret"]) == 70
    assert body["webhook_url"] == "http://127.0.0.1:9"  # path and query redacted
    listed = alice.client.get(f"/v1/agents/{agent['id']}/subscriptions", headers=alice.headers)
    [shown] = listed.get_json()["subscriptions"]
    assert shown["id"] == body["id"] and shown["webhook_secret"] is None
    assert shown["webhook_url"] == "http://127.0.0.1:9"


@pytest.mark.parametrize("fields, code", [
    ({"event_type": "message.created"}, "unknown_event_type"),
    ({"webhook_url": "https://example.com/hook"}, "invalid_delivery_target"),
    ({"delivery_target": "webhook"}, "invalid_delivery_target"),
    ({"delivery_target": "webhook", "webhook_url": ""}, "invalid_delivery_target"),
    ({"delivery_target": "webhook", "webhook_url": "http://127.0.0.1/hook"},
     "invalid_webhook_url"),
    ({"delivery_target": "webhook", "webhook_url": "https://169.254.169.254/x"},
     "invalid_webhook_url"),
    ({"delivery_target": "webhook", "webhook_url": "ftp://example.com/x"},
     "invalid_webhook_url"),
])
def test_create_refusals(alice, pair, fields, code):
    _, agent = pair
    response = subscribe(alice, agent["id"], **fields)
    assert response.status_code == 400, response.get_json()
    assert error_of(response)["code"] == code


@pytest.mark.parametrize("body, field", [
    ({"delivery_target": "pull"}, "body.event_type"),
    ({"event_type": "message.delivered"}, "body.delivery_target"),
    ({"event_type": "message.delivered", "delivery_target": "email"}, "body.delivery_target"),
    ({"event_type": "", "delivery_target": "pull"}, "body.event_type"),
    ({"event_type": "x" * 256, "delivery_target": "pull"}, "body.event_type"),
    ({"event_type": "message.delivered", "delivery_target": "pull", "extra": 1}, "body.extra"),
    ({"event_type": "message.delivered", "delivery_target": "pull", "inline_body": "maybe"},
     "body.inline_body"),
    ({"event_type": "message.delivered", "delivery_target": "webhook",
      "webhook_url": "https://e.com/" + "a" * 2048}, "body.webhook_url"),
])
def test_create_validation(alice, pair, body, field):
    _, agent = pair
    response = alice.client.post(f"/v1/agents/{agent['id']}/subscriptions",
                                 headers=alice.headers, json=body)
    assert response.status_code == 422, response.get_json()
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert field in {d["field"] for d in error["details"]}


def test_malformed_json_is_400(alice, pair):
    _, agent = pair
    response = alice.client.post(f"/v1/agents/{agent['id']}/subscriptions",
                                 headers={**alice.headers, "Content-Type": "application/json"},
                                 data=b"{nope")
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_json"


def test_duplicate_active_subscription_is_409(alice, pair):
    _, agent = pair
    assert subscribe(alice, agent["id"]).status_code == 201
    again = subscribe(alice, agent["id"], inline_body=True)
    assert again.status_code == 409 and error_of(again)["code"] == "subscription_exists"
    # Another target or type for the same agent is a different subscription.
    assert subscribe(alice, agent["id"], event_type="message.digest").status_code == 201


def test_detach_frees_the_slot_and_is_idempotent(alice, pair):
    _, agent = pair
    sub = subscribe(alice, agent["id"]).get_json()
    path = f"/v1/agents/{agent['id']}/subscriptions/{sub['id']}"
    for _ in range(2):
        response = alice.client.delete(path, headers=alice.headers)
        assert response.status_code == 200 and response.get_json() == {"detached": True}
    missing = alice.client.delete(f"/v1/agents/{agent['id']}/subscriptions/{uuid.uuid4()}",
                                  headers=alice.headers)
    assert missing.status_code == 200 and missing.get_json() == {"detached": True}
    listed = alice.client.get(f"/v1/agents/{agent['id']}/subscriptions", headers=alice.headers)
    assert listed.get_json() == {"subscriptions": []}
    assert subscribe(alice, agent["id"]).status_code == 201


def test_list_is_oldest_first_and_active_only(alice, pair):
    _, agent = pair
    ids = [subscribe(alice, agent["id"], event_type=t).get_json()["id"]
           for t in ("message.delivered", "message.digest", "turn.pass")]
    alice.client.delete(f"/v1/agents/{agent['id']}/subscriptions/{ids[1]}",
                        headers=alice.headers)
    listed = alice.client.get(f"/v1/agents/{agent['id']}/subscriptions", headers=alice.headers)
    assert [s["id"] for s in listed.get_json()["subscriptions"]] == [ids[0], ids[2]]


def test_ack_moves_forward_only(alice, pair):
    _, agent = pair
    sub = subscribe(alice, agent["id"]).get_json()
    path = f"/v1/agents/{agent['id']}/subscriptions/{sub['id']}/ack"

    def acked():
        listed = alice.client.get(f"/v1/agents/{agent['id']}/subscriptions",
                                  headers=alice.headers).get_json()["subscriptions"]
        return listed[0]["last_acked_event_id"]

    for value, expected in ((5, 5), (3, 5), (5, 5), (9, 9), (0, 9)):
        response = alice.client.patch(path, headers=alice.headers,
                                      json={"acked_event_id": value})
        assert response.status_code == 200 and response.get_json() == {"acked": True}
        assert acked() == expected


@pytest.mark.parametrize("body, field", [
    ({}, "body.acked_event_id"), ({"acked_event_id": -1}, "body.acked_event_id"),
    ({"acked_event_id": "7"}, "body.acked_event_id"),
    ({"acked_event_id": 2**63}, "body.acked_event_id"),
    ({"acked_event_id": 1, "more": True}, "body.more"),
])
def test_ack_validation(alice, pair, body, field):
    _, agent = pair
    sub = subscribe(alice, agent["id"]).get_json()
    response = alice.client.patch(f"/v1/agents/{agent['id']}/subscriptions/{sub['id']}/ack",
                                  headers=alice.headers, json=body)
    assert response.status_code == 422
    assert field in {d["field"] for d in error_of(response)["details"]}


def test_ack_of_unknown_or_detached_subscription_is_404(alice, pair):
    _, agent = pair
    sub = subscribe(alice, agent["id"]).get_json()
    alice.client.delete(f"/v1/agents/{agent['id']}/subscriptions/{sub['id']}",
                        headers=alice.headers)
    for sub_id in (sub["id"], str(uuid.uuid4()), "not-a-uuid"):
        response = alice.client.patch(f"/v1/agents/{agent['id']}/subscriptions/{sub_id}/ack",
                                      headers=alice.headers, json={"acked_event_id": 1})
        assert response.status_code == 404
        assert error_of(response)["code"] == "subscription_not_found"


def test_malformed_subscription_id_is_404(alice, pair):
    _, agent = pair
    for bad in ("nope", "1234", "%00", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"):
        response = alice.client.delete(f"/v1/agents/{agent['id']}/subscriptions/{bad}",
                                       headers=alice.headers)
        assert response.status_code == 404, (bad, response.get_json())


@pytest.mark.parametrize("method, suffix, body", [
    ("POST", "/subscriptions", {"event_type": "message.delivered", "delivery_target": "pull"}),
    ("GET", "/subscriptions", None),
    ("DELETE", "/subscriptions/00b81658-5b7d-4257-81d8-5542790d8618", None),
    ("PATCH", "/subscriptions/242a2627-b46c-4221-bd73-1ff4ff9b0931/ack", {"acked_event_id": 1}),
    ("GET", "/events", None),
])
def test_foreign_and_missing_agents_are_404(party, method, suffix, body):
    owner, other = party(), party()
    agent = owner.agent("Mine")
    for ref in (agent["id"], f"{agent['slug']}@{owner.slug}", "agt_000000000000",
                "nobody@nowhere"):
        response = other.client.open(f"/v1/agents/{ref}{suffix}", method=method,
                                     headers=other.headers, json=body)
        assert response.status_code == 404, (ref, response.get_json())
        assert error_of(response)["code"] == "agent_not_found"
    bad = other.client.open(f"/v1/agents/not%20an%20address{suffix}", method=method,
                            headers=other.headers, json=body)
    assert bad.status_code == 400 and error_of(bad)["code"] == "invalid_agent_address"


@pytest.mark.parametrize("method, suffix", [("GET", "/subscriptions"), ("GET", "/events"),
                                            ("POST", "/subscriptions")])
def test_credentials_required(client, method, suffix):
    response = client.open(f"/v1/agents/agt_000000000000{suffix}", method=method, json={})
    assert response.status_code == 401


def test_slug_address_and_deleted_agent(alice, pair):
    _, agent = pair
    ref = f"{agent['slug']}@{alice.slug}"
    assert subscribe(alice, ref).status_code == 201
    alice.client.delete(f"/v1/agents/{agent['id']}", headers=alice.headers)
    # A deleted agent takes no new subscriptions; its existing ones stay readable.
    again = subscribe(alice, agent["id"], event_type="turn.pass")
    assert again.status_code == 404 and error_of(again)["code"] == "agent_not_found"
    listed = alice.client.get(f"/v1/agents/{agent['id']}/subscriptions", headers=alice.headers)
    assert len(listed.get_json()["subscriptions"]) == 1


def test_concurrent_duplicate_creates_one_wins_one_409(make_app, live_server):
    app = make_app()
    alice = Party(app.test_client())
    agent = alice.agent("R")
    server = live_server(app)
    for round_ in range(3):
        target = ("message.delivered", "message.digest", "turn.pass")[round_]
        barrier = threading.Barrier(4)
        statuses: list[int] = []
        codes: list[str] = []

        def create(target=target, barrier=barrier, statuses=statuses, codes=codes):
            with httpx.Client(base_url=server.url, headers=alice.headers, timeout=30,
                              trust_env=False) as http:
                barrier.wait()
                r = http.post(f"/v1/agents/{agent['id']}/subscriptions",
                              json={"event_type": target, "delivery_target": "pull"})
                statuses.append(r.status_code)
                if r.status_code != 201:
                    codes.append(r.json()["error"]["code"])

        threads = [threading.Thread(target=create) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(statuses) == [201, 409, 409, 409], statuses
        assert codes == ["subscription_exists"] * 3
