"""Races at scale on PostgreSQL: many claimers, several worker processes.

(Smaller versions of these races run on both backends in tests/scheduling and tests/messaging;
these are the sizes the reliability suite promises.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, insert, select

from app.db import utcnow
from app.extensions import db
from app.scheduling.models import Cue, Execution
from tests.helpers import key_headers, register, user_id_of

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _postgres_only(backend):
    if backend != "postgresql":
        pytest.skip("row-claiming races are a PostgreSQL guarantee (SQLite runs one worker)")


def _worker_cues(app, user_id: str, count: int, due) -> list[str]:
    ids = [f"cue_{uuid.uuid4().hex[:12]}" for _ in range(count)]
    now = utcnow()
    with app.app_context():
        db.session.execute(insert(Cue), [{
            "id": cue_id, "user_id": uuid.UUID(user_id), "name": f"race-{i}", "status": "active",
            "transport": "worker", "schedule_type": "recurring", "schedule_cron": "0 0 1 1 *",
            "schedule_timezone": "UTC", "callback_method": "POST", "callback_headers": {},
            "payload": {"i": i}, "retry_max_attempts": 3, "retry_backoff_minutes": [1],
            "next_run": due, "run_count": 0, "fired_count": 0, "created_at": now,
            "updated_at": now} for i, cue_id in enumerate(ids)])
        db.session.commit()
    return ids


def test_twenty_claimers_over_five_hundred_executions(app, live_server):
    server = live_server(app)
    client = app.test_client()
    key, _ = register(client)
    [cue_id] = _worker_cues(app, user_id_of(client, key), 1, None)
    base = utcnow() - timedelta(hours=1)
    with app.app_context():
        db.session.execute(insert(Execution), [{
            "id": uuid.uuid4(), "cue_id": cue_id, "scheduled_for": base + timedelta(seconds=i),
            "status": "pending", "triggered_by": "manual_fire", "attempts": 0,
            "created_at": base, "updated_at": base} for i in range(500)])
        db.session.commit()
    claimed: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def claimer(i):
        with httpx.Client(base_url=server.url, headers=key_headers(key), timeout=60) as http:
            barrier.wait()
            while True:
                response = http.post("/v1/executions/claim", json={"worker_id": f"w{i}"})
                if response.status_code == 409:
                    return
                assert response.status_code == 200, response.text
                with lock:
                    claimed.append(response.json()["execution_id"])

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(claimed) == 500
    assert len(set(claimed)) == 500


def test_three_worker_processes_fire_each_slot_once(app, db_url):
    client = app.test_client()
    key, _ = register(client)
    due = utcnow() - timedelta(seconds=1)
    ids = _worker_cues(app, user_id_of(client, key), 2000, due)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "DATABASE_"))}
    env.update({"ENV": "test", "DATABASE_URL": db_url, "FLASK_APP": "wsgi",
                "LOG_LEVEL": "WARNING",
                # this checkout, not whichever one the virtualenv has installed editable
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                            os.environ.get("PYTHONPATH")]))})
    workers = [subprocess.Popen([str(Path(sys.executable).parent / "flask"), "worker", "run"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for _ in range(3)]
    try:
        deadline = time.monotonic() + 90
        count = 0
        while time.monotonic() < deadline:
            with app.app_context():
                count = db.session.scalar(select(func.count()).select_from(Execution))
                db.session.rollback()
            if count >= 2000:
                break
            time.sleep(0.5)
        time.sleep(2)  # give a duplicate, if there were one, the time to appear
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=60)
    assert all(worker.returncode == 0 for worker in workers)
    with app.app_context():
        rows = db.session.execute(select(Execution.cue_id, Execution.scheduled_for)).all()
        fired = db.session.scalar(select(func.sum(Cue.fired_count)))
    assert len(rows) == 2000
    assert {cue_id for cue_id, _ in rows} == set(ids)
    assert {scheduled for _, scheduled in rows} == {due}
    assert fired == 2000
