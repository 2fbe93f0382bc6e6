"""Fixtures for the import tests: cueapi-core source databases on the test PostgreSQL cluster.

The source is always PostgreSQL (cueapi-core runs on nothing else); the target is the usual
``make_app`` database, so every test runs with Cueline on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import uuid

import pytest

from tests.helpers import SESSION_SECRET
from tests.importers.upstream import create_schema, populate


@pytest.fixture
def new_source(pg_cluster):
    """``new_source(shape="models", populated=True, **populate_args)`` → a fresh cueapi-core
    database (its own, so a test may change it) and what was written to it."""

    def _make(shape: str = "models", populated: bool = True, **kwargs):
        url = pg_cluster.create_database(f"cueapi_{uuid.uuid4().hex[:12]}")
        create_schema(url, shape)
        if not populated:
            return url
        return populate(url, session_secret=SESSION_SECRET, **kwargs)

    return _make


@pytest.fixture(scope="session")
def _shared_source(pg_cluster):
    url = pg_cluster.create_database("cueapi_shared")
    create_schema(url)
    return populate(url, session_secret=SESSION_SECRET)


@pytest.fixture
def upstream(_shared_source):
    """A populated cueapi-core database that no test changes."""
    return _shared_source


def run(app, source_url, **kwargs):
    """Run the import in ``app``'s context and return its report."""
    from app.importers.cueapi.runner import run_import

    with app.app_context():
        return run_import(source_url, **kwargs)
