"""/health, /status and /v1/info: no auth, truthful, no secrets."""

import pytest
from sqlalchemy import create_engine

from tests.helpers import SERVICE_TOKEN, SESSION_SECRET


def test_health_reports_database(client):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "healthy"
    assert body["services"]["database"] == "ok"
    assert body["timestamp"].endswith("+00:00")


def test_health_when_database_is_unreachable(make_app, tmp_path):
    app = make_app(DATABASE_URL=f"sqlite:///{tmp_path}/missing-dir/nope/x.db")
    response = app.test_client().get("/health")
    assert response.status_code == 200
    assert response.get_json()["status"] == "degraded"
    assert response.get_json()["services"]["database"] == "error"
    status = app.test_client().get("/status")
    assert status.status_code == 503
    assert status.get_json() == {"status": "down", "reason": "database unreachable"}


def test_status_ok(client):
    assert client.get("/status").get_json() == {"status": "healthy"}


def test_info_never_contains_secrets(delegation_app):
    response = delegation_app.test_client().get("/v1/info")
    assert response.status_code == 200
    body = response.get_json()
    assert body["authentication_paths"] == {"per_user_api_key": True, "session_token": True,
                                            "internal_token_with_on_behalf_of": True}
    assert SERVICE_TOKEN not in response.get_data(as_text=True)
    assert SESSION_SECRET not in response.get_data(as_text=True)


def test_migrations_match_the_models(app, db_url):
    """The hand-written migrations build exactly the schema the models declare."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from app.extensions import db

    engine = create_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                db.metadata)
    engine.dispose()
    assert diff == []


def test_read_only_views_run_without_a_transaction_on_postgresql(app, backend):
    """Marked GETs autocommit on PostgreSQL (no BEGIN/ROLLBACK); the rest is transactional."""
    from flask import g

    from app.extensions import db
    from tests.helpers import key_headers, register

    @app.after_request
    def _record(response):
        dbapi = db.session.connection().connection.dbapi_connection
        g.autocommit = bool(getattr(dbapi, "autocommit", False))
        seen.append(g.autocommit)
        return response

    seen: list[bool] = []
    client = app.test_client()
    key, _ = register(client)
    seen.clear()
    assert client.get("/v1/auth/me", headers=key_headers(key)).status_code == 200
    assert client.get("/v1/cues", headers=key_headers(key)).status_code == 200
    created = client.post("/v1/cues", headers=key_headers(key), json={
        "name": "tx", "transport": "worker", "schedule": {"type": "recurring",
                                                         "cron": "0 0 1 1 *"}})
    assert created.status_code == 201
    assert client.get("/v1/auth/me", headers=key_headers(key)).get_json()["active_cues"] == 1
    assert client.head("/v1/cues", headers=key_headers(key)).status_code == 200  # GET's view
    expected_read = backend == "postgresql"
    assert seen == [expected_read, expected_read, False, expected_read, expected_read]


@pytest.mark.parametrize("raw", [
    b'{"greeting": "h\xc3\xa9llo", "n": [1, 2.5, null, true]}',
    b'"\\ud83d\\ude00 and a lone \\ud800"',
    bytearray(b'{"nested": {"list": ["\xe2\x9c\x93"]}}'),
    '{"already": "text"}',
])
def test_json_columns_decode_like_json_loads(raw):
    """The PostgreSQL JSON loader skips json.loads' encoding probe but answers the same."""
    import json

    from app.db import _json_from_utf8

    assert _json_from_utf8(raw) == json.loads(raw)


def test_json_column_round_trip_keeps_non_ascii(app):
    """A cue payload with non-ASCII text and escapes comes back as it was sent, on both
    backends (on PostgreSQL through the engine's JSON loader)."""
    from tests.helpers import key_headers, register

    client = app.test_client()
    key, _ = register(client)
    payload = {"greeting": "héllo ✓ 日本", "emoji": "😀", "quote": "\"\\", "n": [1, None]}
    created = client.post("/v1/cues", headers=key_headers(key), json={
        "name": "json", "transport": "worker", "payload": payload,
        "schedule": {"type": "recurring", "cron": "0 0 1 1 *"}})
    assert created.status_code == 201, created.get_json()
    listed = client.get("/v1/cues", headers=key_headers(key)).get_json()
    assert listed["cues"][0]["payload"] == payload


def test_health_services_keys(app, client, backend):
    body = client.get("/health").get_json()
    services = body["services"]
    assert set(services) == {"database", "postgres", "redis", "worker"}
    assert services["database"] == "ok"
    assert services["postgres"] == ("ok" if backend == "postgresql" else "none")
    assert services["redis"] == "none"  # memory:// rate-limit storage: no Redis configured
    assert services["worker"] == "none" and body["status"] == "healthy"
    from tests.helpers import key_headers, register

    headers = key_headers(register(client)[0])
    client.post("/v1/worker/heartbeat", json={"worker_id": "w1"}, headers=headers)
    assert client.get("/health").get_json()["services"]["worker"] == "ok"


