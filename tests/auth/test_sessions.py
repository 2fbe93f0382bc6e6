"""Session exchange and refresh (wire protocol §4.6–4.7)."""

from __future__ import annotations

import jwt
import pytest

from app.extensions import db
from app.users.models import User
from tests.auth.flow import approve
from tests.helpers import SESSION_SECRET, error_of, key_headers, mint_session, register


def test_exchange_is_single_use_and_issues_a_24h_jwt(client, mail_log):
    body = approve(client, mail_log, "s@example.com")
    first = client.post("/v1/auth/session", json={"token": body["session_token"]})
    assert first.status_code == 200
    claims = jwt.decode(first.get_json()["session_token"], SESSION_SECRET, algorithms=["HS256"])
    assert claims["type"] == "session" and claims["email"] == "s@example.com"
    assert claims["exp"] - claims["iat"] == 24 * 3600
    second = client.post("/v1/auth/session", json={"token": body["session_token"]})
    assert second.status_code == 401
    assert error_of(second)["code"] == "invalid_token"


@pytest.mark.parametrize("token", ["", "garbage", "0" * 64, "A" * 64])
def test_exchange_rejects_unknown_tokens(client, token):
    response = client.post("/v1/auth/session", json={"token": token})
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_token"


def test_exchange_validates_the_body(client):
    response = client.post("/v1/auth/session", json={})
    assert response.status_code == 422
    assert error_of(response)["details"][0]["field"] == "body.token"
    assert client.post("/v1/auth/session", data="{", content_type="application/json") \
        .status_code == 400


def test_exchange_token_expires(client, mail_log, clock):
    body = approve(client, mail_log, "late@example.com")
    clock.advance(minutes=15)
    response = client.post("/v1/auth/session", json={"token": body["session_token"]})
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_token"


def test_exchange_for_a_deleted_user(app, client, mail_log):
    body = approve(client, mail_log, "gone@example.com")
    with app.app_context():
        db.session.execute(db.delete(User).where(User.email == "gone@example.com"))
        db.session.commit()
    response = client.post("/v1/auth/session", json={"token": body["session_token"]})
    assert response.status_code == 401
    assert error_of(response)["code"] == "user_not_found"


def test_exchange_without_session_secret_is_503_and_keeps_the_token(make_app, mail_log):
    secretless = make_app(SESSION_SECRET="")
    body = approve(secretless.test_client(), mail_log, "503@example.com")
    response = secretless.test_client().post("/v1/auth/session",
                                             json={"token": body["session_token"]})
    assert response.status_code == 503
    assert error_of(response)["code"] == "session_unavailable"
    # Same database, secret configured again: the token was not spent by the 503.
    configured = make_app()
    assert configured.test_client().post(
        "/v1/auth/session", json={"token": body["session_token"]}).status_code == 200


def test_refresh_with_every_credential(client, delegation_client):
    api_key, _ = register(client, "r@example.com")
    response = client.post("/v1/auth/session/refresh", headers=key_headers(api_key))
    assert response.status_code == 200
    body = response.get_json()
    assert body["email"] == "r@example.com"
    user_id = client.get("/v1/auth/me", headers=key_headers(api_key)).get_json()["id"]
    claims = jwt.decode(body["session_token"], SESSION_SECRET, algorithms=["HS256"])
    assert claims["sub"] == user_id

    session = mint_session(user_id, "r@example.com")
    assert client.post("/v1/auth/session/refresh",
                       headers=key_headers(session)).status_code == 200

    from tests.helpers import service_headers

    delegated = delegation_client.post("/v1/auth/session/refresh",
                                       headers=service_headers(user_id))
    assert delegated.status_code == 200
    assert jwt.decode(delegated.get_json()["session_token"], SESSION_SECRET,
                      algorithms=["HS256"])["sub"] == user_id


def test_refresh_requires_a_credential(client):
    response = client.post("/v1/auth/session/refresh")
    assert response.status_code == 401


def test_refresh_without_session_secret_is_503(make_app):
    client = make_app(SESSION_SECRET="").test_client()
    api_key, _ = register(client)
    response = client.post("/v1/auth/session/refresh", headers=key_headers(api_key))
    assert response.status_code == 503
    assert error_of(response)["code"] == "session_unavailable"
