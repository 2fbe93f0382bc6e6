"""Faults: the database going away and coming back; a worker killed mid-delivery.

These run real processes (gunicorn, ``flask worker run``) against their own PostgreSQL
databases, so what is tested is what a deployment sees.
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.helpers import SERVICE_TOKEN
from tests.pg import PostgresCluster, PostgresUnavailable

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "DATABASE_"))}
    env.update({"ENV": "test", "DATABASE_URL": db_url, "FLASK_APP": "wsgi",
                "EXTERNAL_AUTH_BACKEND": "true", "INTERNAL_AUTH_TOKEN": SERVICE_TOKEN,
                "LOG_LEVEL": "WARNING", "DB_CONNECT_TIMEOUT_SECONDS": "2",
                # this checkout, not whichever one the virtualenv has installed editable
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                            os.environ.get("PYTHONPATH")])),
                **extra})
    return env


def _migrate(env: dict) -> None:
    subprocess.run([str(BIN / "flask"), "db", "upgrade"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=120)


def _gunicorn(env: dict, log_path: Path | None = None) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen([str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}",
                                "--workers", "2", "wsgi:app"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/health", timeout=1)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("gunicorn did not start")


@pytest.fixture
def own_cluster():
    cluster = PostgresCluster()
    try:
        cluster.start()
    except PostgresUnavailable as exc:
        cluster.cleanup()
        if os.environ.get("CUELINE_TEST_REQUIRE_POSTGRES"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    yield cluster
    cluster.cleanup()


def _user(url: str) -> dict[str, str]:
    user_id = str(uuid.uuid4())
    service = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    assert httpx.put(f"{url}/v1/internal/users/{user_id}", headers=service, timeout=10,
                     json={"email": f"{user_id}@example.com", "slug": f"f-{user_id[:8]}"}
                     ).status_code == 200
    key = httpx.post(f"{url}/v1/auth/key/regenerate", timeout=10, headers={
        **service, "X-On-Behalf-Of": user_id, "X-Confirm-Destructive": "true"}).json()["api_key"]
    return {"Authorization": f"Bearer {key}"}


def test_database_outage_answers_503_then_recovers(own_cluster):
    # Ping every reused connection, so the check does not depend on how long the outage took.
    env = _env(own_cluster.create_database("outage"), DB_PING_IDLE_SECONDS="0")
    _migrate(env)
    process, url = _gunicorn(env)
    try:
        headers = _user(url)
        assert httpx.get(f"{url}/v1/auth/me", headers=headers, timeout=10).status_code == 200

        own_cluster.stop()
        started = time.monotonic()
        response = httpx.get(f"{url}/v1/auth/me", headers=headers, timeout=30)
        assert time.monotonic() - started < 10
        assert response.status_code == 503
        assert response.json() == {"error": {
            "code": "service_unavailable",
            "message": "The service is temporarily unavailable; retry shortly", "status": 503}}
        health = httpx.get(f"{url}/health", timeout=30)
        assert health.status_code == 200
        assert health.json()["status"] == "degraded"
        assert health.json()["services"]["database"] == "error"
        assert httpx.get(f"{url}/status", timeout=30).status_code == 503

        own_cluster.start()
        # Both gunicorn workers hold a pooled connection the outage killed; none of the first
        # requests may fail (before the idle ping, the first request of each worker did).
        statuses = [httpx.get(f"{url}/v1/auth/me", headers=headers, timeout=10).status_code
                    for _ in range(8)]
        assert statuses == [200] * 8, statuses
        assert httpx.get(f"{url}/status", timeout=10).status_code == 200
        assert httpx.get(f"{url}/health", timeout=10).json()["status"] == "healthy"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_writes_in_flight_when_the_database_stops_answer_503(own_cluster, tmp_path):
    """Cue creates racing a fast shutdown: each is created or refused with 503, never a 500."""
    env = _env(own_cluster.create_database("inflight"), DB_PING_IDLE_SECONDS="0",
               DISABLE_QUOTA_ENFORCEMENT="true")
    _migrate(env)
    log_path = tmp_path / "gunicorn.log"
    process, url = _gunicorn(env, log_path)
    try:
        headers = _user(url)
        statuses: list[int] = []
        stop = threading.Event()

        def create(n: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                body = {"name": f"c{n}-{i}", "schedule": {"type": "recurring",
                                                         "cron": "0 9 * * *"},
                        "callback": {"url": "https://192.0.2.10/hook"}, "payload": {}}
                try:
                    response = httpx.post(f"{url}/v1/cues", json=body, headers=headers,
                                          timeout=30)
                except httpx.HTTPError:
                    continue
                statuses.append(response.status_code)
                if response.status_code == 500:
                    stop.set()

        threads = [threading.Thread(target=create, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        while len(statuses) < 20:
            time.sleep(0.05)
        own_cluster.stop("fast")
        seen_at_stop = len(statuses)
        deadline = time.monotonic() + 20
        while 503 not in statuses[seen_at_stop:] and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        assert 500 not in statuses, log_path.read_text(errors="replace")[-6000:]
        assert set(statuses) <= {201, 503}, set(statuses)
        assert 503 in statuses[seen_at_stop:]
        own_cluster.start()
        assert httpx.get(f"{url}/v1/auth/me", headers=headers, timeout=10).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_idle_pooled_connection_killed_by_a_restart_is_replaced(own_cluster, monkeypatch):
    """In-process, with a controlled clock: within DB_PING_IDLE_SECONDS a dead connection is
    trusted and its request answers 503 (never 500), the pool is discarded and the next request
    succeeds; after DB_PING_IDLE_SECONDS of idleness it is pinged and replaced, so even the
    first request after the restart succeeds."""
    import app.db as app_db
    from app import create_app
    from tests.helpers import SESSION_SECRET, key_headers, register

    url = own_cluster.create_database("idle")
    _migrate(_env(url))
    flask_app = create_app({"ENV": "test", "DATABASE_URL": url, "SESSION_SECRET": SESSION_SECRET,
                            "RATELIMIT_ENABLED": False, "DB_PING_IDLE_SECONDS": 5})
    client = flask_app.test_client()
    key, _ = register(client)
    headers = key_headers(key)

    class Clock:
        now = 1000.0

        def monotonic(self):
            return self.now

    clock = Clock()
    monkeypatch.setattr(app_db, "time", clock)
    assert client.get("/v1/auth/me", headers=headers).status_code == 200

    own_cluster.restart()
    clock.now += 1  # idle for less than DB_PING_IDLE_SECONDS: not pinged
    first = client.get("/v1/auth/me", headers=headers)
    assert first.status_code == 503
    assert first.get_json()["error"]["code"] == "service_unavailable"
    assert client.get("/v1/auth/me", headers=headers).status_code == 200

    own_cluster.restart()
    clock.now += 6  # idle for longer: pinged, found dead, replaced before use
    assert client.get("/v1/auth/me", headers=headers).status_code == 200
    assert client.get("/v1/auth/me", headers=headers).status_code == 200

    own_cluster.stop()
    clock.now += 6  # the ping fails and so does the reconnect: 503, not 500
    down = client.get("/v1/auth/me", headers=headers)
    assert down.status_code == 503, down.get_json()
    own_cluster.start()
    assert client.get("/v1/auth/me", headers=headers).status_code == 200
    with flask_app.app_context():
        from app.extensions import db

        db.engine.dispose()


class _Receiver(http.server.BaseHTTPRequestHandler):
    """First delivery hangs (the worker is killed meanwhile); later ones succeed."""

    received: list[dict] = []
    first_arrived = threading.Event()

    def do_POST(self):  # noqa: N802 - http.server naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append({"attempt": self.headers.get("X-CueAPI-Attempt"),
                                    "body": body})
        if len(type(self).received) == 1:
            type(self).first_arrived.set()
            time.sleep(8)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def test_worker_killed_mid_delivery_is_recovered(own_cluster):
    env = _env(own_cluster.create_database("sigkill"), ALLOW_PRIVATE_CALLBACK_URLS="true",
               WEBHOOK_TIMEOUT_SECONDS="5", EXECUTION_STALE_AFTER_SECONDS="6")
    _migrate(env)
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    process, url = _gunicorn(env)
    workers = []
    try:
        headers = _user(url)
        cue = httpx.post(f"{url}/v1/cues", headers=headers, timeout=10, json={
            "name": "kill-me", "schedule": {"type": "recurring", "cron": "0 0 1 1 *"},
            "callback": {"url": f"http://127.0.0.1:{receiver.server_port}/hook"},
            "retry": {"max_attempts": 3, "backoff_minutes": [0]}})
        assert cue.status_code == 201, cue.text
        execution_id = httpx.post(f"{url}/v1/cues/{cue.json()['id']}/fire", headers=headers,
                                  timeout=10).json()["id"]

        workers.append(subprocess.Popen([str(BIN / "flask"), "worker", "run"], cwd=ROOT,
                                        env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
        assert _Receiver.first_arrived.wait(30), "the first delivery never arrived"
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=10)
        state = httpx.get(f"{url}/v1/executions/{execution_id}", headers=headers,
                          timeout=10).json()
        assert state["status"] == "delivering"  # left claimed by the dead worker

        workers.append(subprocess.Popen([str(BIN / "flask"), "worker", "run"], cwd=ROOT,
                                        env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            state = httpx.get(f"{url}/v1/executions/{execution_id}", headers=headers,
                              timeout=10).json()
            if state["status"] == "success":
                break
            time.sleep(0.5)
        assert state["status"] == "success", state
        assert state["attempts"] == 2
        assert [r["attempt"] for r in _Receiver.received] == ["1", "2"]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=30)
        process.terminate()
        process.wait(timeout=30)
        receiver.shutdown()
