"""Message quotas (§1.8, §10.8): per-minute plan limit, priority 4-5 rules, monthly quota."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from app.extensions import db
from app.users.models import User
from tests.helpers import error_of
from tests.messaging.conftest import Party


def _set(app, user_id, **values):
    import uuid

    with app.app_context():
        db.session.execute(update(User).where(User.id == uuid.UUID(user_id)).values(**values))
        db.session.commit()


@pytest.fixture
def setup(app, client):
    alice = Party(client)
    return alice, alice.agent("S"), alice.agent("R"), alice.agent("Q")


def test_per_minute_plan_limit(app, setup):
    alice, s, r, _ = setup
    for i in range(10):
        assert alice.send(s["id"], r["id"], body=str(i)).status_code == 201
    over = alice.send(s["id"], r["id"])
    assert over.status_code == 429
    error = error_of(over)
    assert error["code"] == "rate_limit_exceeded"
    assert error["limit"] == 10 and error["window_seconds"] == 60
    assert 1 <= int(over.headers["Retry-After"]) <= 60


def test_pro_plan_gets_more(app, setup):
    alice, s, r, _ = setup
    _set(app, alice.id, plan="pro")
    for i in range(11):
        assert alice.send(s["id"], r["id"], body=str(i)).status_code == 201


def test_rate_limited_replay_still_replays(app, setup):
    alice, s, r, _ = setup
    key = {"Idempotency-Key": "first"}
    first = alice.send(s["id"], r["id"], headers=key)
    for i in range(9):
        alice.send(s["id"], r["id"], body=str(i))
    assert alice.send(s["id"], r["id"]).status_code == 429
    replay = alice.send(s["id"], r["id"], headers=key)
    assert replay.status_code == 200 and replay.get_json()["id"] == first.get_json()["id"]


def test_priority_pair_downgrade_and_user_limit(app, setup):
    alice, s, r, q = setup
    _set(app, alice.id, plan="scale")
    for _ in range(5):
        sent = alice.send(s["id"], r["id"], priority=5)
        assert sent.get_json()["priority"] == 5
        assert "X-CueAPI-Priority-Downgraded" not in sent.headers
    downgraded = alice.send(s["id"], r["id"], priority=4)
    assert downgraded.status_code == 201
    assert downgraded.get_json()["priority"] == 3
    assert downgraded.get_json()["dispatch_priority_bucket"] == 3
    assert downgraded.headers["X-CueAPI-Priority-Downgraded"] == "true"
    # another pair is still allowed high priority
    for _ in range(4):
        assert alice.send(s["id"], q["id"], priority=4).get_json()["priority"] == 4
    # that was the user's 10th high-priority request this hour
    blocked = alice.send(s["id"], q["id"], priority=5)
    assert blocked.status_code == 429
    error = error_of(blocked)
    assert error["code"] == "priority_high_rate_limit"
    assert error["limit"] == 10 and error["window_seconds"] == 3600
    assert alice.send(s["id"], q["id"], priority=3).status_code == 201


def test_monthly_quota(app, setup):
    alice, s, r, _ = setup
    _set(app, alice.id, monthly_message_limit=2, plan="scale")
    assert alice.send(s["id"], r["id"]).status_code == 201
    assert alice.send(s["id"], r["id"]).status_code == 201
    over = alice.send(s["id"], r["id"])
    assert over.status_code == 402
    error = error_of(over)
    assert error["code"] == "quota_exceeded" and error["current"] == 2 and error["limit"] == 2


def test_quotas_disabled(make_app):
    app = make_app(DISABLE_QUOTA_ENFORCEMENT=True)
    client = app.test_client()
    alice = Party(client)
    s, r = alice.agent("S"), alice.agent("R")
    _set(app, alice.id, monthly_message_limit=1)
    for i in range(12):
        sent = alice.send(s["id"], r["id"], priority=5, body=str(i))
        assert sent.status_code == 201, sent.get_json()
        assert sent.get_json()["priority"] == 5
    import uuid

    from app.db import utcnow
    from app.quotas.messages import messages_this_month

    with app.app_context():
        assert messages_this_month(uuid.UUID(alice.id), utcnow()) == 12  # still counted
