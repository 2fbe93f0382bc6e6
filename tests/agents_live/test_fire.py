"""The effect of IPC attachments on fire (wire §7.8, §11.3): a manual fire of a cue bound to an
active ``ipc`` session is stamped ``delivery_mode_requested = "ipc"``; nothing else is."""

from __future__ import annotations

import uuid

from tests.agents_live.conftest import daemon as new_daemon
from tests.agents_live.conftest import ulid

EXECUTION_FIELDS = {"id", "cue_id", "scheduled_for", "status", "http_status", "attempts",
                    "error_message", "started_at", "delivered_at", "last_attempt_at", "outcome",
                    "created_at", "updated_at"}


def _cue(owner) -> str:
    response = owner.client.post("/v1/cues", headers=owner.headers, json={
        "name": f"live-{uuid.uuid4().hex[:6]}", "transport": "worker",
        "schedule": {"type": "recurring", "cron": "0 0 1 1 *"}})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def _fire(app, owner, cue_id) -> str | None:
    """Fire the cue; return the stored delivery_mode_requested of the new execution."""
    from app.extensions import db
    from app.scheduling.models import Execution

    response = owner.client.post(f"/v1/cues/{cue_id}/fire", headers=owner.headers)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert set(body) == {"id", "cue_id", "scheduled_for", "status", "triggered_by"}
    execution = owner.client.get(f"/v1/executions/{body['id']}", headers=owner.headers)
    # Not part of the wire execution object (§8.1): an internal signal only.
    assert set(execution.get_json()) == EXECUTION_FIELDS
    with app.app_context():
        return db.session.get(Execution, uuid.UUID(body["id"])).delivery_mode_requested


def test_fire_is_stamped_only_while_the_cue_has_an_active_ipc_session(app, owner, client):
    cue_id = _cue(owner)
    assert _fire(app, owner, cue_id) is None  # no session at all
    owner.register("main", cue_id=cue_id, task_name="handler")
    assert _fire(app, owner, cue_id) is None  # a poll session
    daemon, token = new_daemon(), ulid()
    assert owner.attach(daemon, "main", token).status_code == 201  # the daemon takes it over
    assert _fire(app, owner, cue_id) == "ipc"
    # The reconcile that leaves it out downgrades it to poll; listing it again restores ipc.
    assert owner.reconcile(daemon, []).get_json()["downgraded_count"] == 1
    assert _fire(app, owner, cue_id) is None
    entry = {"label": "main", "task_name": "handler", "ipc_session_token": token,
             "attached_at": "2026-05-12T09:00:00Z"}
    assert owner.reconcile(daemon, [entry]).get_json()["upserted_count"] == 1
    assert _fire(app, owner, cue_id) == "ipc"
    # A re-attach by the same daemon keeps the binding.
    new_token = ulid()
    assert owner.attach(daemon, "main", new_token).status_code == 201
    assert _fire(app, owner, cue_id) == "ipc"
    assert owner.detach_attachment(daemon, new_token).status_code == 204
    assert _fire(app, owner, cue_id) is None


def test_detach_and_agent_deletion_end_the_stamp(app, owner, client):
    cue_id = _cue(owner)
    owner.register("main", cue_id=cue_id)
    owner.attach(new_daemon(), "main")
    assert _fire(app, owner, cue_id) == "ipc"
    client.delete(owner.sessions_url() + "/main", headers=owner.headers)
    assert _fire(app, owner, cue_id) is None
    other = owner.agent("Other")["id"]
    owner.register("main", cue_id=cue_id, agent=other)
    owner.attach(new_daemon(), "main", agent=other)
    assert _fire(app, owner, cue_id) == "ipc"
    client.delete(f"/v1/agents/{other}", headers=owner.headers)
    assert _fire(app, owner, cue_id) is None


def test_another_users_session_never_stamps_my_cue(app, owner, stranger):
    cue_id = _cue(owner)
    # The stranger binds a session to this cue id (ids are not secret) and attaches it.
    assert stranger.register("main", cue_id=cue_id).status_code == 201
    assert stranger.attach(new_daemon(), "main").status_code == 201
    assert _fire(app, owner, cue_id) is None


def test_a_replay_is_not_stamped(app, owner):
    from app.extensions import db
    from app.scheduling.models import Execution

    cue_id = _cue(owner)
    owner.register("main", cue_id=cue_id)
    owner.attach(new_daemon(), "main")
    fired = owner.client.post(f"/v1/cues/{cue_id}/fire", headers=owner.headers).get_json()
    with app.app_context():  # finished, so it can be replayed
        db.session.get(Execution, uuid.UUID(fired["id"])).status = "success"
        db.session.commit()
    replay = owner.client.post(f"/v1/executions/{fired['id']}/replay", headers=owner.headers)
    assert replay.status_code == 200, replay.get_json()
    with app.app_context():
        stamps = {str(e.id): e.delivery_mode_requested
                  for e in db.session.query(Execution).filter_by(cue_id=cue_id)}
    assert stamps[fired["id"]] == "ipc"
    assert [v for k, v in stamps.items() if k != fired["id"]] == [None]
