"""``/v1/cues``: fields, defaults, validation order and codes, update semantics, fire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import error_of, key_headers, register, service_headers, user_id_of
from tests.scheduling.conftest import PUBLIC_URL, cue_body

CUE_KEYS = {"id", "name", "description", "status", "transport", "schedule", "callback",
            "payload", "retry", "next_run", "last_run", "run_count", "fired_count",
            "on_failure", "verification", "warning", "created_at", "updated_at"}


def _future(minutes=60) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


def test_create_returns_every_field_with_defaults(client, headers):
    response = client.post("/v1/cues", json=cue_body(extra_field="ignored"), headers=headers)
    assert response.status_code == 201
    cue = response.get_json()
    assert set(cue) == CUE_KEYS
    assert cue["id"].startswith("cue_") and len(cue["id"]) == 16
    assert cue["id"][4:].isalnum() and cue["id"][4:].lower() == cue["id"][4:]
    assert cue["status"] == "active" and cue["transport"] == "webhook"
    assert cue["schedule"] == {"type": "recurring", "timezone": "UTC", "cron": "0 9 * * *"}
    assert cue["callback"] == {"url": PUBLIC_URL, "method": "POST", "headers": {}}
    assert cue["retry"] == {"max_attempts": 3, "backoff_minutes": [1, 5, 15]}
    assert cue["on_failure"] == {"email": True, "webhook": None, "pause": False}
    assert cue["verification"] is None and cue["warning"] is None
    assert cue["run_count"] == 0 and cue["fired_count"] == 0 and cue["last_run"] is None
    next_run = datetime.fromisoformat(cue["next_run"])
    assert next_run > datetime.now(UTC) and next_run.hour == 9 and next_run.minute == 0
    assert cue["created_at"].endswith("Z")


def test_cron_evaluated_in_timezone(client, headers):
    cue = client.post("/v1/cues", json=cue_body(schedule={
        "type": "recurring", "cron": "0 9 * * *", "timezone": "Asia/Tokyo"}),
        headers=headers).get_json()
    next_run = datetime.fromisoformat(cue["next_run"])
    assert next_run.hour == 0  # 09:00 in Tokyo is 00:00 UTC


def test_once_cue_and_naive_at_is_utc(client, headers):
    at = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0, tzinfo=None)
    cue = client.post("/v1/cues", json=cue_body(schedule={"type": "once",
                                                          "at": at.isoformat()}),
                      headers=headers).get_json()
    assert cue["schedule"]["at"] == at.replace(tzinfo=UTC).isoformat()
    assert cue["schedule"]["at"].endswith("+00:00")
    assert "cron" not in cue["schedule"]
    assert cue["next_run"] == at.isoformat() + "Z"


def test_worker_cue_without_callback_and_warning(client, headers):
    cue = client.post("/v1/cues", json=cue_body(transport="worker", callback=None),
                      headers=headers).get_json()
    assert cue["transport"] == "worker"
    assert cue["callback"] == {"url": None, "method": "POST", "headers": {}}
    assert cue["warning"].startswith("No active workers")
    client.post("/v1/worker/heartbeat", json={"worker_id": "w1"}, headers=headers)
    cue2 = client.post("/v1/cues", json=cue_body(name="second", transport="worker",
                                                  callback=None), headers=headers).get_json()
    assert cue2["warning"] is None
    # The warning is a create-time notice, not stored.
    assert client.get(f"/v1/cues/{cue['id']}", headers=headers).get_json()["warning"] is None


def test_null_optional_objects_fall_back_to_defaults(client, headers):
    # (cue_body treats None as "omit the key", so the nulls are set explicitly.)
    body = cue_body(name="nulls")
    body.update(retry=None, on_failure=None, payload=None)
    cue = client.post("/v1/cues", json=body, headers=headers).get_json()
    assert cue["retry"] == {"max_attempts": 3, "backoff_minutes": [1, 5, 15]}
    assert cue["on_failure"]["email"] is True and cue["payload"] == {}


@pytest.mark.parametrize("overrides,status,code", [
    ({"schedule": {"type": "weekly", "cron": "* * * * *"}}, 400, "invalid_schedule"),
    ({"schedule": {"type": "recurring"}}, 400, "invalid_schedule"),
    ({"schedule": {"type": "recurring", "cron": "not a cron"}}, 400, "invalid_schedule"),
    ({"schedule": {"type": "once"}}, 400, "invalid_schedule"),
    ({"schedule": {"type": "once", "at": "2001-01-01T00:00:00Z"}}, 400, "invalid_schedule"),
    ({"schedule": {"type": "recurring", "cron": "* * * * *", "timezone": "Mars/Base"}}, 422,
     "invalid_timezone"),
    ({"schedule": {"cron": "* * * * *"}}, 422, "validation_error"),
    ({"transport": "carrier-pigeon"}, 422, "validation_error"),
    ({"callback": {"url": PUBLIC_URL, "transport": "worker"}}, 422, "validation_error"),
    ({"callback": {"url": PUBLIC_URL, "method": "DELETE"}}, 422, "validation_error"),
    ({"callback": None}, 422, "validation_error"),
    ({"callback": {"url": "http://192.0.2.10/x"}}, 400, "invalid_callback_url"),
    ({"callback": {"url": "https://127.0.0.1/x"}}, 400, "invalid_callback_url"),
    ({"callback": {"url": "https://localhost/x"}}, 400, "invalid_callback_url"),
    ({"on_failure": {"webhook": "https://10.0.0.1/"}}, 400, "invalid_callback_url"),
    ({"callback": {"url": PUBLIC_URL, "headers": {"Bad Name": "x"}}}, 422, "validation_error"),
    ({"callback": {"url": PUBLIC_URL, "headers": {"X-A": "a\r\nInjected: 1"}}}, 422,
     "validation_error"),
    ({"callback": {"url": PUBLIC_URL, "headers": {"X-A": 5}}}, 422, "validation_error"),
    ({"retry": {"max_attempts": 11}}, 422, "validation_error"),
    ({"retry": {"max_attempts": "3"}}, 422, "validation_error"),
    ({"payload": [1, 2]}, 422, "validation_error"),
    ({"verification": {"mode": "vibes"}}, 422, "validation_error"),
    ({"name": ""}, 422, "validation_error"),
    ({"name": "x" * 256}, 422, "validation_error"),
])
def test_create_errors(client, headers, overrides, status, code):
    response = client.post("/v1/cues", json=cue_body(**overrides), headers=headers)
    assert response.status_code == status, response.get_json()
    error = error_of(response)
    assert error["code"] == code
    if code == "validation_error":
        assert error["details"] and error["details"][0]["field"].startswith("body.")


def test_on_failure_webhook_message_is_prefixed(client, headers):
    error = error_of(client.post("/v1/cues", json=cue_body(
        on_failure={"webhook": "https://169.254.169.254/"}), headers=headers))
    assert error["message"].startswith("on_failure.webhook:")


def test_callback_method_is_case_insensitive(client, headers):
    cue = client.post("/v1/cues", json=cue_body(callback={"url": PUBLIC_URL, "method": "put",
                                                          "headers": {"X-A": "1"}}),
                      headers=headers).get_json()
    assert cue["callback"] == {"url": PUBLIC_URL, "method": "PUT", "headers": {"X-A": "1"}}


def test_validation_order(client, headers, make_app):
    """Checks run in the spec's order: name, quota, URL, payload, timezone, schedule, on_failure."""
    client.post("/v1/cues", json=cue_body(name="taken"), headers=headers)
    everything_wrong = cue_body(name="taken", callback={"url": "https://127.0.0.1/"},
                                schedule={"type": "bogus", "timezone": "Nope/Nope"},
                                on_failure={"webhook": "https://127.0.0.1/"})
    steps = [("duplicate_cue_name", {}), ("invalid_callback_url", {"name": "fresh"}),
             ("invalid_timezone", {"callback": {"url": PUBLIC_URL}}),
             ("invalid_schedule", {"schedule": {"type": "bogus"}}),
             ("invalid_callback_url", {"schedule": {"type": "recurring", "cron": "* * * * *"}})]
    body = dict(everything_wrong)
    for code, fix in steps:
        body.update(fix)
        assert error_of(client.post("/v1/cues", json=body, headers=headers))["code"] == code
    body["on_failure"] = {"webhook": PUBLIC_URL}
    assert client.post("/v1/cues", json=body, headers=headers).status_code == 201


