"""After an import, cueapi-core's clients keep working: proved through Cueline's HTTP API.

Old ``cue_sk_`` keys authenticate, old cue and execution ids answer, an integrator acts for an
old user id, ``slug@user-slug`` addresses resolve, imported inboxes hold the imported messages,
receivers holding the old webhook secrets (cue, agent, alert) verify what Cueline signs, alerts,
subscriptions, live sessions and the event stream carry on where they were.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from app.agents_live.models import LiveSession
from app.alerts import delivery as alert_delivery
from app.alerts.models import Alert
from app.events.models import Subscription
from app.extensions import db
from app.messaging.models import Message
from app.messaging.services.delivery import build_push
from app.outbound.http import SUCCESS, SendResult
from app.outbound.signing import canonical_json, verify_signature
from app.scheduling.delivery import webhook_body, webhook_headers
from app.scheduling.models import Cue, Execution
from app.users.models import User
from tests.helpers import SERVICE_TOKEN, key_headers, service_headers
from tests.importers.conftest import run


def _iso(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def upstream_signature(secret: str, payload: dict, timestamp: int) -> str:
    """How cueapi-core signs (and its receivers check): HMAC-SHA256 over
    ``"<timestamp>." + json.dumps(payload, sort_keys=True, default=str)``."""
    message = f"{timestamp}.".encode() + json.dumps(payload, sort_keys=True,
                                                     default=str).encode()
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


@pytest.fixture
def imported(make_app, upstream):
    """``imported(**overrides)`` → an app whose database holds the imported upstream."""

    def _make(**overrides):
        app = make_app(**overrides)
        report = run(app, upstream.url)
        assert report.changes > 0
        return app

    return _make


def test_old_keys_authenticate_with_the_same_account(imported, upstream):
    client = imported().test_client()
    for index, user in enumerate(upstream.users):
        me = client.get("/v1/auth/me", headers=key_headers(user.key))
        assert me.status_code == 200, (user.email, me.get_json())
        body = me.get_json()
        assert body["id"] == str(user.id)
        assert body["email"] == user.email
        assert body["slug"] == user.slug
        assert body["plan"] == user.plan
        assert body["active_cue_limit"] == 10 + index
        assert body["monthly_execution_limit"] == 300 * (index + 1)
        assert body["monthly_message_limit"] == 300 + index
        assert body["rate_limit_per_minute"] == 60 + index
        assert body["api_key_prefix"] == user.key[:12]
        assert body["executions_this_month"] == 10 * index  # the monthly counter came along
    # A key nobody issued still fails.
    assert client.get("/v1/auth/me", headers=key_headers("cue_sk_" + "0" * 32)).status_code \
        == 401


def test_stored_key_copies_reveal_under_the_same_session_secret(imported, upstream):
    client = imported().test_client()
    revealed = client.get("/v1/auth/key", headers=key_headers(upstream.user(0).key)).get_json()
    assert revealed["api_key"] == upstream.user(0).key
    # User 10's copy was encrypted under another deployment's SESSION_SECRET: not revealable,
    # but the key itself works.
    other = upstream.user(10)
    assert client.get("/v1/auth/key", headers=key_headers(other.key)).get_json()["api_key"] \
        is None
    assert client.get("/v1/auth/me", headers=key_headers(other.key)).status_code == 200


def test_old_cues_answer_with_the_same_schedule_callback_and_payload(imported, upstream):
    client = imported().test_client()
    owners = {u.id: u for u in upstream.users}
    for cue in upstream.cues:
        response = client.get(f"/v1/cues/{cue['id']}?execution_limit=100",
                              headers=key_headers(owners[cue["user_id"]].key))
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert body["name"] == cue["name"]
        assert body["description"] == cue["description"]
        assert body["status"] == cue["status"]
        assert body["transport"] == cue["callback_transport"]
        assert body["schedule"]["type"] == cue["schedule_type"]
        assert body["schedule"]["timezone"] == cue["schedule_timezone"]
        assert body["schedule"].get("cron") == cue["schedule_cron"]
        if cue["schedule_at"]:
            assert _parse(body["schedule"]["at"]) == _iso(cue["schedule_at"])
        assert body["callback"] == {"url": cue["callback_url"], "method": cue["callback_method"],
                                    "headers": cue["callback_headers"]}
        assert body["payload"] == cue["payload"]
        assert body["retry"] == {"max_attempts": cue["retry_max_attempts"],
                                 "backoff_minutes": cue["retry_backoff_minutes"]}
        assert body["on_failure"] == cue["on_failure"]
        assert body["verification"] == ({"mode": cue["verification_mode"]}
                                        if cue["verification_mode"] else None)
        assert body["run_count"] == cue["run_count"]
        assert body["fired_count"] == cue["fired_count"]
        if cue["next_run"] is None:
            assert body["next_run"] is None
        else:
            assert _parse(body["next_run"]) == _iso(cue["next_run"])
        expected = [e for e in upstream.executions if e["cue_id"] == cue["id"]]
        assert body["execution_total"] == len(expected)
        assert {e["id"] for e in body["executions"]} == {str(e["id"]) for e in expected}


def test_old_executions_keep_status_outcome_and_evidence(imported, upstream):
    app = imported()
    client = app.test_client()
    owners = {c["id"]: next(u for u in upstream.users if u.id == c["user_id"])
              for c in upstream.cues}
    recorded = [e for e in upstream.executions if e["outcome_recorded_at"]]
    assert recorded and any(e["outcome_state"] is None for e in recorded)
    for ex in upstream.executions:
        key = owners[ex["cue_id"]].key
        body = client.get(f"/v1/executions/{ex['id']}", headers=key_headers(key)).get_json()
        assert body["status"] == ex["status"]
        assert body["attempts"] == ex["attempts"]
        assert body["http_status"] == ex["http_status"]
        assert body["error_message"] == ex["error_message"]
        assert _parse(body["scheduled_for"]) == _iso(ex["scheduled_for"])
        if ex["outcome_recorded_at"] is None:
            assert body["outcome"] is None
        else:
            outcome = body["outcome"]
            assert outcome["success"] is ex["outcome_success"]
            assert outcome["result"] == ex["outcome_result"]
            assert outcome["error"] == ex["outcome_error"]
            assert outcome["metadata"] == ex["outcome_metadata"]
            assert _parse(outcome["recorded_at"]) == _iso(ex["outcome_recorded_at"])
            # Outcomes stay write-once, including those whose state had to be derived.
            again = client.post(f"/v1/executions/{ex['id']}/outcome", headers=key_headers(key),
                                json={"success": True})
            assert again.status_code == 409
            assert again.get_json()["error"]["code"] == "outcome_already_recorded"
    with app.app_context():
        for ex in recorded:
            row = db.session.get(Execution, ex["id"])
            expected_state = ex["outcome_state"] or (
                "reported_success" if ex["outcome_success"] else "reported_failure")
            assert row.outcome_state == expected_state
            assert row.triggered_by == {None: "scheduler"}.get(ex["triggered_by"],
                                                               ex["triggered_by"])
            evidence = row.evidence or {}
            assert evidence.get("external_id") == ex["evidence_external_id"]
            assert evidence.get("result_url") == ex["evidence_result_url"]
            assert evidence.get("summary") == ex["evidence_summary"]
            assert evidence.get("artifacts") == ex["evidence_artifacts"]
            assert evidence.get("metadata") == ex["evidence_metadata"]
        retrying = next(e for e in upstream.executions if e["status"] == "retrying")
        assert _iso(db.session.get(Execution, retrying["id"]).next_retry_at) == \
            _iso(retrying["next_retry"])
    # The outcome_state filter sees the imported states.
    user0 = upstream.user(0)
    listed = client.get("/v1/executions?outcome_state=reported_success&limit=100",
                        headers=key_headers(user0.key)).get_json()
    mine = {c["id"] for c in upstream.cues_of(user0.id)}
    assert {e["id"] for e in listed["executions"]} == {
        str(e["id"]) for e in recorded if e["cue_id"] in mine and e["outcome_success"]
        and (e["outcome_state"] or "reported_success") == "reported_success"}


def test_an_integrator_acts_for_an_old_user_id(imported, upstream):
    client = imported(EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=SERVICE_TOKEN).test_client()
    user = upstream.user(1)
    me = client.get("/v1/auth/me", headers=service_headers(user.id))
    assert me.status_code == 200
    assert me.get_json()["email"] == user.email
    cues = client.get("/v1/cues?limit=100", headers=service_headers(user.id)).get_json()
    assert {c["id"] for c in cues["cues"]} == {c["id"] for c in upstream.cues_of(user.id)}
    # The upsert an integrator keeps sending finds the same row (and its owner tag).
    upsert = client.put(f"/v1/internal/users/{user.id}", headers=service_headers(),
                        json={"email": user.email, "slug": user.slug})
    assert upsert.status_code == 200, upsert.get_json()
    assert upsert.get_json()["id"] == str(user.id)
    with client.application.app_context():
        assert db.session.get(User, user.id).external_owner == "dock"
        assert db.session.scalar(db.select(db.func.count()).select_from(User)) == \
            len(upstream.users)


def test_slug_addresses_inboxes_and_idempotent_replays(imported, upstream):
    client = imported().test_client()
    user = upstream.user(0)
    headers = key_headers(user.key)
    planner, runner = (next(a for a in upstream.agents_of(user.id) if a.slug == s)
                       for s in ("planner", "runner"))
    # The inbox of an imported agent holds its imported messages (default states).
    expected = {m["id"] for m in upstream.messages if m["to_agent_id"] == runner.id
                and m["delivery_state"] not in ("acked", "expired")
                and (m["send_at"] is None or m["send_at"] <= datetime.now(UTC))}
    inbox = client.get(f"/v1/agents/runner@{user.slug}/inbox?limit=200", headers=headers)
    assert inbox.status_code == 200, inbox.get_json()
    assert {m["id"] for m in inbox.get_json()["messages"]} == expected
    # Sending by slug addresses, from and to imported agents.
    sent = client.post("/v1/messages", headers={**headers,
                                                "X-Cueapi-From-Agent": f"planner@{user.slug}"},
                       json={"to": f"runner@{user.slug}", "body": "after the move"})
    assert sent.status_code == 201, sent.get_json()
    assert sent.get_json()["from_agent_id"] == planner.id
    assert sent.get_json()["to_agent_id"] == runner.id
    # A send retried with an Idempotency-Key spent upstream replays the upstream message.
    original = upstream.idempotent_message
    sender = next(a for a in upstream.agents if a.id == original["from_agent_id"])
    owner = next(u for u in upstream.users if u.id == sender.user_id)
    replay = client.post(
        "/v1/messages",
        headers={**key_headers(owner.key), "X-Cueapi-From-Agent": sender.id,
                 "Idempotency-Key": original["idempotency_key"]},
        json={"to": original["to_agent_id"], "body": original["body"],
              "subject": original["subject"], "priority": original["priority"],
              "metadata": original["message_metadata"]})
    assert replay.status_code == 200, replay.get_json()
    assert replay.get_json()["id"] == original["id"]
    changed = client.post(
        "/v1/messages",
        headers={**key_headers(owner.key), "X-Cueapi-From-Agent": sender.id,
                 "Idempotency-Key": original["idempotency_key"]},
        json={"to": original["to_agent_id"], "body": "something else"})
    assert changed.status_code == 409


def test_receivers_verify_with_the_old_secrets(imported, upstream):
    app = imported()
    client = app.test_client()
    now = datetime.now(UTC)
    user = upstream.user(0)
    secret = client.get("/v1/auth/webhook-secret", headers=key_headers(user.key)).get_json()
    assert secret == {"webhook_secret": user.webhook_secret}
    with app.app_context():
        # A cue webhook Cueline would send: the receiver's old secret verifies it.
        cue = db.session.get(Cue, next(c["id"] for c in upstream.cues_of(user.id)
                                       if c["callback_transport"] == "webhook"))
        execution = db.session.scalars(db.select(Execution).where(
            Execution.cue_id == cue.id)).first()
        stored = db.session.get(User, user.id).webhook_secret
        payload = webhook_body(execution, cue, 1)
        body = canonical_json(payload)
        headers = webhook_headers(execution, cue, 1, stored, body, now)
        timestamp = int(headers["X-CueAPI-Timestamp"])
        assert headers["X-CueAPI-Signature"] == upstream_signature(user.webhook_secret,
                                                                   json.loads(body), timestamp)
        # A message push to an imported agent with a webhook: signed with its old secret.
        agent = next(a for a in upstream.agents if a.webhook_secret and not a.deleted)
        message = db.session.scalars(db.select(Message).where(
            Message.to_agent_id == agent.id)).first()
        push = build_push(message, 1, now)
        assert push is not None
        assert verify_signature(agent.webhook_secret, push.body,
                                push.headers["X-CueAPI-Timestamp"],
                                push.headers["X-CueAPI-Signature"])
        assert push.headers["X-CueAPI-Signature"] == upstream_signature(
            agent.webhook_secret, json.loads(push.body), int(push.headers["X-CueAPI-Timestamp"]))
    owner = next(u for u in upstream.users if u.id == agent.user_id)
    shown = client.get(f"/v1/agents/{agent.id}/webhook-secret", headers=key_headers(owner.key))
    assert shown.get_json()["webhook_secret"] == agent.webhook_secret


def test_workers_and_usage_come_along(imported, upstream):
    client = imported().test_client()
    for worker in upstream.workers:
        owner = next(u for u in upstream.users if u.id == worker["user_id"])
        listed = client.get("/v1/workers", headers=key_headers(owner.key)).get_json()["workers"]
        assert [w["worker_id"] for w in listed] == [worker["worker_id"]]
        assert listed[0]["handlers"] == worker["handlers"]
    user = upstream.user(4)
    usage = client.get("/v1/usage", headers=key_headers(user.key)).get_json()
    assert usage["executions"]["used"] == 40
    assert usage["executions"]["limit"] == 1500


def test_alerts_come_along_for_the_old_key_and_are_not_sent_again(imported, upstream):
    app = imported()
    client = app.test_client()
    for user in (upstream.user(0), upstream.user(4)):
        listed = client.get("/v1/alerts", headers=key_headers(user.key))
        assert listed.status_code == 200, listed.get_json()
        expected = sorted((a for a in upstream.alerts if a["user_id"] == user.id),
                          key=lambda a: a["created_at"], reverse=True)
        body = listed.get_json()
        assert body["total"] == len(expected) > 0
        for got, alert in zip(body["alerts"], expected, strict=True):
            assert got["id"] == str(alert["id"])
            assert got["alert_type"] == alert["alert_type"]
            assert got["severity"] == alert["severity"]
            assert got["message"] == alert["message"]
            assert got["cue_id"] == alert["cue_id"]
            assert got["execution_id"] == (str(alert["execution_id"])
                                           if alert["execution_id"] else None)
            assert got["acknowledged"] is alert["acknowledged"]
            assert (got["metadata"] or {}) == (alert["metadata"] or {})
            assert _parse(got["created_at"]) == _iso(alert["created_at"])
    with app.app_context():
        # Nothing queued for the alert webhook: cueapi-core already sent (or not) each one.
        assert db.session.scalar(db.select(db.func.count()).select_from(Alert)
                                 .where(Alert.delivery_state.is_not(None))) == 0


def test_alert_webhooks_verify_with_the_imported_secret(imported, upstream, monkeypatch):
    app = imported()
    client = app.test_client()
    user = upstream.user(4)
    shown = client.get("/v1/auth/alert-webhook-secret", headers=key_headers(user.key))
    assert shown.get_json() == {"alert_webhook_secret": upstream.alert_webhook_secret}
    sent = []

    def fake_send(method, url, *, body=None, headers=None, timeout=None, **_):
        sent.append((url, body, headers))
        return SendResult(SUCCESS, status_code=200)

    monkeypatch.setattr(alert_delivery, "send", fake_send)
    alert = upstream.alerts[1]
    with app.app_context():
        row = db.session.get(Alert, alert["id"])
        row.delivery_state = "pending"  # as if raised again in Cueline
        db.session.commit()
        claims = alert_delivery.claim_alerts(10)
        assert [c[0] for c in claims] == [alert["id"]]
        assert alert_delivery.deliver_alert(*claims[0]) == "delivered"
    (url, body, headers), = sent
    assert url == "https://alerts.example.com/hook"  # the imported alert_webhook_url
    assert json.loads(body)["alert_id"] == str(alert["id"])
    timestamp = int(headers["X-CueAPI-Timestamp"])
    assert headers["X-CueAPI-Signature"] == upstream_signature(
        upstream.alert_webhook_secret, json.loads(body), timestamp)
    assert verify_signature(upstream.alert_webhook_secret, body, headers["X-CueAPI-Timestamp"],
                            headers["X-CueAPI-Signature"])


def test_subscriptions_and_the_event_stream_continue_from_the_watermarks(imported, upstream):
    app = imported()
    client = app.test_client()
    user = upstream.user(0)
    headers = key_headers(user.key)
    agent = upstream.agents[0]
    listed = client.get(f"/v1/agents/{agent.slug}@{user.slug}/subscriptions", headers=headers)
    assert listed.status_code == 200, listed.get_json()
    subs = {s["id"]: s for s in listed.get_json()["subscriptions"]}
    active = {str(s["id"]): s for s in upstream.subscriptions
              if s["subscriber_agent_id"] == agent.id and not s.get("detached_at")}
    assert set(subs) == set(active) and len(active) == 3
    for sub_id, sub in active.items():
        got = subs[sub_id]
        assert got["event_type"] == sub["event_type"]
        assert got["delivery_target"] == sub["delivery_target"]
        assert got["last_acked_event_id"] == sub.get("last_acked_event_id")
        assert got["last_dispatched_event_id"] == sub.get("last_dispatched_event_id")
        assert got["consecutive_failures"] == sub.get("consecutive_failures", 0)
        assert got["inline_body"] is sub.get("inline_body", False)
        assert got["webhook_secret"] is None  # never shown again, as on create-once
    with app.app_context():
        for sub in upstream.subscriptions:  # the secrets signing webhook batches came along
            assert db.session.get(Subscription, sub["id"]).webhook_secret == \
                sub.get("webhook_secret")
        breaker = db.session.get(Subscription, upstream.subscriptions[-1]["id"])
        assert breaker.consecutive_failures == 10
        assert _iso(breaker.paused_until) == _iso(upstream.subscriptions[-1]["paused_until"])
    # Pulling from the pull subscription's watermark gives exactly the later events, same ids.
    pull = next(s for s in active.values() if s["delivery_target"] == "pull"
                and s["event_type"] == "message.delivered")
    mine = [e for e in upstream.events if e["recipient_agent_id"] == agent.id]
    page = client.get(f"/v1/agents/{agent.id}/events?since={pull['last_acked_event_id']}"
                      "&event_type=message.delivered&limit=100", headers=headers).get_json()
    expected = [e for e in mine if e["id"] > pull["last_acked_event_id"]
                and e["event_type"] == "message.delivered"]
    assert [e["id"] for e in page["events"]] == [e["id"] for e in expected]
    assert [e["payload"] for e in page["events"]] == [e["payload"] for e in expected]
    assert page["next_cursor"] == expected[-1]["id"]
    # A message sent after the import: its event comes after every imported one.
    sender = next(a for a in upstream.agents_of(user.id) if a.slug == "runner")
    sent = client.post("/v1/messages", headers={**headers, "X-Cueapi-From-Agent": sender.id},
                       json={"to": agent.id, "body": "first after the move"})
    assert sent.status_code == 201, sent.get_json()
    after = client.get(f"/v1/agents/{agent.id}/events?since={page['next_cursor']}",
                       headers=headers).get_json()["events"]
    assert [e["payload"]["message_id"] for e in after] == [sent.get_json()["id"]]
    assert after[0]["id"] > max(e["id"] for e in upstream.events)
    # Reading acknowledged it for the pull subscription (the imported row moves on).
    subs = client.get(f"/v1/agents/{agent.id}/subscriptions", headers=headers).get_json()
    assert {s["id"]: s["last_acked_event_id"] for s in subs["subscriptions"]}[
        str(pull["id"])] == after[0]["id"]


def test_live_sessions_and_live_claims_come_along(imported, upstream):
    app = imported()
    client = app.test_client()
    user = upstream.user(0)
    agent = upstream.agents[0]
    listed = client.get(f"/v1/agents/{agent.id}/live-sessions?include_detached=true",
                        headers=key_headers(user.key))
    assert listed.status_code == 200, listed.get_json()
    got = {(s["label"], s["cue_id"]): s for s in listed.get_json()}
    assert set(got) == {(s["label"], s["cue_id"]) for s in upstream.live_sessions}
    desk = got[("desk", "cue_live000002")]
    assert desk["is_default"] is True and desk["attached"] is True
    assert desk["session_token"] == "01HV" + "B" * 22
    assert desk["monitor_version"] == "v2.1.0"
    old = got[("desk", "cue_live000000")]
    assert old["attached"] is False and old["is_default"] is False  # detached: not default
    laptop = got[("laptop", "cue_live000001")]
    assert _parse(laptop["attached_at"]) == _iso(upstream.live_sessions[0]["created_at"])
    with app.app_context():
        ipc = db.session.get(LiveSession, upstream.live_sessions[1]["id"])
        assert (ipc.transport, ipc.daemon_id, ipc.ipc_session_token) == (
            "ipc", upstream.live_sessions[1]["daemon_id"], "t" * 32)
        claimed = [e for e in upstream.executions if e["live_claim_session_token"]]
        assert claimed
        for ex in claimed:
            row = db.session.get(Execution, ex["id"])
            assert row.live_claim_session_token == ex["live_claim_session_token"]
            assert _iso(row.live_claimed_at) == _iso(ex["live_claimed_at"])
