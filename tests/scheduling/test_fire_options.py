"""Fire options beyond ``send_at`` (a Cueline extension of §7.8): ``payload_override`` with
``merge_strategy``, ``idempotency_key``, and ``GET /v1/executions?triggered_by=``."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

import app.db
from app.extensions import db
from app.scheduling.models import Execution, FireIdempotencyKey
from app.worker import Job
from app.worker.loop import Worker
from tests.helpers import error_of, key_headers, register
from tests.scheduling.conftest import cue_body

DISPATCH = (Job("webhook_delivery", "app.scheduling.jobs:dispatch_webhooks"),)


class Clock:
    def __init__(self):
        self.now = datetime.now(UTC)

    def __call__(self):
        return self.now

    def advance(self, **delta):
        self.now += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(app.db, "clock", fake)
    return fake


def _fire(client, headers, cue_id, body=None, status=200):
    response = client.post(f"/v1/cues/{cue_id}/fire", json=body, headers=headers)
    assert response.status_code == status, response.get_json()
    return response.get_json()


def _worker_cue(client, headers, name="pull", payload=None):
    response = client.post("/v1/cues", headers=headers, json=cue_body(
        name=name, transport="worker", callback=None,
        payload=payload if payload is not None else {"task": "report", "size": 1}))
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def _stored(app, execution_id):
    with app.app_context():
        row = db.session.get(Execution, uuid.UUID(execution_id))
        return row.payload_override, row.payload_merge_strategy


def test_override_merge_and_replace_reach_the_claimable_payload(app, client, headers):
    cue_id = _worker_cue(client, headers)
    merged = _fire(client, headers, cue_id, {"payload_override": {"size": 2, "extra": True}})
    replaced = _fire(client, headers, cue_id, {"payload_override": {"task": "other"},
                                               "merge_strategy": "replace"})
    plain = _fire(client, headers, cue_id)
    explicit = _fire(client, headers, cue_id, {"payload_override": {"size": 3},
                                               "merge_strategy": "merge"})
    assert _stored(app, merged["id"]) == ({"size": 2, "extra": True}, "merge")  # the default
    assert _stored(app, replaced["id"]) == ({"task": "other"}, "replace")
    assert _stored(app, plain["id"]) == (None, None)
    listed = {e["execution_id"]: e for e in client.get(
        "/v1/executions/claimable", headers=headers).get_json()["executions"]}
    assert listed[merged["id"]]["payload"] == {"task": "report", "size": 2, "extra": True}
    assert listed[replaced["id"]]["payload"] == {"task": "other"}
    assert listed[replaced["id"]]["task"] == "other"
    assert listed[plain["id"]]["payload"] == {"task": "report", "size": 1}
    assert listed[explicit["id"]]["payload"] == {"task": "report", "size": 3}
    # The cue itself is untouched.
    assert client.get(f"/v1/cues/{cue_id}", headers=headers).get_json()["payload"] == {
        "task": "report", "size": 1}
    # The task filter sees the task the execution delivers.
    other = client.get("/v1/executions/claimable?task=other", headers=headers).get_json()
    assert [e["execution_id"] for e in other["executions"]] == [replaced["id"]]
    report = client.get("/v1/executions/claimable?task=report", headers=headers).get_json()
    assert {e["execution_id"] for e in report["executions"]} == {
        merged["id"], plain["id"], explicit["id"]}


def test_replace_without_a_task_drops_it_from_the_filter(client, headers):
    cue_id = _worker_cue(client, headers)
    fired = _fire(client, headers, cue_id, {"payload_override": {"note": "n"},
                                            "merge_strategy": "replace"})
    listed = client.get("/v1/executions/claimable", headers=headers).get_json()["executions"]
    assert listed[0]["execution_id"] == fired["id"] and listed[0]["task"] is None
    assert client.get("/v1/executions/claimable?task=report",
                      headers=headers).get_json()["executions"] == []


def test_replay_carries_the_override(client, headers):
    cue_id = _worker_cue(client, headers)
    fired = _fire(client, headers, cue_id, {"payload_override": {"task": "x"},
                                            "merge_strategy": "replace"})
    client.post(f"/v1/executions/{fired['id']}/outcome", json={"success": True},
                headers=headers)
    replay = client.post(f"/v1/executions/{fired['id']}/replay", headers=headers).get_json()
    [listed] = client.get("/v1/executions/claimable", headers=headers).get_json()["executions"]
    assert listed["execution_id"] == replay["id"] and listed["payload"] == {"task": "x"}


@pytest.fixture
def private_app(make_app):
    return make_app(ALLOW_PRIVATE_CALLBACK_URLS=True)


def test_the_webhook_delivers_the_overridden_payload(private_app, receiver):
    client = private_app.test_client()
    headers = key_headers(register(client)[0])
    response = client.post("/v1/cues", headers=headers, json=cue_body(
        callback={"url": receiver.url}, payload={"task": "report", "keep": 1}))
    cue_id = response.get_json()["id"]
    merged = _fire(client, headers, cue_id, {"payload_override": {"task": "adhoc"}})
    worker = Worker(private_app, jobs=DISPATCH)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert receiver.event.wait(15)
        deadline = datetime.now(UTC) + timedelta(seconds=15)
        while datetime.now(UTC) < deadline:
            detail = client.get(f"/v1/executions/{merged['id']}", headers=headers).get_json()
            if detail["status"] == "success":
                break
            receiver.event.wait(0.1)
    finally:
        worker.stop()
        thread.join(15)
    [request] = receiver.requests
    body = json.loads(request["body"])
    assert body["execution_id"] == merged["id"]
    assert body["payload"] == {"task": "adhoc", "keep": 1}


def test_invalid_options_are_refused(client, headers):
    cue_id = _worker_cue(client, headers)
    cases = [
        ({"merge_strategy": "deep"}, "body.merge_strategy"),
        ({"merge_strategy": "replace"}, "body.merge_strategy"),  # nothing to replace with
        ({"payload_override": [1, 2]}, "body.payload_override"),
        ({"payload_override": "x"}, "body.payload_override"),
        ({"idempotency_key": ""}, "body.idempotency_key"),
        ({"idempotency_key": "k" * 257}, "body.idempotency_key"),
        ({"exit_criteria": ["done"]}, "body.exit_criteria"),
        ({"surprise": 1}, "body.surprise"),
        ({"send_at": "soon"}, "body.send_at"),
    ]
    for body, field in cases:
        response = client.post(f"/v1/cues/{cue_id}/fire", json=body, headers=headers)
        assert response.status_code == 422, body
        error = error_of(response)
        assert error["code"] == "validation_error"
        assert field in [d["field"] for d in error["details"]], (body, error)
    refused = client.post(f"/v1/cues/{cue_id}/fire", json={"exit_criteria": []}, headers=headers)
    assert "not supported" in error_of(refused)["message"]
    # Nothing was created by any of them.
    assert client.get("/v1/executions", headers=headers).get_json()["total"] == 0


def test_the_combined_payload_obeys_the_payload_rules(client, headers):
    cue_id = _worker_cue(client, headers, payload={"big": "a" * 600_000})
    response = client.post(f"/v1/cues/{cue_id}/fire", headers=headers,
                           json={"payload_override": {"more": "b" * 500_000}})
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_payload_size"
    replaced = _fire(client, headers, cue_id, {"payload_override": {"more": "b" * 500_000},
                                               "merge_strategy": "replace"})
    assert replaced["status"] == "pending"  # replace drops the cue payload: it fits


def test_idempotency_key_replays_conflicts_and_expires(app, client, headers, clock):
    cue_id = _worker_cue(client, headers)
    body = {"payload_override": {"n": 1}, "idempotency_key": "ci-run-456"}
    first = _fire(client, headers, cue_id, body)
    again = _fire(client, headers, cue_id, dict(reversed(list(body.items()))))
    assert again == first  # same key, same options: the same execution
    explicit_default = _fire(client, headers, cue_id, {**body, "merge_strategy": "merge"})
    assert explicit_default["id"] == first["id"]  # the effective options are the same
    for different in ({"payload_override": {"n": 2}, "idempotency_key": "ci-run-456"},
                      {"idempotency_key": "ci-run-456"},
                      {**body, "send_at": (clock.now + timedelta(hours=1)).isoformat()}):
        response = client.post(f"/v1/cues/{cue_id}/fire", json=different, headers=headers)
        assert response.status_code == 409
        assert error_of(response)["code"] == "idempotency_key_conflict"
    # The key is per cue.
    other_cue = _worker_cue(client, headers, name="other")
    assert _fire(client, headers, other_cue, body)["id"] != first["id"]
    assert client.get(f"/v1/executions?cue_id={cue_id}", headers=headers
                      ).get_json()["total"] == 1
    # After 24 hours the key is free again: a new execution, even with other options.
    clock.advance(hours=24, seconds=1)
    later = _fire(client, headers, cue_id, {"idempotency_key": "ci-run-456"})
    assert later["id"] != first["id"]
    assert _fire(client, headers, cue_id, {"idempotency_key": "ci-run-456"})["id"] == later["id"]


def test_send_at_spellings_of_one_instant_are_one_fire(client, headers):
    cue_id = _worker_cue(client, headers)
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    first = _fire(client, headers, cue_id, {"send_at": at.isoformat(), "idempotency_key": "k"})
    naive = _fire(client, headers, cue_id, {"send_at": at.replace(tzinfo=None).isoformat(),
                                            "idempotency_key": "k"})
    zulu = _fire(client, headers, cue_id, {"send_at": at.isoformat().replace("+00:00", "Z"),
                                           "idempotency_key": "k"})
    assert first["id"] == naive["id"] == zulu["id"]


def test_concurrent_fires_with_one_key_create_one_execution(make_app, live_server, backend):
    import httpx

    app = make_app()
    server = live_server(app)
    client = app.test_client()
    headers = key_headers(register(client)[0])
    cue_id = _worker_cue(client, headers)
    results, barrier = [], threading.Barrier(6)

    def fire():
        with httpx.Client(timeout=30) as http:
            barrier.wait()
            response = http.post(f"{server.url}/v1/cues/{cue_id}/fire", headers=headers,
                                 json={"idempotency_key": "same", "payload_override": {"a": 1}})
            results.append((response.status_code, response.json().get("id")))

    threads = [threading.Thread(target=fire) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [status for status, _ in results] == [200] * 6, results
    assert len({execution_id for _, execution_id in results}) == 1
    with app.app_context():
        assert db.session.query(Execution).count() == 1
        assert db.session.query(FireIdempotencyKey).count() == 1


def test_spent_keys_are_pruned_by_the_job(app, client, headers, clock):
    from app.scheduling import jobs

    cue_id = _worker_cue(client, headers)
    _fire(client, headers, cue_id, {"idempotency_key": "old"})
    clock.advance(hours=23)
    _fire(client, headers, cue_id, {"idempotency_key": "young"})
    clock.advance(hours=1, seconds=1)

    class Ctx:
        stopping = threading.Event()

        def now(self):
            return clock.now

    with app.app_context():
        jobs.prune_fire_keys(Ctx())
        assert [k.key for k in db.session.query(FireIdempotencyKey)] == ["young"]


def test_triggered_by_filter(app, client, headers):
    cue_id = _worker_cue(client, headers)
    fired = _fire(client, headers, cue_id)
    client.post(f"/v1/executions/{fired['id']}/outcome", json={"success": True},
                headers=headers)
    replay = client.post(f"/v1/executions/{fired['id']}/replay", headers=headers).get_json()
    with app.app_context():
        db.session.add(Execution(cue_id=cue_id, scheduled_for=datetime.now(UTC) - timedelta(
            hours=1), status="pending", triggered_by="scheduler", attempts=0))
        db.session.commit()

    def ids(value):
        response = client.get(f"/v1/executions?triggered_by={value}", headers=headers)
        assert response.status_code == 200, response.get_json()
        return [e["id"] for e in response.get_json()["executions"]]

    assert ids("manual_fire") == [fired["id"]]
    assert ids("replay") == [replay["id"]]
    assert len(ids("scheduler")) == 1 and ids("scheduled") == ids("scheduler")
    response = client.get("/v1/executions?triggered_by=chain", headers=headers)
    assert response.status_code == 422
    assert error_of(response)["details"][0]["field"] == "query.triggered_by"
