"""``flask config check --connect``: can this configuration reach its database and Redis?

Standard library, SQLAlchemy and redis-py only, and no application object: the check runs on
configurations that ``create_app`` would refuse, and must itself never print a secret (URLs are
shown with their passwords hidden).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


def default_sqlite_url() -> str:
    """The SQLite file ``create_app`` uses when ``DATABASE_URL`` is empty."""
    from flask import Flask

    return "sqlite:///" + os.path.join(Flask("app").instance_path, "cueline.db")


def check_connections(values: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Connect to the database (and Redis when ``RATELIMIT_STORAGE_URI`` is a Redis URL).

    Returns ``(report_lines, problems)``: one line per reachable service, one problem per
    unreachable one (or a database whose schema is not at the newest migration).
    """
    report: list[str] = []
    problems: list[str] = []
    url = values["DATABASE_URL"] or default_sqlite_url()
    shown = make_url(url).render_as_string(hide_password=True)
    line, problem = _check_database(url, shown, values["DB_CONNECT_TIMEOUT_SECONDS"])
    if line:
        report.append(line)
    if problem:
        problems.append(problem)
    storage = values["RATELIMIT_STORAGE_URI"]
    if storage.startswith(("redis://", "rediss://", "redis+unix://")):
        line, problem = _check_redis(storage, values["DB_CONNECT_TIMEOUT_SECONDS"])
        if line:
            report.append(line)
        if problem:
            problems.append(problem)
    return report, problems


def _schema_revisions(connection) -> tuple[set[str], set[str]]:
    """(current revisions of the database, head revisions of migrations/)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    directory = os.path.join(os.path.dirname(__file__), "..", "migrations")
    heads = set(ScriptDirectory(directory).get_heads())
    current = set(MigrationContext.configure(connection).get_current_heads())
    return current, heads


def _check_database(url: str, shown: str, timeout: int) -> tuple[str | None, str | None]:
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        path = make_url(url).database or ""
        if path and path != ":memory:" and not os.path.exists(path):
            return None, (f"DATABASE_URL: the SQLite file {path} does not exist yet; "
                          "create it with: flask --app wsgi db upgrade")
        args: dict[str, Any] = {}
    else:
        args = {"connect_args": {"connect_timeout": timeout}}
    engine = create_engine(url, **args)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            current, heads = _schema_revisions(connection)
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the answer
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0][:300]
        return None, f"DATABASE_URL: cannot connect to {shown}: {reason}"
    finally:
        engine.dispose()
    if current != heads:
        state = ", ".join(sorted(current)) or "empty"
        return None, (f"DATABASE_URL: {shown} is reachable but its schema is at {state}, not "
                      f"{', '.join(sorted(heads))}; run: flask --app wsgi db upgrade")
    return f"database: connected to {shown}, schema up to date", None


def _check_redis(uri: str, timeout: int) -> tuple[str | None, str | None]:
    import redis

    shown = make_url(uri.replace("redis+unix", "redis", 1)).render_as_string(hide_password=True)
    try:
        client = redis.Redis.from_url(uri, socket_connect_timeout=timeout, socket_timeout=timeout)
        client.ping()
        client.close()
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the answer
        return None, f"RATELIMIT_STORAGE_URI: cannot reach Redis at {shown}: {exc}"
    return f"redis: connected to {shown}", None
