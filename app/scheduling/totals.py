"""Row counts kept by the database: a user's cues and a cue's executions.

``GET /v1/cues`` and ``GET /v1/executions`` answer with ``total``, the size of the whole
filtered set.  Counting it per request costs time in proportion to the set: 100,000 cues took
~18 ms and 1,000,000 executions ~115 ms on PostgreSQL even from an index, against ~1 ms for the
page itself.  So the two unfiltered totals are kept as counters, in ``user_cue_totals`` and
``cue_execution_totals``, and read with one primary-key lookup.

Triggers keep them, not the application: every writer counts, whether it is the API, the
scheduler, the importer's bulk statements or a cascade from deleting a user, and a rolled-back
transaction rolls its counts back with it.  They count inserts and deletes only (and the rare
update that moves a row to another owner), never status changes, so the hot status updates of
the delivery path touch no counter and take no extra lock.  Totals of a *filtered* list
(``status=…``, ``worker_id=…``) are still counted by query, over an index.

On PostgreSQL the insert and delete triggers are statement triggers over transition tables: a
scheduler tick that creates 500 executions updates each cue's counter once, in cue order, so
two concurrent statements lock counter rows in the same order.  SQLite has row triggers only
(and one writer at a time).

Keep in mind when writing a migration: SQLite's ``batch_alter_table`` re-creates a table and
its triggers are lost with the old one.  A migration that batch-alters ``cues`` or
``executions`` must call :func:`create_triggers` again afterwards.
"""

from __future__ import annotations

from sqlalchemy import select, text

#: (counted table, owner column, totals table, count column)
COUNTED = (
    ("cues", "user_id", "user_cue_totals", "cues"),
    ("executions", "cue_id", "cue_execution_totals", "executions"),
)


def _postgresql(table: str, owner: str, totals: str, count: str) -> list[str]:
    prefix = f"{totals}"
    add = (f"INSERT INTO {totals} ({owner}, {count}) "
           f"SELECT {owner}, count(*) FROM changed GROUP BY {owner} ORDER BY {owner} "
           f"ON CONFLICT ({owner}) DO UPDATE SET {count} = {totals}.{count} + excluded.{count}")
    subtract = (f"UPDATE {totals} SET {count} = {totals}.{count} - gone.n "
                f"FROM (SELECT {owner}, count(*) AS n FROM changed GROUP BY {owner} "
                f"ORDER BY {owner}) AS gone WHERE {totals}.{owner} = gone.{owner}")
    return [
        f"CREATE FUNCTION {prefix}_added() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {add}; RETURN NULL; END $$",
        f"CREATE FUNCTION {prefix}_removed() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {subtract}; RETURN NULL; END $$",
        f"CREATE FUNCTION {prefix}_moved() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"UPDATE {totals} SET {count} = {count} - 1 WHERE {owner} = OLD.{owner}; "
        f"INSERT INTO {totals} ({owner}, {count}) VALUES (NEW.{owner}, 1) "
        f"ON CONFLICT ({owner}) DO UPDATE SET {count} = {totals}.{count} + 1; "
        f"RETURN NULL; END $$",
        f"CREATE TRIGGER {prefix}_added AFTER INSERT ON {table} REFERENCING NEW TABLE AS changed "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {prefix}_added()",
        f"CREATE TRIGGER {prefix}_removed AFTER DELETE ON {table} "
        f"REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION {prefix}_removed()",
        f"CREATE TRIGGER {prefix}_moved AFTER UPDATE OF {owner} ON {table} FOR EACH ROW "
        f"WHEN (OLD.{owner} IS DISTINCT FROM NEW.{owner}) EXECUTE FUNCTION {prefix}_moved()",
    ]


def _sqlite(table: str, owner: str, totals: str, count: str) -> list[str]:
    def add(row: str) -> str:
        return (f"INSERT INTO {totals} ({owner}, {count}) VALUES ({row}.{owner}, 1) "
                f"ON CONFLICT ({owner}) DO UPDATE SET {count} = {count} + 1;")

    def subtract(row: str) -> str:
        return f"UPDATE {totals} SET {count} = {count} - 1 WHERE {owner} = {row}.{owner};"

    return [
        f"CREATE TRIGGER {totals}_added AFTER INSERT ON {table} FOR EACH ROW "
        f"BEGIN {add('NEW')} END",
        f"CREATE TRIGGER {totals}_removed AFTER DELETE ON {table} FOR EACH ROW "
        f"BEGIN {subtract('OLD')} END",
        f"CREATE TRIGGER {totals}_moved AFTER UPDATE OF {owner} ON {table} FOR EACH ROW "
        f"WHEN OLD.{owner} IS NOT NEW.{owner} BEGIN {subtract('OLD')} {add('NEW')} END",
    ]


def create_triggers(bind) -> None:
    """Create the counting triggers (and, on PostgreSQL, their functions) on ``bind``."""
    build = _postgresql if bind.dialect.name == "postgresql" else _sqlite
    for counted in COUNTED:
        for statement in build(*counted):
            bind.execute(text(statement))


def drop_triggers(bind) -> None:
    """Drop what :func:`create_triggers` created."""
    postgresql = bind.dialect.name == "postgresql"
    for table, _owner, totals, _count in COUNTED:
        for kind in ("added", "removed", "moved"):
            on = f" ON {table}" if postgresql else ""
            bind.execute(text(f"DROP TRIGGER IF EXISTS {totals}_{kind}{on}"))
            if postgresql:
                bind.execute(text(f"DROP FUNCTION IF EXISTS {totals}_{kind}()"))


def recount(bind) -> None:
    """Set every counter from a count of its rows (the migration's backfill; also a repair)."""
    for table, owner, totals, count in COUNTED:
        bind.execute(text(f"DELETE FROM {totals}"))
        bind.execute(text(f"INSERT INTO {totals} ({owner}, {count}) "
                          f"SELECT {owner}, count(*) FROM {table} GROUP BY {owner}"))


def cue_executions(cue_id: str) -> int:
    """How many executions cue ``cue_id`` has (its counter; 0 when it has none)."""
    from app.extensions import db
    from app.scheduling.models import CueExecutionTotal

    return int(db.session.scalar(select(CueExecutionTotal.executions)
                                 .where(CueExecutionTotal.cue_id == cue_id)) or 0)
