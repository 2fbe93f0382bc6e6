"""The alert webhook (§4.3, §4.9, §13.5): URL on PATCH /v1/auth/me, the secret endpoints, and
signed delivery by the worker's ``alert_webhooks`` job."""

from __future__ import annotations

import ipaddress
import json
import re
import uuid

import pytest
from cueapi import verify_webhook
from sqlalchemy import select

from app.alerts import delivery
from app.alerts.models import Alert
from app.extensions import db
from app.outbound.signing import canonical_json
from app.users.models import User
from app.worker import Job
from app.worker.loop import Worker
from tests.alerts.conftest import Account
from tests.helpers import error_of

ALERT_JOB = (Job("alert_webhooks", "app.alerts.jobs:deliver_alert_webhooks"),)
HEX64 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture
def private_app(make_app):
    """Loopback receivers are allowed (ALLOW_PRIVATE_CALLBACK_URLS), as in a private network."""
    return make_app(ALLOW_PRIVATE_CALLBACK_URLS=True)


@pytest.fixture
def member(private_app):
    return Account(private_app.test_client())


def run_alert_job(app) -> Worker:
    worker = Worker(app, jobs=ALERT_JOB)
    try:
        worker.run_once()
        assert worker.pool.wait_idle(30)
    finally:
        worker.pool.close()
    return worker


def _stored_url(app, user_id):
    with app.app_context():
        return db.session.get(User, uuid.UUID(user_id)).alert_webhook_url


def _patch(account, **body):
    return account.client.patch("/v1/auth/me", json=body, headers=account.headers)


def _alert_row(app):
    with app.app_context():
        row = db.session.scalar(select(Alert))
        db.session.expunge(row)
        return row


def _raise_alert(account) -> str:
    cue_id = account.cue(verification={"mode": "require_external_id"})
    return account.outcome(cue_id, success=True)


# --- PATCH /v1/auth/me -----------------------------------------------------------------------


def test_alert_webhook_url_is_ssrf_checked(app, account):
    for url, reason in (("http://192.0.2.10/a", "scheme must be https"),
                        ("https://localhost/a", "not allowed"),
                        ("https://127.0.0.1/a", "blocked address"),
                        ("https://169.254.169.254/latest", "blocked address"),
                        ("https://user:pw@192.0.2.10/a", "credentials"),
                        ("not a url", "scheme")):
        response = _patch(account, alert_webhook_url=url)
        assert response.status_code == 400, url
        error = error_of(response)
        assert error["code"] == "invalid_alert_webhook_url"
        assert error["message"].startswith("alert_webhook_url: ") and reason in error["message"]
    assert _stored_url(app, account.id) is None
    long = _patch(account, alert_webhook_url="https://192.0.2.10/" + "a" * 2048)
    assert long.status_code == 422 and error_of(long)["code"] == "validation_error"
    wrong_type = _patch(account, alert_webhook_url=5)
    assert wrong_type.status_code == 422


def test_alert_webhook_url_set_and_cleared(app, account):
    response = _patch(account, alert_webhook_url="https://192.0.2.10/alerts")
    assert response.status_code == 200
    assert response.get_json()["updated_at"]
    assert _stored_url(app, account.id) == "https://192.0.2.10/alerts"
    assert _patch(account, alert_webhook_url="").status_code == 200
    assert _stored_url(app, account.id) is None
    _patch(account, alert_webhook_url="https://192.0.2.10/alerts")
    assert _patch(account, alert_webhook_url=None).status_code == 200
    assert _stored_url(app, account.id) is None
    empty = account.client.patch("/v1/auth/me", json={}, headers=account.headers)
    assert empty.status_code == 422 and error_of(empty)["code"] == "no_fields"
    assert "alert_webhook_url" in error_of(empty)["message"]


# --- the secret ------------------------------------------------------------------------------


def test_alert_webhook_secret_minted_once_and_regenerated(app, account):
    first = account.client.get("/v1/auth/alert-webhook-secret", headers=account.headers)
    assert first.status_code == 200
    secret = first.get_json()["alert_webhook_secret"]
    assert HEX64.match(secret) and set(first.get_json()) == {"alert_webhook_secret"}
    again = account.client.get("/v1/auth/alert-webhook-secret", headers=account.headers)
    assert again.get_json()["alert_webhook_secret"] == secret
    for headers in ({}, {"X-Confirm-Destructive": "TRUE"}):
        refused = account.client.post("/v1/auth/alert-webhook-secret/regenerate",
                                      headers={**account.headers, **headers})
        assert refused.status_code == 400
        assert error_of(refused)["code"] == "confirmation_required"
    regenerated = account.client.post("/v1/auth/alert-webhook-secret/regenerate",
                                      headers={**account.headers,
                                               "X-Confirm-Destructive": "true"})
    assert regenerated.status_code == 200
    body = regenerated.get_json()
    assert body["previous_secret_revoked"] is True and HEX64.match(body["alert_webhook_secret"])
    assert body["alert_webhook_secret"] != secret
    assert account.client.get("/v1/auth/alert-webhook-secret", headers=account.headers
                              ).get_json()["alert_webhook_secret"] == body["alert_webhook_secret"]
    assert account.client.get("/v1/auth/alert-webhook-secret").status_code == 401


# --- delivery --------------------------------------------------------------------------------


