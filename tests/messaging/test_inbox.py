"""Inbox and sent views (§10.6): filters, delivery side effects, paging, count_only."""

from __future__ import annotations

import pytest

from tests.helpers import error_of


@pytest.fixture
def alice(party):
    return party("alice@example.com")


@pytest.fixture
def agents(alice):
    return alice.agent("One", slug="one"), alice.agent("Two", slug="two"), \
        alice.agent("Three", slug="three")


def _inbox(client, alice, agent, query=""):
    response = client.get(f"/v1/agents/{agent['id']}/inbox{query}", headers=alice.headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_poll_delivers_queued_and_bumps_last_seen(alice, agents, client):
    one, two, _ = agents
    first = alice.send(one["id"], two["id"], body="1").get_json()
    second = alice.send(one["id"], two["id"], body="2").get_json()
    counted = _inbox(client, alice, two, "?count_only=true")
    assert counted == {"count": 2}
    # count_only had no side effect
    assert client.get(f"/v1/messages/{first['id']}", headers=alice.headers
                      ).get_json()["delivery_state"] == "queued"
    roster = client.get("/v1/agents/roster", headers=alice.headers).get_json()
    assert {a["name"]: a["last_seen_relative"] for a in roster["agents"]}["two"] == "never"
    body = _inbox(client, alice, two)
    assert [m["id"] for m in body["messages"]] == [second["id"], first["id"]]
    assert body["total"] == 2 and body["limit"] == 50 and body["offset"] == 0
    assert all(m["delivery_state"] == "delivered" and m["delivered_at"] for m in body["messages"])
    roster = client.get("/v1/agents/roster", headers=alice.headers).get_json()
    two_entry = {a["name"]: a for a in roster["agents"]}["two"]
    assert two_entry["last_seen_relative"] == "active now" and two_entry["online"] is True


def test_state_queued_poll_returns_only_new_messages(alice, agents, client):
    one, two, _ = agents
    first = alice.send(one["id"], two["id"]).get_json()
    body = _inbox(client, alice, two, "?state=queued")
    assert [m["id"] for m in body["messages"]] == [first["id"]]
    assert body["messages"][0]["delivery_state"] == "delivered"
    assert _inbox(client, alice, two, "?state=queued")["messages"] == []
    second = alice.send(one["id"], two["id"]).get_json()
    assert [m["id"] for m in _inbox(client, alice, two, "?state=queued")["messages"]] == \
        [second["id"]]


def test_state_filter_without_queued_does_not_deliver(alice, agents, client):
    one, two, _ = agents
    msg = alice.send(one["id"], two["id"]).get_json()
    assert _inbox(client, alice, two, "?state=read,delivered")["total"] == 0
    assert client.get(f"/v1/messages/{msg['id']}", headers=alice.headers
                      ).get_json()["delivery_state"] == "queued"


def test_invalid_state_filter(alice, agents, client):
    response = client.get(f"/v1/agents/{agents[0]['id']}/inbox?state=queued,bogus",
                          headers=alice.headers)
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_state_filter"
    response = client.get(f"/v1/agents/{agents[0]['id']}/sent?state=nope", headers=alice.headers)
    assert response.status_code == 400


def test_default_filter_hides_acked_but_keeps_failed(alice, agents, client, app):
    one, two, _ = agents
    acked = alice.send(one["id"], two["id"]).get_json()
    client.post(f"/v1/messages/{acked['id']}/ack", headers=alice.headers)
    failed = alice.send(one["id"], two["id"]).get_json()
    from sqlalchemy import update

    from app.extensions import db
    from app.messaging.models import Message

    with app.app_context():
        db.session.execute(update(Message).where(Message.id == failed["id"])
                           .values(delivery_state="failed"))
        db.session.commit()
    body = _inbox(client, alice, two)
    assert [m["id"] for m in body["messages"]] == [failed["id"]]
    assert _inbox(client, alice, two, "?state=acked")["total"] == 1


def test_counterpart_thread_and_since_filters(alice, agents, client):
    one, two, three = agents
    from_one = alice.send(one["id"], two["id"]).get_json()
    from_three = alice.send(three["id"], two["id"]).get_json()
    reply = alice.send(one["id"], two["id"], reply_to=from_three["id"]).get_json()
    body = _inbox(client, alice, two, f"?counterpart=three@{alice.slug}&state=queued")
    assert [m["id"] for m in body["messages"]] == [from_three["id"]]
    # the counterpart-filtered poll delivered only that message
    assert client.get(f"/v1/messages/{from_one['id']}", headers=alice.headers
                      ).get_json()["delivery_state"] == "queued"
    thread = _inbox(client, alice, two, f"?thread_id={from_three['id']}")
    assert {m["id"] for m in thread["messages"]} == {from_three["id"], reply["id"]}
    since = from_three["created_at"]
    later = client.get(f"/v1/agents/{two['id']}/inbox", query_string={"since": since},
                       headers=alice.headers).get_json()
    assert [m["id"] for m in later["messages"]] == [reply["id"]]
    bad = client.get(f"/v1/agents/{two['id']}/inbox?counterpart=bad", headers=alice.headers)
    assert bad.status_code == 400 and error_of(bad)["code"] == "invalid_agent_address"


def test_paging(alice, agents, client):
    one, two, _ = agents
    ids = [alice.send(one["id"], two["id"], body=str(i)).get_json()["id"] for i in range(5)]
    page = _inbox(client, alice, two, "?limit=2&offset=1")
    assert page["total"] == 5 and [m["id"] for m in page["messages"]] == ids[::-1][1:3]
    # the poll took the newest messages up to the end of its page; older ones wait
    states = {m: client.get(f"/v1/messages/{m}", headers=alice.headers
                            ).get_json()["delivery_state"] for m in ids}
    assert [states[m] for m in ids] == ["queued", "queued", "delivered", "delivered",
                                        "delivered"]
    assert client.get(f"/v1/agents/{two['id']}/inbox?limit=201",
                      headers=alice.headers).status_code == 422
    assert client.get(f"/v1/agents/{two['id']}/inbox?limit=0",
                      headers=alice.headers).status_code == 422
    huge = client.get(f"/v1/agents/{two['id']}/inbox?offset={10**20}", headers=alice.headers)
    assert huge.status_code == 422


def test_sent_view(alice, agents, client):
    one, two, three = agents
    to_two = alice.send(one["id"], two["id"]).get_json()
    to_three = alice.send(one["id"], three["id"]).get_json()
    client.post(f"/v1/messages/{to_two['id']}/ack", headers=alice.headers)
    sent = client.get(f"/v1/agents/{one['id']}/sent", headers=alice.headers).get_json()
    assert [m["id"] for m in sent["messages"]] == [to_three["id"], to_two["id"]]  # acked too
    only = client.get(f"/v1/agents/{one['id']}/sent?counterpart={three['id']}",
                      headers=alice.headers).get_json()
    assert [m["id"] for m in only["messages"]] == [to_three["id"]]
    assert client.get(f"/v1/agents/{one['id']}/sent?count_only=1",
                      headers=alice.headers).get_json() == {"count": 2}
    # the sent view never delivers
    assert client.get(f"/v1/messages/{to_three['id']}", headers=alice.headers
                      ).get_json()["delivery_state"] == "queued"


def test_inbox_of_other_users_agent_is_not_found(alice, agents, party, client):
    bob = party("bob@example.com")
    response = client.get(f"/v1/agents/{agents[0]['id']}/inbox", headers=bob.headers)
    assert response.status_code == 404 and error_of(response)["code"] == "agent_not_found"


def test_deleted_agent_inbox_still_readable(alice, agents, client):
    one, two, _ = agents
    msg = alice.send(one["id"], two["id"]).get_json()
    client.delete(f"/v1/agents/{two['id']}", headers=alice.headers)
    body = _inbox(client, alice, two)
    assert [m["id"] for m in body["messages"]] == [msg["id"]]
