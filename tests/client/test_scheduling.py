"""Cues, executions, workers and usage through the SDK, against the real scheduling routes.

Worker-transport cues are used so that no callback URL (and no SSRF exception) is needed.
Each test skips, naming the missing routes, until the scheduling routes are mounted.
"""

from __future__ import annotations

import uuid

import cueline
import pytest
from cueline import Client, ConflictError, NotFoundError

from tests.client.conftest import require_routes
from tests.helpers import SERVICE_TOKEN

CUE_ROUTES = (("POST", "/v1/cues"), ("GET", "/v1/cues"), ("GET", "/v1/cues/<cue_id>"),
              ("PATCH", "/v1/cues/<cue_id>"), ("DELETE", "/v1/cues/<cue_id>"),
              ("POST", "/v1/cues/<cue_id>/fire"))
EXECUTION_ROUTES = (("GET", "/v1/executions"), ("GET", "/v1/executions/<execution_id>"),
                    ("GET", "/v1/executions/claimable"), ("POST", "/v1/executions/claim"),
                    ("POST", "/v1/executions/<execution_id>/claim"),
                    ("POST", "/v1/executions/<execution_id>/heartbeat"),
                    ("POST", "/v1/executions/<execution_id>/outcome"),
                    ("POST", "/v1/executions/<execution_id>/replay"))
WORKER_ROUTES = (("POST", "/v1/worker/heartbeat"), ("GET", "/v1/workers"),
                 ("DELETE", "/v1/workers/<worker_id>"))


def _require(app, *pairs):
    """Like require_routes, tolerant of the path parameter's name."""
    mounted = {(m, _shape(r.rule)) for r in app.url_map.iter_rules() for m in r.methods}
    missing = [(m, p) for m, p in pairs if (m, _shape(p)) not in mounted]
    if missing:
        require_routes(app, *missing)


def _shape(rule: str) -> str:
    import re

    return re.sub(r"<[^>]+>", "<>", rule)


def _user_client(url: str) -> Client:
    key = cueline.register(f"s-{uuid.uuid4().hex[:8]}@example.com", base_url=url)["api_key"]
    return Client(key, base_url=url)


def test_cue_crud_pause_resume_fire(app, served):
    _require(app, *CUE_ROUTES)
    server = served(app)
    client = _user_client(server.url)
    cue = client.cues.create("nightly", cron="0 3 * * *", timezone="UTC", transport="worker",
                             payload={"task": "report"}, description="d")
    assert cue["id"].startswith("cue_") and cue["status"] == "active"
    assert cue["transport"] == "worker" and cue["payload"] == {"task": "report"}

    listed = client.cues.list(limit=5)
    assert listed["total"] == 1 and listed["cues"][0]["id"] == cue["id"]
    assert server.wire.last.query == "limit=5"
    detail = client.cues.get(cue["id"], execution_limit=5)
    assert detail["executions"] == [] and detail["execution_limit"] == 5

    assert client.cues.update(cue["id"], description="nightly report")["description"] == \
        "nightly report"
    assert client.cues.pause(cue["id"])["status"] == "paused"
    assert client.cues.resume(cue["id"])["status"] == "active"

    fired = client.cues.fire(cue["id"])
    assert fired["cue_id"] == cue["id"] and fired["status"] == "pending"

    with pytest.raises(ConflictError) as info:
        client.cues.create("nightly", cron="0 3 * * *", transport="worker")
    assert info.value.code == "duplicate_cue_name"

    assert client.cues.delete(cue["id"]) is None
    with pytest.raises(NotFoundError) as info:
        client.cues.get(cue["id"])
    assert info.value.code == "cue_not_found"


