"""IPC attachments (wire §11.3): attach, supersede, take over, 409 attachment_exists, delete,
reconcile with downgrade to poll, and every header, path and body error."""

from __future__ import annotations

import uuid

import pytest

from tests.agents_live.conftest import ulid
from tests.agents_live.conftest import daemon as new_daemon
from tests.helpers import error_of

ATTACHMENT_FIELDS = {"id", "agent_id", "label", "task_name", "transport", "ipc_session_token",
                     "daemon_id", "attached_at", "last_reconciled_at", "supersedes_token"}


def transports(app, agent_id=None) -> dict[str, str]:
    """label → transport of the active sessions (the wire shows it only on attach)."""
    from sqlalchemy import select

    from app.agents_live.models import LiveSession
    from app.extensions import db

    with app.app_context():
        query = select(LiveSession).where(LiveSession.detached_at.is_(None))
        if agent_id:
            query = query.where(LiveSession.agent_id == agent_id)
        rows = db.session.execute(query).scalars().all()
        return {row.label: row.transport for row in rows}


def test_fresh_attach(owner):
    daemon, token = new_daemon(), ulid()
    response = owner.attach(daemon, "main", token, task_name="claude-live",
                            monitor_version="v3.0.0")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert set(body) == ATTACHMENT_FIELDS
    uuid.UUID(body["id"])
    assert {k: body[k] for k in ("agent_id", "label", "task_name", "transport",
                                 "ipc_session_token", "daemon_id", "supersedes_token")} == {
        "agent_id": owner.agent_id, "label": "main", "task_name": "claude-live",
        "transport": "ipc", "ipc_session_token": token, "daemon_id": daemon,
        "supersedes_token": None}
    assert body["attached_at"].endswith("Z") and body["last_reconciled_at"].endswith("Z")
    [session] = owner.sessions()
    # "main" on a fresh attach becomes the default; the session is bound to no cue yet.
    assert session["is_default"] is True and session["attached"] is True
    assert session["cue_id"] == token and session["monitor_version"] == "v3.0.0"
    assert session["heartbeat_age_sec"] is None


def test_main_does_not_take_an_existing_default_and_other_labels_never_default(owner):
    owner.register("desk", is_default=True)
    assert owner.attach(new_daemon(), "main").status_code == 201
    assert owner.attach(new_daemon(), "pr-watcher").status_code == 201
    defaults = {s["label"]: s["is_default"] for s in owner.sessions()}
    assert defaults == {"desk": True, "main": False, "pr-watcher": False}


def test_attached_at_from_the_daemon_clock(owner):
    offset = owner.attach(new_daemon(), "a", attached_at="2026-05-12T11:00:00+02:00")
    assert offset.get_json()["attached_at"] == "2026-05-12T09:00:00Z"
    naive = owner.attach(new_daemon(), "b", attached_at="2026-05-12T09:30:00")
    assert naive.get_json()["attached_at"] == "2026-05-12T09:30:00Z"
    for bad in ("yesterday", "0001-01-01T00:00:00+01:00", 12):
        response = owner.attach(new_daemon(), "c", attached_at=bad)
        assert response.status_code == 422, bad
        assert error_of(response)["details"][0]["field"] == "body.attached_at"


def test_same_daemon_reattach_supersedes(owner, app):
    daemon, first, second = new_daemon(), ulid(), ulid()
    owner.attach(daemon, "main", first)
    response = owner.attach(daemon, "main", second, task_name="v2-task")
    assert response.status_code == 201
    assert response.get_json()["supersedes_token"] == first
    assert response.get_json()["ipc_session_token"] == second
    active = owner.sessions()
    assert [(s["label"], s["is_default"], s["cue_id"], s["task_name"]) for s in active] == [
        ("main", True, second, "v2-task")]
    assert len(owner.sessions(include_detached="true")) == 2
    # The superseded token is gone; the new one is live.
    assert owner.detach_attachment(daemon, first).status_code == 200
    assert transports(app) == {"main": "ipc"}
    # Re-attaching with the very same token also works (old row detached first).
    again = owner.attach(daemon, "main", second)
    assert again.status_code == 201 and again.get_json()["supersedes_token"] == second


def test_attach_takes_over_a_registered_session_keeping_its_cue(owner, app, client):
    owner.register("main", cue_id="cue_registered01", task_name="old", is_default=True,
                   session_token="attest-1")
    daemon, token = new_daemon(), ulid()
    response = owner.attach(daemon, "main", token, task_name="new")
    assert response.status_code == 201 and response.get_json()["supersedes_token"] is None
    [session] = owner.sessions()
    assert session["cue_id"] == "cue_registered01" and session["task_name"] == "new"
    assert session["is_default"] is True and session["session_token"] == "attest-1"
    assert transports(app) == {"main": "ipc"}
    # Superseding keeps the cue binding and the attestation token too.
    owner.attach(daemon, "main", ulid())
    [session] = owner.sessions()
    assert session["cue_id"] == "cue_registered01" and session["session_token"] == "attest-1"


