"""Shared fixtures: a fresh app per configuration, on SQLite and on PostgreSQL.

* ``db_url`` is parametrized over both backends, so every test that builds an app through
  ``make_app`` runs twice.  PostgreSQL is a throwaway cluster started once per session
  (``tests/pg.py``); without PostgreSQL binaries those variants skip, unless
  ``CUELINE_TEST_REQUIRE_POSTGRES=1`` (set by ``make test``), which turns that into a failure.
* The schema is built once per backend with the real migrations, and every table is emptied
  after each test.
* Flags are switched by building a new app (``make_app(FLAG=value)``), never by reloading.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

# Every compiled response dump is checked against marshmallow's, here and in the servers tests
# start as subprocesses (app.dumping).
os.environ["CUELINE_VERIFY_DUMPS"] = "1"

from app import create_app  # noqa: E402
from tests.helpers import SERVICE_TOKEN, SESSION_SECRET, LiveServer  # noqa: E402
from tests.pg import PostgresCluster, PostgresUnavailable  # noqa: E402
from tests.redis_server import RedisServer, RedisUnavailable, require_redis  # noqa: E402

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(autouse=True)
def _rate_window(request):
    """Tests marked ``rate_window`` count requests against a per-minute limit: keep them clear
    of a window boundary (see :func:`tests.helpers.clear_of_window_boundary`)."""
    if request.node.get_closest_marker("rate_window"):
        from tests.helpers import clear_of_window_boundary

        clear_of_window_boundary()


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    """No test sends an HTTP request off this machine: any other destination fails the test.

    (Subprocesses started by tests — gunicorn, workers — are only ever given 127.0.0.1 URLs.)
    A URL may also name a host under ``.invalid`` (RFC 6761: never resolvable), which a test
    maps with a monkeypatched ``resolve_addresses``; the socket itself must still go to
    loopback, which the second guard checks where connections are opened.
    """
    import httpcore
    import httpx

    loopback = ("127.0.0.1", "localhost", "::1")
    for client_class in (httpx.Client, httpx.AsyncClient):
        original = client_class.send

        def guarded(self, request, *args, _original=original, **kwargs):
            host = request.url.host
            assert host in loopback or host.endswith(".invalid"), f"test tried to reach {host}"
            return _original(self, request, *args, **kwargs)

        monkeypatch.setattr(client_class, "send", guarded)

    original_connect = httpcore.SyncBackend.connect_tcp

    def guarded_connect(self, host, port, *args, **kwargs):
        assert host in loopback, f"test tried to connect to {host}"
        return original_connect(self, host, port, *args, **kwargs)

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", guarded_connect)


def _require_postgres() -> bool:
    return os.environ.get("CUELINE_TEST_REQUIRE_POSTGRES", "") in ("1", "true", "yes")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the whole run."""
    cluster = PostgresCluster()
    try:
        cluster.start()
    except PostgresUnavailable as exc:
        cluster.cleanup()
        if _require_postgres():
            pytest.fail(f"PostgreSQL is required but unavailable: {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    yield cluster
    cluster.cleanup()


def _migrate(url: str) -> None:
    """Build the schema with the real migrations."""
    from flask_migrate import upgrade

    app = create_app({"ENV": "test", "DATABASE_URL": url})
    with app.app_context():
        upgrade()
        from app.extensions import db

        db.engine.dispose()


@pytest.fixture(scope="session")
def _sqlite_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'cueline.db'}"
    _migrate(url)
    return url


@pytest.fixture(scope="session")
def _postgresql_url(pg_cluster) -> str:
    url = pg_cluster.create_database("cueline_test")
    _migrate(url)
    return url


def _empty_tables(url: str) -> None:
    from app.extensions import db

    tables = [t.name for t in reversed(db.metadata.sorted_tables)]
    engine = create_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request) -> Iterator[str]:
    """The URL of a migrated, empty database on each backend in turn."""
    url = request.getfixturevalue(f"_{request.param}_url")
    yield url
    _empty_tables(url)


@pytest.fixture
def backend(db_url) -> str:
    return "postgresql" if db_url.startswith("postgresql") else "sqlite"


@pytest.fixture
def make_app(db_url):
    """Build a Cueline app on the current backend with config overrides."""
    apps = []

    def _make(**overrides):
        # Request rate limiting is off unless a test turns it on (tests/test_ratelimit.py).
        base = {"ENV": "test", "DATABASE_URL": db_url, "SESSION_SECRET": SESSION_SECRET,
                "RATELIMIT_ENABLED": False}
        app = create_app({**base, **overrides})
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield _make
    from app.extensions import db

    for app in apps:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def delegation_app(make_app):
    """An app with Path 2 on and the test service token."""
    return make_app(EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=SERVICE_TOKEN)


@pytest.fixture
def delegation_client(delegation_app):
    return delegation_app.test_client()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A throwaway redis-server for one test (skips without one unless
    ``CUELINE_TEST_REQUIRE_REDIS=1``)."""
    try:
        with RedisServer() as server:
            yield server.url
    except RedisUnavailable as exc:
        if require_redis():
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture
def live_server():
    """``live_server(app)`` → a started :class:`LiveServer`, stopped after the test."""
    servers = []

    def _serve(app) -> LiveServer:
        server = LiveServer(app).__enter__()
        servers.append(server)
        return server

    yield _serve
    for server in servers:
        server.__exit__(None, None, None)
