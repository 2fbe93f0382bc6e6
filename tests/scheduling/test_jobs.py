"""The scheduler, webhook delivery (body, headers, signature, retries, limits) and sweeps,
driven with an explicit clock instead of sleeping."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cueapi import verify_webhook

from app.extensions import db
from app.scheduling import jobs, sweeps
from app.scheduling.delivery import deliver_webhook
from app.scheduling.models import Cue, Execution, ExecutionUsage, Worker
from app.users.models import User
from tests.helpers import key_headers, register, user_id_of
from tests.scheduling.conftest import cue_body

T0 = datetime(2026, 5, 12, 9, 0, tzinfo=UTC)


@pytest.fixture
def app(make_app):
    return make_app(ALLOW_PRIVATE_CALLBACK_URLS=True)


@pytest.fixture
def account(app, client):
    api_key, _ = register(client)
    return key_headers(api_key), uuid.UUID(user_id_of(client, api_key))


def _cue(client, account, **overrides) -> str:
    response = client.post("/v1/cues", json=cue_body(**overrides), headers=account[0])
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def _set(app, model, key, **values):
    with app.app_context():
        row = db.session.get(model, key)
        for name, value in values.items():
            setattr(row, name, value)
        db.session.commit()


def _executions(app, cue_id):
    with app.app_context():
        rows = db.session.scalars(db.select(Execution).where(Execution.cue_id == cue_id)
                                  .order_by(Execution.scheduled_for)).all()
        db.session.expunge_all()
        return rows


def _cue_row(app, cue_id) -> Cue:
    with app.app_context():
        cue = db.session.get(Cue, cue_id)
        db.session.expunge(cue)
        return cue


def _deliver_due(app, now) -> list[str | None]:
    """One dispatcher pass at ``now``, delivering synchronously with the same clock."""
    with app.app_context():
        claims = jobs.claim_webhook_executions(now, 50)
        return [deliver_webhook(execution_id, claimed_at, clock=lambda: now)
                for execution_id, claimed_at in claims]


# --- scheduler ---------------------------------------------------------------------------------


def test_scheduler_fires_due_cue_once_and_advances(app, client, account):
    cue_id = _cue(client, account, schedule={"type": "recurring", "cron": "*/5 * * * *"})
    _set(app, Cue, cue_id, next_run=T0)
    with app.app_context():
        assert jobs.schedule_due_cues(T0 + timedelta(seconds=1)) == 1
        assert jobs.schedule_due_cues(T0 + timedelta(seconds=1)) == 0
    [execution] = _executions(app, cue_id)
    assert execution.scheduled_for == T0 and execution.triggered_by == "scheduler"
    cue = _cue_row(app, cue_id)
    assert cue.fired_count == 1 and cue.next_run == T0 + timedelta(minutes=5)


def test_scheduler_ignores_paused_and_future(app, client, account):
    paused = _cue(client, account, name="p")
    future = _cue(client, account, name="f")
    _set(app, Cue, paused, next_run=T0, status="paused")
    _set(app, Cue, future, next_run=T0 + timedelta(minutes=1))
    with app.app_context():
        assert jobs.schedule_due_cues(T0) == 0


@pytest.mark.parametrize("cap,expected", [(1, [60]), (3, [50, 55, 60])])
def test_catch_up_policy_caps_missed_slots(make_app, cap, expected):
    app = make_app(POLLER_MAX_CATCH_UP_SLOTS=cap)
    client = app.test_client()
    api_key, _ = register(client)
    cue_id = client.post("/v1/cues", json=cue_body(schedule={"type": "recurring",
                                                             "cron": "*/5 * * * *"}),
                         headers=key_headers(api_key)).get_json()["id"]
    _set(app, Cue, cue_id, next_run=T0)  # the worker was down for an hour
    with app.app_context():
        assert jobs.schedule_due_cues(T0 + timedelta(minutes=60, seconds=2)) == len(expected)
    slots = [e.scheduled_for for e in _executions(app, cue_id)]
    assert slots == [T0 + timedelta(minutes=m) for m in expected]
    cue = _cue_row(app, cue_id)
    assert cue.next_run == T0 + timedelta(minutes=65) and cue.fired_count == len(expected)


def test_once_cue_fires_once_then_completes_on_delivery(app, client, account, receiver):
    at = datetime.now(UTC) + timedelta(minutes=10)
    cue_id = _cue(client, account, schedule={"type": "once", "at": at.isoformat()},
                  callback={"url": receiver.url})
    later = at + timedelta(seconds=1)
    with app.app_context():
        assert jobs.schedule_due_cues(later) == 1
        assert jobs.schedule_due_cues(later + timedelta(minutes=5)) == 0
    cue = _cue_row(app, cue_id)
    assert cue.next_run is None and cue.status == "active"
    assert _deliver_due(app, later) == ["success"]
    cue = _cue_row(app, cue_id)
    assert cue.status == "completed" and cue.run_count == 1


def test_resumed_once_cue_in_the_past_fires_on_next_tick(app, client, account):
    at = datetime.now(UTC) + timedelta(minutes=10)
    cue_id = _cue(client, account, schedule={"type": "once", "at": at.isoformat()})
    client.patch(f"/v1/cues/{cue_id}", json={"status": "paused"}, headers=account[0])
    client.patch(f"/v1/cues/{cue_id}", json={"status": "active"}, headers=account[0])
    with app.app_context():
        assert jobs.schedule_due_cues(at + timedelta(hours=1)) == 1


def test_concurrent_schedulers_never_fire_a_slot_twice(app, client, account, backend):
    cue_ids = [_cue(client, account, name=f"c{i}",
                    schedule={"type": "recurring", "cron": "* * * * *"}) for i in range(8)]
    with app.app_context():
        db.session.execute(db.update(Cue).values(next_run=T0))
        db.session.commit()
    now = T0 + timedelta(seconds=5)
    barrier = threading.Barrier(4)
    created, errors = [], []

    def run():
        try:
            with app.app_context():
                barrier.wait()
                created.append(jobs.schedule_due_cues(now))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert sum(created) == 8
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Execution)) == 8
        assert db.session.scalar(db.select(db.func.sum(Cue.fired_count))) == 8
    for cue_id in cue_ids:
        assert [e.scheduled_for for e in _executions(app, cue_id)] == [T0]


# --- delivery ----------------------------------------------------------------------------------


def test_delivery_body_headers_and_sdk_signature(app, client, account, receiver):
    cue_id = _cue(client, account, payload={"msg": "héllo", "n": [1, 2]},
                  callback={"url": receiver.url, "headers": {
                      "X-Custom": "yes", "User-Agent": "mine/1", "X-CueAPI-Signature": "forged",
                      "x-cueapi-timestamp": "1"}})
    fired = client.post(f"/v1/cues/{cue_id}/fire", headers=account[0]).get_json()
    now = datetime.now(UTC)
    assert _deliver_due(app, now) == ["success"]
    [request] = receiver.requests
    body = json.loads(request["body"])
    assert body == {"attempt": 1, "cue_id": cue_id, "execution_id": fired["id"],
                    "name": "nightly", "payload": {"msg": "héllo", "n": [1, 2]},
                    "scheduled_for": fired["scheduled_for"]}
    # Byte-exact canonical JSON: sorted keys, ", " / ": " separators, ASCII escapes.
    assert request["body"] == json.dumps(body, sort_keys=True, default=str).encode()
    headers = request["headers"]
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "mine/1" and headers["X-Custom"] == "yes"
    assert headers["X-CueAPI-Cue-Id"] == cue_id
    assert headers["X-CueAPI-Execution-Id"] == fired["id"]
    assert headers["X-CueAPI-Scheduled-For"] == fired["scheduled_for"]
    assert headers["X-CueAPI-Attempt"] == "1"
    assert headers["X-CueAPI-Timestamp"] == str(int(now.timestamp()))
    assert headers["X-CueAPI-Signature"] != "forged"
    with app.app_context():
        secret = db.session.get(User, account[1]).webhook_secret
    assert verify_webhook(request["body"], headers["X-CueAPI-Signature"], secret,
                          headers["X-CueAPI-Timestamp"])
    execution = client.get(f"/v1/executions/{fired['id']}", headers=account[0]).get_json()
    assert execution["status"] == "success" and execution["http_status"] == 200
    assert execution["attempts"] == 1 and execution["delivered_at"]
    me = client.get("/v1/auth/me", headers=account[0]).get_json()
    assert me["executions_this_month"] == 1


def test_get_callback_sends_no_body(app, client, account, receiver):
    cue_id = _cue(client, account, callback={"url": receiver.url, "method": "GET"})
    client.post(f"/v1/cues/{cue_id}/fire", headers=account[0])
    assert _deliver_due(app, datetime.now(UTC)) == ["success"]
    assert receiver.requests[0]["method"] == "GET" and receiver.requests[0]["body"] == b""
    assert receiver.requests[0]["headers"]["X-CueAPI-Signature"].startswith("v1=")


def test_future_send_at_is_held(app, client, account, receiver):
    cue_id = _cue(client, account, callback={"url": receiver.url})
    send_at = datetime.now(UTC) + timedelta(minutes=30)
    client.post(f"/v1/cues/{cue_id}/fire", json={"send_at": send_at.isoformat()},
                headers=account[0])
    assert _deliver_due(app, datetime.now(UTC)) == []
    assert _deliver_due(app, send_at + timedelta(seconds=1)) == ["success"]


def test_retries_follow_backoff_then_succeed(app, client, account, receiver):
    receiver.statuses = [500, 503, 200]
    cue_id = _cue(client, account, callback={"url": receiver.url},
                  retry={"max_attempts": 3, "backoff_minutes": [1, 5]})
    fired = client.post(f"/v1/cues/{cue_id}/fire", headers=account[0]).get_json()
    t = datetime.now(UTC)
    assert _deliver_due(app, t) == ["retrying"]
    [execution] = _executions(app, cue_id)
    assert execution.next_retry_at == t + timedelta(minutes=1)
    assert execution.http_status == 500 and "500" in execution.error_message
    assert _deliver_due(app, t + timedelta(seconds=59)) == []
    assert _deliver_due(app, t + timedelta(minutes=1)) == ["retrying"]
    [execution] = _executions(app, cue_id)
    assert execution.next_retry_at == t + timedelta(minutes=6)  # backoff[1] = 5 min
    assert _deliver_due(app, t + timedelta(minutes=6)) == ["success"]
    assert [r["headers"]["X-CueAPI-Attempt"] for r in receiver.requests] == ["1", "2", "3"]
    assert [json.loads(r["body"])["attempt"] for r in receiver.requests] == [1, 2, 3]
    execution = client.get(f"/v1/executions/{fired['id']}", headers=account[0]).get_json()
    assert execution["status"] == "success" and execution["attempts"] == 3
    assert execution["error_message"] is None
    cue = _cue_row(app, cue_id)
    assert cue.run_count == 3  # one per delivery attempt


@pytest.mark.parametrize("console", [False, True], ids=["api-link", "console-link"])
def test_final_failure_escalates(app, client, account, receiver, console):
    from http.server import ThreadingHTTPServer

    from tests.scheduling.conftest import _Handler  # a second receiver for the alert

    alerts = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    alerts.requests, alerts.statuses, alerts.event = [], [], threading.Event()
    threading.Thread(target=alerts.serve_forever, daemon=True).start()
    # The alert's dashboard_url names the console's cue page when the console is on.
    app.config.update(CONSOLE_ENABLED=console, BASE_URL="https://cueline.example.test/")
    try:
        receiver.statuses = [404, 404]
        cue_id = _cue(client, account, callback={"url": receiver.url},
                      retry={"max_attempts": 2, "backoff_minutes": [1]},
                      on_failure={"pause": True,
                                  "webhook": f"http://127.0.0.1:{alerts.server_port}/alert"})
        client.post(f"/v1/cues/{cue_id}/fire", headers=account[0])
        t = datetime.now(UTC)
        assert _deliver_due(app, t) == ["retrying"]
        assert _deliver_due(app, t + timedelta(minutes=1)) == ["failed"]
        [execution] = _executions(app, cue_id)
        assert execution.status == "failed" and execution.http_status == 404
        cue = _cue_row(app, cue_id)
        assert cue.status == "paused" and cue.next_run is None
        [alert] = alerts.requests
        body = json.loads(alert["body"])
        assert body["event"] == "cue.failed" and body["cue_id"] == cue_id
        assert body["attempts"] == 2 and body["last_http_status"] == 404
        assert body["cue_name"] == "nightly" and body["failed_at"]
        page = "console/cues" if console else "v1/cues"
        assert body["dashboard_url"] == f"https://cueline.example.test/{page}/{cue_id}"
        assert "X-CueAPI-Signature" not in alert["headers"]
        assert alert["headers"]["User-Agent"] == "CueAPI/1.0"
    finally:
        alerts.shutdown()
        alerts.server_close()


def test_unreachable_receiver_is_retried(app, client, account):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    cue_id = _cue(client, account, callback={"url": f"http://127.0.0.1:{port}/"})
    client.post(f"/v1/cues/{cue_id}/fire", headers=account[0])
    assert _deliver_due(app, datetime.now(UTC)) == ["retrying"]
    [execution] = _executions(app, cue_id)
    assert execution.http_status is None and "Connection" in execution.error_message


def _scheduled_execution(app, cue_id, when):
    with app.app_context():
        db.session.add(Execution(cue_id=cue_id, scheduled_for=when, status="pending",
                                 triggered_by="scheduler", attempts=0))
        db.session.commit()


@pytest.mark.parametrize("quotas_off", [False, True])
def test_monthly_execution_limit_with_grace(make_app, receiver, quotas_off):
    app = make_app(ALLOW_PRIVATE_CALLBACK_URLS=True, DISABLE_QUOTA_ENFORCEMENT=quotas_off)
    client = app.test_client()
    api_key, _ = register(client)
    user_id = uuid.UUID(user_id_of(client, api_key))
    headers = key_headers(api_key)
    cue_id = client.post("/v1/cues", json=cue_body(callback={"url": receiver.url}),
                         headers=headers).get_json()["id"]
    _set(app, User, user_id, monthly_execution_limit=1)
    t = datetime(2026, 5, 12, 9, 0, tzinfo=UTC)
    with app.app_context():
        db.session.add(ExecutionUsage(user_id=user_id, month="2026-05", executions=1))
        db.session.commit()
    _scheduled_execution(app, cue_id, t)
    assert _deliver_due(app, t) == ["success"]  # at the limit: the 24 h grace starts
    _scheduled_execution(app, cue_id, t + timedelta(hours=23))
    assert _deliver_due(app, t + timedelta(hours=23)) == ["success"]
    _scheduled_execution(app, cue_id, t + timedelta(hours=25))
    expected = "success" if quotas_off else "failed"
    assert _deliver_due(app, t + timedelta(hours=25)) == [expected]
    if not quotas_off:
        last = _executions(app, cue_id)[-1]
        assert last.error_message == "Monthly execution limit reached"
        assert len(receiver.requests) == 2
    # Manual fires bypass the monthly limit.
    client.post(f"/v1/cues/{cue_id}/fire", headers=headers)
    assert _deliver_due(app, datetime.now(UTC)) == ["success"]


# --- sweeps ------------------------------------------------------------------------------------


def test_stale_delivery_recovery(app, client, account, receiver):
    cue_id = _cue(client, account, callback={"url": receiver.url},
                  retry={"max_attempts": 2, "backoff_minutes": [1]})
    client.post(f"/v1/cues/{cue_id}/fire", headers=account[0])
    t = datetime.now(UTC)
    with app.app_context():
        claims = jobs.claim_webhook_executions(t, 10)  # "crash": never delivered
        assert len(claims) == 1
        assert sweeps.recover_stale_deliveries(t + timedelta(seconds=299)) == 0
        assert sweeps.recover_stale_deliveries(t + timedelta(seconds=301)) == 1
    [execution] = _executions(app, cue_id)
    assert execution.status == "retrying" and execution.attempts == 1
    # The crashed worker's late result cannot overwrite the recovery.
    with app.app_context():
        assert deliver_webhook(claims[0][0], claims[0][1], clock=lambda: t) is None
        claims = jobs.claim_webhook_executions(t + timedelta(seconds=302), 10)
        assert sweeps.recover_stale_deliveries(t + timedelta(seconds=700)) == 1
    [execution] = _executions(app, cue_id)
    assert execution.status == "failed" and execution.attempts == 2


def test_release_puts_interrupted_deliveries_back(app, client, account, receiver):
    cue_id = _cue(client, account, callback={"url": receiver.url})
    client.post(f"/v1/cues/{cue_id}/fire", headers=account[0])
    t = datetime.now(UTC)
    with app.app_context():
        claims = jobs.claim_webhook_executions(t, 10)
        assert jobs.release_webhook_claims(claims, t) == 1
    [execution] = _executions(app, cue_id)
    assert execution.status == "retry_ready" and execution.attempts == 0
    assert _deliver_due(app, t) == ["success"]


def test_unclaimed_worker_execution_goes_missed(app, client, account):
    cue_id = _cue(client, account, transport="worker", callback=None,
                  on_failure={"pause": True})
    client.post(f"/v1/cues/{cue_id}/fire", headers=account[0])
    [execution] = _executions(app, cue_id)
    start = execution.scheduled_for
    with app.app_context():
        assert sweeps.mark_missed(start + timedelta(seconds=899)) == 0
        assert sweeps.mark_missed(start + timedelta(seconds=901)) == 1
    [execution] = _executions(app, cue_id)
    assert execution.status == "missed"
    assert _cue_row(app, cue_id).status == "paused"  # on_failure.pause escalation


def test_future_worker_fire_is_not_missed_early(app, client, account):
    cue_id = _cue(client, account, transport="worker", callback=None)
    send_at = datetime.now(UTC) + timedelta(hours=1)
    client.post(f"/v1/cues/{cue_id}/fire", json={"send_at": send_at.isoformat()},
                headers=account[0])
    with app.app_context():
        assert sweeps.mark_missed(send_at + timedelta(seconds=600)) == 0
        assert sweeps.mark_missed(send_at + timedelta(seconds=901)) == 1


def test_abandoned_claim_returns_to_pending_only_when_worker_is_dead(app, client, account):
    headers = account[0]
    cue_id = _cue(client, account, transport="worker", callback=None)
    fired = client.post(f"/v1/cues/{cue_id}/fire", headers=headers).get_json()
    client.post("/v1/worker/heartbeat", json={"worker_id": "w"}, headers=headers)
    client.post("/v1/executions/claim", json={"worker_id": "w"}, headers=headers)
    now = datetime.now(UTC)
    with app.app_context():
        # Lease expired but the worker is alive: leave it alone.
        db.session.execute(db.update(Worker).values(last_heartbeat=now + timedelta(seconds=901)))
        db.session.commit()
        assert sweeps.recover_abandoned_claims(now + timedelta(seconds=1000)) == 0
        # Worker silent too: the claim goes back to the queue.
        db.session.execute(db.update(Worker).values(last_heartbeat=now))
        db.session.commit()
        assert sweeps.recover_abandoned_claims(now + timedelta(seconds=600)) == 0  # lease valid
        assert sweeps.recover_abandoned_claims(now + timedelta(seconds=1000)) == 1
    execution = client.get(f"/v1/executions/{fired['id']}", headers=headers).get_json()
    assert execution["status"] == "pending"
    listed = client.get("/v1/executions?worker_id=w", headers=headers).get_json()
    assert listed["total"] == 0  # claim cleared


def test_abandoned_claim_of_deleted_worker(app, client, account):
    headers = account[0]
    cue_id = _cue(client, account, transport="worker", callback=None,
                  retry={"max_attempts": 1})
    client.post(f"/v1/cues/{cue_id}/fire", headers=headers)
    client.post("/v1/worker/heartbeat", json={"worker_id": "w"}, headers=headers)
    client.post("/v1/executions/claim", json={"worker_id": "w"}, headers=headers)
    client.delete("/v1/workers/w", headers=headers)
    with app.app_context():
        assert sweeps.recover_abandoned_claims(datetime.now(UTC) + timedelta(seconds=901)) == 1
    [execution] = _executions(app, cue_id)
    assert execution.status == "failed"  # max_attempts 1 already used


def test_execution_heartbeat_extends_the_lease(app, client, account):
    headers = account[0]
    cue_id = _cue(client, account, transport="worker", callback=None)
    fired = client.post(f"/v1/cues/{cue_id}/fire", headers=headers).get_json()
    client.post("/v1/executions/claim", json={"worker_id": "gone"}, headers=headers)
    now = datetime.now(UTC)
    with app.app_context():
        from app.scheduling.services.executions import heartbeat_execution

        user = db.session.get(User, account[1])
        heartbeat_execution(user, fired["id"], None, now=now + timedelta(seconds=800))
        assert sweeps.recover_abandoned_claims(now + timedelta(seconds=1000)) == 0
        assert sweeps.recover_abandoned_claims(now + timedelta(seconds=1701)) == 1
        # Worker executions are not swept by the generic stale-delivery rule (§16 #9).
        assert sweeps.recover_stale_deliveries(now + timedelta(hours=1)) == 0


def test_unusable_schedule_does_not_stall_other_cues(app, client, account):
    good = _cue(client, account, name="good", schedule={"type": "recurring",
                                                        "cron": "*/5 * * * *"})
    bad = _cue(client, account, name="bad", schedule={"type": "recurring",
                                                      "cron": "*/5 * * * *"})
    _set(app, Cue, good, next_run=T0)
    _set(app, Cue, bad, next_run=T0 - timedelta(minutes=1), schedule_cron="0 0 30 2 *")
    with app.app_context():
        assert jobs.schedule_due_cues(T0 + timedelta(seconds=1)) == 1
    assert _cue_row(app, bad).next_run is None
    assert [e.scheduled_for for e in _executions(app, good)] == [T0]