def test_duplicate_name_is_per_user(client, headers):
    assert client.post("/v1/cues", json=cue_body(), headers=headers).status_code == 201
    response = client.post("/v1/cues", json=cue_body(), headers=headers)
    assert response.status_code == 409 and error_of(response)["code"] == "duplicate_cue_name"
    other, _ = register(client)
    assert client.post("/v1/cues", json=cue_body(), headers=key_headers(other)).status_code == 201


def test_cue_limit_counts_active_and_paused(make_app):
    app = make_app()
    client = app.test_client()
    api_key, _ = register(client)
    headers = key_headers(api_key)
    from app.extensions import db
    from app.users.models import User

    with app.app_context():
        user = db.session.get(User, __import__("uuid").UUID(user_id_of(client, api_key)))
        user.active_cue_limit = 2
        db.session.commit()
    first = client.post("/v1/cues", json=cue_body(name="a"), headers=headers).get_json()
    client.post("/v1/cues", json=cue_body(name="b"), headers=headers)
    client.patch(f"/v1/cues/{first['id']}", json={"status": "paused"}, headers=headers)
    response = client.post("/v1/cues", json=cue_body(name="c"), headers=headers)
    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == "cue_limit_exceeded" and error["limit"] == 2
    # Deleting one frees a slot.
    client.delete(f"/v1/cues/{first['id']}", headers=headers)
    assert client.post("/v1/cues", json=cue_body(name="c"), headers=headers).status_code == 201


