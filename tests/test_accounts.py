"""Account credentials: key rotation and reveal, webhook secrets, account edits, invites, CLI."""

import re
import threading
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select

import app.db as app_db
from app.auth.models import Invite, InviteRedemption
from app.extensions import db
from app.users.models import User
from tests.helpers import (
    error_of,
    key_headers,
    mint_session,
    register,
    service_headers,
    user_id_of,
)

CONFIRM = {"X-Confirm-Destructive": "true"}


@pytest.fixture
def clock(monkeypatch):
    """A controllable clock: ``clock.advance(timedelta)``."""

    class Clock:
        now = datetime.now(UTC)

        def __call__(self):
            return self.now

        def advance(self, delta):
            self.now += delta

    fake = Clock()
    monkeypatch.setattr(app_db, "clock", fake)
    return fake


def test_regenerate_needs_confirmation(client):
    key, _ = register(client)
    for headers in ({}, {"X-Confirm-Destructive": "yes"}, {"X-Confirm-Destructive": "TRUE"}):
        response = client.post("/v1/auth/key/regenerate", headers={**key_headers(key), **headers})
        assert response.status_code == 400
        assert error_of(response)["code"] == "confirmation_required"
    assert client.get("/v1/auth/me", headers=key_headers(key)).status_code == 200


def test_rotated_key_answers_key_rotated_for_24_hours(client, clock):
    old, _ = register(client)
    response = client.post("/v1/auth/key/regenerate", headers={**key_headers(old), **CONFIRM})
    assert response.status_code == 200
    body = response.get_json()
    assert body["previous_key_revoked"] is True
    new = body["api_key"]
    assert re.fullmatch(r"cue_sk_[0-9a-f]{32}", new) and new != old
    assert client.get("/v1/auth/me", headers=key_headers(new)).status_code == 200
    rotated = client.get("/v1/auth/me", headers=key_headers(old))
    assert rotated.status_code == 401
    assert error_of(rotated)["code"] == "key_rotated"
    clock.advance(timedelta(hours=23, minutes=59))
    assert error_of(client.get("/v1/auth/me", headers=key_headers(old)))["code"] == "key_rotated"
    clock.advance(timedelta(minutes=2))
    expired = client.get("/v1/auth/me", headers=key_headers(old))
    assert expired.status_code == 401
    assert error_of(expired)["code"] == "invalid_api_key"


def test_rotating_twice_keeps_both_old_keys_noticed(client):
    first, _ = register(client)
    second = client.post("/v1/auth/key/regenerate",
                         headers={**key_headers(first), **CONFIRM}).get_json()["api_key"]
    third = client.post("/v1/auth/key/regenerate",
                        headers={**key_headers(second), **CONFIRM}).get_json()["api_key"]
    for old in (first, second):
        assert error_of(client.get("/v1/auth/me", headers=key_headers(old)))["code"] == \
            "key_rotated"
    assert client.get("/v1/auth/me", headers=key_headers(third)).status_code == 200


def test_reveal_key(make_app):
    client = make_app().test_client()
    key, _ = register(client)
    before = client.get("/v1/auth/key", headers=key_headers(key)).get_json()
    assert before["api_key"] is None and before["prefix"] == key[:12] and before["message"]
    new = client.post("/v1/auth/key/regenerate",
                      headers={**key_headers(key), **CONFIRM}).get_json()["api_key"]
    assert client.get("/v1/auth/key", headers=key_headers(new)).get_json() == {"api_key": new}
    # A different SESSION_SECRET cannot decrypt the copy: reported, not a 500.
    other = make_app(SESSION_SECRET="another-secret-" + "q" * 32).test_client()
    response = other.get("/v1/auth/key", headers=key_headers(new))
    assert response.status_code == 200
    assert response.get_json()["api_key"] is None
    assert "decrypted" in response.get_json()["message"]


def test_key_regenerate_through_delegation_mints_a_usable_key(delegation_client):
    user_id = str(uuid.uuid4())
    delegation_client.put(f"/v1/internal/users/{user_id}",
                          json={"email": "int@example.com", "slug": "int"},
                          headers=service_headers())
    response = delegation_client.post("/v1/auth/key/regenerate",
                                      headers={**service_headers(user_id), **CONFIRM})
    assert response.status_code == 200
    key = response.get_json()["api_key"]
    assert user_id_of(delegation_client, key) == user_id