def test_worker_flow_claim_heartbeat_outcome_replay(app, served):
    _require(app, *CUE_ROUTES, *EXECUTION_ROUTES, *WORKER_ROUTES)
    server = served(app)
    client = _user_client(server.url)
    assert client.workers.heartbeat("w-1", handlers=["report"])["acknowledged"] is True
    cue = client.cues.create("on demand", cron="0 0 1 1 *", transport="worker",
                             payload={"task": "report"})
    fired = client.cues.fire(cue["id"])

    claimable = client.executions.claimable(task="report")["executions"]
    assert [e["execution_id"] for e in claimable] == [fired["id"]]
    claim = client.executions.claim(fired["id"], "w-1")
    assert claim["claimed"] is True and claim["execution_id"] == fired["id"]
    with pytest.raises(ConflictError) as info:
        client.executions.claim_next("w-1")
    assert info.value.code == "claim_failed"

    beat = client.executions.heartbeat(fired["id"], worker_id="w-1")
    assert beat["acknowledged"] is True
    assert server.wire.last.headers["x-worker-id"] == "w-1"

    outcome = client.executions.report_outcome(fired["id"], success=True, result="done",
                                               metadata={"rows": 3})
    assert outcome["outcome_recorded"] is True
    with pytest.raises(ConflictError) as info:
        client.executions.report_outcome(fired["id"], success=False)
    assert info.value.code == "outcome_already_recorded"

    execution = client.executions.get(fired["id"])
    assert execution["status"] == "success" and execution["outcome"]["result"] == "done"
    assert client.executions.list(cue_id=cue["id"])["total"] == 1
    replay = client.executions.replay(fired["id"])
    assert replay["id"] != fired["id"] and replay["status"] == "pending"

    workers = client.workers.list()["workers"]
    assert [w["worker_id"] for w in workers] == ["w-1"]
    assert client.workers.delete("w-1") is None
    with pytest.raises(NotFoundError):
        client.workers.delete("w-1")


def test_usage(app, served):
    _require(app, ("GET", "/v1/usage"), ("POST", "/v1/cues"))
    server = served(app)
    client = _user_client(server.url)
    client.cues.create("one", cron="0 3 * * *", transport="worker")
    usage = client.usage.get()
    assert usage["cues"]["used"] == 1 and usage["plan"] == "free"


def test_cues_under_delegation_are_private_to_each_user(delegation_app, served):
    _require(delegation_app, *CUE_ROUTES)
    server = served(delegation_app)
    service = Client(SERVICE_TOKEN, base_url=server.url, service=True)
    a, b = uuid.uuid4(), uuid.uuid4()
    for n, uid in enumerate((a, b)):
        service.internal_users.upsert(uid, email=f"c{n}@example.com", slug=f"c{n}")
    cue = service.as_user(a).cues.create("mine", cron="0 3 * * *", transport="worker")
    assert server.wire.last.headers["x-on-behalf-of"] == str(a)
    assert service.as_user(b).cues.list()["total"] == 0
    with pytest.raises(NotFoundError):
        service.as_user(b).cues.get(cue["id"])
    with pytest.raises(NotFoundError):
        service.as_user(b).cues.delete(cue["id"])
    assert service.as_user(a).cues.get(cue["id"])["name"] == "mine"


def test_claim_next_and_verification(app, served):
    _require(app, *CUE_ROUTES, *EXECUTION_ROUTES,
             ("POST", "/v1/executions/<execution_id>/verify"),
             ("POST", "/v1/executions/<execution_id>/verification-pending"),
             ("PATCH", "/v1/executions/<execution_id>/evidence"))
    server = served(app)
    client = _user_client(server.url)
    cue = client.cues.create("manual check", cron="0 0 1 1 *", transport="worker",
                             verification={"mode": "manual"})
    fired = client.cues.fire(cue["id"])
    claim = client.executions.claim_next("w-9")
    assert claim["execution_id"] == fired["id"]
    assert server.wire.to("/v1/executions/claim")[-1].method == "POST"

    reported = client.executions.report_outcome(fired["id"], success=True, result="ok")
    assert reported["outcome_state"] == "verification_pending"
    evidence = client.executions.update_evidence(fired["id"], external_id="ticket-7",
                                                 summary="checked")
    assert evidence["evidence_updated"] is True and server.wire.last.method == "PATCH"
    pending = client.executions.mark_verification_pending(fired["id"])
    assert pending["outcome_state"] == "verification_pending"
    verdict = client.executions.verify(fired["id"], valid=False, reason="wrong numbers")
    assert (verdict["outcome_state"], verdict["valid"]) == ("verification_failed", False)
    listed = client.executions.list(outcome_state="verification_failed")
    assert [e["id"] for e in listed["executions"]] == [fired["id"]]
    with pytest.raises(NotFoundError) as info:
        client.executions.get("not-a-uuid")
    assert info.value.code == "execution_not_found"