def test_another_daemon_gets_attachment_exists(owner, app):
    holder, token = new_daemon(), ulid()
    held = owner.attach(holder, "main", token, attached_at="2026-05-12T09:00:00Z").get_json()
    response = owner.attach(new_daemon(), "main", ulid())
    assert response.status_code == 409
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "existing_token", "existing_daemon_id",
                                  "existing_attached_at", "existing_last_reconciled_at", "hint"}
    assert body["error"]["code"] == "attachment_exists"
    assert body["error"]["existing_token"] == token
    assert body["error"]["existing_daemon_id"] == holder
    assert body["error"]["existing_attached_at"] == "2026-05-12T09:00:00Z"
    assert body["error"]["existing_last_reconciled_at"] == held["last_reconciled_at"]
    assert "DELETE" in body["error"]["hint"]
    [session] = owner.sessions()
    assert session["cue_id"] == token  # unchanged


def test_token_already_bound_as_a_cue_is_live_session_conflict(owner):
    token = ulid()
    owner.register("desk", cue_id=token)
    response = owner.attach(new_daemon(), "main", token)
    assert response.status_code == 409
    assert error_of(response)["code"] == "live_session_conflict"
    assert [s["label"] for s in owner.sessions()] == ["desk"]


@pytest.mark.parametrize("token", [
    "01jd3q5z8k2m4n6p7r9s0t1v2w",       # lower case
    "01JD3Q5Z8K2M4N6P7R9S0T1V2",        # 25 characters
    "01JD3Q5Z8K2M4N6P7R9S0T1V2WX",      # 27 without a prefix
    "01JD3Q5Z8K2M4N6P7R9S0T1V2I",       # I is not Crockford
    "V3_01JD3Q5Z8K2M4N6P7R9S0T1V2W",    # prefix must be lower case
    "v3abcd_01JD3Q5Z8K2M4N6P7R9S0T1V2W",  # 33 characters
    "",
])
def test_malformed_tokens_are_422(owner, token):
    response = owner.attach(new_daemon(), "main", token)
    assert response.status_code == 422
    assert error_of(response)["details"][0]["field"] == "body.ipc_session_token"
    delete = owner.detach_attachment(new_daemon(), token or "x")
    assert delete.status_code == 422
    assert error_of(delete)["details"][0]["field"] == "path.token"
    reconcile = owner.reconcile(new_daemon(), [{
        "label": "main", "task_name": "t", "ipc_session_token": token,
        "attached_at": "2026-05-12T09:00:00Z"}])
    assert reconcile.status_code == 422
    assert error_of(reconcile)["details"][0]["field"] == "body.attachments.0.ipc_session_token"


def test_versioned_token_prefix_is_accepted(owner):
    token = "v3a_" + ulid()
    assert owner.attach(new_daemon(), "main", token).get_json()["ipc_session_token"] == token


@pytest.mark.parametrize("body,field", [
    ({"label": "m", "task_name": "t", "ipc_session_token": "01JD3Q5Z8K2M4N6P7R9S0T1V2W",
      "cue_id": "cue_x"}, "body.cue_id"),
    ({"task_name": "t", "ipc_session_token": "01JD3Q5Z8K2M4N6P7R9S0T1V2W"}, "body.label"),
    ({"label": "m", "ipc_session_token": "01JD3Q5Z8K2M4N6P7R9S0T1V2W"}, "body.task_name"),
    ({"label": "m", "task_name": "t"}, "body.ipc_session_token"),
    ({"label": "m" * 65, "task_name": "t", "ipc_session_token": "01JD3Q5Z8K2M4N6P7R9S0T1V2W"},
     "body.label"),
    ({"label": "m", "task_name": "t", "ipc_session_token": "01JD3Q5Z8K2M4N6P7R9S0T1V2W",
      "monitor_version": "v" * 65}, "body.monitor_version"),
])
def test_attach_body_validation(owner, client, body, field):
    response = client.post(f"/v1/agents/{owner.agent_id}/attachments",
                           headers={**owner.headers, "X-CueAPI-Daemon-Id": new_daemon()},
                           json=body)
    assert response.status_code == 422
    assert field in [d["field"] for d in error_of(response)["details"]]


