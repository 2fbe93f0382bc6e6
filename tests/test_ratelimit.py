"""Request rate limits: per user across credential paths, per address, headers, Redis sharing."""

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.helpers import (SERVICE_TOKEN, clear_of_window_boundary, error_of, key_headers,
                           register, service_headers)

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.rate_window


@pytest.fixture
def limited(make_app):
    """An app with rate limiting and delegation on."""
    return make_app(RATELIMIT_ENABLED=True, EXTERNAL_AUTH_BACKEND=True,
                    INTERNAL_AUTH_TOKEN=SERVICE_TOKEN, RATE_LIMIT_ANONYMOUS_PER_MINUTE=4)


def _user_with_limit(client, per_minute: int) -> str:
    user_id = str(uuid.uuid4())
    response = client.put(f"/v1/internal/users/{user_id}", headers=service_headers(), json={
        "email": f"{user_id}@example.com", "slug": f"rl-{user_id[:8]}",
        "rate_limit_per_minute": per_minute})
    assert response.status_code == 200
    return user_id


def test_per_user_limit_headers_and_429(limited):
    client = limited.test_client()
    user_id = _user_with_limit(client, 3)
    headers = service_headers(user_id)
    remaining = []
    for _ in range(3):
        response = client.get("/v1/auth/me", headers=headers)
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "3"
        assert int(response.headers["X-RateLimit-Reset"]) > time.time()
        remaining.append(response.headers["X-RateLimit-Remaining"])
    assert remaining == ["2", "1", "0"]
    refused = client.get("/v1/auth/me", headers=headers)
    assert refused.status_code == 429
    assert error_of(refused)["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-RateLimit-Remaining"] == "0"


def test_delegated_and_key_requests_share_the_subject_users_bucket(limited):
    client = limited.test_client()
    user_id = _user_with_limit(client, 3)
    key = client.post("/v1/auth/key/regenerate", headers={
        **service_headers(user_id), "X-Confirm-Destructive": "true"}).get_json()["api_key"]
    assert client.get("/v1/auth/me", headers=key_headers(key)).status_code == 200
    assert client.get("/v1/auth/me", headers=service_headers(user_id, style="key")
                      ).status_code == 200
    assert client.get("/v1/auth/me", headers=key_headers(key)).status_code == 429
    assert client.get("/v1/auth/me", headers=service_headers(user_id)).status_code == 429


def test_users_do_not_share_buckets(limited):
    client = limited.test_client()
    first, second = _user_with_limit(client, 1), _user_with_limit(client, 1)
    assert client.get("/v1/auth/me", headers=service_headers(first)).status_code == 200
    assert client.get("/v1/auth/me", headers=service_headers(first)).status_code == 429
    assert client.get("/v1/auth/me", headers=service_headers(second)).status_code == 200


def test_changed_limit_applies_at_once(limited):
    client = limited.test_client()
    user_id = _user_with_limit(client, 1)
    assert client.get("/v1/auth/me", headers=service_headers(user_id)).status_code == 200
    assert client.get("/v1/auth/me", headers=service_headers(user_id)).status_code == 429
    client.put(f"/v1/internal/users/{user_id}", headers=service_headers(), json={
        "email": f"{user_id}@example.com", "slug": f"rl-{user_id[:8]}",
        "rate_limit_per_minute": 5})
    response = client.get("/v1/auth/me", headers=service_headers(user_id))
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Limit"] == "5"


def test_zero_means_unlimited(limited):
    client = limited.test_client()
    user_id = _user_with_limit(client, 0)
    for _ in range(10):
        response = client.get("/v1/auth/me", headers=service_headers(user_id))
        assert response.status_code == 200
        assert "X-RateLimit-Limit" not in response.headers


def test_anonymous_traffic_is_limited_per_address(limited):
    client = limited.test_client()
    statuses = [client.get("/v1/auth/me").status_code for _ in range(5)]
    assert statuses == [401] * 4 + [429]
    other = client.get("/v1/auth/me", environ_base={"REMOTE_ADDR": "127.0.0.9"})
    assert other.status_code == 401


