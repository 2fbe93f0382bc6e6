"""Owner binding: a principal with an owner tag acts only for that owner's users."""

from __future__ import annotations

import uuid

import pytest

from app.extensions import db
from app.users.models import User
from tests.delegation.conftest import me, new_user, upsert
from tests.helpers import SERVICE_TOKEN, error_of, key_headers, register, service_headers


def _owner_of(app, user_id):
    with app.app_context():
        return db.session.get(User, uuid.UUID(str(user_id))).external_owner


def test_upsert_stamps_owner_from_principal_never_from_body(app, client, principal):
    acme = principal("acme-app", owner="acme")
    user_id = new_user(client, acme, external_owner="globex")
    assert _owner_of(app, user_id) == "acme"
    # Updating it again with a forged owner keeps the principal's.
    response = upsert(client, acme, user_id=user_id, external_owner="globex", plan="pro")
    assert response.status_code == 200 and response.get_json()["plan"] == "pro"
    assert _owner_of(app, user_id) == "acme"


def test_cannot_take_over_another_owners_user(app, client, principal):
    acme = principal("acme-app", owner="acme")
    globex = principal("globex-app", owner="globex")
    user_id = new_user(client, acme, plan="pro")
    for token in (globex,):
        response = upsert(client, token, user_id=user_id, plan="free")
        assert response.status_code == 409
        assert error_of(response)["code"] == "user_owned_by_another_owner"
    # Unowned users (self-registered, or created by an unbound principal) are not takeable either.
    unowned = new_user(client)
    assert upsert(client, acme, user_id=unowned).status_code == 409
    with app.app_context():
        user = db.session.get(User, uuid.UUID(user_id))
        assert (user.plan, user.external_owner) == ("pro", "acme")
        assert db.session.get(User, uuid.UUID(unowned)).external_owner is None


@pytest.mark.parametrize("style", ["bearer", "key"])
def test_cross_owner_on_behalf_of_is_indistinguishable_from_unknown(client, principal, style):
    acme = principal("acme-app", owner="acme")
    globex = principal("globex-app", owner="globex")
    theirs = new_user(client, globex)
    missing = str(uuid.uuid4())
    cross = me(client, acme, theirs, style)
    unknown = me(client, acme, missing, style)
    assert cross.status_code == unknown.status_code == 404
    cross_body, unknown_body = cross.get_json(), unknown.get_json()
    cross_body["error"]["message"] = cross_body["error"]["message"].replace(theirs, "ID")
    unknown_body["error"]["message"] = unknown_body["error"]["message"].replace(missing, "ID")
    assert cross_body == unknown_body
    assert cross_body["error"]["code"] == "user_not_found"
    assert set(cross.headers.keys()) - {"X-Request-Id"} == \
        set(unknown.headers.keys()) - {"X-Request-Id"}
    # The owner's own principal and the unbound env principal do reach the user.
    assert me(client, globex, theirs, style).status_code == 200
    assert client.get("/v1/auth/me", headers=service_headers(theirs, style=style)).status_code \
        == 200


def test_cross_owner_internal_read_and_deactivate_are_404(client, principal):
    acme = principal("acme-app", owner="acme")
    globex = principal("globex-app", owner="globex")
    theirs = new_user(client, globex)
    for method in ("get", "delete"):
        response = getattr(client, method)(f"/v1/internal/users/{theirs}",
                                           headers=service_headers(token=acme))
        assert response.status_code == 404
        assert error_of(response)["code"] == "user_not_found"
    assert me(client, globex, theirs).status_code == 200  # not deactivated


def test_bound_principal_cannot_act_for_self_registered_user(client, principal):
    acme = principal("acme-app", owner="acme")
    key, _ = register(client)
    user_id = client.get("/v1/auth/me", headers=key_headers(key)).get_json()["id"]
    assert me(client, acme, user_id).status_code == 404


def test_bulk_sync_respects_owner_binding(app, client, principal):
    acme = principal("acme-app", owner="acme")
    globex = principal("globex-app", owner="globex")
    theirs = new_user(client, globex)
    mine = str(uuid.uuid4())
    response = client.put("/v1/internal/users", headers=service_headers(token=acme), json={
        "users": [{"id": theirs, "email": "t@example.com", "slug": "t"},
                  {"id": mine, "email": "m@example.com", "slug": "m",
                   "external_owner": "globex"}]})
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert results[0]["status"] == "error"
    assert results[0]["error"]["code"] == "user_owned_by_another_owner"
    assert results[1] == {"id": mine, "status": "created"}
    assert _owner_of(app, mine) == "acme" and _owner_of(app, theirs) == "globex"


def test_invites_are_owner_scoped(app, client, principal):
    """An owner-bound principal sees and revokes only its owner's invites; another owner's
    invite answers exactly like a missing one.  Unbound principals still see every invite."""
    acme = principal("acme-app", owner="acme")
    globex = principal("globex-app", owner="globex")

    def mint(token, email):
        response = client.post("/v1/internal/invites", json={"email": email},
                               headers=service_headers(token=token))
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    acme_invite = mint(acme, "ann@acme.example")
    globex_invite = mint(globex, "gus@globex.example")
    env_invite = mint(SERVICE_TOKEN, "eve@example.com")

    def listed(token):
        response = client.get("/v1/internal/invites", headers=service_headers(token=token))
        assert response.status_code == 200
        return {i["email"] for i in response.get_json()["invites"]}

    assert listed(acme) == {"ann@acme.example"}
    assert listed(globex) == {"gus@globex.example"}
    assert listed(SERVICE_TOKEN) == {"ann@acme.example", "gus@globex.example",
                                     "eve@example.com"}
    missing = client.delete(f"/v1/internal/invites/{uuid.uuid4()}",
                            headers=service_headers(token=acme))
    for foreign in (globex_invite["id"], env_invite["id"]):
        refused = client.delete(f"/v1/internal/invites/{foreign}",
                                headers=service_headers(token=acme))
        assert refused.status_code == 404
        assert refused.get_json() == missing.get_json()  # same code, message and status
    # Nothing was revoked: globex's invite still registers its invitee ...
    registered = client.post("/v1/auth/register", json={"invite": globex_invite["token"]})
    assert registered.status_code == 201, registered.get_json()
    # ... who belongs to globex, so globex (and not acme) may act for them.
    key = registered.get_json()["api_key"]
    user_id = client.get("/v1/auth/me", headers=key_headers(key)).get_json()["id"]
    assert _owner_of(app, user_id) == "globex"
    assert me(client, globex, user_id).status_code == 200
    assert me(client, acme, user_id).status_code == 404
    # acme revokes its own invite.
    assert client.delete(f"/v1/internal/invites/{acme_invite['id']}",
                         headers=service_headers(token=acme)).status_code == 204
    gone = client.post("/v1/auth/register", json={"invite": acme_invite["token"]})
    assert gone.status_code == 410 and error_of(gone)["code"] == "invite_revoked"
    # An invite minted by the env token (no owner) leaves its user unowned.
    env_user = client.post("/v1/auth/register", json={"invite": env_invite["token"]})
    env_user_id = client.get("/v1/auth/me", headers=key_headers(
        env_user.get_json()["api_key"])).get_json()["id"]
    assert _owner_of(app, env_user_id) is None