def _calls(owner, client, headers):
    token = ulid()
    body = {"label": "main", "task_name": "t", "ipc_session_token": token}
    reconcile = {"daemon_id": new_daemon(), "reconciled_at": "2026-05-12T09:00:00Z",
                 "attachments": []}
    return [
        client.post(f"/v1/agents/{owner.agent_id}/attachments", headers=headers, json=body),
        client.delete(f"/v1/agents/{owner.agent_id}/attachments/{token}", headers=headers),
        client.post("/v1/agents/reconcile-attachments", headers=headers, json=reconcile),
    ]


@pytest.mark.parametrize("value,code", [(None, "missing_daemon_id"), ("", "missing_daemon_id"),
                                        ("not-a-uuid", "invalid_daemon_id"),
                                        ("   ", "invalid_daemon_id"),
                                        ("1234", "invalid_daemon_id")])
def test_daemon_header_rules(owner, client, value, code):
    headers = dict(owner.headers)
    if value is not None:
        headers["X-CueAPI-Daemon-Id"] = value
    for response in _calls(owner, client, headers):
        assert response.status_code == 400
        assert error_of(response)["code"] == code
    assert owner.sessions() == []


def test_daemon_header_is_trimmed(owner):
    daemon = new_daemon()
    response = owner.attach(f"  {daemon}  ", "main")
    assert response.status_code == 201 and response.get_json()["daemon_id"] == daemon


def test_check_order_credential_body_daemon_agent(owner, client):
    assert all(r.status_code == 401 for r in _calls(owner, client, {}))
    no_daemon_bad_body = client.post(f"/v1/agents/{owner.agent_id}/attachments",
                                     headers=owner.headers, json={"label": "main"})
    assert no_daemon_bad_body.status_code == 422
    slug_no_daemon = client.post(f"/v1/agents/monitor@{owner.slug}/attachments",
                                 headers=owner.headers, json={
                                     "label": "m", "task_name": "t",
                                     "ipc_session_token": ulid()})
    assert error_of(slug_no_daemon)["code"] == "missing_daemon_id"


@pytest.mark.parametrize("ref,status,code", [
    ("monitor@someone", 400, "invalid_agent_ref"), ("agt_short", 400, "invalid_agent_ref"),
    ("agt_" + "x" * 40, 400, "invalid_agent_ref"), ("not-an-agent", 400, "invalid_agent_ref"),
    ("agt_000000000000", 404, "agent_not_found")])
def test_agent_ref_must_be_an_owned_agent_id(owner, ref, status, code):
    for response in (owner.attach(new_daemon(), agent=ref),
                     owner.detach_attachment(new_daemon(), ulid(), agent=ref)):
        assert response.status_code == status
        assert error_of(response)["code"] == code


def test_foreign_and_deleted_agents_are_404(owner, stranger, client):
    foreign = owner.attach(new_daemon(), agent=stranger.agent_id)
    assert foreign.status_code == 404 and error_of(foreign)["code"] == "agent_not_found"
    gone = owner.agent("Gone")["id"]
    client.delete(f"/v1/agents/{gone}", headers=owner.headers)
    assert owner.attach(new_daemon(), agent=gone).status_code == 404
    assert stranger.sessions() == []


def test_delete_is_204_then_200_already_deleted(owner, app):
    daemon, token = new_daemon(), ulid()
    owner.attach(daemon, "main", token)
    # Another daemon cannot delete it.
    other = owner.detach_attachment(new_daemon(), token)
    assert other.status_code == 200
    assert other.get_json() == {"deleted": False, "reason": "already_deleted"}
    assert transports(app) == {"main": "ipc"}
    first = owner.detach_attachment(daemon, token)
    assert first.status_code == 204 and first.data == b""
    second = owner.detach_attachment(daemon, token)
    assert second.status_code == 200
    assert second.get_json() == {"deleted": False, "reason": "already_deleted"}
    assert owner.sessions() == []
    [history] = owner.sessions(include_detached="true")
    assert history["attached"] is False and history["is_default"] is False
    # The label is free again, and "main" becomes the default once more.
    assert owner.attach(new_daemon(), "main").status_code == 201
    assert owner.sessions()[0]["is_default"] is True
    never = owner.detach_attachment(daemon, ulid())
    assert never.status_code == 200 and never.get_json()["reason"] == "already_deleted"


