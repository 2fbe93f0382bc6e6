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


def _gunicorn(env: dict) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    process = subprocess.Popen([str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}",
                                "--workers", "2", "wsgi:app"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    env = _env(own_cluster.create_database("outage"))
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

        own_cluster.restart()
        deadline = time.monotonic() + 15
        statuses = []
        while time.monotonic() < deadline:
            statuses.append(httpx.get(f"{url}/v1/auth/me", headers=headers, timeout=10)
                            .status_code)
            if statuses[-1] == 200:
                break
            time.sleep(0.2)
        assert statuses[-1] == 200, statuses
        assert set(statuses) <= {200, 503}
        assert httpx.get(f"{url}/health", timeout=10).json()["status"] == "healthy"
    finally:
        process.terminate()
        process.wait(timeout=30)


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
