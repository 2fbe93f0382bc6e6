"""Live sessions (wire §11.2): every route, field and error code, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import app.db as app_db
from tests.helpers import error_of

FIELDS = {"label", "cue_id", "task_name", "is_default", "attached", "heartbeat_age_sec",
          "last_claim_at", "last_claim_age_sec", "monitor_version", "attached_at",
          "session_token"}


@pytest.fixture
def clock(monkeypatch):
    now = [datetime(2026, 5, 12, 9, 0, tzinfo=UTC)]
    monkeypatch.setattr(app_db, "clock", lambda: now[0])
    return now


def _by_label(sessions):
    return {s["label"]: s for s in sessions}


def test_register_returns_the_live_session_object(owner, clock):
    response = owner.register("main", cue_id="cue_abcdefabcdef", task_name="review-prs",
                              is_default=True, monitor_version="v2.1.0",
                              session_token="01JD3Q5Z8K2M4N6P7R9S0T1V2W")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert set(body) == FIELDS
    assert body == {"label": "main", "cue_id": "cue_abcdefabcdef", "task_name": "review-prs",
                    "is_default": True, "attached": True, "heartbeat_age_sec": 0,
                    "last_claim_at": None, "last_claim_age_sec": None,
                    "monitor_version": "v2.1.0", "attached_at": "2026-05-12T09:00:00Z",
                    "session_token": "01JD3Q5Z8K2M4N6P7R9S0T1V2W"}
    # Optional fields default to null / false.
    plain = owner.register("side").get_json()
    assert plain["is_default"] is False
    assert plain["monitor_version"] is None and plain["session_token"] is None


def test_register_by_slug_address(owner, client):
    agent = owner.agent("Slugged", slug="slugged")
    response = owner.register("main", agent=f"slugged@{owner.slug}")
    assert response.status_code == 201
    assert [s["label"] for s in owner.sessions(agent["id"])] == ["main"]


@pytest.mark.parametrize("clash", ["label", "cue_id", "default"])
def test_every_unique_clash_is_409_live_session_conflict(owner, clash):
    assert owner.register("main", cue_id="cue_first0000001", is_default=True).status_code == 201
    second = {"label": ("main", "other", "other")[("label", "cue_id", "default").index(clash)],
              "cue_id": "cue_first0000001" if clash == "cue_id" else "cue_second000002",
              "is_default": clash == "default"}
    response = owner.register(**second)
    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "live_session_conflict"
    word = {"label": "labelled", "cue_id": "cue_first0000001", "default": "default"}[clash]
    assert word in error["message"]
    assert len(owner.sessions()) == 1  # nothing half-written


def test_cue_id_is_unique_across_agents_and_users(owner, stranger):
    assert owner.register("main", cue_id="cue_shared000001").status_code == 201
    other_agent = owner.agent("Second")["id"]
    assert owner.register("main", cue_id="cue_shared000001",
                          agent=other_agent).status_code == 409
    assert stranger.register("main", cue_id="cue_shared000001").status_code == 409


def test_detached_session_frees_label_cue_and_default(owner, client):
    owner.register("main", cue_id="cue_reused000001", is_default=True)
    assert client.delete(owner.sessions_url() + "/main",
                         headers=owner.headers).status_code == 200
    again = owner.register("main", cue_id="cue_reused000001", is_default=True)
    assert again.status_code == 201, again.get_json()
    history = owner.sessions(include_detached="true")
    assert [(s["attached"], s["is_default"]) for s in history] == [(True, True), (False, False)]


@pytest.mark.parametrize("body,field", [
    ({"label": "a", "cue_id": "c", "task_name": "t", "surprise": 1}, "body.surprise"),
    ({"cue_id": "c", "task_name": "t"}, "body.label"),
    ({"label": "", "cue_id": "c", "task_name": "t"}, "body.label"),
    ({"label": "x" * 65, "cue_id": "c", "task_name": "t"}, "body.label"),
    ({"label": "a", "cue_id": "c" * 129, "task_name": "t"}, "body.cue_id"),
    ({"label": "a", "cue_id": "c", "task_name": "t" * 256}, "body.task_name"),
    ({"label": "a", "cue_id": "c", "task_name": "t", "is_default": "maybe"}, "body.is_default"),
    ({"label": "a", "cue_id": "c", "task_name": "t", "monitor_version": "v" * 65},
     "body.monitor_version"),
    ({"label": "a", "cue_id": "c", "task_name": "t", "session_token": "s" * 81},
     "body.session_token"),
    ({"label": 5, "cue_id": "c", "task_name": "t"}, "body.label"),
])
def test_register_validation_is_422_naming_the_field(owner, client, body, field):
    response = client.post(owner.sessions_url(), headers=owner.headers, json=body)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert field in [d["field"] for d in error["details"]]


def test_agent_errors(owner, stranger, client):
    foreign = client.get(stranger.sessions_url(), headers=owner.headers)
    assert foreign.status_code == 404 and error_of(foreign)["code"] == "agent_not_found"
    missing = client.get(owner.sessions_url("agt_000000000000"), headers=owner.headers)
    assert missing.status_code == 404 and error_of(missing)["code"] == "agent_not_found"
    malformed = client.post(owner.sessions_url("not an address"), headers=owner.headers,
                            json={"label": "a", "cue_id": "c", "task_name": "t"})
    assert malformed.status_code == 400
    assert error_of(malformed)["code"] == "invalid_agent_address"
    for method, path in [("post", owner.sessions_url()), ("get", owner.sessions_url()),
                         ("patch", owner.sessions_url() + "/main"),
                         ("delete", owner.sessions_url() + "/main"),
                         ("post", owner.sessions_url() + "/main/heartbeat")]:
        assert getattr(client, method)(path).status_code == 401, (method, path)
    # A foreign agent is 404 on every route, and its sessions are untouched.
    stranger.register("main", is_default=True)
    for method, suffix, body in [("patch", "/main", {"is_default": True}),
                                 ("delete", "/main", None), ("post", "/main/heartbeat", None)]:
        response = getattr(client, method)(stranger.sessions_url() + suffix,
                                           headers=owner.headers, json=body)
        assert response.status_code == 404 and error_of(response)["code"] == "agent_not_found"
    assert stranger.sessions()[0]["attached"] is True


def test_deleted_agent_is_404_and_its_sessions_are_detached(owner, client):
    owner.register("main", cue_id="cue_ofdeleted0001", is_default=True)
    assert client.delete(f"/v1/agents/{owner.agent_id}", headers=owner.headers).status_code == 204
    response = client.get(owner.sessions_url(), headers=owner.headers)
    assert response.status_code == 404
    # The deleted agent's session no longer holds its cue.
    assert owner.register("main", cue_id="cue_ofdeleted0001",
                          agent=owner.agent("New")["id"]).status_code == 201


def test_list_newest_first_and_include_detached(owner, client, clock):
    for i, label in enumerate(["one", "two", "three"]):
        clock[0] += timedelta(seconds=1)
        assert owner.register(label, monitor_version=str(i)).status_code == 201
    assert [s["label"] for s in owner.sessions()] == ["three", "two", "one"]
    client.delete(owner.sessions_url() + "/two", headers=owner.headers)
    assert [s["label"] for s in owner.sessions()] == ["three", "one"]
    assert [s["label"] for s in owner.sessions(include_detached="true")] == ["three", "two",
                                                                              "one"]
    assert owner.sessions(include_detached="false") == owner.sessions()
    bad = client.get(owner.sessions_url(), headers=owner.headers,
                     query_string={"include_detached": "perhaps"})
    assert bad.status_code == 422


def test_delete_detaches_softly_and_clears_the_default(owner, client, clock):
    owner.register("main", is_default=True)
    clock[0] += timedelta(seconds=30)
    response = client.delete(owner.sessions_url() + "/main", headers=owner.headers)
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == FIELDS
    assert body["attached"] is False and body["is_default"] is False
    assert body["heartbeat_age_sec"] == 30
    again = client.delete(owner.sessions_url() + "/main", headers=owner.headers)
    assert again.status_code == 404 and error_of(again)["code"] == "live_session_not_found"
    assert owner.sessions() == []


def test_patch_requires_a_mutable_field(owner, client):
    owner.register("main")
    url = owner.sessions_url() + "/main"
    for body in (None, {}, {"is_default": None}, {"session_token": None},
                 {"is_default": None, "session_token": None}):
        response = client.patch(url, headers=owner.headers, json=body)
        assert response.status_code == 400, body
        assert error_of(response)["code"] == "no_mutable_fields"
    response = client.patch(url, headers=owner.headers, json={"is_default": False})
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_default_flip"
    response = client.patch(url, headers=owner.headers, json={"task_name": "new"})
    assert response.status_code == 422
    assert error_of(response)["details"][0]["field"] == "body.task_name"


def test_patch_moves_the_default_and_rotates_the_token(owner, client):
    owner.register("a", is_default=True)
    owner.register("b")
    owner.register("c")
    response = client.patch(owner.sessions_url() + "/b", headers=owner.headers,
                            json={"is_default": True})
    assert response.status_code == 200
    assert response.get_json()["is_default"] is True
    assert {k: v["is_default"] for k, v in _by_label(owner.sessions()).items()} == {
        "a": False, "b": True, "c": False}
    # Making the default the default again changes nothing.
    assert client.patch(owner.sessions_url() + "/b", headers=owner.headers,
                        json={"is_default": True}).status_code == 200
    assert [s["label"] for s in owner.sessions() if s["is_default"]] == ["b"]
    rotated = client.patch(owner.sessions_url() + "/c", headers=owner.headers,
                           json={"session_token": "01JD3Q5Z8K2M4N6P7R9S0T1V2X"})
    assert rotated.status_code == 200
    assert rotated.get_json()["session_token"] == "01JD3Q5Z8K2M4N6P7R9S0T1V2X"
    assert rotated.get_json()["is_default"] is False
    both = client.patch(owner.sessions_url() + "/c", headers=owner.headers,
                        json={"session_token": "tok-2", "is_default": True}).get_json()
    assert both["session_token"] == "tok-2" and both["is_default"] is True
    assert [s["label"] for s in owner.sessions() if s["is_default"]] == ["c"]


def test_patch_of_an_unknown_label_is_404_and_changes_nothing(owner, client):
    owner.register("a", is_default=True)
    owner.register("gone")
    client.delete(owner.sessions_url() + "/gone", headers=owner.headers)
    for label in ("nope", "gone", "x" * 300):
        response = client.patch(owner.sessions_url() + f"/{label}", headers=owner.headers,
                                json={"is_default": True, "session_token": "t"})
        assert response.status_code == 404
        assert error_of(response)["code"] == "live_session_not_found"
    sessions = owner.sessions()
    assert [(s["label"], s["is_default"], s["session_token"]) for s in sessions] == [
        ("a", True, None)]


def test_heartbeat(owner, client, clock):
    owner.register("main", monitor_version="v1")
    url = owner.sessions_url() + "/main/heartbeat"
    clock[0] += timedelta(seconds=90)
    assert owner.sessions()[0]["heartbeat_age_sec"] == 90
    response = client.post(url, headers=owner.headers)
    assert response.status_code == 200
    assert response.get_json()["heartbeat_age_sec"] == 0
    assert response.get_json()["monitor_version"] == "v1"
    clock[0] += timedelta(seconds=5)
    response = client.post(url, headers=owner.headers, json={"monitor_version": "v2"})
    assert response.get_json()["monitor_version"] == "v2"
    assert response.get_json()["heartbeat_age_sec"] == 0
    clock[0] += timedelta(seconds=7)
    assert owner.sessions()[0]["heartbeat_age_sec"] == 7
    assert client.post(url, headers=owner.headers,
                       json={"monitor_version": None}).get_json()["monitor_version"] == "v2"
    null_body = client.post(url, headers=owner.headers, data="null",
                            content_type="application/json")
    assert null_body.status_code == 200
    assert client.post(url, headers=owner.headers, json=[]).status_code == 422
    bad = client.post(url, headers=owner.headers, json={"status": "alive"})
    assert bad.status_code == 422 and error_of(bad)["details"][0]["field"] == "body.status"
    missing = client.post(owner.sessions_url() + "/other/heartbeat", headers=owner.headers)
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "live_session_not_found"


def test_hostile_labels_never_500(owner, client):
    for label in ("ünïcödé ☃", "with space", "a" * 64, "%25", "'; DROP TABLE x; --"):
        response = owner.register(label)
        assert response.status_code == 201, (label, response.get_json())
    assert len(owner.sessions()) == 5
    for path in (owner.sessions_url() + "/%00/heartbeat",
                 owner.sessions_url() + "/" + "z" * 5000 + "/heartbeat",
                 owner.sessions_url() + "/a%2Fb/heartbeat"):
        response = client.post(path, headers=owner.headers)
        assert response.status_code in (400, 404), (path, response.status_code)
    invalid_json = client.post(owner.sessions_url(), headers=owner.headers, data="{",
                               content_type="application/json")
    assert invalid_json.status_code == 400
    assert error_of(invalid_json)["code"] == "invalid_json"
