"""``/v1/echo/{token}`` (§12.5): limits, storage shared through the database, expiry."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

import app.db
from app.echo.models import Echo
from app.extensions import db
from tests.helpers import error_of, key_headers, register

TOKEN = "qs-0123456789abcdef"


class Clock:
    def __init__(self):
        self.now = datetime.now(UTC)

    def __call__(self):
        return self.now

    def advance(self, **delta):
        self.now += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(app.db, "clock", fake)
    return fake


@pytest.fixture
def headers(client):
    return key_headers(register(client)[0])


def test_store_and_read(client, headers):
    assert client.get(f"/v1/echo/{TOKEN}", headers=headers).get_json() == {"status": "waiting"}
    stored = client.post(f"/v1/echo/{TOKEN}", json={"hello": ["wörld", 1]},
                         headers={"X-Custom": "yes", "Authorization": "Bearer cue_sk_secret"})
    assert stored.status_code == 200 and stored.get_json() == {"stored": True}
    body = client.get(f"/v1/echo/{TOKEN}", headers=headers).get_json()
    assert set(body) == {"status", "payload", "headers", "received_at"}
    assert body["status"] == "delivered" and body["payload"] == {"hello": ["wörld", 1]}
    assert body["headers"]["x-custom"] == "yes"  # lower-case names
    assert body["headers"]["authorization"] == "[redacted]"  # never handed back
    assert "cue_sk_secret" not in str(body)
    received = datetime.fromisoformat(body["received_at"])
    assert body["received_at"].endswith("+00:00")
    assert abs(datetime.now(UTC) - received) < timedelta(minutes=1)
    # A second store replaces the first.
    client.post(f"/v1/echo/{TOKEN}", json=[1, 2])
    assert client.get(f"/v1/echo/{TOKEN}", headers=headers).get_json()["payload"] == [1, 2]


def test_any_credential_reads_any_token_and_anonymous_cannot(client, headers):
    client.post(f"/v1/echo/{TOKEN}", json={"a": 1})
    other = key_headers(register(client)[0])
    assert client.get(f"/v1/echo/{TOKEN}", headers=other).get_json()["status"] == "delivered"
    response = client.get(f"/v1/echo/{TOKEN}")
    assert response.status_code == 401 and error_of(response)["code"] == "invalid_api_key"


def test_body_of_any_content_type_must_be_json(client, headers):
    for data, content_type in ((b'{"a": 1}', "text/plain"), (b"[true]", None)):
        response = client.post(f"/v1/echo/{TOKEN}", data=data, content_type=content_type)
        assert response.status_code == 200, data
    assert client.get(f"/v1/echo/{TOKEN}", headers=headers).get_json()["payload"] == [True]
    for data, content_type in ((b"{not json", "application/json"), (b"hello", "text/plain"),
                               (b"", "application/json"), (b"\xff\xfe", "text/plain"),
                               (b'{"a": "\\u0000"}', "text/plain")):
        response = client.post(f"/v1/echo/{TOKEN}", data=data, content_type=content_type)
        assert response.status_code == 400, data
        assert error_of(response)["code"] == "invalid_json"


def test_token_and_size_limits(client, headers):
    for token in ("short", "x" * 15):
        for response in (client.post(f"/v1/echo/{token}", json={}),
                         client.get(f"/v1/echo/{token}", headers=headers)):
            assert response.status_code == 400
            error = error_of(response)
            assert error["code"] == "invalid_token" and "at least 16" in error["message"]
    assert client.post(f"/v1/echo/{'x' * 16}", json={}).status_code == 200
    assert error_of(client.post(f"/v1/echo/{'x' * 257}", json={}))["code"] == "invalid_token"
    big = b'"' + b"a" * 1_000_000 + b'"'  # 1,000,002 bytes: over the echo limit, under 1 MiB
    response = client.post(f"/v1/echo/{TOKEN}", data=big, content_type="application/json")
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"
    fits = b'"' + b"a" * 999_998 + b'"'
    assert client.post(f"/v1/echo/{TOKEN}", data=fits,
                       content_type="application/json").status_code == 200
    huge = b"[" + b"1," * 600_000 + b"1]"  # over 1 MiB: the global limit answers first
    response = client.post(f"/v1/echo/{TOKEN}", data=huge, content_type="application/json")
    assert response.status_code == 413 and error_of(response)["code"] == "request_too_large"


def test_ten_stores_per_address_per_hour(make_app):
    client = make_app(RATELIMIT_ENABLED=True).test_client()
    for i in range(10):
        assert client.post(f"/v1/echo/{TOKEN}{i}", json={"n": i}).status_code == 200
    refused = client.post(f"/v1/echo/{TOKEN}x", json={})
    assert refused.status_code == 429
    error = error_of(refused)
    assert error["code"] == "rate_limit_exceeded" and "Retry after" in error["message"]
    retry = int(refused.headers["Retry-After"])
    assert 60 < retry <= 3600  # the hourly window, not the per-minute one
    assert refused.headers["X-RateLimit-Remaining"] and refused.headers["X-RateLimit-Limit"]
    assert int(refused.headers["X-RateLimit-Reset"]) > time.time()
    other = client.post(f"/v1/echo/{TOKEN}y", json={}, environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 200  # per client address


def test_echoes_expire_and_are_deleted_on_write(app, client, headers, clock):
    client.post(f"/v1/echo/{TOKEN}", json={"a": 1})
    clock.advance(seconds=299)
    assert client.get(f"/v1/echo/{TOKEN}", headers=headers).get_json()["status"] == "delivered"
    clock.advance(seconds=1)  # 300 s: gone at once
    assert client.get(f"/v1/echo/{TOKEN}", headers=headers).get_json() == {"status": "waiting"}
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Echo)) == 1  # not yet deleted
    client.post(f"/v1/echo/{TOKEN}-other", json={})
    with app.app_context():
        assert db.session.scalars(select(Echo.token)).all() == [f"{TOKEN}-other"]


def test_web_processes_share_echoes(make_app):
    """Two apps (two web processes) on one database see each other's echoes."""
    first, second = make_app().test_client(), make_app().test_client()
    first.post(f"/v1/echo/{TOKEN}", json={"from": "first"})
    key = key_headers(register(second)[0])
    assert second.get(f"/v1/echo/{TOKEN}", headers=key).get_json()["payload"] == {
        "from": "first"}