def test_health_reports_redis(make_app):
    from tests.redis_server import RedisServer, RedisUnavailable
    from tests.redis_server import require_redis

    try:
        with RedisServer() as server:
            up = make_app(RATELIMIT_ENABLED=True, RATELIMIT_STORAGE_URI=server.url
                          ).test_client().get("/health")
            assert up.get_json()["services"]["redis"] == "ok"
            assert up.get_json()["status"] == "healthy"
            url = server.url
    except RedisUnavailable as exc:
        if require_redis():
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    down = make_app(RATELIMIT_ENABLED=True, RATELIMIT_STORAGE_URI=url
                    ).test_client().get("/health")  # the server has stopped
    assert down.status_code == 200
    assert down.get_json()["services"]["redis"] == "error"
    assert down.get_json()["status"] == "degraded"


def test_info_has_exactly_the_wire_keys(client, app):
    body = client.get("/v1/info").get_json()
    assert set(body) == {"version", "authorization_backend", "authentication_paths",
                         "disabled_primitives"}
    assert body["authorization_backend"] == "SameTenantAuthorizationBackend"
    listed = client.get("/v1/info?include=modules").get_json()
    assert listed["modules"] == list(app.extensions["cueline_modules"])
    assert {"alerts", "echo"} <= set(listed["modules"])
    bad = client.get("/v1/info?include=secrets")
    assert bad.status_code == 422


def test_wire_wording_of_common_messages(make_app, client):
    """Clients and people grep for these phrases (spec §2.3, §1.8, §7.2)."""
    from tests.helpers import error_of, key_headers, register

    key, _ = register(client)
    client.post("/v1/auth/key/regenerate", headers={**key_headers(key),
                                                    "X-Confirm-Destructive": "true"})
    rotated = client.get("/v1/auth/me", headers=key_headers(key))
    assert error_of(rotated)["code"] == "key_rotated"
    assert "rotated" in error_of(rotated)["message"]
    limited = make_app(RATELIMIT_ENABLED=True, RATE_LIMIT_ANONYMOUS_PER_MINUTE=1).test_client()
    limited.get("/v1/auth/me")
    refused = limited.get("/v1/auth/me")
    assert refused.status_code == 429
    message = error_of(refused)["message"]
    assert f"Retry after {refused.headers['Retry-After']} second" in message
    new_key, _ = register(client)
    cue = client.post("/v1/cues", headers=key_headers(new_key), json={
        "name": "w", "transport": "worker",
        "schedule": {"type": "recurring", "cron": "0 9 * * *"}}).get_json()
    assert cue["warning"].startswith("No active workers")


@pytest.fixture
def scratch_url(backend, tmp_path, request):
    """An empty database of the current backend, for migration tests."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/scratch.db"
    return request.getfixturevalue("pg_cluster").create_database(
        f"scratch_{tmp_path.name[-8:].lower().replace('-', '_')}")


def test_invite_owner_migration_backfills_from_the_minting_principal(scratch_url):
    """0011_security gives invites minted by an owner-bound principal that principal's owner."""
    import uuid
    from datetime import UTC, datetime

    from flask_migrate import upgrade
    from sqlalchemy import text

    from app import create_app

    app = create_app({"ENV": "test", "DATABASE_URL": scratch_url})
    with app.app_context():
        upgrade(revision="0006_principals")
        engine = create_engine(scratch_url)
        now = datetime.now(UTC)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO service_principals (id, name, owner, scopes, "
                              "created_at) VALUES (:id, 'crm', 'acme', 'users:write', :now)"),
                         {"id": uuid.uuid4().hex if "sqlite" in scratch_url else uuid.uuid4(),
                          "now": now})
            for created_by in ("service:crm", "service:env", "cli"):
                conn.execute(text(
                    "INSERT INTO invites (id, token_hash, token_prefix, uses, created_by, "
                    "created_at) VALUES (:id, :hash, 'inv_x', 0, :by, :now)"),
                    {"id": uuid.uuid4().hex if "sqlite" in scratch_url else uuid.uuid4(),
                     "hash": uuid.uuid4().hex, "by": created_by, "now": now})
        upgrade()
        with engine.connect() as conn:
            owners = dict(conn.execute(text("SELECT created_by, owner FROM invites")).all())
        engine.dispose()
        from app.extensions import db

        db.engine.dispose()
    assert owners == {"service:crm": "acme", "service:env": None, "cli": None}
