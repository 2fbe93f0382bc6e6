"""/health, /status and /v1/info: no auth, truthful, no secrets."""

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
