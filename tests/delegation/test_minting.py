"""Credential minting under delegation: session refresh needs ``keys:mint``, and a session
minted through a principal records it (claim ``prn``) and dies when the principal is revoked."""

from __future__ import annotations

import jwt
import pytest

from app.auth import principals
from tests.delegation.conftest import new_user
from tests.helpers import SESSION_SECRET, error_of, key_headers, mint_session, service_headers

REFRESH = "/v1/auth/session/refresh"


def refresh(client, headers):
    return client.post(REFRESH, headers=headers)


def test_act_only_principal_cannot_mint_a_session(client, principal):
    actor = principal("actor")  # default scopes: users:write users:act
    user_id = new_user(client)
    response = refresh(client, service_headers(user_id, actor))
    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == "missing_scope_keys_mint"
    assert "keys:mint" in error["message"] and "'actor'" in error["message"]
    # It can still act for the user otherwise.
    assert client.get("/v1/auth/me", headers=service_headers(user_id, actor)).status_code == 200


def test_minting_principal_is_recorded_and_carried_through_refresh(app, client, principal):
    minter = principal("minter", scopes=["users:act", "keys:mint"])
    user_id = new_user(client)
    response = refresh(client, service_headers(user_id, minter))
    assert response.status_code == 200, response.get_json()
    session = response.get_json()["session_token"]
    claims = jwt.decode(session, SESSION_SECRET, algorithms=["HS256"])
    with app.app_context():
        principal_id = str(principals.get_principal("minter").id)
    assert claims["sub"] == user_id and claims["prn"] == principal_id
    # The session works on its own, and its refresh keeps naming the principal.
    assert client.get("/v1/auth/me", headers=key_headers(session)).status_code == 200
    again = refresh(client, key_headers(session))
    assert again.status_code == 200
    assert jwt.decode(again.get_json()["session_token"], SESSION_SECRET,
                      algorithms=["HS256"])["prn"] == principal_id


def test_revoking_the_principal_ends_its_sessions(app, client, principal):
    minter = principal("minter", scopes=["users:act", "keys:mint"])
    user_id = new_user(client)
    session = refresh(client, service_headers(user_id, minter)).get_json()["session_token"]
    refreshed = refresh(client, key_headers(session)).get_json()["session_token"]
    # An unrelated session (a device-code login) for the same user is not affected.
    own = mint_session(user_id)
    result = app.test_cli_runner().invoke(args=["services", "revoke", "minter"])
    assert result.exit_code == 0, result.output
    for token in (session, refreshed):
        for response in (client.get("/v1/auth/me", headers=key_headers(token)),
                         refresh(client, key_headers(token))):
            assert response.status_code == 401
            assert error_of(response)["code"] == "session_principal_revoked"
    assert client.get("/v1/auth/me", headers=key_headers(own)).status_code == 200


def test_session_naming_an_unknown_principal_is_refused(client):
    user_id = new_user(client)
    for prn in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        token = mint_session(user_id, minted_by=prn)
        response = client.get("/v1/auth/me", headers=key_headers(token))
        assert response.status_code == 401
        assert error_of(response)["code"] == "session_principal_revoked"


@pytest.mark.parametrize("delegation_on", [True, False])
def test_env_principal_sessions_live_while_delegation_is_on(make_app, delegation_on):
    from tests.helpers import SERVICE_TOKEN

    on = make_app(EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=SERVICE_TOKEN).test_client()
    user_id = new_user(on)
    session = refresh(on, service_headers(user_id)).get_json()["session_token"]
    assert jwt.decode(session, SESSION_SECRET, algorithms=["HS256"])["prn"] == "env"
    later = make_app(EXTERNAL_AUTH_BACKEND=delegation_on,
                     INTERNAL_AUTH_TOKEN=SERVICE_TOKEN if delegation_on else "").test_client()
    response = later.get("/v1/auth/me", headers=key_headers(session))
    assert response.status_code == (200 if delegation_on else 401)


def test_user_credentials_mint_sessions_without_a_principal(client):
    from tests.helpers import register

    api_key, _ = register(client, "plain@example.com")
    session = refresh(client, key_headers(api_key)).get_json()["session_token"]
    assert "prn" not in jwt.decode(session, SESSION_SECRET, algorithms=["HS256"])
