"""The audit trail (completeness, concurrency, query API, retention, shutdown flush) and the
per-principal rate limit."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app import db as app_db
from app.auth.audit import flush_audit, prune_audit_at
from app.auth.models import AuditRecord
from app.extensions import db
from tests.delegation.conftest import audit_rows, me, new_user
from tests.helpers import (
    SERVICE_TOKEN,
    error_of,
    key_headers,
    register,
    service_headers,
)

ROOT = Path(__file__).resolve().parents[2]
#: Several tests count requests against per-minute limits.
pytestmark = pytest.mark.rate_window


def _mine(rows, principal_name):
    return [r for r in rows if r.principal == principal_name]


def test_every_delegated_request_leaves_a_record(app, client, principal):
    name = f"crm-{uuid.uuid4().hex[:6]}"
    token = principal(name)
    user_id = new_user(client, token)
    responses = [me(client, token, user_id), me(client, token, user_id, style="key"),
                 me(client, token, str(uuid.uuid4())),
                 client.get("/v1/cues", headers=service_headers(user_id, token=token))]
    assert [r.status_code for r in responses] == [200, 200, 404, 200]
    rows = _mine(audit_rows(app), name)
    by_request = {r.request_id: r for r in rows}
    for response in responses:
        record = by_request[response.headers["X-Request-Id"]]
        assert record.status == response.status_code
        assert record.method == "GET" and record.principal == name
        assert record.key_id not in ("", "env")
    delegated = [by_request[r.headers["X-Request-Id"]] for r in responses]
    assert [str(r.user_id) for r in delegated[:2]] == [user_id, user_id]
    assert delegated[3].path == "/v1/cues"
    # The upsert (service call without a subject) is recorded too.
    upserts = [r for r in rows if r.method == "PUT"]
    assert len(upserts) == 1 and upserts[0].user_id is None and upserts[0].status == 200
    assert len(rows) == 5


def test_user_credentials_leave_no_record(app, client):
    key, _ = register(client)
    client.get("/v1/auth/me", headers=key_headers(key))
    flush_audit(app)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(AuditRecord)
                                 .where(AuditRecord.principal != "env")) == 0


def test_audit_complete_under_concurrent_requests(app, live_server, principal, backend):
    """8 threads x 25 delegated requests through real HTTP: every request id is recorded once."""
    name = f"load-{uuid.uuid4().hex[:6]}"
    token = principal(name)
    server = live_server(app)
    with httpx.Client(base_url=server.url) as http:
        user_ids = []
        for i in range(4):
            uid = str(uuid.uuid4())
            response = http.put(f"/v1/internal/users/{uid}", headers=service_headers(token=token),
                                json={"email": f"c{i}-{uid[:6]}@example.com",
                                      "slug": f"c{i}-{uid[:6]}"})
            assert response.status_code == 200
            user_ids.append(uid)
    request_ids: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def hammer(n):
        with httpx.Client(base_url=server.url, timeout=60) as http:
            barrier.wait()
            for i in range(25):
                response = http.get("/v1/auth/me", headers=service_headers(
                    user_ids[(n + i) % 4], token=token, style="key" if i % 2 else "bearer"))
                assert response.status_code == 200
                with lock:
                    request_ids.append(response.headers["X-Request-Id"])

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(request_ids) == 200
    rows = [r for r in _mine(audit_rows(app), name) if r.method == "GET"]
    assert sorted(r.request_id for r in rows) == sorted(request_ids)
    assert {str(r.user_id) for r in rows} == set(user_ids)


def test_records_wait_in_the_buffer_and_are_written_on_stop(make_app):
    from tests.helpers import SERVICE_TOKEN as token

    app = make_app(EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=token,
                   AUDIT_FLUSH_INTERVAL_SECONDS=60, AUDIT_FLUSH_BATCH=1000)
    client = app.test_client()
    user_id = new_user(client)
    marker = me(client, token, user_id).headers["X-Request-Id"]

    def written():
        with app.app_context():
            return db.session.scalar(select(func.count()).select_from(AuditRecord)
                                     .where(AuditRecord.request_id == marker))

    assert written() == 0  # not written in the request
    app.extensions["cueline_audit"].stop()
    assert written() == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_gunicorn_workers_write_their_buffer_on_sigterm(db_url):
    """Two gunicorn workers with a 60 s flush interval: nothing is written while they serve,
    everything is written when the master is stopped with SIGTERM (a clean stop)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "DATABASE_"))}
    env.update({"ENV": "test", "DATABASE_URL": db_url, "EXTERNAL_AUTH_BACKEND": "true",
                "INTERNAL_AUTH_TOKEN": SERVICE_TOKEN, "RATELIMIT_ENABLED": "false",
                "AUDIT_FLUSH_INTERVAL_SECONDS": "60", "LOG_LEVEL": "WARNING"})
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "--bind", f"127.0.0.1:{port}",
         "--workers", "2", "wsgi:app"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
        user_id = str(uuid.uuid4())
        created = httpx.put(f"{url}/v1/internal/users/{user_id}", headers=service_headers(),
                            json={"email": f"{user_id[:8]}@example.com", "slug": f"g{user_id[:8]}"})
        assert created.status_code == 200
        request_ids = {created.headers["X-Request-Id"]}
        for _ in range(12):
            response = httpx.get(f"{url}/v1/auth/me", headers=service_headers(user_id))
            assert response.status_code == 200
            request_ids.add(response.headers["X-Request-Id"])
        assert _count_requests(db_url, request_ids) == 0  # still buffered
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert _count_requests(db_url, request_ids) == 13


