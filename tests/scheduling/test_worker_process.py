"""``flask worker run`` as a real process: it delivers, and SIGTERM leaves nothing claimed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from app.extensions import db
from app.scheduling.models import Execution
from config import setting_types
from tests.helpers import key_headers, register
from tests.scheduling.conftest import cue_body

FLASK = str(Path(sys.executable).parent / "flask")
ROOT = Path(__file__).resolve().parents[2]
#: Subprocesses import this checkout, not whichever one the virtualenv has installed editable.
PYTHONPATH = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


class _SlowHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.arrived.set()
        time.sleep(self.server.delay)
        try:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")
            self.server.answered += 1
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    server.daemon_threads = True
    server.arrived, server.delay, server.answered = threading.Event(), 1.0, 0
    server.url = f"http://127.0.0.1:{server.server_port}/hook"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _start_worker(db_url: str, tmp_path, **settings) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items()
           if k not in setting_types() and not k.startswith("FLASK_")}
    env.update({"DATABASE_URL": db_url, "ENV": "test", "ALLOW_PRIVATE_CALLBACK_URLS": "true",
                "POLLER_INTERVAL_SECONDS": "0.2", "FLASK_APP": "wsgi", "PYTHONPATH": PYTHONPATH})
    env.update({k: str(v) for k, v in settings.items()})
    return subprocess.Popen([FLASK, "worker", "run"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _fire(app, receiver_url) -> str:
    client = app.test_client()
    api_key, _ = register(client)
    headers = key_headers(api_key)
    cue = client.post("/v1/cues", json=cue_body(callback={"url": receiver_url}),
                      headers=headers).get_json()
    return client.post(f"/v1/cues/{cue['id']}/fire", headers=headers).get_json()["id"]


def _execution(app, execution_id) -> Execution:
    import uuid

    with app.app_context():
        row = db.session.get(Execution, uuid.UUID(execution_id))
        db.session.expunge(row)
        return row


def test_sigterm_finishes_in_flight_delivery(make_app, db_url, tmp_path, slow_receiver):
    app = make_app(ALLOW_PRIVATE_CALLBACK_URLS=True)
    slow_receiver.delay = 1.0
    execution_id = _fire(app, slow_receiver.url)
    process = _start_worker(db_url, tmp_path, WORKER_SHUTDOWN_GRACE_SECONDS=10)
    try:
        assert slow_receiver.arrived.wait(20), "the worker never delivered"
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=20)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output[-2000:]
    execution = _execution(app, execution_id)
    assert execution.status == "success" and execution.attempts == 1


def test_sigterm_releases_a_stuck_delivery(make_app, db_url, tmp_path, slow_receiver):
    app = make_app(ALLOW_PRIVATE_CALLBACK_URLS=True)
    slow_receiver.delay = 30.0
    execution_id = _fire(app, slow_receiver.url)
    process = _start_worker(db_url, tmp_path, WORKER_SHUTDOWN_GRACE_SECONDS=0.5,
                            WEBHOOK_TIMEOUT_SECONDS=60, EXECUTION_STALE_AFTER_SECONDS=300)
    try:
        assert slow_receiver.arrived.wait(20), "the worker never delivered"
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=20)[0]
        stopped_in = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output[-2000:]
    assert stopped_in < 10
    execution = _execution(app, execution_id)
    # Back in the queue, attempt not counted, nothing left claimed.
    assert execution.status == "retry_ready" and execution.attempts == 0
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Execution)
                                 .where(Execution.status == "delivering")) == 0


def test_disabled_primitive_worker_skips_jobs(make_app, db_url, tmp_path, slow_receiver):
    app = make_app(ALLOW_PRIVATE_CALLBACK_URLS=True)
    execution_id = _fire(app, slow_receiver.url)
    process = _start_worker(db_url, tmp_path, DISABLE_CUE_PRIMITIVE="true")
    try:
        lines = []
        for line in process.stdout:  # wait until the loop runs (signal handlers installed)
            lines.append(line)
            if "worker started" in line:
                break
        time.sleep(1)
        process.send_signal(signal.SIGTERM)
        output = "".join(lines) + process.communicate(timeout=20)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert "skipped" in output and "DISABLE_CUE_PRIMITIVE" in output
    assert not slow_receiver.arrived.is_set()
    assert _execution(app, execution_id).status == "pending"


def test_run_all_stops_web_and_worker_together(db_url, tmp_path):
    """``make run`` uses bin/run-all: SIGTERM stops gunicorn and the worker, nothing lingers."""
    import socket

    import httpx

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    script = Path(__file__).resolve().parents[2] / "bin" / "run-all"
    env = {k: v for k, v in os.environ.items()
           if k not in setting_types() and not k.startswith("FLASK_")}
    env.update({"DATABASE_URL": db_url, "ENV": "test", "PYTHONPATH": PYTHONPATH,
                "VENV_BIN": str(Path(sys.executable).parent)})
    process = subprocess.Popen([str(script), "--bind", f"127.0.0.1:{port}", "--workers", "1",
                                "wsgi:app"], cwd=tmp_path, env=env, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        healthy = False
        while time.monotonic() < deadline and not healthy:
            try:
                healthy = httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
            except httpx.HTTPError:
                time.sleep(0.3)
        assert healthy
        lines = []
        for line in process.stdout:  # the worker's loop is running (signal handlers set)
            lines.append(line)
            if "worker started" in line:
                break
        process.send_signal(signal.SIGTERM)
        output = "".join(lines) + process.communicate(timeout=30)[0]
        assert process.returncode == 0, output[-2000:]
        assert "worker started" in output and "worker stopped" in output
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            pytest.fail("processes of bin/run-all are still running")
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_two_worker_processes_share_the_queue(make_app, db_url, backend, tmp_path):
    """Several workers on PostgreSQL: every slot fired once, every execution delivered once."""
    if backend != "postgresql":
        pytest.skip("SQLite deployments run a single worker")
    import json
    from collections import Counter

    from tests.scheduling.conftest import _Handler

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.requests, server.statuses, server.event = [], [], threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/hook"
    app = make_app(ALLOW_PRIVATE_CALLBACK_URLS=True)
    client = app.test_client()
    api_key, _ = register(client)
    headers = key_headers(api_key)
    manual = client.post("/v1/cues", json=cue_body(name="manual", callback={"url": url}),
                         headers=headers).get_json()
    fired = {client.post(f"/v1/cues/{manual['id']}/fire", headers=headers).get_json()["id"]
             for _ in range(20)}
    workers = [_start_worker(db_url, tmp_path, DELIVERY_CONCURRENCY=3) for _ in range(2)]
    try:
        client.post("/v1/cues", json=cue_body(name="tick", callback={"url": url}, schedule={
            "type": "recurring", "cron": "* * * * * *"}), headers=headers)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            bodies = [json.loads(r["body"]) for r in server.requests]
            done = {b["execution_id"] for b in bodies} >= fired
            ticks = [b for b in bodies if b["name"] == "tick"]
            if done and len(ticks) >= 4:
                break
            time.sleep(0.2)
        for process in workers:
            process.send_signal(signal.SIGTERM)
        outputs = [process.communicate(timeout=20)[0] for process in workers]
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
        server.shutdown()
        server.server_close()
    assert all(process.returncode == 0 for process in workers), outputs
    bodies = [json.loads(r["body"]) for r in server.requests]
    deliveries = Counter(b["execution_id"] for b in bodies)
    assert set(deliveries) >= fired
    assert max(deliveries.values()) == 1  # nothing delivered twice
    slots = Counter(b["scheduled_for"] for b in bodies if b["name"] == "tick")
    assert len(slots) >= 4 and max(slots.values()) == 1  # nothing fired twice
    assert all("worker started" in output for output in outputs)
