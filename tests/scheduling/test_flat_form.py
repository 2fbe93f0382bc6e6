"""The flat ``POST /v1/cues`` form of the official MCP server (``@cueapi/mcp`` 0.2.0), a Cueline
extension: ``cron`` / ``at`` / ``timezone`` / ``callback_url`` / ``worker: true`` stand for
``schedule`` / ``callback`` / ``transport``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.helpers import error_of


def _create(client, headers, body, status=201):
    response = client.post("/v1/cues", json=body, headers=headers)
    assert response.status_code == status, response.get_json()
    return response.get_json()


def test_mcp_create_cue_bodies(client, headers):
    # Exactly what cueapi_create_cue sends: only the arguments the agent gave, flat.
    recurring = _create(client, headers, {"name": "daily-report", "cron": "0 9 * * *",
                                          "callback_url": "https://192.0.2.10/hook"})
    assert recurring["schedule"] == {"type": "recurring", "cron": "0 9 * * *",
                                     "timezone": "UTC"}
    assert recurring["transport"] == "webhook"
    assert recurring["callback"] == {"url": "https://192.0.2.10/hook", "method": "POST",
                                     "headers": {}}
    at = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    once = _create(client, headers, {
        "name": "one-off", "at": at.isoformat().replace("+00:00", "Z"), "worker": True,
        "timezone": "America/New_York", "payload": {"task": "summarise"},
        "description": "made by an agent"})
    assert once["schedule"]["type"] == "once"
    assert once["schedule"]["timezone"] == "America/New_York"
    assert datetime.fromisoformat(once["schedule"]["at"]) == at
    assert once["transport"] == "worker" and once["callback"]["url"] is None
    assert once["payload"] == {"task": "summarise"} and once["description"] == "made by an agent"
    worker = _create(client, headers, {"name": "pull", "cron": "*/5 * * * *", "worker": True})
    assert worker["transport"] == "worker" and worker["schedule"]["cron"] == "*/5 * * * *"
    # The rest of the MCP server's calls are the wire form already.
    paused = client.patch(f"/v1/cues/{worker['id']}", json={"status": "paused"},
                          headers=headers)
    assert paused.status_code == 200 and paused.get_json()["status"] == "paused"
    listed = client.get("/v1/executions", query_string={"cue_id": worker["id"], "limit": 5},
                        headers=headers)
    assert listed.status_code == 200
    fired = client.post(f"/v1/cues/{worker['id']}/fire", headers=headers).get_json()
    outcome = client.post(f"/v1/executions/{fired['id']}/outcome", headers=headers, json={
        "success": True, "external_id": "PR-12", "result_url": "https://example.com/pr/12",
        "summary": "opened the PR"})
    assert outcome.status_code == 200


def test_flat_and_wire_forms_cannot_be_mixed(client, headers):
    for body in ({"name": "m", "cron": "0 9 * * *", "schedule": {"type": "recurring",
                                                                 "cron": "0 9 * * *"},
                  "callback": {"url": "https://192.0.2.10/h"}},
                 {"name": "m", "cron": "0 9 * * *", "callback": {"url": "https://192.0.2.10/h"}},
                 {"name": "m", "cron": "0 9 * * *", "worker": True, "transport": "worker"},
                 {"name": "m", "callback_url": "https://192.0.2.10/h",
                  "schedule": {"type": "recurring", "cron": "0 9 * * *"}}):
        response = client.post("/v1/cues", json=body, headers=headers)
        assert response.status_code == 422, body
        error = error_of(response)
        assert error["code"] == "validation_error"
        assert "not both" in error["message"], body
    assert client.get("/v1/cues", headers=headers).get_json()["total"] == 0


def test_flat_form_errors(client, headers):
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    cases = [
        ({"name": "e", "cron": "0 9 * * *", "at": future, "worker": True}, "body.at"),
        ({"name": "e", "callback_url": "https://192.0.2.10/h"}, "body.cron"),
        ({"name": "e", "cron": "0 9 * * *", "worker": "maybe"}, "body.worker"),
        ({"name": "e", "cron": 5, "worker": True}, "body.cron"),
        ({"name": "e", "at": "tomorrow", "worker": True}, "body.at"),
        ({"name": "e", "cron": "0 9 * * *"}, "body.callback.url"),  # a webhook needs a URL
        ({"name": "e"}, "body.schedule"),
    ]
    for body, field in cases:
        response = client.post("/v1/cues", json=body, headers=headers)
        assert response.status_code == 422, body
        assert field in [d["field"] for d in error_of(response)["details"]], (body,
                                                                              response.json)
    # The wire's own rules still apply to the translated body.
    zone = client.post("/v1/cues", headers=headers, json={
        "name": "z", "cron": "0 9 * * *", "timezone": "Mars/Olympus", "worker": True})
    assert zone.status_code == 422 and error_of(zone)["code"] == "invalid_timezone"
    cron = client.post("/v1/cues", headers=headers,
                       json={"name": "c", "cron": "every day", "worker": True})
    assert cron.status_code == 400 and error_of(cron)["code"] == "invalid_schedule"
    past = client.post("/v1/cues", headers=headers, json={
        "name": "p", "at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "worker": True})
    assert past.status_code == 400 and error_of(past)["code"] == "invalid_schedule"
    ssrf = client.post("/v1/cues", headers=headers, json={
        "name": "s", "cron": "0 9 * * *", "callback_url": "https://127.0.0.1/h"})
    assert ssrf.status_code == 400 and error_of(ssrf)["code"] == "invalid_callback_url"


def test_flat_form_is_documented(client):
    spec = client.get("/openapi.json").get_json()
    schema = spec["components"]["schemas"]["CueCreate"]
    for name in ("cron", "at", "timezone", "callback_url", "worker"):
        assert "Cueline extension" in schema["properties"][name]["description"]
    assert "schedule" not in schema.get("required", [])
