"""Structured request logs: one JSON line per request, and never a key, token or secret."""

import json
import uuid

from tests.helpers import SERVICE_TOKEN, SESSION_SECRET, key_headers, mint_session, service_headers

CONFIRM = {"X-Confirm-Destructive": "true"}


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_one_json_line_per_request(delegation_client, capfd):
    user_id = str(uuid.uuid4())
    delegation_client.put(f"/v1/internal/users/{user_id}", headers=service_headers(),
                          json={"email": "log@example.com", "slug": "log"})
    delegation_client.get("/v1/auth/me?probe=1", headers=service_headers(user_id))
    delegation_client.get("/v1/nope")
    requests = [e for e in _lines(capfd.readouterr().err) if e["logger"] == "cueline.request"]
    assert [(e["method"], e["path"], e["status"]) for e in requests] == [
        ("PUT", f"/v1/internal/users/{user_id}", 200), ("GET", "/v1/auth/me", 200),
        ("GET", "/v1/nope", 404)]
    me = requests[1]
    assert (me["user_id"], me["auth_path"], me["principal"]) == (user_id, "delegated", "env")
    assert len(me["request_id"]) == 36 and me["duration_ms"] >= 0
    assert requests[0]["auth_path"] == "service"


def test_no_secret_reaches_the_logs(delegation_client, capfd, caplog):
    client = delegation_client
    secrets_seen = {SERVICE_TOKEN, SESSION_SECRET}
    response = client.post("/v1/auth/register", json={"email": "s@example.com"})
    key = response.get_json()["api_key"]
    secrets_seen.add(key)
    user_id = client.get("/v1/auth/me", headers=key_headers(key)).get_json()["id"]
    new_key = client.post("/v1/auth/key/regenerate",
                          headers={**key_headers(key), **CONFIRM}).get_json()["api_key"]
    secrets_seen.add(new_key)
    client.get("/v1/auth/me", headers=key_headers(key))  # rotated key → 401
    session = mint_session(user_id)
    secrets_seen.add(session)
    client.get("/v1/auth/me", headers=key_headers(session))
    client.get(f"/v1/auth/key?token={new_key}", headers=key_headers(new_key))
    secrets_seen.add(client.get("/v1/auth/webhook-secret", headers=key_headers(new_key))
                     .get_json()["webhook_secret"])
    secrets_seen.add(client.post("/v1/auth/webhook-secret/regenerate",
                                 headers={**key_headers(new_key), **CONFIRM})
                     .get_json()["webhook_secret"])
    secrets_seen.add(client.post("/v1/internal/invites", json={}, headers=service_headers())
                     .get_json()["token"])
    client.get("/v1/auth/me", headers=service_headers(user_id, style="key"))
    client.get("/v1/auth/me", headers=service_headers(user_id, token="wrong-" + SERVICE_TOKEN))
    client.post("/v1/auth/register", json={"email": "s@example.com"})  # 409
    captured = capfd.readouterr()
    text = captured.out + captured.err + caplog.text
    assert "cueline.request" in text
    for secret in secrets_seen:
        assert secret not in text