def _count_requests(db_url, request_ids) -> int:
    from sqlalchemy import bindparam, create_engine, text

    engine = create_engine(db_url)
    with engine.connect() as conn:
        count = conn.execute(
            text("SELECT count(*) FROM audit_records WHERE request_id IN :ids")
            .bindparams(bindparam("ids", expanding=True)), {"ids": list(request_ids)}).scalar()
    engine.dispose()
    return count


def test_hostile_paths_are_stored_and_a_bad_row_never_blocks_the_trail(app, client):
    user_id = new_user(client)
    odd = client.get("/v1/cues/" + "x" * 600, headers=service_headers(user_id))
    assert odd.status_code < 500
    writer = app.extensions["cueline_audit"]
    good = me(client, SERVICE_TOKEN, user_id).headers["X-Request-Id"]
    # A record no column can hold (forced past the request hook's own checks).
    writer.record((app_db.utcnow(), "env", None, "env", "not-a-uuid", "GET", "/x", 200, "bad"))
    flush_audit(app)
    with app.app_context():
        stored = {r.request_id: r for r in db.session.scalars(select(AuditRecord))}
    assert good in stored and "bad" not in stored
    odd_row = stored[odd.headers["X-Request-Id"]]
    assert odd_row.path == ("/v1/cues/" + "x" * 600)[:512]


def test_a_batch_is_stored_column_for_column(app, backend):
    """The writer's batch (``COPY`` on PostgreSQL, a multi-row INSERT elsewhere) stores each
    queued row as given: UTC time, NULL owner and user, the principal's key id."""
    writer = app.extensions["cueline_audit"]
    at = app_db.utcnow()
    user_id = uuid.uuid4()
    rows = [(at, "env", None, "env", user_id, "PUT", "/v1/internal/users/x", 200, "req-1"),
            (at, "acme", "owner-1", str(uuid.uuid4()), None, "GET", "/v1/cues", 404, "req-2")]
    for row in rows:
        writer.record(row)
    assert flush_audit(app) >= 2
    with app.app_context():
        stored = {r.request_id: r for r in db.session.scalars(
            select(AuditRecord).where(AuditRecord.request_id.in_(("req-1", "req-2"))))}
        for row in rows:
            record = stored[row[-1]]
            assert (record.at, record.principal, record.owner, record.key_id, record.user_id,
                    record.method, record.path, record.status) == row[:-1]
            assert record.at.utcoffset().total_seconds() == 0 and record.id is not None


# --- GET /v1/internal/audit ------------------------------------------------------------------


