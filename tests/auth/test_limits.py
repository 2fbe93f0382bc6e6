"""Endpoint limits of the device-code flow (wire protocol §1.8), with rate limiting switched on."""

from __future__ import annotations

import pytest

from app.auth.device import services
from tests.auth.flow import CODE, start, submit
from tests.helpers import error_of


@pytest.fixture
def limited(make_app):
    app = make_app(RATELIMIT_ENABLED=True, RATE_LIMIT_ANONYMOUS_PER_MINUTE=0)
    return app


def _client(app, address: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def _assert_429(response):
    assert response.status_code == 429
    assert error_of(response)["code"] == "rate_limit_exceeded"
    assert int(response.headers["Retry-After"]) >= 1


def test_create_is_limited_to_five_per_hour_per_address(limited):
    client = _client(limited, "10.0.0.1")
    for n in range(5):
        start(client, f"CODE-000{n}")
    _assert_429(client.post("/v1/auth/device-code", json={"device_code": "CODE-0005"}))
    # Another address has its own budget.
    start(_client(limited, "10.0.0.2"), "CODE-0006")


def test_poll_is_limited_to_thirty_per_minute_per_code(limited):
    client = _client(limited, "10.0.0.3")
    start(client)
    start(client, "OTHER-CODE")
    for _ in range(30):
        assert client.post("/v1/auth/device-code/poll",
                           json={"device_code": CODE}).status_code == 200
    _assert_429(client.post("/v1/auth/device-code/poll", json={"device_code": CODE}))
    assert client.post("/v1/auth/device-code/poll",
                       json={"device_code": "OTHER-CODE"}).status_code == 200


def _codes(app, count: int) -> list[str]:
    with app.app_context():
        codes = [f"MAIL-{n:04d}" for n in range(count)]
        for code in codes:
            services.create_device_code(code, "http://localhost:8000")
    return codes


def test_submit_is_limited_to_three_per_hour_per_email(limited, mail_log):
    codes = _codes(limited, 5)
    for n, code in enumerate(codes[:3]):
        # Case does not open a new budget.
        email = "Same@Example.com" if n % 2 else "same@example.com"
        assert submit(_client(limited, f"10.1.0.{n}"), email, code).status_code == 200
    _assert_429(submit(_client(limited, "10.1.0.9"), "SAME@example.com", codes[3]))
    assert submit(_client(limited, "10.1.0.9"), "other@example.com", codes[4]).status_code == 200


def test_submit_is_limited_to_ten_per_hour_per_address(limited, mail_log):
    codes = _codes(limited, 12)
    client = _client(limited, "10.2.0.1")
    for n in range(10):
        assert submit(client, f"user{n}@example.com", codes[n]).status_code == 200
    _assert_429(submit(client, "user10@example.com", codes[10]))
    assert submit(_client(limited, "10.2.0.2"), "user11@example.com",
                  codes[11]).status_code == 200


def test_limits_are_off_when_rate_limiting_is(make_app):
    client = _client(make_app(RATELIMIT_ENABLED=False), "10.3.0.1")
    for n in range(7):
        start(client, f"FREE-000{n}")