def test_alerts_are_delivered_signed_by_the_worker_not_inline(private_app, member, receiver):
    secret = member.client.get("/v1/auth/alert-webhook-secret",
                               headers=member.headers).get_json()["alert_webhook_secret"]
    assert _patch(member, alert_webhook_url=receiver.url).status_code == 200
    execution_id = _raise_alert(member)
    assert receiver.requests == []  # the outcome report does not wait for the receiver
    assert _alert_row(private_app).delivery_state == "pending"
    run_alert_job(private_app)
    [(headers, raw)] = receiver.requests
    [alert] = member.alerts()["alerts"]
    body = json.loads(raw)
    assert body == {"alert_id": alert["id"], "alert_type": "verification_failed",
                    "severity": "warning", "message": alert["message"],
                    "execution_id": execution_id, "cue_id": alert["cue_id"],
                    "created_at": body["created_at"],
                    "metadata": {"outcome_state": "verification_failed", "transport": "worker"}}
    assert body["created_at"].endswith("+00:00")
    assert raw.decode() == canonical_json(body)  # raw-body verification works
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "CueAPI/1.0"
    assert headers["X-CueAPI-Alert-Id"] == alert["id"]
    assert headers["X-CueAPI-Alert-Type"] == "verification_failed"
    assert headers["X-CueAPI-Signature"].startswith("v1=")
    assert verify_webhook(raw.decode(), headers["X-CueAPI-Signature"], secret,
                          timestamp=headers["X-CueAPI-Timestamp"])
    assert _alert_row(private_app).delivery_state == "delivered"
    run_alert_job(private_app)
    assert len(receiver.requests) == 1  # sent once


def test_a_failed_delivery_is_not_retried(private_app, member, receiver):
    receiver.status = 500
    member.client.get("/v1/auth/alert-webhook-secret", headers=member.headers)
    _patch(member, alert_webhook_url=receiver.url)
    _raise_alert(member)
    run_alert_job(private_app)
    run_alert_job(private_app)
    assert len(receiver.requests) == 1
    row = _alert_row(private_app)
    assert row.delivery_state == "failed" and "500" in row.delivery_error


def test_no_secret_means_nothing_is_sent_unsigned(private_app, member, receiver):
    _patch(member, alert_webhook_url=receiver.url)
    _raise_alert(member)
    run_alert_job(private_app)
    assert receiver.requests == []
    row = _alert_row(private_app)
    assert row.delivery_state == "failed" and row.delivery_error == delivery.NO_SECRET
    # The alert itself is still listed.
    assert member.alerts()["total"] == 1


def test_a_url_removed_before_delivery_is_honoured(private_app, member, receiver):
    member.client.get("/v1/auth/alert-webhook-secret", headers=member.headers)
    _patch(member, alert_webhook_url=receiver.url)
    _raise_alert(member)
    _patch(member, alert_webhook_url="")
    run_alert_job(private_app)
    assert receiver.requests == []
    assert _alert_row(private_app).delivery_error == delivery.NO_URL


def test_destination_is_rechecked_at_delivery(make_app, monkeypatch):
    """DNS rebinding: a host that resolved to a public address when the URL was saved and to
    the metadata service when the alert is sent is not called."""
    import app.outbound.ssrf as ssrf

    app = make_app()
    account = Account(app.test_client())
    answers = {"hooks.example.test": "192.0.2.10"}
    monkeypatch.setattr(ssrf, "resolve_addresses",
                        lambda host: [ipaddress.ip_address(answers.get(host, host))])
    account.client.get("/v1/auth/alert-webhook-secret", headers=account.headers)
    assert _patch(account, alert_webhook_url="https://hooks.example.test/a").status_code == 200
    _raise_alert(account)
    answers["hooks.example.test"] = "169.254.169.254"
    run_alert_job(app)
    row = _alert_row(app)
    assert row.delivery_state == "failed" and "blocked" in row.delivery_error


def test_claims_are_exclusive_stale_claims_recovered_and_released(private_app, member, clock):
    _patch(member, alert_webhook_url="https://192.0.2.10/a")
    _raise_alert(member)
    with private_app.app_context():
        [claim] = delivery.claim_alerts(10)
        assert delivery.claim_alerts(10) == []  # a second worker finds nothing to take
        clock.advance(seconds=61)  # the claiming worker died mid-send
        [again] = delivery.claim_alerts(10)
        assert again[0] == claim[0] and again[1] > claim[1]
        assert delivery.release_alerts([claim]) == 0  # the old claim lost the row
        assert delivery.release_alerts([again]) == 1
        assert db.session.get(Alert, claim[0]).delivery_state == "pending"
        # A worker holding a lost claim sends nothing and records nothing.
        clock.advance(seconds=1)
        [third] = delivery.claim_alerts(10)
        assert delivery.deliver_alert(*again) is None
        assert db.session.get(Alert, third[0]).delivery_state == "sending"


def test_the_documented_receiver_verifies_a_real_alert(private_app, member, receiver):
    """The ``verify_alert`` example of docs/scheduling.md accepts a delivered alert and refuses
    a tampered or stale one."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "scheduling.md").read_text()
    [code] = [block for block in re.findall(r"```python\n(.*?)```", doc, flags=re.S)
              if "def verify_alert" in block]
    namespace: dict = {}
    exec(compile(code, "docs/scheduling.md", "exec"), namespace)  # noqa: S102 - our own docs
    verify_alert = namespace["verify_alert"]
    secret = member.client.get("/v1/auth/alert-webhook-secret",
                               headers=member.headers).get_json()["alert_webhook_secret"]
    _patch(member, alert_webhook_url=receiver.url)
    _raise_alert(member)
    run_alert_job(private_app)
    [(headers, raw)] = receiver.requests
    assert verify_alert(raw, headers, secret)
    assert not verify_alert(raw.replace(b"warning", b"critical"), headers, secret)
    assert not verify_alert(raw, headers, "0" * 64)
    stale = {**headers, "X-CueAPI-Timestamp": str(int(headers["X-CueAPI-Timestamp"]) - 600)}
    assert not verify_alert(raw, stale, secret)