@pytest.mark.parametrize("credential", ["api_key", "delegated"])
def test_ten_concurrent_regenerations_give_exactly_one_working_key(make_app, monkeypatch,
                                                                    credential):
    """All ten callers are authenticated before any of them replaces the key (a barrier in
    the key step), so every one of them races for the same row: one 200 whose key works,
    nine ``409 key_rotation_in_progress``, never a 500, nothing half-written."""
    from app.auth import services as auth_services
    from app.auth.models import RotatedApiKey
    from tests.helpers import SERVICE_TOKEN

    app = make_app(EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=SERVICE_TOKEN)
    client = app.test_client()
    old, _ = register(client)
    user_id = user_id_of(client, old)
    callers = 10
    barrier = threading.Barrier(callers)
    real_encrypt = auth_services.encrypt_secret

    def encrypt_after_everyone_authenticated(*args, **kwargs):
        barrier.wait(timeout=60)
        return real_encrypt(*args, **kwargs)

    monkeypatch.setattr(auth_services, "encrypt_secret", encrypt_after_everyone_authenticated)
    headers = (key_headers(old) if credential == "api_key" else service_headers(user_id))
    responses = [None] * callers

    def call(i):
        responses[i] = app.test_client().post("/v1/auth/key/regenerate",
                                              headers={**headers, **CONFIRM})

    threads = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * (callers - 1), statuses
    for response in responses:
        if response.status_code == 409:
            error = error_of(response)
            assert error["code"] == "key_rotation_in_progress"
            assert "at the same moment" in error["message"]
    [winner] = [r.get_json()["api_key"] for r in responses if r.status_code == 200]
    monkeypatch.setattr(auth_services, "encrypt_secret", real_encrypt)
    assert user_id_of(client, winner) == user_id
    assert error_of(client.get("/v1/auth/me", headers=key_headers(old)))["code"] == "key_rotated"
    assert client.get("/v1/auth/key", headers=key_headers(winner)).get_json()["api_key"] == winner
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(RotatedApiKey)) == 1


def test_webhook_secret_get_and_regenerate(client):
    key, _ = register(client)
    secret = client.get("/v1/auth/webhook-secret", headers=key_headers(key)).get_json()[
        "webhook_secret"]
    assert re.fullmatch(r"whsec_[0-9a-f]{64}", secret)
    refused = client.post("/v1/auth/webhook-secret/regenerate", headers=key_headers(key))
    assert error_of(refused)["code"] == "confirmation_required"
    response = client.post("/v1/auth/webhook-secret/regenerate",
                           headers={**key_headers(key), **CONFIRM})
    assert response.status_code == 200
    body = response.get_json()
    assert body["previous_secret_revoked"] is True and body["webhook_secret"] != secret
    assert client.get("/v1/auth/webhook-secret", headers=key_headers(key)).get_json()[
        "webhook_secret"] == body["webhook_secret"]


def test_patch_me(client):
    key, _ = register(client, "old@example.com")
    register(client, "taken@example.com")
    assert error_of(client.patch("/v1/auth/me", json={}, headers=key_headers(key)))["code"] == \
        "no_fields"
    assert client.patch("/v1/auth/me", json={"unknown": 1},
                        headers=key_headers(key)).status_code == 422
    bad = client.patch("/v1/auth/me", json={"email": "nope"}, headers=key_headers(key))
    assert error_of(bad)["code"] == "validation_error"
    taken = client.patch("/v1/auth/me", json={"email": "taken@example.com"},
                         headers=key_headers(key))
    assert taken.status_code == 409 and error_of(taken)["code"] == "duplicate_email"
    ok = client.patch("/v1/auth/me", json={"email": "new@Example.com"}, headers=key_headers(key))
    assert ok.status_code == 200
    assert datetime.fromisoformat(ok.get_json()["updated_at"])
    assert client.get("/v1/auth/me", headers=key_headers(key)).get_json()["email"] == \
        "new@example.com"


def test_session_path_can_manage_the_account(client):
    key, _ = register(client)
    session = mint_session(user_id_of(client, key))
    response = client.post("/v1/auth/key/regenerate", headers={**key_headers(session), **CONFIRM})
    assert response.status_code == 200


# --- invites ------------------------------------------------------------------------------------

def _closed(make_app):
    return make_app(ALLOW_REGISTER=False, EXTERNAL_AUTH_BACKEND=True,
                    INTERNAL_AUTH_TOKEN="svc-test-token-" + "x" * 40)


def _mint(client, **body):
    response = client.post("/v1/internal/invites", json=body, headers=service_headers())
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_invite_lets_a_closed_instance_register(make_app):
    client = _closed(make_app).test_client()
    closed = client.post("/v1/auth/register", json={"email": "x@example.com"})
    assert closed.status_code == 404 and error_of(closed)["code"] == "not_found"
    invite = _mint(client, note="for x")
    assert invite["token"].startswith("inv_") and invite["max_uses"] == 1
    assert invite["created_by"] == "service:env"
    response = client.post("/v1/auth/register", json={"email": "x@example.com",
                                                      "invite": invite["token"]})
    assert response.status_code == 201
    again = client.post("/v1/auth/register", json={"email": "y@example.com",
                                                   "invite": invite["token"]})
    assert again.status_code == 410 and error_of(again)["code"] == "invite_exhausted"
    listed = client.get("/v1/internal/invites", headers=service_headers()).get_json()["invites"]
    assert listed[0]["uses"] == 1 and "token" not in listed[0]
    assert listed[0]["redemptions"][0]["user_id"] == user_id_of(
        client, response.get_json()["api_key"])