def test_probes_docs_and_internal_are_exempt(limited):
    client = limited.test_client()
    for _ in range(6):
        assert client.get("/health").status_code == 200
        assert client.get("/v1/info").status_code == 200
        assert client.get("/openapi.json").status_code == 200
        assert client.put(f"/v1/internal/users/{uuid.uuid4()}", headers=service_headers(),
                          json={"email": f"{uuid.uuid4()}@example.com",
                                "slug": f"s{uuid.uuid4().hex[:8]}"}).status_code == 200


def test_endpoint_limits_off_when_rate_limiting_is_off(make_app):
    client = make_app().test_client()  # RATELIMIT_ENABLED=False in tests by default
    key, _ = register(client)
    for _ in range(70):
        assert client.get("/v1/auth/me", headers=key_headers(key)).status_code == 200


# --- several processes ------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(db_url: str, storage: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "DATABASE_"))}
    env.update({"ENV": "test", "DATABASE_URL": db_url, "RATELIMIT_STORAGE_URI": storage,
                "EXTERNAL_AUTH_BACKEND": "true", "INTERNAL_AUTH_TOKEN": SERVICE_TOKEN,
                "LOG_LEVEL": "WARNING"})
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "wsgi:app"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("gunicorn did not start")


def _alternate(urls, headers, n):
    statuses = []
    for i in range(n):
        statuses.append(httpx.get(f"{urls[i % len(urls)]}/v1/auth/me", headers=headers,
                                  timeout=10).status_code)
    return statuses


def test_limit_holds_across_processes_with_redis(make_app, db_url, redis_url):
    client = make_app(EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=SERVICE_TOKEN).test_client()
    user_id = _user_with_limit(client, 5)
    servers = [_serve(db_url, redis_url) for _ in range(2)]
    try:
        clear_of_window_boundary(15)  # the servers took a while to start
        statuses = _alternate([url for _, url in servers], service_headers(user_id), 10)
    finally:
        for process, _ in servers:
            process.terminate()
            process.wait(timeout=10)
    assert sorted(statuses) == [200] * 5 + [429] * 5


def test_memory_storage_counts_per_process(make_app, db_url):
    """Why Redis is needed: with memory:// each process keeps its own count."""
    client = make_app(EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=SERVICE_TOKEN).test_client()
    user_id = _user_with_limit(client, 5)
    servers = [_serve(db_url, "memory://") for _ in range(2)]
    try:
        clear_of_window_boundary(15)
        statuses = _alternate([url for _, url in servers], service_headers(user_id), 10)
    finally:
        for process, _ in servers:
            process.terminate()
            process.wait(timeout=10)
    assert statuses == [200] * 10


def test_redis_down_fails_open(make_app):
    client = make_app(RATELIMIT_ENABLED=True, RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0",
                      RATE_LIMIT_ANONYMOUS_PER_MINUTE=1).test_client()
    assert [client.get("/v1/auth/me").status_code for _ in range(3)] == [401] * 3


def test_memory_counters_start_no_timer_threads_and_are_still_purged(make_app, monkeypatch):
    """``memory://`` uses the sweeping storage: no thread per burst, expired counters dropped."""
    import limits.storage.memory as memory

    from app.ratelimit import SweepingMemoryStorage

    app = make_app(RATELIMIT_ENABLED=True)
    storage = app.extensions["cueline_limiter"].storage
    assert isinstance(storage, SweepingMemoryStorage)

    started = []

    class CountingTimer(memory.threading.Timer):
        def start(self):
            started.append(self)
            super().start()

    monkeypatch.setattr(memory.threading, "Timer", CountingTimer)
    time.sleep(0.05)  # the base class's first 10 ms timer has run out
    for i in range(3):
        storage.incr(f"short-{i}", expiry=0.01)
        time.sleep(0.02)
    assert started == []  # the stock storage would have started a timer for each of these

    storage._next_sweep = 0.0  # a sweep is due: the next write purges what has expired
    storage.incr("fresh", expiry=60)
    assert set(storage.storage) == {"fresh"}
    assert storage.get("fresh") == 1
