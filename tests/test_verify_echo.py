"""Body-verify echo on every write (§1.10): ``X-CueAPI-Verify-Echo: true`` makes a 2xx JSON
answer carry what the server received (app.verify_echo)."""

from __future__ import annotations

import hashlib
import json
import uuid

from tests.helpers import SERVICE_TOKEN, key_headers, register

ECHO = {"X-CueAPI-Verify-Echo": "true"}
EMPTY = hashlib.sha256(b"").hexdigest()


def _canonical_sha(value) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_creates_echo_the_parsed_body(client):
    headers = key_headers(register(client)[0])
    agent_body = {"display_name": "Agënt ✓", "slug": "echo-agent", "metadata": {"b": 2, "a": 1}}
    agent = client.post("/v1/agents", json=agent_body, headers={**headers, **ECHO})
    assert agent.status_code == 201
    assert agent.get_json()["body_received"] == agent_body
    assert agent.get_json()["body_received_sha256"] == _canonical_sha(agent_body)
    assert agent.get_json()["id"].startswith("agt_")  # the normal answer is all there
    cue_body = {"name": "echoed", "transport": "worker",
                "schedule": {"type": "recurring", "cron": "0 9 * * *"}}
    cue = client.post("/v1/cues", json=cue_body, headers={**headers, "X-CueAPI-Verify-Echo":
                                                           " TRUE "})
    assert cue.status_code == 201 and cue.get_json()["body_received"] == cue_body
    assert cue.get_json()["body_received_sha256"] == _canonical_sha(cue_body)
    patch = client.patch(f"/v1/cues/{cue.get_json()['id']}", json={"status": "paused"},
                         headers={**headers, **ECHO})
    assert patch.get_json()["body_received"] == {"status": "paused"}
    fire_body = {"payload_override": {"n": 1}}
    fired = client.post(f"/v1/cues/{cue.get_json()['id']}/fire", json=fire_body,
                        headers={**headers, **ECHO}).get_json()
    assert fired["body_received"] == fire_body
    assert fired["body_received_sha256"] == _canonical_sha(fire_body)
    bare = client.post(f"/v1/cues/{cue.get_json()['id']}/fire", headers={**headers, **ECHO})
    assert bare.get_json()["body_received"] is None  # the spec's fire form
    assert bare.get_json()["body_received_sha256"] == EMPTY


def test_no_echo_without_the_header_on_errors_or_on_reads(client):
    headers = key_headers(register(client)[0])
    plain = client.post("/v1/agents", json={"display_name": "A"}, headers=headers)
    assert "body_received" not in plain.get_json()
    other = client.post("/v1/agents", json={"display_name": "B"},
                        headers={**headers, "X-CueAPI-Verify-Echo": "yes"})
    assert "body_received" not in other.get_json()
    failed = client.post("/v1/agents", json={}, headers={**headers, **ECHO})
    assert failed.status_code == 422 and "body_received" not in failed.get_json()
    read = client.get("/v1/agents", headers={**headers, **ECHO})
    assert "body_received" not in read.get_json()


def test_a_body_that_is_not_json_echoes_its_text(client):
    headers = key_headers(register(client)[0])
    cue = client.post("/v1/cues", headers=headers, json={
        "name": "w", "transport": "worker",
        "schedule": {"type": "recurring", "cron": "0 9 * * *"}}).get_json()
    execution_id = client.post(f"/v1/cues/{cue['id']}/fire", headers=headers).get_json()["id"]
    client.post(f"/v1/executions/{execution_id}/claim", json={"worker_id": "w"},
                headers=headers)
    beat = client.post(f"/v1/executions/{execution_id}/heartbeat", data="still at it ✓",
                       content_type="text/plain", headers={**headers, **ECHO})
    assert beat.status_code == 200
    assert beat.get_json()["body_received"] == "still at it ✓"
    assert beat.get_json()["body_received_sha256"] == hashlib.sha256(
        "still at it ✓".encode()).hexdigest()


def test_messages_keep_the_string_form(client):
    headers = key_headers(register(client)[0])
    sender = client.post("/v1/agents", json={"display_name": "S"}, headers=headers).get_json()
    sent = client.post("/v1/messages", json={"to": sender["id"], "body": "héllo"},
                       headers={**headers, **ECHO, "X-Cueapi-From-Agent": sender["id"]})
    assert sent.status_code == 201
    assert sent.get_json()["body_received"] == "héllo"
    assert sent.get_json()["body_received_sha256"] == hashlib.sha256(
        "héllo".encode()).hexdigest()


def test_put_is_echoed_too(delegation_client):
    user_id = str(uuid.uuid4())
    body = {"email": f"{user_id[:8]}@example.com", "slug": f"u-{user_id[:8]}"}
    response = delegation_client.put(f"/v1/internal/users/{user_id}", json=body, headers={
        "Authorization": f"Bearer {SERVICE_TOKEN}", **ECHO})
    assert response.status_code == 200 and response.get_json()["body_received"] == body


def test_every_write_documents_the_header(client):
    spec = client.get("/openapi.json").get_json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":  # path-level parameters, not an operation
                continue
            names = [p["name"].lower() for p in operation.get("parameters", [])
                     if p.get("in") == "header"]
            if method in ("post", "patch", "put"):
                assert names.count("x-cueapi-verify-echo") == 1, (method, path)
            else:
                assert "x-cueapi-verify-echo" not in names, (method, path)
