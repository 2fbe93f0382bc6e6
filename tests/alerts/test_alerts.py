"""Alerts raised by outcome reports (§8.8, §12.6): types, thresholds, messages, dedup, listing."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.alerts.models import Alert
from app.extensions import db
from tests.alerts.conftest import Account
from tests.helpers import error_of

ALERT_KEYS = {"id", "cue_id", "execution_id", "alert_type", "severity", "message", "metadata",
              "acknowledged", "created_at"}


def test_verification_failed_alert(account):
    cue_id = account.cue(verification={"mode": "require_external_id"})
    execution_id = account.outcome(cue_id, success=True)  # no external_id: fails verification
    body = account.alerts()
    assert body["total"] == 1 and body["limit"] == 20 and body["offset"] == 0
    [alert] = body["alerts"]
    assert set(alert) == ALERT_KEYS
    assert alert["alert_type"] == "verification_failed" and alert["severity"] == "warning"
    assert alert["message"] == (f"Execution {execution_id} reported success but failed "
                                "verification (required evidence missing).")
    assert alert["execution_id"] == execution_id and alert["cue_id"] == cue_id
    assert alert["metadata"] == {"outcome_state": "verification_failed", "transport": "worker"}
    assert alert["acknowledged"] is False and alert["created_at"].endswith("Z")
    uuid.UUID(alert["id"])
    # Evidence present: verified, no alert.
    account.outcome(cue_id, success=True, external_id="ext-1")
    assert account.alerts()["total"] == 1


def test_consecutive_failures_threshold_message_and_dedup(account, clock):
    cue_id = account.cue()
    for _ in range(2):
        account.outcome(cue_id)
        clock.advance(seconds=1)
    assert account.alerts()["total"] == 0  # two failures: below the threshold of three
    third = account.outcome(cue_id)
    [alert] = account.alerts()["alerts"]
    assert alert["alert_type"] == "consecutive_failures"
    assert alert["message"] == f"Cue {cue_id} has 3 consecutive failed executions."
    assert alert["metadata"] == {"consecutive_failures": 3}
    assert alert["execution_id"] == third and alert["cue_id"] == cue_id
    # Within five minutes further failures of the cue raise nothing more.
    clock.advance(minutes=4, seconds=58)
    account.outcome(cue_id)
    assert account.alerts()["total"] == 1
    # Once the window passed, the next failure raises a new alert with the whole streak.
    clock.advance(seconds=3)
    account.outcome(cue_id)
    newest = account.alerts()["alerts"][0]
    assert account.alerts()["total"] == 2 and newest["metadata"] == {"consecutive_failures": 5}


def test_a_success_resets_the_streak_and_dedup_is_per_cue(account, clock):
    cue_id, other = account.cue("a"), account.cue("b")
    for _ in range(2):
        account.outcome(cue_id)
        clock.advance(seconds=1)
    account.outcome(cue_id, success=True)
    clock.advance(seconds=1)
    for _ in range(2):
        account.outcome(cue_id)
        clock.advance(seconds=1)
    assert account.alerts()["total"] == 0  # 2 failures since the success
    for _ in range(3):
        account.outcome(other)
        clock.advance(seconds=1)
    account.outcome(cue_id)  # third in a row for the first cue
    alerts = account.alerts()["alerts"]
    assert sorted(a["cue_id"] for a in alerts) == sorted([cue_id, other])


def test_successful_and_unverified_outcomes_raise_nothing(account):
    cue_id = account.cue(verification={"mode": "manual"})
    for _ in range(4):
        account.outcome(cue_id, success=True)
    assert account.alerts()["total"] == 0


def test_alert_filters_and_paging(account, clock):
    verified = account.cue("v", verification={"mode": "require_artifacts"})
    first = account.outcome(verified, success=True)
    clock.advance(minutes=1)
    cutoff = clock.now
    failing = account.cue("f")
    for _ in range(3):
        account.outcome(failing)
        clock.advance(seconds=1)
    account.outcome(verified, success=True)
    everything = account.alerts()
    assert everything["total"] == 3
    assert [a["alert_type"] for a in everything["alerts"]] == [
        "verification_failed", "consecutive_failures", "verification_failed"]  # newest first
    only = account.alerts("?alert_type=verification_failed")
    assert only["total"] == 2 and {a["alert_type"] for a in only["alerts"]} == {
        "verification_failed"}
    assert only["alerts"][-1]["execution_id"] == first
    since = account.alerts("?since=" + cutoff.isoformat().replace("+00:00", "Z"))
    assert since["total"] == 2
    naive = account.alerts("?since=" + cutoff.replace(tzinfo=None).isoformat())
    assert naive["total"] == 2  # naive = UTC
    page = account.alerts("?limit=1&offset=1")
    assert page["total"] == 3 and page["limit"] == 1 and page["offset"] == 1
    assert [a["id"] for a in page["alerts"]] == [everything["alerts"][1]["id"]]
    assert account.alerts("?alert_type=outcome_timeout")["total"] == 0


def test_alert_filter_errors(account):
    response = account.client.get("/v1/alerts?alert_type=bogus", headers=account.headers)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_filter"
    assert error["message"] == ("alert_type must be one of: consecutive_failures, "
                                "outcome_timeout, verification_failed")
    for query in ("limit=0", "limit=101", "offset=-1", "since=yesterday", "limit=x"):
        response = account.client.get(f"/v1/alerts?{query}", headers=account.headers)
        assert response.status_code == 422, query
        assert error_of(response)["code"] == "validation_error"
    assert account.client.get("/v1/alerts").status_code == 401


def test_alerts_are_private(client, account):
    cue_id = account.cue(verification={"mode": "require_result_url"})
    account.outcome(cue_id, success=True)
    other = Account(client)
    assert account.alerts()["total"] == 1
    assert other.alerts() == {"alerts": [], "total": 0, "limit": 20, "offset": 0}


def test_outcome_and_alert_are_one_transaction(app, account, monkeypatch):
    """An alert that cannot be written takes its outcome with it (nothing half-written)."""
    import app.alerts.services as alert_services

    cue_id = account.cue(verification={"mode": "require_external_id"})
    execution_id = account.fire(cue_id)

    def broken(*args, **kwargs):
        raise RuntimeError("alert store down")

    monkeypatch.setattr(alert_services, "add_alert", broken)
    response = account.client.post(f"/v1/executions/{execution_id}/outcome",
                                   json={"success": True}, headers=account.headers)
    assert response.status_code == 500
    monkeypatch.undo()
    detail = account.client.get(f"/v1/executions/{execution_id}", headers=account.headers)
    assert detail.get_json()["outcome"] is None  # the outcome was rolled back too
    retried = account.client.post(f"/v1/executions/{execution_id}/outcome",
                                  json={"success": True}, headers=account.headers)
    assert retried.status_code == 200 and account.alerts()["total"] == 1


def test_webhook_execution_outcomes_count_by_execution_status(app, account):
    """A failed outcome on a delivered webhook execution is not a failed execution (upstream
    counts execution statuses), so it does not build a streak."""
    response = account.client.post("/v1/cues", headers=account.headers, json={
        "name": "hook", "schedule": {"type": "recurring", "cron": "0 9 * * *"},
        "callback": {"url": "https://192.0.2.10/hook"}})
    cue_id = response.get_json()["id"]
    for _ in range(3):
        execution_id = account.fire(cue_id)
        with app.app_context():
            from app.scheduling.models import Execution

            db.session.get(Execution, uuid.UUID(execution_id)).status = "success"
            db.session.commit()
        account.client.post(f"/v1/executions/{execution_id}/outcome",
                            json={"success": False}, headers=account.headers)
    assert account.alerts()["total"] == 0


def test_alert_rows_match_the_listing(app, account):
    cue_id = account.cue(verification={"mode": "require_external_id"})
    account.outcome(cue_id, success=True)
    with app.app_context():
        row = db.session.scalar(select(Alert))
        assert row.delivery_state is None  # no alert webhook configured: nothing to deliver
        assert str(row.user_id) == account.id
        assert re.fullmatch(r"cue_[a-z0-9]{12}", row.cue_id)
        assert datetime.now(UTC) - row.created_at < timedelta(minutes=1)


def test_racing_failures_raise_one_alert(app, account, live_server):
    """Failures of one cue reported at the same moment raise one consecutive_failures alert.

    Webhook executions whose deliveries failed: unlike a worker outcome, such a report writes
    nothing to the cue, so only the alert's own lock on the cue serialises the decisions.
    """
    import threading

    import httpx

    from app.scheduling.models import Execution

    server = live_server(app)
    response = account.client.post("/v1/cues", headers=account.headers, json={
        "name": "hook", "schedule": {"type": "recurring", "cron": "0 9 * * *"},
        "callback": {"url": "https://192.0.2.10/hook"}})
    cue_id = response.get_json()["id"]
    executions = [account.fire(cue_id) for _ in range(8)]
    with app.app_context():
        for execution_id in executions:
            db.session.get(Execution, uuid.UUID(execution_id)).status = "failed"
        db.session.commit()
    barrier, statuses = threading.Barrier(8), []

    def report(execution_id):
        with httpx.Client(timeout=60) as http:
            barrier.wait()
            statuses.append(http.post(f"{server.url}/v1/executions/{execution_id}/outcome",
                                      json={"success": False},
                                      headers=account.headers).status_code)

    threads = [threading.Thread(target=report, args=(e,)) for e in executions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert statuses == [200] * 8
    [alert] = account.alerts()["alerts"]
    assert alert["alert_type"] == "consecutive_failures"
    assert alert["metadata"] == {"consecutive_failures": 8}
