"""Smoke test for the throwaway PostgreSQL cluster helper in tests/pg.py."""

import os

import pytest

try:  # tests/ as a package (conftest/__init__ present) or as a plain dir
    from tests.pg import PostgresCluster, find_bindir
except ImportError:
    from pg import PostgresCluster, find_bindir

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.skipif(
    find_bindir() is None,
    reason="PostgreSQL server binaries not found "
    "(install postgresql-15 or set CUELINE_PG_BINDIR)",
)


def _conninfo(sqlalchemy_url: str) -> str:
    """Turn the SQLAlchemy URL into a libpq URI psycopg accepts."""
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


def _select_one(url: str) -> int:
    with psycopg.connect(_conninfo(url), connect_timeout=5) as conn:
        return conn.execute("SELECT 1").fetchone()[0]


def test_cluster_lifecycle():
    cluster = PostgresCluster()
    try:
        cluster.start()
        assert cluster.port > 0
        url = cluster.create_database("cueline_smoke")
        assert url == (
            f"postgresql+psycopg://postgres@127.0.0.1:{cluster.port}/cueline_smoke"
        )
        assert _select_one(url) == 1
        pid = cluster.postmaster_pid()
        assert pid is not None and os.path.exists(f"/proc/{pid}")

        # Stopped: connections must be refused.  stop() is idempotent.
        cluster.stop()
        cluster.stop()
        assert cluster.postmaster_pid() is None
        with pytest.raises(psycopg.OperationalError):
            _select_one(url)

        # Restart keeps the port and the data (our database still exists).
        port = cluster.port
        cluster.restart()
        assert cluster.port == port
        assert _select_one(url) == 1
        root = cluster.root
        assert root and os.path.isdir(root)
    finally:
        cluster.cleanup()

    assert not os.path.exists(root)
    cluster.cleanup()  # second call must be harmless