def test_cue_limit_off_when_quotas_disabled(make_app):
    app = make_app(DISABLE_QUOTA_ENFORCEMENT=True)
    client = app.test_client()
    api_key, _ = register(client)
    headers = key_headers(api_key)
    from app.extensions import db
    from app.users.models import User

    with app.app_context():
        db.session.execute(db.update(User).values(active_cue_limit=1))
        db.session.commit()
    for name in ("a", "b", "c"):
        assert client.post("/v1/cues", json=cue_body(name=name),
                           headers=headers).status_code == 201


def test_list_filters_pages_and_isolates_users(client, headers):
    ids = [client.post("/v1/cues", json=cue_body(name=f"c{i}"), headers=headers).get_json()["id"]
           for i in range(3)]
    client.patch(f"/v1/cues/{ids[0]}", json={"status": "paused"}, headers=headers)
    body = client.get("/v1/cues?limit=2", headers=headers).get_json()
    assert body["total"] == 3 and body["limit"] == 2 and body["offset"] == 0
    assert [c["id"] for c in body["cues"]] == [ids[2], ids[1]]  # newest first
    page2 = client.get("/v1/cues?limit=2&offset=2", headers=headers).get_json()
    assert [c["id"] for c in page2["cues"]] == [ids[0]] and page2["total"] == 3
    past_end = client.get("/v1/cues?limit=2&offset=10", headers=headers).get_json()
    assert past_end["cues"] == [] and past_end["total"] == 3
    past_end = client.get("/v1/cues?status=paused&offset=5", headers=headers).get_json()
    assert past_end["cues"] == [] and past_end["total"] == 1
    paused = client.get("/v1/cues?status=paused", headers=headers).get_json()
    assert paused["total"] == 1 and paused["cues"][0]["id"] == ids[0]
    assert client.get("/v1/cues?status=whatever", headers=headers).get_json()["total"] == 0
    for bad in ("limit=0", "limit=101", "offset=-1", "limit=abc"):
        assert error_of(client.get(f"/v1/cues?{bad}", headers=headers))["code"] == \
            "validation_error"
    other, _ = register(client)
    assert client.get("/v1/cues", headers=key_headers(other)).get_json()["total"] == 0
    response = client.get(f"/v1/cues/{ids[1]}", headers=key_headers(other))
    assert response.status_code == 404 and error_of(response)["code"] == "cue_not_found"


def test_get_unknown_and_odd_ids_are_404(client, headers):
    for cue_id in ("cue_doesnotexist", "x" * 300, "%00", "cue_%E2%9C%93"):
        response = client.get(f"/v1/cues/{cue_id}", headers=headers)
        assert response.status_code == 404


def test_requires_auth(client):
    assert client.get("/v1/cues").status_code == 401
    assert client.post("/v1/cues", json={}).status_code == 401  # 401 before 422