def test_reconcile_upserts_listed_and_downgrades_the_rest(owner, app):
    daemon, other_daemon = new_daemon(), new_daemon()
    second_agent = owner.agent("Second")["id"]
    tokens = {label: ulid() for label in ("a", "b", "c")}
    owner.attach(daemon, "a", tokens["a"])
    owner.attach(daemon, "b", tokens["b"])
    owner.attach(daemon, "c", tokens["c"], agent=second_agent)
    owner.attach(other_daemon, "z")

    def entry(label, task="t2"):
        return {"label": label, "task_name": task, "ipc_session_token": tokens[label],
                "attached_at": "2026-05-12T08:00:00Z"}

    response = owner.reconcile(daemon, [entry("a", "renamed"), entry("c")],
                               reconciled_at="2026-05-12T11:00:00+02:00")
    assert response.status_code == 200
    assert response.get_json() == {"daemon_id": daemon, "reconciled_at": "2026-05-12T09:00:00Z",
                                   "upserted_count": 2, "downgraded_count": 1}
    assert transports(app, owner.agent_id) == {"a": "ipc", "b": "poll", "z": "ipc"}
    assert transports(app, second_agent) == {"c": "ipc"}
    assert {s["label"]: s["task_name"] for s in owner.sessions()}["a"] == "renamed"
    # An empty view downgrades everything of this daemon, and nothing of another daemon.
    empty = owner.reconcile(daemon, []).get_json()
    assert (empty["upserted_count"], empty["downgraded_count"]) == (0, 2)
    assert transports(app, owner.agent_id) == {"a": "poll", "b": "poll", "z": "ipc"}
    # A downgraded session listed again comes back; unknown entries are skipped.
    back = owner.reconcile(daemon, [entry("b"), {
        "label": "nope", "task_name": "t", "ipc_session_token": ulid(),
        "attached_at": "2026-05-12T08:00:00Z"}]).get_json()
    assert (back["upserted_count"], back["downgraded_count"]) == (1, 0)
    assert transports(app, owner.agent_id)["b"] == "ipc"
    # The label must match the token: a right token under a wrong label is not listed.
    mixed = owner.reconcile(daemon, [{**entry("b"), "label": "a"}]).get_json()
    assert (mixed["upserted_count"], mixed["downgraded_count"]) == (0, 1)
    # A body without attachments means an empty view.
    assert owner.reconcile(daemon, None).status_code == 422
    client = owner.client
    bare = client.post("/v1/agents/reconcile-attachments",
                       headers={**owner.headers, "X-CueAPI-Daemon-Id": daemon},
                       json={"daemon_id": daemon, "reconciled_at": "2026-05-12T09:00:00Z"})
    assert bare.status_code == 200 and bare.get_json()["upserted_count"] == 0


def test_reconcile_is_scoped_to_the_callers_agents(owner, stranger, app):
    shared_daemon = new_daemon()  # the same id used by two users (a copied config, say)
    owner.attach(shared_daemon, "main")
    stranger.attach(shared_daemon, "main")
    result = stranger.reconcile(shared_daemon, []).get_json()
    assert result["downgraded_count"] == 1
    assert transports(app, owner.agent_id) == {"main": "ipc"}
    assert transports(app, stranger.agent_id) == {"main": "poll"}


def test_reconcile_errors(owner):
    daemon = new_daemon()
    mismatch = owner.reconcile(daemon, [], body_daemon=new_daemon())
    assert mismatch.status_code == 400 and error_of(mismatch)["code"] == "daemon_id_mismatch"
    for fields, field in [({"daemon_id": "nope"}, "body.daemon_id"),
                          ({"reconciled_at": None}, "body.reconciled_at"),
                          ({"extra": True}, "body.extra")]:
        response = owner.reconcile(daemon, [], **fields)
        assert response.status_code == 422, fields
        assert field in [d["field"] for d in error_of(response)["details"]]
    bad_entry = owner.reconcile(daemon, [{"label": "m", "task_name": "t",
                                          "ipc_session_token": ulid()}])
    assert error_of(bad_entry)["details"][0]["field"] == "body.attachments.0.attached_at"
    unknown = owner.reconcile(daemon, [{"label": "m", "task_name": "t", "transport": "ipc",
                                        "ipc_session_token": ulid(),
                                        "attached_at": "2026-05-12T09:00:00Z"}])
    assert error_of(unknown)["details"][0]["field"] == "body.attachments.0.transport"
    too_many = owner.reconcile(daemon, [{"label": "m", "task_name": "t",
                                         "ipc_session_token": ulid(),
                                         "attached_at": "2026-05-12T09:00:00Z"}] * 1001)
    assert too_many.status_code == 422


def test_get_on_reconcile_path_is_not_a_server_error(owner, client):
    response = client.get("/v1/agents/reconcile-attachments", headers=owner.headers)
    assert response.status_code in (400, 404, 405)
