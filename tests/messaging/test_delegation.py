"""Messaging under delegation (Path 2): an integrator acting for a user."""

from __future__ import annotations

import uuid

from tests.helpers import SERVICE_TOKEN, error_of, service_headers


def _upsert(client, email):
    user_id = str(uuid.uuid4())
    slug = email.split("@")[0]
    response = client.put(f"/v1/internal/users/{user_id}",
                          headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
                          json={"email": email, "slug": slug})
    assert response.status_code in (200, 201), response.get_json()
    return user_id, slug


def _agent(client, user_id, name):
    response = client.post("/v1/agents", headers=service_headers(user_id),
                           json={"display_name": name})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_integrator_sends_as_users_agents(delegation_client):
    a_id, a_slug = _upsert(delegation_client, "ann@example.com")
    a1, a2 = _agent(delegation_client, a_id, "One"), _agent(delegation_client, a_id, "Two")
    assert a1["user_id"] == a_id
    for style in ("bearer", "key"):
        sent = delegation_client.post(
            "/v1/messages", headers={**service_headers(a_id, style=style),
                                     "X-Cueapi-From-Agent": f"{a1['slug']}@{a_slug}"},
            json={"to": a2["id"], "body": "on behalf"})
        assert sent.status_code == 201, sent.get_json()
        assert sent.get_json()["user_id"] == a_id
    inbox = delegation_client.get(f"/v1/agents/{a2['id']}/inbox",
                                  headers=service_headers(a_id)).get_json()
    assert inbox["total"] == 2


def test_delegated_user_cannot_use_another_users_agent(delegation_client):
    a_id, _ = _upsert(delegation_client, "ann@example.com")
    b_id, _ = _upsert(delegation_client, "ben@example.com")
    a1, b1 = _agent(delegation_client, a_id, "A"), _agent(delegation_client, b_id, "B")
    as_b = delegation_client.post(
        "/v1/messages", headers={**service_headers(b_id), "X-Cueapi-From-Agent": a1["id"]},
        json={"to": b1["id"], "body": "x"})
    assert as_b.status_code == 403 and error_of(as_b)["code"] == "from_agent_not_owned"
    # the authorization backend still decides cross-user sends (same-tenant default)
    cross = delegation_client.post(
        "/v1/messages", headers={**service_headers(a_id), "X-Cueapi-From-Agent": a1["id"]},
        json={"to": b1["id"], "body": "x"})
    assert cross.status_code == 404
    assert error_of(cross)["code"] == "agent_not_found"
    hidden = delegation_client.get(f"/v1/agents/{a1['id']}", headers=service_headers(b_id))
    assert hidden.status_code == 404


def test_allowlist_applies_to_delegated_sends(make_app):
    from tests.helpers import SERVICE_TOKEN as token

    app = make_app(EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=token)
    client = app.test_client()
    a_id, _ = _upsert(client, "ann@example.com")
    b_id, _ = _upsert(client, "ben@example.com")
    a1, b1 = _agent(client, a_id, "A"), _agent(client, b_id, "B")
    allowed = make_app(EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=token,
                       AUTHORIZATION_BACKEND="app.messaging.authorization:"
                                             "AllowlistAuthorizationBackend",
                       AUTHZ_ALLOWLIST=f"{a_id}:{b_id}").test_client()
    sent = allowed.post("/v1/messages",
                        headers={**service_headers(a_id), "X-Cueapi-From-Agent": a1["id"]},
                        json={"to": b1["id"], "body": "x"})
    assert sent.status_code == 201
    back = allowed.post("/v1/messages",
                        headers={**service_headers(b_id), "X-Cueapi-From-Agent": b1["id"]},
                        json={"to": a1["id"], "body": "x"})
    assert back.status_code == 404
    msg = sent.get_json()["id"]
    assert allowed.get(f"/v1/messages/{msg}", headers=service_headers(b_id)).status_code == 200
