"""Races over real HTTP (threads against ``live_server``) and concurrent dispatchers: the
database constraints and conditional updates decide, never a check-then-act window."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime

import httpx

from app.extensions import db
from app.scheduling import jobs
from tests.helpers import key_headers, register
from tests.scheduling.conftest import cue_body


def _race(n, fn):
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def run(i):
        try:
            barrier.wait()
            results[i] = fn(i)
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


def test_duplicate_names_under_a_race(app, live_server):
    server = live_server(app)
    api_key, _ = register(app.test_client())
    headers = key_headers(api_key)
    statuses = _race(6, lambda i: httpx.post(f"{server.url}/v1/cues", json=cue_body(),
                                             headers=headers, timeout=30).status_code)
    assert Counter(statuses) == {201: 1, 409: 5}


def test_concurrent_claims_never_share_an_execution(app, live_server):
    server = live_server(app)
    client = app.test_client()
    api_key, _ = register(client)
    headers = key_headers(api_key)
    cue = client.post("/v1/cues", json=cue_body(transport="worker", callback=None),
                      headers=headers).get_json()
    fired = {client.post(f"/v1/cues/{cue['id']}/fire", headers=headers).get_json()["id"]
             for _ in range(4)}

    def claim(i):
        response = httpx.post(f"{server.url}/v1/executions/claim", json={"worker_id": f"w{i}"},
                              headers=headers, timeout=30)
        return response.status_code, response.json().get("execution_id")

    results = _race(8, claim)
    won = [execution_id for status, execution_id in results if status == 200]
    assert sorted(won) == sorted(fired)  # each claimed exactly once
    assert Counter(status for status, _ in results) == {200: 4, 409: 4}


def test_concurrent_outcome_reports_record_one(app, live_server):
    server = live_server(app)
    client = app.test_client()
    api_key, _ = register(client)
    headers = key_headers(api_key)
    cue = client.post("/v1/cues", json=cue_body(transport="worker", callback=None),
                      headers=headers).get_json()
    execution_id = client.post(f"/v1/cues/{cue['id']}/fire", headers=headers).get_json()["id"]
    statuses = _race(5, lambda i: httpx.post(
        f"{server.url}/v1/executions/{execution_id}/outcome",
        json={"success": i % 2 == 0, "result": str(i)}, headers=headers, timeout=30).status_code)
    assert Counter(statuses) == {200: 1, 409: 4}
    detail = client.get(f"/v1/cues/{cue['id']}", headers=headers).get_json()
    assert detail["run_count"] == 1


def test_concurrent_dispatchers_claim_disjoint_rows(make_app):
    app = make_app(ALLOW_PRIVATE_CALLBACK_URLS=True)
    client = app.test_client()
    api_key, _ = register(client)
    headers = key_headers(api_key)
    cue = client.post("/v1/cues", json=cue_body(callback={"url": "http://127.0.0.1:9/"}),
                      headers=headers).get_json()
    fired = [client.post(f"/v1/cues/{cue['id']}/fire", headers=headers).get_json()["id"]
             for _ in range(12)]
    now = datetime.now(UTC)

    def dispatch(_):
        with app.app_context():
            claims = jobs.claim_webhook_executions(now, 5)
            db.session.remove()
            return [str(execution_id) for execution_id, _ in claims]

    results = _race(4, dispatch)
    claimed = [execution_id for batch in results for execution_id in batch]
    assert len(claimed) == len(set(claimed))  # no row handed to two dispatchers
    assert set(claimed) <= set(fired) and len(claimed) == 12