def test_patch_semantics(client, headers, make_cue):
    cue = make_cue(callback={"url": PUBLIC_URL, "method": "PUT", "headers": {"X-A": "1"}})
    # The SDK's update(callback=...) sends only the url: method and headers reset.
    updated = client.patch(f"/v1/cues/{cue['id']}", json={"callback": {"url": PUBLIC_URL + "2"}},
                           headers=headers).get_json()
    assert updated["callback"] == {"url": PUBLIC_URL + "2", "method": "POST", "headers": {}}
    paused = client.patch(f"/v1/cues/{cue['id']}", json={"status": "paused"},
                          headers=headers).get_json()
    assert paused["status"] == "paused" and paused["next_run"] is None
    resumed = client.patch(f"/v1/cues/{cue['id']}", json={"status": "active"},
                           headers=headers).get_json()
    assert resumed["status"] == "active" and resumed["next_run"] is not None
    once = client.patch(f"/v1/cues/{cue['id']}",
                        json={"schedule": {"type": "once", "at": _future()}},
                        headers=headers).get_json()
    assert once["schedule"]["type"] == "once" and "cron" not in once["schedule"]
    assert once["schedule"]["timezone"] == "UTC"
    changed = client.patch(f"/v1/cues/{cue['id']}",
                           json={"payload": {"n": 2}, "retry": {"max_attempts": 5},
                                 "verification": {"mode": "manual"},
                                 "on_failure": {"pause": True}, "description": "d"},
                           headers=headers).get_json()
    assert changed["payload"] == {"n": 2}
    assert changed["retry"] == {"max_attempts": 5, "backoff_minutes": [1, 5, 15]}
    assert changed["verification"] == {"mode": "manual"}
    assert changed["on_failure"] == {"email": True, "webhook": None, "pause": True}
    assert changed["description"] == "d"
    assert changed["transport"] == "webhook"


@pytest.mark.parametrize("body,status,code", [
    ({"transport": "worker"}, 422, "validation_error"),
    ({"bogus": 1}, 422, "validation_error"),
    ({"status": "completed"}, 422, "validation_error"),
    ({"schedule": {"type": "recurring", "cron": "* * * * *", "timezone": "X/Y"}}, 422,
     "invalid_timezone"),
    ({"schedule": {"type": "recurring", "cron": "nope"}}, 400, "invalid_schedule"),
    ({"callback": {"url": "https://10.1.1.1/"}}, 400, "invalid_callback_url"),
    ({"callback": {"url": PUBLIC_URL, "method": "TRACE"}}, 422, "validation_error"),
])
def test_patch_errors(client, headers, make_cue, body, status, code):
    cue = make_cue()
    response = client.patch(f"/v1/cues/{cue['id']}", json=body, headers=headers)
    assert response.status_code == status
    assert error_of(response)["code"] == code
    # Nothing was half-applied.
    assert client.get(f"/v1/cues/{cue['id']}", headers=headers).get_json()["callback"] == \
        cue["callback"]


def test_patch_rename_conflict_and_unknown(client, headers, make_cue):
    make_cue(name="one")
    two = make_cue(name="two")
    response = client.patch(f"/v1/cues/{two['id']}", json={"name": "one"}, headers=headers)
    assert response.status_code == 409 and error_of(response)["code"] == "duplicate_cue_name"
    assert client.patch(f"/v1/cues/{two['id']}", json={"name": "two"},
                        headers=headers).status_code == 200
    response = client.patch("/v1/cues/cue_nope", json={"name": "x"}, headers=headers)
    assert response.status_code == 404 and error_of(response)["code"] == "cue_not_found"


def test_worker_cue_callback_url_not_ssrf_checked(client, headers):
    cue = client.post("/v1/cues", json=cue_body(transport="worker", callback=None),
                      headers=headers).get_json()
    response = client.patch(f"/v1/cues/{cue['id']}",
                            json={"callback": {"url": "http://10.0.0.1/"}}, headers=headers)
    assert response.status_code == 200


def test_delete_cascades(client, headers, make_cue):
    cue = make_cue()
    fired = client.post(f"/v1/cues/{cue['id']}/fire", headers=headers).get_json()
    assert client.delete(f"/v1/cues/{cue['id']}", headers=headers).status_code == 204
    assert client.get(f"/v1/cues/{cue['id']}", headers=headers).status_code == 404
    assert client.get(f"/v1/executions/{fired['id']}", headers=headers).status_code == 404
    response = client.delete(f"/v1/cues/{cue['id']}", headers=headers)
    assert response.status_code == 404 and error_of(response)["code"] == "cue_not_found"