def test_audit_endpoint_filters_and_paginates(app, client, principal, monkeypatch):
    a_name, b_name = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    a, b = principal(a_name), principal(b_name)
    u1, u2 = new_user(client, a), new_user(client, a)
    base = app_db.utcnow()
    now = [base]
    monkeypatch.setattr(app_db, "clock", lambda: now[0])
    for i in range(5):
        now[0] = base + timedelta(minutes=i + 1)
        me(client, a, u1 if i % 2 == 0 else u2)
    now[0] = base + timedelta(minutes=10)
    me(client, b, u1)

    def query(**params):
        response = client.get("/v1/internal/audit", query_string=params,
                              headers=service_headers(token=a))
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    page = query(principal=a_name, user_id=u1)
    assert page["total"] == 3 and page["limit"] == 50 and page["offset"] == 0
    assert {r["user_id"] for r in page["records"]} == {u1}
    assert set(page["records"][0]) == {"id", "at", "principal", "key_id", "user_id", "method",
                                       "path", "status", "request_id"}
    ats = [r["at"] for r in page["records"]]
    assert ats == sorted(ats, reverse=True)  # newest first
    window = query(principal=a_name, since=(base + timedelta(minutes=2)).isoformat(),
                   until=(base + timedelta(minutes=4)).isoformat())
    assert window["total"] == 2
    first = query(principal=a_name, user_id=u1, limit=2)
    second = query(principal=a_name, user_id=u1, limit=2, offset=2)
    assert len(first["records"]) == 2 and len(second["records"]) == 1
    assert {r["id"] for r in first["records"]}.isdisjoint(r["id"] for r in second["records"])
    assert query(principal=b_name)["total"] == 1
    for bad in ({"limit": 0}, {"limit": 1001}, {"user_id": "nope"}, {"since": "yesterday"}):
        response = client.get("/v1/internal/audit", query_string=bad,
                              headers=service_headers(token=a))
        assert response.status_code == 422, bad


def test_owner_bound_principal_sees_only_its_owners_records(client, principal):
    acme = principal(f"acme-{uuid.uuid4().hex[:6]}", owner="acme")
    other = principal(f"other-{uuid.uuid4().hex[:6]}")
    mine = new_user(client, acme)
    me(client, acme, mine)
    me(client, other, mine)
    response = client.get("/v1/internal/audit", headers=service_headers(token=acme))
    records = response.get_json()["records"]
    assert records and {r["principal"] for r in records} == {records[0]["principal"]}
    assert records[0]["principal"].startswith("acme-")


def test_audit_endpoint_needs_a_service_credential(client):
    key, _ = register(client)
    response = client.get("/v1/internal/audit", headers=key_headers(key))
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_internal_token"


def test_retention_prunes_old_records(app, client, monkeypatch):
    user_id = new_user(client)
    base = app_db.utcnow()
    monkeypatch.setattr(app_db, "clock", lambda: base - timedelta(days=100))
    old = me(client, SERVICE_TOKEN, user_id).headers["X-Request-Id"]
    monkeypatch.setattr(app_db, "clock", lambda: base)
    recent = me(client, SERVICE_TOKEN, user_id).headers["X-Request-Id"]
    flush_audit(app)
    with app.app_context():
        assert prune_audit_at(base, retention_days=0) == 0  # 0 keeps everything
        assert prune_audit_at(base, retention_days=90) == 1
        left = set(db.session.scalars(select(AuditRecord.request_id)))
    assert recent in left and old not in left


def test_retention_job_runs_from_the_worker_table(make_app, monkeypatch):
    import importlib

    from app.worker import JOBS

    [job] = [j for j in JOBS if j.name == "audit_retention"]
    app = make_app(EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=SERVICE_TOKEN,
                   AUDIT_RETENTION_DAYS=7, AUDIT_RETENTION_INTERVAL_SECONDS=60)
    assert job.enabled(app.config) and job.interval_seconds(app.config) == 60
    module, _, name = job.target.partition(":")
    run = getattr(importlib.import_module(module), name)
    client = app.test_client()
    user_id = new_user(client)
    base = app_db.utcnow()
    monkeypatch.setattr(app_db, "clock", lambda: base - timedelta(days=8))
    me(client, SERVICE_TOKEN, user_id)
    monkeypatch.setattr(app_db, "clock", lambda: base)
    flush_audit(app)

    class Ctx:
        def now(self):
            return base

    with app.app_context():
        assert run(Ctx()) == 1
        assert run(Ctx()) == 0
        assert db.session.scalar(select(func.count()).select_from(AuditRecord)) == 1


