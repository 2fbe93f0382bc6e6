"""Reading a cueapi-core PostgreSQL database: one read-only snapshot, streamed in batches.

The whole run reads inside one ``REPEATABLE READ READ ONLY`` transaction, so every table is
seen as of the same instant (a message never refers to an agent created after the agents were
read) and nothing can be written to the source by mistake.  Rows come from server-side cursors
in batches, so the importer's memory does not depend on the size of a table.

The schema is introspected rather than assumed: a database built by cueapi-core's migrations
and one built from its models differ by a few columns (see ``docs/migrating.md``), and a
column this source lacks is read as NULL (and listed in the report).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool


class SourceError(Exception):
    """The source database cannot be read (unreachable, not cueapi-core, …)."""


def normalize_url(url: str) -> str:
    """A SQLAlchemy URL for psycopg 3 from any spelling an operator may paste.

    cueapi-core's own ``DATABASE_URL`` says ``postgresql+asyncpg://``; ``postgres://`` is the
    libpq short form.  Anything that is not PostgreSQL is refused.
    """
    try:
        parsed = make_url(url.replace("postgres://", "postgresql://", 1)
                          if url.startswith("postgres://") else url)
    except Exception:  # noqa: BLE001 - sqlalchemy raises ArgumentError and ValueError
        raise SourceError("--from is not a database URL (postgresql://user@host/dbname)") \
            from None
    if parsed.get_backend_name() != "postgresql":
        raise SourceError("--from must be a PostgreSQL URL: cueapi-core runs on PostgreSQL")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def redacted(url: str) -> str:
    """``url`` without its password, for the report."""
    try:
        return make_url(normalize_url(url)).set(drivername="postgresql") \
            .render_as_string(hide_password=True)
    except SourceError:
        return "<invalid URL>"


_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


def quote(name: str) -> str:
    """A column or table name as an SQL identifier (names come from introspection)."""
    if not _IDENTIFIER.fullmatch(name):
        raise SourceError(f"unexpected identifier {name!r} in the source schema")
    return f'"{name}"'


class Source:
    """An open snapshot of a cueapi-core database (use as a context manager)."""

    def __init__(self, url: str, connect_timeout: int = 10):
        self.url = normalize_url(url)
        self._engine = create_engine(self.url, connect_args={"connect_timeout": connect_timeout},
                                     hide_parameters=True, poolclass=NullPool)
        self._conn: Connection | None = None
        self.columns: dict[str, list[str]] = {}
        self.snapshot_at: datetime | None = None

    def __enter__(self) -> Source:
        try:
            conn = self._engine.connect().execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True)
            conn.begin()
            self._conn = conn
            self.snapshot_at = conn.scalar(text("SELECT now()"))
            rows = conn.execute(text(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"))
            for table, column in rows:
                self.columns.setdefault(table, []).append(column)
        except SQLAlchemyError as exc:
            self.close()
            raise SourceError(f"cannot read the source database: {_reason(exc)}") from None
        if "users" not in self.columns or "cues" not in self.columns:
            self.close()
            raise SourceError("the source database has no users and cues tables: is it a "
                              "cueapi-core database (and the right schema)?")
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.rollback()
                self._conn.close()
            finally:
                self._conn = None
        self._engine.dispose()

    @property
    def conn(self) -> Connection:
        assert self._conn is not None, "use Source as a context manager"
        return self._conn

    def has(self, table: str, column: str | None = None) -> bool:
        if column is None:
            return table in self.columns
        return column in self.columns.get(table, ())

    def revision(self) -> str | None:
        """cueapi-core's Alembic revision (``035`` …), when the source records one."""
        if "alembic_version" not in self.columns:
            return None
        return self.conn.scalar(text("SELECT version_num FROM alembic_version LIMIT 1"))

    def scalar(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        return self.conn.scalar(text(sql), params or {})

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        return list(self.conn.execute(text(sql), params or {}).mappings())

    def stream(self, sql: str, params: dict[str, Any], batch: int) -> Iterator[list[Any]]:
        """The rows of ``sql`` in lists of ``batch`` (a server-side cursor)."""
        result = self.conn.execution_options(stream_results=True, max_row_buffer=batch) \
            .execute(text(sql), params)
        try:
            for part in result.mappings().partitions(batch):
                yield list(part)
        finally:
            result.close()


def _reason(exc: SQLAlchemyError) -> str:
    """The first line of the driver's message (SQL parameters are hidden by the engine)."""
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