def test_fire_now_and_later(client, headers, make_cue):
    cue = make_cue()
    client.patch(f"/v1/cues/{cue['id']}", json={"status": "paused"}, headers=headers)
    response = client.post(f"/v1/cues/{cue['id']}/fire",
                           json={"payload_override": {"x": 1}, "idempotency_key": "k"},
                           headers=headers)
    assert response.status_code == 200
    fired = response.get_json()
    assert set(fired) == {"id", "cue_id", "scheduled_for", "status", "triggered_by"}
    assert fired["status"] == "pending" and fired["triggered_by"] == "manual_fire"
    assert fired["scheduled_for"].endswith("+00:00")
    later = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0, tzinfo=None)
    fired_later = client.post(f"/v1/cues/{cue['id']}/fire",
                              json={"send_at": later.isoformat()}, headers=headers).get_json()
    assert fired_later["scheduled_for"] == later.replace(tzinfo=UTC).isoformat()
    detail = client.get(f"/v1/cues/{cue['id']}", headers=headers).get_json()
    assert detail["fired_count"] == 0 and detail["execution_total"] == 2
    assert {e["id"] for e in detail["executions"]} == {fired["id"], fired_later["id"]}
    echo = client.post(f"/v1/cues/{cue['id']}/fire",
                       headers={**headers, "X-CueAPI-Verify-Echo": "true"}).get_json()
    assert echo["body_received"] is None
    assert echo["body_received_sha256"].startswith("e3b0c442")
    assert client.post("/v1/cues/cue_unknown/fire", headers=headers).status_code == 404


def test_cue_detail_pages_executions(client, headers, make_cue):
    cue = make_cue()
    ids = [client.post(f"/v1/cues/{cue['id']}/fire", headers=headers).get_json()["id"]
           for _ in range(3)]
    detail = client.get(f"/v1/cues/{cue['id']}?execution_limit=2&execution_offset=1",
                        headers=headers).get_json()
    assert detail["execution_total"] == 3 and detail["execution_limit"] == 2
    assert detail["execution_offset"] == 1
    assert [e["id"] for e in detail["executions"]] == [ids[1], ids[0]]
    assert client.get(f"/v1/cues/{cue['id']}?execution_limit=101",
                      headers=headers).status_code == 422


def test_delegation_acts_as_the_user(delegation_client):
    api_key, _ = register(delegation_client)
    user_id = user_id_of(delegation_client, api_key)
    as_service = service_headers(user_id)
    created = delegation_client.post("/v1/cues", json=cue_body(), headers=as_service)
    assert created.status_code == 201
    cue_id = created.get_json()["id"]
    # The same cue is visible through the user's own key, and updatable by the service.
    assert delegation_client.get(f"/v1/cues/{cue_id}",
                                 headers=key_headers(api_key)).status_code == 200
    assert delegation_client.patch(f"/v1/cues/{cue_id}", json={"status": "paused"},
                                   headers=service_headers(user_id, style="key")
                                   ).get_json()["status"] == "paused"
    fired = delegation_client.post(f"/v1/cues/{cue_id}/fire", headers=as_service).get_json()
    assert delegation_client.get(f"/v1/executions/{fired['id']}",
                                 headers=as_service).status_code == 200
    other, _ = register(delegation_client)
    other_id = user_id_of(delegation_client, other)
    assert delegation_client.get(f"/v1/cues/{cue_id}",
                                 headers=service_headers(other_id)).status_code == 404


def test_disabled_primitive_removes_routes_keeps_usage(make_app):
    app = make_app(DISABLE_CUE_PRIMITIVE=True)
    client = app.test_client()
    api_key, _ = register(client)
    headers = key_headers(api_key)
    rules = {r.rule for r in app.url_map.iter_rules()}
    assert not any(r.startswith(("/v1/cues", "/v1/executions", "/v1/worker")) for r in rules)
    assert client.get("/v1/cues", headers=headers).status_code == 404
    assert client.post("/v1/worker/heartbeat", json={"worker_id": "w"},
                       headers=headers).status_code == 404
    usage = client.get("/v1/usage", headers=headers)
    assert usage.status_code == 200 and usage.get_json()["cues"]["used"] == 0
