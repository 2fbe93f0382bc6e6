"""``GET /v1/usage`` and the counts of ``GET /v1/auth/me`` and ``/health``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from app.quotas import routes as usage_routes
from app.extensions import db
from app.quotas.usage import usage_report
from app.scheduling.models import Execution, ExecutionUsage
from app.users.models import User
from tests.helpers import key_headers, register, service_headers, user_id_of
from tests.scheduling.conftest import cue_body


def test_usage_counts(app, client, headers):
    first = client.post("/v1/cues", json=cue_body(name="a"), headers=headers).get_json()
    client.post("/v1/cues", json=cue_body(name="b"), headers=headers)
    worker = client.post("/v1/cues", json=cue_body(name="w", transport="worker", callback=None),
                         headers=headers).get_json()
    client.patch(f"/v1/cues/{first['id']}", json={"status": "paused"}, headers=headers)
    ok = client.post(f"/v1/cues/{worker['id']}/fire", headers=headers).get_json()["id"]
    bad = client.post(f"/v1/cues/{worker['id']}/fire", headers=headers).get_json()["id"]
    missed = client.post(f"/v1/cues/{worker['id']}/fire", headers=headers).get_json()["id"]
    client.post(f"/v1/executions/{ok}/outcome", json={"success": True}, headers=headers)
    client.post(f"/v1/executions/{bad}/outcome", json={"success": False}, headers=headers)
    with app.app_context():
        db.session.execute(db.update(Execution).where(Execution.id == uuid.UUID(missed))
                           .values(status="missed"))
        db.session.commit()
    body = client.get("/v1/usage", headers=headers).get_json()
    assert body["plan"] == "free"
    assert body["cues"] == {"used": 3, "active": 3, "limit": 10, "remaining": 7,
                            "percent_used": 30, "unlimited": False}
    assert body["outcomes"] == {"reported": 2, "succeeded": 1, "failed": 2}
    assert body["executions"]["used"] == 0  # worker outcomes never count
    assert body["rate_limit"]["requests_per_minute"] == 60
    today = datetime.now(UTC).date()
    assert body["billing_period"]["start"] == today.replace(day=1).isoformat()
    assert body["period"]["start"] == body["billing_period"]["start"]
    me = client.get("/v1/auth/me", headers=headers).get_json()
    assert me["active_cues"] == 2  # paused cues count for the quota, not here


def test_usage_execution_projection(app, client, headers):
    api_user = client.get("/v1/auth/me", headers=headers).get_json()["id"]
    with app.app_context():
        user = db.session.get(User, uuid.UUID(api_user))
        db.session.add(ExecutionUsage(user_id=user.id, month="2026-04", executions=100))
        db.session.add(ExecutionUsage(user_id=user.id, month="2026-05", executions=120))
        db.session.commit()
        report = usage_report(user, 3, now=datetime(2026, 5, 10, 12, tzinfo=UTC))
    assert report["executions"] == {"used": 120, "limit": 300, "remaining": 180,
                                    "percent_used": 40, "percentage": 40.0,
                                    "projected_month_end": 372, "will_exceed_limit": True,
                                    "unlimited": False}
    assert report["billing_period"] == {"start": "2026-05-01", "end": "2026-05-31",
                                        "days_remaining": 21}
    assert report["rate_limit"]["current_usage"] == 3


def test_usage_under_delegation(delegation_client):
    api_key, _ = register(delegation_client)
    user_id = user_id_of(delegation_client, api_key)
    body = delegation_client.get("/v1/usage", headers=service_headers(user_id)).get_json()
    assert body["cues"]["used"] == 0 and body["executions"]["percent_used"] == 0
    assert delegation_client.get("/v1/usage").status_code == 401


def test_health_reports_queue_and_workers(client, headers):
    worker = client.post("/v1/cues", json=cue_body(transport="worker", callback=None),
                         headers=headers).get_json()
    client.post(f"/v1/cues/{worker['id']}/fire", headers=headers)
    hook = client.post("/v1/cues", json=cue_body(name="hook"), headers=headers).get_json()
    client.post(f"/v1/cues/{hook['id']}/fire", headers=headers)
    body = client.get("/health").get_json()
    assert body["queue"] == {"pending_outbox": 1, "stale_executions": 0, "pending_retries": 0,
                             "pending_worker_claims": 1}
    assert "workers" not in body
    client.post("/v1/worker/heartbeat", json={"worker_id": "w"}, headers=headers)
    workers = client.get("/health").get_json()["workers"]
    assert workers["active_count"] == 1 and workers["last_heartbeat"].endswith("+00:00")
    other, _ = register(client)
    assert client.get("/v1/usage", headers=key_headers(other)).status_code == 200


def test_usage_warning_header_from_80_percent(make_app):
    for quotas_off in (False, True):
        app = make_app(DISABLE_QUOTA_ENFORCEMENT=quotas_off)
        client = app.test_client()
        api_key, _ = register(client)
        headers = key_headers(api_key)
        user_id = uuid.UUID(user_id_of(client, api_key))
        month = datetime.now(UTC).strftime("%Y-%m")
        with app.app_context():
            db.session.add(ExecutionUsage(user_id=user_id, month=month, executions=239))
            db.session.commit()
        assert "X-CueAPI-Usage-Warning" not in client.get("/v1/auth/me", headers=headers).headers
        with app.app_context():
            db.session.execute(db.update(ExecutionUsage).values(executions=240))
            db.session.commit()
        # Within the cache window the header still reflects the count read before …
        assert "X-CueAPI-Usage-Warning" not in client.get("/v1/cues", headers=headers).headers
        # … and once the window passes (here: cleared) the new count shows.
        usage_routes._usage_cache.clear()
        warned = client.get("/v1/cues", headers=headers).headers.get("X-CueAPI-Usage-Warning")
        assert warned == (None if quotas_off else "approaching_limit")
        assert "X-CueAPI-Usage-Warning" not in client.get("/health").headers


def test_usage_without_quota_enforcement_reports_no_limits(make_app):
    """``DISABLE_QUOTA_ENFORCEMENT=true``: over the plan's numbers, nothing reads as exceeded,
    and ``cues.used`` (active + paused) differs from ``/me``'s ``active_cues`` (active only)
    exactly by the paused cues, as docs/scheduling.md says."""
    app = make_app(DISABLE_QUOTA_ENFORCEMENT=True)
    client = app.test_client()
    api_key, _ = register(client)
    headers = key_headers(api_key)
    created = [client.post("/v1/cues", json=cue_body(name=f"c{n}"), headers=headers)
               for n in range(12)]  # over active_cue_limit (10): creation is not limited
    assert all(r.status_code == 201 for r in created)
    client.patch(f"/v1/cues/{created[0].get_json()['id']}", json={"status": "paused"},
                 headers=headers)
    month = datetime.now(UTC).strftime("%Y-%m")
    with app.app_context():
        db.session.add(ExecutionUsage(user_id=uuid.UUID(user_id_of(client, api_key)),
                                      month=month, executions=360))  # 120 % of 300
        db.session.commit()
    usage_routes._usage_cache.clear()
    response = client.get("/v1/usage", headers=headers)
    assert "X-CueAPI-Usage-Warning" not in response.headers
    body = response.get_json()
    assert body["cues"] == {"used": 12, "active": 12, "limit": 0, "remaining": None,
                            "percent_used": 0, "unlimited": True}
    executions = body["executions"]
    assert executions["used"] == 360 and executions["limit"] == 0
    assert executions["remaining"] is None and executions["unlimited"] is True
    assert executions["percent_used"] == 0 and executions["percentage"] == 0.0
    assert executions["will_exceed_limit"] is False
    me = client.get("/v1/auth/me", headers=headers).get_json()
    assert me["active_cues"] == 11 and body["cues"]["used"] == 12


def test_usage_enforced_over_limit_reads_as_exceeded(app, client, headers):
    api_user = client.get("/v1/auth/me", headers=headers).get_json()["id"]
    with app.app_context():
        db.session.add(ExecutionUsage(user_id=uuid.UUID(api_user),
                                      month=datetime.now(UTC).strftime("%Y-%m"),
                                      executions=360))
        db.session.commit()
    executions = client.get("/v1/usage", headers=headers).get_json()["executions"]
    assert executions["limit"] == 300 and executions["remaining"] == 0
    assert executions["percent_used"] == 120 and executions["unlimited"] is False
    assert executions["will_exceed_limit"] is True
