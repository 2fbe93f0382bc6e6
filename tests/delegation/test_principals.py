"""Named service principals: both header forms, rotation, revocation, env-token rotation,
scopes, ``last_used_at``, and the ``flask services`` commands."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from app import db as app_db
from app.auth import principals
from app.auth.audit import flush_audit
from app.auth.models import ServiceKey, ServicePrincipalRecord
from app.extensions import db
from tests.delegation.conftest import me, new_user, upsert
from tests.helpers import (
    SERVICE_TOKEN,
    error_of,
    key_headers,
    register,
    service_headers,
)


@pytest.mark.parametrize("style", ["bearer", "key"])
def test_principal_key_works_in_both_header_forms(client, principal, style):
    token = principal("crm")
    assert token.startswith("svc_") and len(token) > 40
    user_id = new_user(client, token)
    response = me(client, token, user_id, style=style)
    assert response.status_code == 200
    assert response.get_json()["auth_path"] == "delegated"
    assert upsert(client, token, style=style).status_code == 200


def test_principal_key_is_stored_hashed(app, principal):
    token = principal("crm")
    with app.app_context():
        key = db.session.scalars(db.select(ServiceKey)).one()
        assert token not in (key.key_hash, key.key_prefix)
        assert key.key_prefix == token[:12]


def test_principal_key_refused_when_delegation_is_off(make_app):
    app = make_app()
    with app.app_context():
        token = principals.create_principal("crm").token
    client = app.test_client()
    key, _ = register(client)
    user_id = client.get("/v1/auth/me", headers=key_headers(key)).get_json()["id"]
    for style in ("bearer", "key"):
        response = client.get("/v1/auth/me", headers=service_headers(user_id, token, style))
        assert response.status_code == 401, style


@pytest.mark.parametrize("style", ["bearer", "key"])
def test_unknown_svc_key_is_invalid_internal_token(client, style):
    user_id = new_user(client)
    response = me(client, "svc_" + "x" * 43, user_id, style=style)
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_internal_token"


def test_rotation_two_live_keys_then_one_retired(app, client, principal):
    old = principal("crm")
    user_id = new_user(client, old)
    with app.app_context():
        new = principals.rotate_key("crm").token
    assert me(client, old, user_id).status_code == 200
    assert me(client, new, user_id).status_code == 200
    with app.app_context():
        with pytest.raises(Exception) as too_many:
            principals.rotate_key("crm")
        assert too_many.value.code == "too_many_keys"
        principals.retire_key("crm")  # the oldest
    response = me(client, old, user_id)
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_internal_token"
    assert me(client, new, user_id).status_code == 200
    with app.app_context():
        with pytest.raises(Exception) as last:
            principals.retire_key("crm")
        assert last.value.code == "last_live_key"


def test_retire_a_named_key(app, client, principal):
    first = principal("crm")
    user_id = new_user(client, first)
    with app.app_context():
        second = principals.rotate_key("crm")
        principals.retire_key("crm", second.key.key_prefix)
    assert me(client, second.token, user_id).status_code == 401
    assert me(client, first, user_id).status_code == 200


def test_revocation_is_effective_on_the_next_request(app, client, principal):
    token = principal("crm")
    user_id = new_user(client, token)
    assert me(client, token, user_id).status_code == 200
    with app.app_context():
        principals.revoke_principal("crm")
    for response in (me(client, token, user_id), upsert(client, token)):
        assert response.status_code == 401
        assert error_of(response)["code"] == "invalid_internal_token"
    with app.app_context():
        with pytest.raises(Exception) as revoked:
            principals.rotate_key("crm")
        assert revoked.value.code == "principal_revoked"


def test_principal_names_are_checked(app, principal):
    principal("crm")
    with app.app_context():
        for name, code in (("crm", "principal_exists"), ("env", "invalid_principal_name"),
                           ("Bad Name", "invalid_principal_name")):
            with pytest.raises(Exception) as exc:
                principals.create_principal(name)
            assert exc.value.code == code
        with pytest.raises(Exception) as exc:
            principals.create_principal("other", scopes=["users:delete"])
        assert exc.value.code == "invalid_scope"


def test_env_token_previous_is_accepted_during_rotation(make_app):
    new_token = "n" * 48
    app = make_app(EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=new_token,
                   INTERNAL_AUTH_TOKEN_PREVIOUS=SERVICE_TOKEN)
    client = app.test_client()
    user_id = new_user(client, SERVICE_TOKEN)
    for token in (SERVICE_TOKEN, new_token):
        for style in ("bearer", "key"):
            assert me(client, token, user_id, style).status_code == 200
    after = make_app(EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=new_token).test_client()
    assert me(after, SERVICE_TOKEN, user_id).status_code == 401
    assert me(after, new_token, user_id).status_code == 200


def test_env_previous_token_is_validated(make_app):
    from config import ConfigError

    with pytest.raises(ConfigError) as exc:
        make_app(EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=SERVICE_TOKEN,
                 INTERNAL_AUTH_TOKEN_PREVIOUS="short")
    assert "INTERNAL_AUTH_TOKEN_PREVIOUS" in str(exc.value)
    with pytest.raises(ConfigError):
        make_app(EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=SERVICE_TOKEN,
                 INTERNAL_AUTH_TOKEN_PREVIOUS=SERVICE_TOKEN)


# --- scopes -------------------------------------------------------------------------------------


def test_act_needs_users_act(client, principal):
    writer = principal("writer", scopes=["users:write"])
    user_id = new_user(client, writer)
    response = me(client, writer, user_id)
    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == "missing_scope_users_act" and error["scope"] == "users:act"


def test_write_needs_users_write(client, principal):
    actor = principal("actor", scopes=["users:act"])
    user_id = new_user(client)
    assert me(client, actor, user_id).status_code == 200
    calls = [
        upsert(client, actor),
        client.get(f"/v1/internal/users/{user_id}", headers=service_headers(token=actor)),
        client.delete(f"/v1/internal/users/{user_id}", headers=service_headers(token=actor)),
        client.put("/v1/internal/users", json={"users": []}, headers=service_headers(token=actor)),
        client.get("/v1/internal/audit", headers=service_headers(token=actor)),
        client.post("/v1/internal/invites", json={}, headers=service_headers(token=actor)),
    ]
    for response in calls:
        assert response.status_code == 403, response.request.path
        assert error_of(response)["code"] == "missing_scope_users_write"


def test_key_regeneration_needs_keys_mint(client, principal):
    plain = principal("plain")
    minter = principal("minter", scopes=["users:act", "keys:mint"])
    user_id = new_user(client)
    confirm = {"X-Confirm-Destructive": "true"}
    refused = client.post("/v1/auth/key/regenerate",
                          headers={**service_headers(user_id, plain), **confirm})
    assert refused.status_code == 403
    assert error_of(refused)["code"] == "missing_scope_keys_mint"
    minted = client.post("/v1/auth/key/regenerate",
                         headers={**service_headers(user_id, minter), **confirm})
    assert minted.status_code == 200
    api_key = minted.get_json()["api_key"]
    # The user's own key is not subject to service scopes.
    assert client.post("/v1/auth/key/regenerate",
                       headers={**key_headers(api_key), **confirm}).status_code == 200
    # The env principal has every scope.
    assert client.post("/v1/auth/key/regenerate",
                       headers={**service_headers(user_id), **confirm}).status_code == 200


# --- last_used_at -------------------------------------------------------------------------------


def test_last_used_at_is_written_at_most_once_a_minute(app, client, principal, monkeypatch):
    token = principal("crm")
    base = app_db.utcnow()
    now = [base]
    monkeypatch.setattr(app_db, "clock", lambda: now[0])
    user_id = new_user(client, token)

    def last_used():
        flush_audit(app)
        with app.app_context():
            return db.session.scalars(db.select(ServiceKey.last_used_at)).one()

    first = last_used()
    assert first == base
    now[0] = base + timedelta(seconds=30)
    me(client, token, user_id)
    assert last_used() == base  # within the minute: not rewritten
    now[0] = base + timedelta(seconds=61)
    me(client, token, user_id)
    assert last_used() == base + timedelta(seconds=61)


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_create_rotate_retire_revoke_list(app, client):
    runner = app.test_cli_runner()
    created = runner.invoke(args=["services", "create", "billing", "--owner", "acme",
                                  "--scope", "users:act", "--scope", "users:write"])
    assert created.exit_code == 0, created.output
    token = created.output.strip().splitlines()[-1]
    assert token.startswith("svc_")
    user_id = new_user(client, token)
    rotated = runner.invoke(args=["services", "rotate", "billing"])
    assert rotated.exit_code == 0, rotated.output
    new_token = rotated.output.strip().splitlines()[-2]
    assert new_token.startswith("svc_") and new_token != token
    assert me(client, new_token, user_id).status_code == 200
    listed = runner.invoke(args=["services", "list"])
    assert "billing  active  owner acme  scopes users:act users:write" in listed.output
    assert listed.output.count(" live ") == 2
    assert token not in listed.output and new_token not in listed.output
    assert runner.invoke(args=["services", "retire-key", "billing"]).exit_code == 0
    assert me(client, token, user_id).status_code == 401
    assert runner.invoke(args=["services", "revoke", "billing"]).exit_code == 0
    assert me(client, new_token, user_id).status_code == 401
    again = runner.invoke(args=["services", "create", "billing"])
    assert again.exit_code != 0 and "principal_exists" in again.output
    with app.app_context():
        row = db.session.scalars(db.select(ServicePrincipalRecord)).one()
        assert row.revoked_at is not None and row.owner == "acme"


def test_internal_invites_work_for_a_named_principal(client, principal):
    token = principal("crm")
    response = client.post("/v1/internal/invites", json={},
                           headers=service_headers(token=token))
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["created_by"] == "service:crm"


def test_unbound_principal_sets_external_owner_from_body(app, client, principal):
    from app.users.models import User

    token = principal("crm")
    user_id = new_user(client, token, external_owner="tenant-1")
    with app.app_context():
        assert db.session.get(User, uuid.UUID(user_id)).external_owner == "tenant-1"