def test_invite_errors(make_app, clock):
    client = _closed(make_app).test_client()
    unknown = client.post("/v1/auth/register", json={"email": "a@example.com",
                                                     "invite": "inv_" + "0" * 32})
    assert unknown.status_code == 404 and error_of(unknown)["code"] == "invite_not_found"
    expiring = _mint(client, expires_at=(clock.now + timedelta(hours=1)).isoformat())
    clock.advance(timedelta(hours=2))
    expired = client.post("/v1/auth/register", json={"email": "a@example.com",
                                                     "invite": expiring["token"]})
    assert expired.status_code == 410 and error_of(expired)["code"] == "invite_expired"
    revoked = _mint(client)
    assert client.delete(f"/v1/internal/invites/{revoked['id']}",
                         headers=service_headers()).status_code == 204
    response = client.post("/v1/auth/register", json={"email": "a@example.com",
                                                      "invite": revoked["token"]})
    assert response.status_code == 410 and error_of(response)["code"] == "invite_revoked"
    assert client.delete(f"/v1/internal/invites/{uuid.uuid4()}",
                         headers=service_headers()).status_code == 404
    assert client.post("/v1/internal/invites", json={"max_uses": 0},
                       headers=service_headers()).status_code == 422
    past = client.post("/v1/internal/invites",
                       json={"expires_at": (clock.now - timedelta(days=1)).isoformat()},
                       headers=service_headers())
    assert past.status_code == 400 and error_of(past)["code"] == "invalid_expiry"


def test_invite_email_prefill(make_app):
    client = _closed(make_app).test_client()
    invite = _mint(client, email="Pre@Example.com")
    wrong = client.post("/v1/auth/register", json={"email": "other@example.com",
                                                   "invite": invite["token"]})
    assert wrong.status_code == 400 and error_of(wrong)["code"] == "invite_email_mismatch"
    ok = client.post("/v1/auth/register", json={"invite": invite["token"]})
    assert ok.status_code == 201 and ok.get_json()["email"] == "Pre@example.com"


def test_failed_registration_does_not_consume_the_invite(make_app):
    client = _closed(make_app).test_client()
    invite = _mint(client, max_uses=2)
    client.post("/v1/auth/register", json={"email": "a@example.com", "invite": invite["token"]})
    dup = client.post("/v1/auth/register", json={"email": "a@example.com",
                                                 "invite": invite["token"]})
    assert dup.status_code == 409
    listed = client.get("/v1/internal/invites", headers=service_headers()).get_json()["invites"]
    assert listed[0]["uses"] == 1


def test_multi_use_and_unlimited_invites(make_app):
    client = _closed(make_app).test_client()
    unlimited = _mint(client, max_uses=None)
    for i in range(3):
        assert client.post("/v1/auth/register", json={"email": f"u{i}@example.com",
                                                      "invite": unlimited["token"]}
                           ).status_code == 201


def test_single_use_invite_race_creates_one_user(make_app, live_server):
    app = _closed(make_app)
    server = live_server(app)
    token = _mint(app.test_client())["token"]
    barrier = threading.Barrier(10)
    statuses = []

    def redeem(i):
        with httpx.Client(base_url=server.url, timeout=60) as http:
            barrier.wait()
            statuses.append(http.post("/v1/auth/register", json={
                "email": f"racer{i}@example.com", "invite": token}).status_code)

    threads = [threading.Thread(target=redeem, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201] + [410] * 9
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 1
        assert db.session.scalar(select(func.count()).select_from(InviteRedemption)) == 1
        assert db.session.scalar(select(Invite.uses)) == 1


def test_invite_tokens_are_stored_hashed(make_app):
    app = _closed(make_app)
    token = _mint(app.test_client())["token"]
    with app.app_context():
        invite = db.session.scalars(select(Invite)).one()
        assert token not in {str(getattr(invite, c.name)) for c in Invite.__table__.columns}


# --- CLI ----------------------------------------------------------------------------------------

def test_cli_users_create_and_invites(make_app):
    app = make_app(ALLOW_REGISTER=False)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "create", "ops@example.com"])
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    assert re.fullmatch(r"cue_sk_[0-9a-f]{32}", key)
    client = app.test_client()
    assert user_id_of(client, key)
    dup = runner.invoke(args=["users", "create", "ops@example.com"])
    assert dup.exit_code != 0 and "duplicate_email" in dup.output
    made = runner.invoke(args=["invites", "create", "--uses", "2", "--expires-in-days", "7"])
    assert made.exit_code == 0, made.output
    token = made.output.strip().splitlines()[-1]
    assert client.post("/v1/auth/register", json={"email": "n@example.com",
                                                  "invite": token}).status_code == 201
    listed = runner.invoke(args=["invites", "list"])
    assert "uses 1/2" in listed.output and "active" in listed.output
    invite_id = listed.output.split()[0]
    assert runner.invoke(args=["invites", "revoke", invite_id]).exit_code == 0
    assert "revoked" in runner.invoke(args=["invites", "list"]).output
    assert client.post("/v1/auth/register", json={"email": "m@example.com",
                                                  "invite": token}).status_code == 410
