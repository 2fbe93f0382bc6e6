"""Path 1 (API keys) and Path 3 (session JWTs), and registration."""

import hashlib
import re
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.extensions import db
from app.users.models import User
from tests.helpers import error_of, key_headers, mint_session, register

ME_FIELDS = {"id", "email", "slug", "plan", "active_cues", "active_cue_limit",
             "executions_this_month", "monthly_execution_limit", "monthly_message_limit",
             "rate_limit_per_minute", "has_webhook_secret", "api_key_prefix", "auth_path"}


def _user(app, email) -> User:
    with app.app_context():
        return db.session.execute(select(User).where(User.email == email)).scalar_one()


def test_register_returns_key_once_and_stores_only_its_hash(app, client):
    response = client.post("/v1/auth/register", json={"email": "ada@example.com"})
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"api_key", "email"}
    key = body["api_key"]
    assert re.fullmatch(r"cue_sk_[0-9a-f]{32}", key)
    user = _user(app, "ada@example.com")
    assert user.api_key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert user.api_key_prefix == key[:12]
    assert user.api_key_encrypted is None
    assert all(key not in str(getattr(user, c.name)) for c in User.__table__.columns
               if c.name != "api_key_prefix")
    assert re.fullmatch(r"whsec_[0-9a-f]{64}", user.webhook_secret)
    assert (user.plan, user.active_cue_limit, user.monthly_execution_limit,
            user.monthly_message_limit, user.rate_limit_per_minute) == ("free", 10, 300, 300, 60)


def test_register_lowercases_domain_and_derives_slug(client):
    _, body = register(client, "Grace.Hopper+ops@Navy.MIL")
    assert body["email"] == "Grace.Hopper+ops@navy.mil"
    key = body["api_key"]
    assert client.get("/v1/auth/me", headers=key_headers(key)).get_json()["slug"] == \
        "grace-hopper-ops"


def test_slug_collision_gets_a_suffix(client):
    key1, _ = register(client, "sam@one.example")
    key2, _ = register(client, "sam@two.example")
    slug1 = client.get("/v1/auth/me", headers=key_headers(key1)).get_json()["slug"]
    slug2 = client.get("/v1/auth/me", headers=key_headers(key2)).get_json()["slug"]
    assert slug1 == "sam"
    assert re.fullmatch(r"sam-[0-9a-f]{4}", slug2)


def test_slug_of_symbols_only_local_part_falls_back(client):
    key, _ = register(client, "+++@example.com")
    assert client.get("/v1/auth/me", headers=key_headers(key)).get_json()["slug"] == "user"


def test_duplicate_email_is_409(client):
    register(client, "dup@example.com")
    response = client.post("/v1/auth/register", json={"email": "dup@EXAMPLE.com"})
    assert response.status_code == 409
    assert error_of(response)["code"] == "duplicate_email"


def test_register_closed(make_app):
    client = make_app(ALLOW_REGISTER=False).test_client()
    response = client.post("/v1/auth/register", json={"email": "x@example.com"})
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_register_closed_is_ignored_in_development(make_app):
    client = make_app(ALLOW_REGISTER=False, ENV="development").test_client()
    assert client.post("/v1/auth/register", json={"email": "x@example.com"}).status_code == 201


def test_me_returns_the_cli_fields(client):
    key, _ = register(client, "me@example.com")
    response = client.get("/v1/auth/me", headers=key_headers(key))
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == ME_FIELDS
    assert body["email"] == "me@example.com"
    assert (body["plan"], body["active_cue_limit"], body["monthly_execution_limit"]) == \
        ("free", 10, 300)
    assert body["api_key_prefix"] == key[:12]
    assert body["auth_path"] == "api_key"
    assert body["has_webhook_secret"] is True


def test_unknown_key_is_401_invalid_api_key(client):
    response = client.get("/v1/auth/me", headers=key_headers("cue_sk_" + "0" * 32))
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"


def test_missing_or_non_bearer_credential_is_401_invalid_api_key(client):
    assert error_of(client.get("/v1/auth/me"))["code"] == "invalid_api_key"
    response = client.get("/v1/auth/me", headers={"Authorization": "Basic abc"})
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"


def test_garbage_bearer_is_invalid_session(client):
    response = client.get("/v1/auth/me", headers=key_headers("garbage"))
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_session"


def test_session_token_authenticates(client):
    key, _ = register(client, "sess@example.com")
    user_id = client.get("/v1/auth/me", headers=key_headers(key)).get_json()["id"]
    response = client.get("/v1/auth/me", headers=key_headers(mint_session(user_id)))
    assert response.status_code == 200
    assert response.get_json()["auth_path"] == "session"
    assert response.get_json()["email"] == "sess@example.com"


def test_expired_session(client):
    key, _ = register(client)
    user_id = client.get("/v1/auth/me", headers=key_headers(key)).get_json()["id"]
    token = mint_session(user_id, now=datetime.now(UTC) - timedelta(hours=25))
    response = client.get("/v1/auth/me", headers=key_headers(token))
    assert response.status_code == 401
    assert error_of(response)["code"] == "session_expired"


def test_session_signed_with_another_secret_is_invalid(client):
    key, _ = register(client)
    user_id = client.get("/v1/auth/me", headers=key_headers(key)).get_json()["id"]
    token = mint_session(user_id, secret="another-secret-" + "z" * 32)
    assert error_of(client.get("/v1/auth/me", headers=key_headers(token)))["code"] == \
        "invalid_session"


def test_session_of_wrong_type_is_invalid(client):
    import jwt

    from tests.helpers import SESSION_SECRET

    now = int(datetime.now(UTC).timestamp())
    token = jwt.encode({"sub": str(uuid.uuid4()), "type": "refresh", "iat": now,
                        "exp": now + 60}, SESSION_SECRET, algorithm="HS256")
    assert error_of(client.get("/v1/auth/me", headers=key_headers(token)))["code"] == \
        "invalid_session"


def test_session_for_missing_user_is_user_not_found(client):
    response = client.get("/v1/auth/me", headers=key_headers(mint_session(uuid.uuid4())))
    assert response.status_code == 401
    assert error_of(response)["code"] == "user_not_found"


def test_sessions_unusable_without_secret(make_app):
    client = make_app(SESSION_SECRET="").test_client()
    key, _ = register(client)
    user_id = client.get("/v1/auth/me", headers=key_headers(key)).get_json()["id"]
    response = client.get("/v1/auth/me", headers=key_headers(mint_session(user_id)))
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_session"
