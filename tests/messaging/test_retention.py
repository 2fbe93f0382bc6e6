"""Retention job: expire, delete after the retention period, free spent idempotency keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update

from app.extensions import db
from app.messaging.models import Message, MessageIdempotencyKey
from app.messaging.services.retention import run_retention
from tests.helpers import error_of
from tests.messaging.conftest import Party


def _shift(app, message_id, **values):
    with app.app_context():
        db.session.execute(update(Message).where(Message.id == message_id).values(**values))
        db.session.commit()


def test_expire_then_delete(make_app):
    app = make_app(MESSAGE_EXPIRED_RETENTION_DAYS=7)
    client = app.test_client()
    alice = Party(client)
    a, b = alice.agent("A"), alice.agent("B")
    key = {"Idempotency-Key": "k"}
    old = alice.send(a["id"], b["id"], body="old", headers=key).get_json()
    acked = alice.send(a["id"], b["id"], body="acked").get_json()
    client.post(f"/v1/messages/{acked['id']}/ack", headers=alice.headers)
    live = alice.send(a["id"], b["id"], body="live").get_json()
    past = datetime.now(UTC) - timedelta(seconds=1)
    _shift(app, old["id"], expires_at=past)
    _shift(app, acked["id"], expires_at=past)
    with app.app_context():
        report = run_retention()
    assert report.expired == 1 and report.deleted == 0
    assert client.get(f"/v1/messages/{old['id']}", headers=alice.headers
                      ).get_json()["delivery_state"] == "expired"
    r = client.post(f"/v1/messages/{old['id']}/read", headers=alice.headers)
    assert r.status_code == 409 and error_of(r)["code"] == "invalid_state_transition"
    inbox = client.get(f"/v1/agents/{b['id']}/inbox", headers=alice.headers).get_json()
    assert [m["id"] for m in inbox["messages"]] == [live["id"]]
    # later than the retention period: gone, with the idempotency key
    with app.app_context():
        report = run_retention(datetime.now(UTC) + timedelta(days=8))
    assert report.deleted == 2
    assert client.get(f"/v1/messages/{old['id']}", headers=alice.headers).status_code == 404
    assert client.get(f"/v1/messages/{acked['id']}", headers=alice.headers).status_code == 404
    assert client.get(f"/v1/messages/{live['id']}", headers=alice.headers).status_code == 200
    with app.app_context():
        assert db.session.execute(select(func.count()).select_from(MessageIdempotencyKey)
                                  ).scalar_one() == 0


def test_frees_spent_idempotency_keys(app, client):
    alice = Party(client)
    a, b = alice.agent("A"), alice.agent("B")
    alice.send(a["id"], b["id"], headers={"Idempotency-Key": "spent"})
    with app.app_context():
        assert run_retention().keys_freed == 0
        assert run_retention(datetime.now(UTC) + timedelta(hours=25)).keys_freed == 1
    again = alice.send(a["id"], b["id"], body="new content", headers={"Idempotency-Key": "spent"})
    assert again.status_code == 201


def test_delivering_messages_are_not_expired(app, client):
    alice = Party(client)
    a, b = alice.agent("A"), alice.agent("B")
    msg = alice.send(a["id"], b["id"]).get_json()
    _shift(app, msg["id"], delivery_state="delivering",
           expires_at=datetime.now(UTC) - timedelta(seconds=1))
    with app.app_context():
        assert run_retention().expired == 0
        assert db.session.get(Message, msg["id"]).delivery_state == "delivering"