def test_previous_env_token_is_audited_as_such(make_app):
    new_token = "n" * 48
    app = make_app(EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=new_token,
                   INTERNAL_AUTH_TOKEN_PREVIOUS=SERVICE_TOKEN)
    client = app.test_client()
    user_id = new_user(client, new_token)
    old = me(client, SERVICE_TOKEN, user_id).headers["X-Request-Id"]
    new = me(client, new_token, user_id).headers["X-Request-Id"]
    rows = {r.request_id: r for r in audit_rows(app)}
    assert (rows[old].principal, rows[old].key_id) == ("env", "env-previous")
    assert (rows[new].principal, rows[new].key_id) == ("env", "env")


# --- per-principal rate limit ------------------------------------------------------------------


def test_service_rate_limit_counts_across_users(make_app):
    app = make_app(EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=SERVICE_TOKEN,
                   RATELIMIT_ENABLED=True, SERVICE_RATE_LIMIT_PER_MINUTE=3)
    client = app.test_client()
    from app.auth.principals import create_principal

    with app.app_context():
        token = create_principal("limited").token
    users = [new_user(client, token, rate_limit_per_minute=100) for _ in range(2)]
    statuses = [me(client, token, users[i % 2]).status_code for i in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = me(client, token, users[0])
    error = error_of(refused)
    assert error["code"] == "rate_limit_exceeded" and error["limit_scope"] == "service"
    assert int(refused.headers["Retry-After"]) >= 1
    # Another principal has its own bucket; the internal endpoints are not limited.
    assert me(client, SERVICE_TOKEN, users[0]).status_code == 200
    assert new_user(client, token)


def test_subject_user_limit_still_applies_under_delegation(make_app):
    app = make_app(EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=SERVICE_TOKEN,
                   RATELIMIT_ENABLED=True, SERVICE_RATE_LIMIT_PER_MINUTE=100)
    client = app.test_client()
    user_id = new_user(client, rate_limit_per_minute=2)
    statuses = [me(client, SERVICE_TOKEN, user_id).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert "limit_scope" not in error_of(me(client, SERVICE_TOKEN, user_id))


@pytest.mark.parametrize("value", ["-1"])
def test_service_rate_limit_is_validated(make_app, value):
    from config import ConfigError

    with pytest.raises(ConfigError):
        make_app(SERVICE_RATE_LIMIT_PER_MINUTE=value)


def test_requests_refused_for_the_principal_do_not_count_against_its_users(make_app):
    """A principal over its own limit does not use up its users' limits with the requests it
    is refused; requests a user's limit refuses do not count against the principal."""
    app = make_app(EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=SERVICE_TOKEN,
                   RATELIMIT_ENABLED=True, SERVICE_RATE_LIMIT_PER_MINUTE=2)
    client = app.test_client()
    from app.auth.principals import create_principal

    with app.app_context():
        token = create_principal("noisy").token
    user_id = new_user(client, token, rate_limit_per_minute=5)
    user_key = client.post("/v1/auth/key/regenerate", headers={
        **service_headers(user_id), "X-Confirm-Destructive": "true"}).get_json()["api_key"]
    assert [me(client, token, user_id).status_code for _ in range(2)] == [200, 200]
    for _ in range(25):
        refused = me(client, token, user_id)
        assert refused.status_code == 429 and error_of(refused)["limit_scope"] == "service"
    # The user's own key still has 2 of the 5 requests of this minute (3 were counted: the
    # regeneration and the principal's two allowed requests).
    own = {"Authorization": f"Bearer {user_key}"}
    assert [client.get("/v1/auth/me", headers=own).status_code for _ in range(3)] == \
        [200, 200, 429]

    # The other way round: a user over their own limit costs the principal nothing.
    tight = new_user(client, SERVICE_TOKEN, rate_limit_per_minute=1)
    with app.app_context():
        fresh = create_principal("fresh").token
    assert me(client, fresh, tight).status_code == 200
    for _ in range(5):
        refused = me(client, fresh, tight)
        assert refused.status_code == 429 and "limit_scope" not in error_of(refused)
    roomy = new_user(client, SERVICE_TOKEN, rate_limit_per_minute=100)
    assert me(client, fresh, roomy).status_code == 200  # the principal's second request
