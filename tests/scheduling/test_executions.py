"""``/v1/executions`` and ``/v1/workers``: the pull protocol, outcomes, replay, verification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import error_of, key_headers, register, service_headers, user_id_of
from tests.scheduling.conftest import cue_body

EXECUTION_KEYS = {"id", "cue_id", "scheduled_for", "status", "http_status", "attempts",
                  "error_message", "started_at", "delivered_at", "last_attempt_at", "outcome",
                  "created_at", "updated_at"}


@pytest.fixture
def worker_cue(client, headers):
    def _make(name="job", **overrides):
        body = cue_body(name=name, transport="worker", callback=None,
                        payload=overrides.pop("payload", {"task": "report"}), **overrides)
        response = client.post("/v1/cues", json=body, headers=headers)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    return _make


def _fire(client, headers, cue_id, **body):
    response = client.post(f"/v1/cues/{cue_id}/fire", json=body or None, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["id"]


def test_claimable_claim_heartbeat_outcome_cycle(client, headers, worker_cue):
    cue = worker_cue()
    execution_id = _fire(client, headers, cue["id"])
    claimable = client.get("/v1/executions/claimable?agent=ignored", headers=headers).get_json()
    assert claimable["executions"] == [{
        "execution_id": execution_id, "cue_id": cue["id"], "cue_name": "job", "task": "report",
        "scheduled_for": claimable["executions"][0]["scheduled_for"],
        "payload": {"task": "report"}, "attempt": 0}]
    claim = client.post(f"/v1/executions/{execution_id}/claim", json={"worker_id": "w1"},
                        headers=headers)
    assert claim.status_code == 200
    assert claim.get_json() == {"claimed": True, "execution_id": execution_id,
                                "lease_seconds": 900}
    again = client.post(f"/v1/executions/{execution_id}/claim", json={"worker_id": "w2"},
                        headers=headers)
    assert again.status_code == 409 and error_of(again)["code"] == "claim_failed"
    assert client.get("/v1/executions/claimable", headers=headers).get_json() == \
        {"executions": []}
    execution = client.get(f"/v1/executions/{execution_id}", headers=headers).get_json()
    assert set(execution) == EXECUTION_KEYS
    assert execution["status"] == "delivering" and execution["attempts"] == 1
    assert execution["started_at"] and execution["last_attempt_at"]

    beat = client.post(f"/v1/executions/{execution_id}/heartbeat", json={}, headers=headers)
    assert beat.status_code == 200
    body = beat.get_json()
    assert body["acknowledged"] is True and body["execution_id"] == execution_id
    until = datetime.fromisoformat(body["lease_extended_until"])
    assert timedelta(seconds=890) < until - datetime.now(UTC) <= timedelta(seconds=900)
    wrong = client.post(f"/v1/executions/{execution_id}/heartbeat",
                        headers={**headers, "X-Worker-Id": "w2"})
    assert wrong.status_code == 403 and error_of(wrong)["code"] == "not_execution_owner"
    assert client.post(f"/v1/executions/{execution_id}/heartbeat",
                       headers={**headers, "X-Worker-Id": "w1"}).status_code == 200

    outcome = client.post(f"/v1/executions/{execution_id}/outcome",
                          json={"success": True, "result": "done", "metadata": {"n": 1}},
                          headers=headers)
    assert outcome.status_code == 200
    assert outcome.get_json() == {"execution_id": execution_id, "outcome_recorded": True,
                                  "outcome_state": "reported_success", "reason": None}
    second = client.post(f"/v1/executions/{execution_id}/outcome", json={"success": False},
                         headers=headers)
    assert second.status_code == 409 and error_of(second)["code"] == "outcome_already_recorded"
    done = client.get(f"/v1/executions/{execution_id}", headers=headers).get_json()
    assert done["status"] == "success" and done["delivered_at"]
    assert done["outcome"]["success"] is True and done["outcome"]["result"] == "done"
    assert done["outcome"]["metadata"] == {"n": 1} and done["outcome"]["recorded_at"]
    detail = client.get(f"/v1/cues/{cue['id']}", headers=headers).get_json()
    assert detail["run_count"] == 1 and detail["last_run"]
    after = client.post(f"/v1/executions/{execution_id}/heartbeat", headers=headers)
    assert after.status_code == 409 and error_of(after)["code"] == "execution_not_claiming"


def test_failed_outcome_sets_error_and_finalises_once_cue(app, client, headers, worker_cue):
    at = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    cue = worker_cue(schedule={"type": "once", "at": at})
    from app.scheduling.jobs import schedule_due_cues

    with app.app_context():
        assert schedule_due_cues(datetime.now(UTC) + timedelta(minutes=6)) == 1
    listing = client.get(f"/v1/executions?cue_id={cue['id']}", headers=headers).get_json()
    execution_id = listing["executions"][0]["id"]
    # Scheduled in the "future" relative to the real clock: not claimable yet (§16 #10).
    assert client.get("/v1/executions/claimable", headers=headers).get_json()["executions"] == []
    with app.app_context():
        from app.extensions import db
        from app.scheduling.models import Execution

        db.session.execute(db.update(Execution).values(
            scheduled_for=datetime.now(UTC) - timedelta(seconds=1)))
        db.session.commit()
    claim = client.post("/v1/executions/claim", json={"worker_id": "w"}, headers=headers)
    assert claim.get_json()["execution_id"] == execution_id
    client.post(f"/v1/executions/{execution_id}/outcome",
                json={"success": False, "error": "boom"}, headers=headers)
    execution = client.get(f"/v1/executions/{execution_id}", headers=headers).get_json()
    assert execution["status"] == "failed" and execution["error_message"] == "boom"
    assert client.get(f"/v1/cues/{cue['id']}", headers=headers).get_json()["status"] == "failed"


def test_claim_next_oldest_first_and_none_left(client, headers, worker_cue):
    first = _fire(client, headers, worker_cue(name="a")["id"])
    second = _fire(client, headers, worker_cue(name="b")["id"])
    got = [client.post("/v1/executions/claim", json={"worker_id": "w"},
                       headers=headers).get_json()["execution_id"] for _ in range(2)]
    assert got == [first, second]
    empty = client.post("/v1/executions/claim", json={"worker_id": "w"}, headers=headers)
    assert empty.status_code == 409 and error_of(empty)["code"] == "claim_failed"


@pytest.mark.parametrize("body", [{}, {"worker_id": ""}, {"worker_id": "x" * 256},
                                  {"worker_id": 5}])
def test_claim_requires_worker_id(client, headers, worker_cue, body):
    execution_id = _fire(client, headers, worker_cue()["id"])
    response = client.post(f"/v1/executions/{execution_id}/claim", json=body, headers=headers)
    assert response.status_code == 422


def test_claim_rules(client, headers, worker_cue, make_cue):
    webhook_execution = _fire(client, headers, make_cue(name="hook")["id"])
    response = client.post(f"/v1/executions/{webhook_execution}/claim",
                           json={"worker_id": "w"}, headers=headers)
    assert response.status_code == 409  # webhook executions are not claimable
    cue = worker_cue()
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    later = _fire(client, headers, cue["id"], send_at=future)
    response = client.post(f"/v1/executions/{later}/claim", json={"worker_id": "w"},
                           headers=headers)
    assert response.status_code == 409  # not due yet
    other, _ = register(client)
    response = client.post(f"/v1/executions/{later}/claim", json={"worker_id": "w"},
                           headers=key_headers(other))
    assert response.status_code == 404 and error_of(response)["code"] == "execution_not_found"


def test_claimable_task_filter_is_applied_in_sql(app, client, headers, worker_cue):
    busy = worker_cue(name="busy", payload={"task": "busy"})
    rare = worker_cue(name="rare", payload={"task": "rare"})
    from app.extensions import db
    from app.scheduling.models import Execution

    base = datetime.now(UTC) - timedelta(hours=1)
    with app.app_context():
        for i in range(60):  # more than the 50-row window, all older than the rare one
            db.session.add(Execution(cue_id=busy["id"], scheduled_for=base + timedelta(
                seconds=i), status="pending", triggered_by="manual_fire", attempts=0))
        db.session.commit()
    rare_id = _fire(client, headers, rare["id"])
    body = client.get("/v1/executions/claimable?task=rare", headers=headers).get_json()
    assert [e["execution_id"] for e in body["executions"]] == [rare_id]
    assert len(client.get("/v1/executions/claimable",
                          headers=headers).get_json()["executions"]) == 50
    claimed = client.post("/v1/executions/claim", json={"worker_id": "w"}, headers=headers)
    assert claimed.get_json()["execution_id"] != rare_id  # oldest first


@pytest.mark.parametrize("path", ["", "/claim", "/heartbeat", "/outcome", "/replay", "/verify",
                                  "/verification-pending", "/evidence"])
@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", "5d0c2a8e-3b7f-4e51-9a6d-0c8b1f2e4a73"])
def test_malformed_or_unknown_ids_are_404(client, headers, path, bad_id):
    method = "patch" if path == "/evidence" else ("get" if path == "" else "post")
    kwargs = {"json": {"worker_id": "w", "success": True}} if method != "get" else {}
    response = getattr(client, method)(f"/v1/executions/{bad_id}{path}", headers=headers,
                                       **kwargs)
    assert response.status_code == 404
    assert error_of(response)["code"] == "execution_not_found"


def test_outcome_states_follow_verification_mode(client, headers, worker_cue):
    cases = [("none", {"success": True}, "reported_success"),
             ("manual", {"success": True}, "verification_pending"),
             ("require_external_id", {"success": True}, "verification_failed"),
             ("require_external_id", {"success": True, "external_id": "X-1"},
              "verified_success"),
             ("require_result_url", {"success": True, "result_url": "https://x.example/r"},
              "verified_success"),
             ("require_artifacts", {"success": True, "artifacts": []}, "verification_failed"),
             ("require_artifacts", {"success": True, "artifacts": [{"a": 1}]},
              "verified_success"),
             ("manual", {"success": False}, "reported_failure")]
    for i, (mode, outcome, expected) in enumerate(cases):
        cue = worker_cue(name=f"v{i}", verification={"mode": mode})
        execution_id = _fire(client, headers, cue["id"])
        response = client.post(f"/v1/executions/{execution_id}/outcome", json=outcome,
                               headers=headers)
        assert response.get_json()["outcome_state"] == expected, (mode, outcome)
        listed = client.get(f"/v1/executions?outcome_state={expected}&cue_id={cue['id']}",
                            headers=headers).get_json()
        assert listed["total"] == 1


def test_outcome_validation(client, headers, worker_cue):
    execution_id = _fire(client, headers, worker_cue()["id"])
    big = {"k": "x" * 10_300}
    response = client.post(f"/v1/executions/{execution_id}/outcome",
                           json={"success": True, "metadata": big}, headers=headers)
    assert response.status_code == 400 and error_of(response)["code"] == "metadata_too_large"
    for body in ({}, {"success": True, "result": "x" * 2001},
                 {"success": True, "result_url": "ftp://x"}):
        response = client.post(f"/v1/executions/{execution_id}/outcome", json=body,
                               headers=headers)
        assert response.status_code == 422, body
    # Nothing was recorded by the failed attempts.
    assert client.get(f"/v1/executions/{execution_id}",
                      headers=headers).get_json()["outcome"] is None


def test_webhook_execution_outcome_does_not_change_status(client, headers, make_cue):
    execution_id = _fire(client, headers, make_cue()["id"])
    response = client.post(f"/v1/executions/{execution_id}/outcome", json={"success": True},
                           headers=headers)
    assert response.status_code == 200
    execution = client.get(f"/v1/executions/{execution_id}", headers=headers).get_json()
    assert execution["status"] == "pending" and execution["outcome"]["success"] is True


def test_replay(client, headers, worker_cue):
    cue = worker_cue()
    execution_id = _fire(client, headers, cue["id"])
    response = client.post(f"/v1/executions/{execution_id}/replay", headers=headers)
    assert response.status_code == 409 and error_of(response)["code"] == "execution_in_flight"
    client.post(f"/v1/executions/{execution_id}/claim", json={"worker_id": "w"}, headers=headers)
    assert client.post(f"/v1/executions/{execution_id}/replay",
                       headers=headers).status_code == 409
    client.post(f"/v1/executions/{execution_id}/outcome", json={"success": False},
                headers=headers)
    replay = client.post(f"/v1/executions/{execution_id}/replay", headers=headers)
    assert replay.status_code == 200
    body = replay.get_json()
    assert body["status"] == "pending" and body["triggered_by"] == "replay"
    assert body["replayed_from"] == execution_id and body["cue_id"] == cue["id"]
    assert body["id"] != execution_id and body["scheduled_for"].endswith("+00:00")
    assert client.get(f"/v1/cues/{cue['id']}", headers=headers).get_json()["fired_count"] == 0


def test_verify_and_verification_pending_and_evidence(client, headers, worker_cue):
    execution_id = _fire(client, headers, worker_cue(verification={"mode": "manual"})["id"])
    for path in ("verification-pending", "verify"):
        response = client.post(f"/v1/executions/{execution_id}/{path}", headers=headers)
        assert response.status_code == 409
    response = client.patch(f"/v1/executions/{execution_id}/evidence",
                            json={"external_id": "E"}, headers=headers)
    assert response.status_code == 409 and error_of(response)["code"] == "no_outcome"
    client.post(f"/v1/executions/{execution_id}/outcome", json={"success": True},
                headers=headers)
    evidence = client.patch(f"/v1/executions/{execution_id}/evidence",
                            json={"external_id": "E", "summary": "", "unknown": 1},
                            headers=headers)
    assert evidence.get_json() == {"execution_id": execution_id,
                                   "outcome_state": "verification_pending",
                                   "evidence_updated": True}
    rejected = client.post(f"/v1/executions/{execution_id}/verify",
                           json={"valid": False, "reason": "wrong file"}, headers=headers)
    assert rejected.get_json() == {"execution_id": execution_id,
                                   "outcome_state": "verification_failed", "valid": False,
                                   "reason": "wrong file"}
    response = client.post(f"/v1/executions/{execution_id}/verify", json={}, headers=headers)
    assert response.status_code == 409 and error_of(response)["code"] == "invalid_state"
    pending = client.post(f"/v1/executions/{execution_id}/verification-pending",
                          headers=headers)
    assert pending.get_json() == {"execution_id": execution_id,
                                  "outcome_state": "verification_pending"}
    accepted = client.post(f"/v1/executions/{execution_id}/verify", headers=headers)
    assert accepted.get_json()["outcome_state"] == "verified_success"


def test_list_filters(client, headers, worker_cue):
    cue_a, cue_b = worker_cue(name="a"), worker_cue(name="b")
    a1 = _fire(client, headers, cue_a["id"])
    _fire(client, headers, cue_a["id"])
    b1 = _fire(client, headers, cue_b["id"])
    client.post(f"/v1/executions/{a1}/claim", json={"worker_id": "w-7"}, headers=headers)
    everything = client.get("/v1/executions?limit=2", headers=headers).get_json()
    assert everything["total"] == 3 and everything["has_more"] is True
    assert everything["executions"][0]["id"] == b1  # newest first
    assert everything["oldest_claimed_at"].endswith("+00:00")
    by_worker = client.get("/v1/executions?worker_id=w-7", headers=headers).get_json()
    assert [e["id"] for e in by_worker["executions"]] == [a1]
    assert client.get("/v1/executions?status=pending", headers=headers).get_json()["total"] == 2
    both = client.get("/v1/executions?status__in=pending,delivering",
                      headers=headers).get_json()
    assert both["total"] == 3 and both["has_more"] is False
    only_b = client.get(f"/v1/executions?cue_id={cue_b['id']}", headers=headers).get_json()
    assert only_b["total"] == 1 and only_b["oldest_claimed_at"] is None
    conflict = client.get("/v1/executions?status=pending&status__in=failed", headers=headers)
    assert conflict.status_code == 400 and error_of(conflict)["code"] == "conflicting_filters"
    empty = client.get("/v1/executions?status__in=,", headers=headers)
    assert empty.status_code == 400 and error_of(empty)["code"] == "invalid_status_in"
    assert client.get("/v1/executions?limit=101", headers=headers).status_code == 422
    other, _ = register(client)
    assert client.get("/v1/executions", headers=key_headers(other)).get_json()["total"] == 0


def test_workers_heartbeat_list_delete(client, headers):
    response = client.post("/v1/worker/heartbeat",
                           json={"worker_id": "w1", "handlers": ["report"]}, headers=headers)
    assert response.status_code == 200
    body = response.get_json()
    assert body["acknowledged"] is True and body["server_time"].endswith("Z")
    client.post("/v1/worker/heartbeat", json={"worker_id": "w2"}, headers=headers)
    client.post("/v1/worker/heartbeat", json={"worker_id": "w1", "handlers": ["a", "b"]},
                headers=headers)
    workers = client.get("/v1/workers", headers=headers).get_json()
    assert set(workers) == {"workers"}
    assert [w["worker_id"] for w in workers["workers"]] == ["w1", "w2"]
    first = workers["workers"][0]
    assert first["handlers"] == ["a", "b"] and first["heartbeat_status"] == "active"
    assert first["seconds_since_heartbeat"] == 0 and first["registered_since"]
    assert client.delete("/v1/workers/w2", headers=headers).status_code == 204
    response = client.delete("/v1/workers/w2", headers=headers)
    assert response.status_code == 404 and error_of(response)["code"] == "worker_not_found"
    assert client.post("/v1/worker/heartbeat", json={}, headers=headers).status_code == 422
    other, _ = register(client)
    assert client.get("/v1/workers", headers=key_headers(other)).get_json() == {"workers": []}


def test_worker_heartbeat_status_ages(app, client, headers):
    client.post("/v1/worker/heartbeat", json={"worker_id": "w"}, headers=headers)
    from app.scheduling.services.workers import heartbeat_status

    with app.app_context():
        assert heartbeat_status(179) == "active"
        assert heartbeat_status(180) == "stale"
        assert heartbeat_status(900) == "dead"


def test_pull_protocol_under_delegation(delegation_client):
    api_key, _ = register(delegation_client)
    user_id = user_id_of(delegation_client, api_key)
    headers = service_headers(user_id)
    cue = delegation_client.post("/v1/cues", json=cue_body(transport="worker", callback=None),
                                 headers=headers).get_json()
    fired = delegation_client.post(f"/v1/cues/{cue['id']}/fire", headers=headers).get_json()
    assert delegation_client.post("/v1/worker/heartbeat", json={"worker_id": "w"},
                                  headers=headers).status_code == 200
    claim = delegation_client.post("/v1/executions/claim", json={"worker_id": "w"},
                                   headers=headers).get_json()
    assert claim["execution_id"] == fired["id"]
    outcome = delegation_client.post(f"/v1/executions/{fired['id']}/outcome",
                                     json={"success": True}, headers=headers)
    assert outcome.status_code == 200
    # The user's own key sees the same state.
    execution = delegation_client.get(f"/v1/executions/{fired['id']}",
                                      headers=key_headers(api_key)).get_json()
    assert execution["status"] == "success"
    workers = delegation_client.get("/v1/workers", headers=key_headers(api_key)).get_json()
    assert [w["worker_id"] for w in workers["workers"]] == ["w"]
