"""Reconciling imported rows with Cueline's tables, one batch at a time.

For each row the import wants Cueline to hold (its values ``U``), the ledger remembers what an
earlier run wrote (``L``, a digest) and the target holds what Cueline has now (``C``):

=======================  ==================================================================
no ``L``, no ``C``       insert
``U == L``               unchanged upstream since the last run: nothing to do (whatever
                         Cueline did to the row since is kept)
``L``, no ``C``          deleted in Cueline after the import: kept deleted (noted)
``C == U``               already equal: nothing to do (the ledger learns it)
no ``L``, ``C != U``     a row with this key that the import did not write: conflict
``C == L``, ``U != L``   changed upstream only: update
otherwise                changed on both sides: conflict, Cueline's copy is kept
=======================  ==================================================================

Counter tables merge instead: Cueline's count plus upstream's increments since the last run.

Rows that would break one of Cueline's unique keys (an e-mail held by another user, …) are
conflicts before anything is written.  A batch is written in one transaction; if the database
still refuses it (a concurrent write), each of its rows is retried in a transaction of its own
and the refused ones become conflicts — a row is always written whole or not at all.
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import String, Table, and_, any_, bindparam, delete, func, select, text, tuple_, \
    update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.types import Uuid

from app.db import dialect_name, utcnow
from app.extensions import db
from app.importers.models import ImportedRow
from app.importers.report import CONFLICT, KEPT, Report, RowNote

INSERTED = "inserted"
UPDATED = "updated"
UNCHANGED = "unchanged"
REFUSED = "conflict"
KEPT_DELETED = "kept_deleted"
KEPT_CHANGED = "kept_changed"
#: Statuses after which a row is not in Cueline as upstream has it (refused), or not at all
#: (deleted there): rows depending on it are not written either.
NOT_WRITTEN = (REFUSED, KEPT_DELETED)


_PLAIN = (str, int, float, bool, type(None))


def canonical(value: Any) -> Any:
    """``value`` in a form that compares equal however the database handed it back."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date | uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date | uuid.UUID):
        return canonical(value)
    raise TypeError(f"cannot digest a {type(value).__name__}")


def digest_of(values: dict[str, Any], columns: Iterable[str]) -> str:
    """SHA-256 over the canonical JSON of ``values`` in ``columns`` order.

    Timestamps, dates and UUIDs are spelt as :func:`canonical` spells them (by the encoder's
    ``default`` hook: the C encoder walks the rest, five times faster than canonicalising
    every value first); JSON values are key-sorted.
    """
    material = json.dumps([values.get(c) for c in columns], sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False, default=_json_default)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class UniqueKey:
    """A unique key of a target table besides its primary key.

    ``live_column``: the key only binds rows where that column is NULL (a partial index, as
    one live agent per slug); ``flag_column``: only rows where that boolean column is true (one
    default live session per agent).  A row with a NULL in ``columns`` never conflicts, as in
    SQL's unique indexes (an event without an idempotency key).
    """

    columns: tuple[str, ...]
    code: str
    what: str
    live_column: str | None = None
    flag_column: str | None = None

    def binds(self, values: dict[str, Any]) -> bool:
        """Does this key constrain a row with ``values``?"""
        return ((self.live_column is None or values.get(self.live_column) is None)
                and (self.flag_column is None or bool(values.get(self.flag_column)))
                and all(values.get(c) is not None for c in self.columns))


@dataclass(frozen=True, eq=False)
class TargetTable:
    """A Cueline table as an import writes it: which columns, which unique keys.

    ``legacy_columns``: the column lists of earlier versions of the import, whose digests a
    ledger written by them holds.  A row Cueline still has as such a version wrote it counts
    as unchanged in Cueline (so adding a column to an import does not turn every row imported
    before into a ``changed_in_cueline``).
    """

    name: str
    columns: tuple[str, ...]
    unique_keys: tuple[UniqueKey, ...] = ()
    counter: str | None = None
    legacy_columns: tuple[tuple[str, ...], ...] = ()

    def as_imported(self, now: dict[str, Any], ledger_digest: str) -> bool:
        """Does Cueline's row ``now`` still hold what the import recorded as ``ledger_digest``
        (by this version's columns or an earlier version's)?"""
        return digest_of(now, self.columns) == ledger_digest or any(
            digest_of(now, columns) == ledger_digest for columns in self.legacy_columns)

    @functools.cached_property
    def table(self) -> Table:
        return db.metadata.tables[self.name]

    @functools.cached_property
    def key_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.table.primary_key.columns)

    def key_of(self, values: dict[str, Any]) -> str:
        return "|".join(str(canonical(values[c])) for c in self.key_columns)

    def key_values(self, key: str) -> dict[str, Any]:
        """The primary key columns of a ledger ``row_key``."""
        parts = key.split("|", len(self.key_columns) - 1)
        values = {}
        for column_name, part in zip(self.key_columns, parts, strict=True):
            column = self.table.c[column_name]
            if isinstance(column.type, Uuid):
                values[column_name] = uuid.UUID(part)
            elif column.type.python_type is date:
                values[column_name] = date.fromisoformat(part)
            else:
                values[column_name] = part
        return values

    @functools.cached_property
    def _checks(self) -> tuple[tuple[str, bool, int | None], ...]:
        """``(column, nullable, max length of a string column)`` of every written column."""
        checks = []
        for name in self.columns:
            column = self.table.c[name]
            length = getattr(column.type, "length", None)
            checks.append((name, column.nullable,
                           length if isinstance(column.type, String) else None))
        return tuple(checks)

    def problem(self, values: dict[str, Any]) -> tuple[str, str] | None:
        """``(code, message)`` when ``values`` cannot be stored in this table as they are."""
        for name, nullable, length in self._checks:
            value = values.get(name)
            if value is None:
                if not nullable:
                    return "missing_value", f"{self.name}.{name} has no value upstream"
            elif length and len(value) > length:
                return ("value_too_long",
                        f"{self.name}.{name} is {len(value)} characters; Cueline stores at "
                        f"most {length}")
        return None

    def row(self, values: dict[str, Any]) -> Row:
        return Row(self.key_of(values), values, digest_of(values, self.columns),
                   values.get(self.counter) if self.counter else None)


@dataclass
class Row:
    """One row the import wants in a target table.

    ``counter``: for counter tables, upstream's count (what the ledger remembers, while
    ``values`` may carry the merged count written to Cueline).
    """

    key: str
    values: dict[str, Any]
    digest: str
    counter: int | None = None


def member_of(columns: list, values: list[tuple]):
    """SQL: the tuple of ``columns`` is one of ``values``.

    On PostgreSQL the values travel as one array parameter per column (``= ANY(…)``, or
    ``IN (SELECT unnest(…), …)`` for several columns) instead of one parameter per value: a
    thousand-value ``IN`` list costs the driver more to prepare than the server to run.
    """
    if dialect_name() != "postgresql":
        if len(columns) == 1:
            return columns[0].in_([v[0] for v in values])
        return tuple_(*columns).in_(values)
    params = [bindparam(None, [v[i] for v in values], type_=postgresql.ARRAY(c.type))
              for i, c in enumerate(columns)]
    if len(columns) == 1:
        return columns[0] == any_(params[0])
    return tuple_(*columns).in_(select(*[func.unnest(p) for p in params]))


def insert_rows(table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``table`` in the current transaction.

    On PostgreSQL this is one ``COPY … FROM STDIN`` instead of an ``executemany`` of
    single-row inserts: the 20,000-execution run of ``bench/import_bench.py`` went from 12.1 s
    to 10.5 s with it (the rest of a batch is reading and deciding).  Values are first passed
    through each column type's bind processor, so they are exactly what an ``INSERT`` would
    send.  A constraint violation
    fails the whole statement, like the ``INSERT`` it replaces.
    """
    if not rows:
        return
    if dialect_name() != "postgresql":
        db.session.execute(table.insert(), rows)
        return
    columns = list(rows[0])
    dialect = db.engine.dialect
    processors = [table.c[c].type.dialect_impl(dialect).bind_processor(dialect)
                  for c in columns]
    names = ", ".join(dialect.identifier_preparer.quote(c) for c in columns)
    cursor_owner = db.session.connection().connection.driver_connection
    with cursor_owner.cursor() as cursor, \
            cursor.copy(f"COPY {dialect.identifier_preparer.quote(table.name)} ({names}) "
                        "FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row[c] if processor is None else processor(row[c])
                            for c, processor in zip(columns, processors, strict=True)])


def _key_clause(target: TargetTable, keys: list[dict[str, Any]]):
    columns = [target.table.c[c] for c in target.key_columns]
    return member_of(columns, [tuple(k[c.name] for c in columns) for k in keys])


def _constraint(exc: Exception) -> str:
    """What the database refused, without the values (they may be personal data)."""
    orig = getattr(exc, "orig", None)
    diag = getattr(orig, "diag", None)
    name = getattr(diag, "constraint_name", None) if diag is not None else None
    if name:
        return name
    text = str(orig or exc).splitlines()[0]
    return text.split(":", 1)[0] if ":" in text else text


class Writer:
    """Applies batches of :class:`Row` to target tables, recording every outcome in ``report``.

    ``source`` names the ledger's source (``cueapi``).  With ``dry_run`` nothing is written:
    the decisions (and the counts) are the same as a real run would make on the same data.
    """

    def __init__(self, source: str, report: Report, dry_run: bool):
        self.source = source
        self.report = report
        self.dry_run = dry_run
        self._grown: dict[str, int] = {}
        self._analyzed_at: dict[str, int] = {}

    def _keep_statistics(self, target: TargetTable, rows: int) -> None:
        """ANALYZE a table (and the ledger) each time this import has doubled it.

        PostgreSQL plans from statistics autovacuum refreshes only now and then; for a table
        it believes empty it picks sequential scans, and the per-batch key lookups then cost
        seconds each once the import has written tens of thousands of rows (measured: 0.6 s
        per batch at 30,000 rows, about 25 ms after ANALYZE).  Doubling keeps the
        number of ANALYZE runs logarithmic in the size of the import.
        """
        if dialect_name() != "postgresql" or not rows:
            return
        grown = self._grown[target.name] = self._grown.get(target.name, 0) + rows
        if grown < 2 * max(self._analyzed_at.get(target.name, 0), 500):
            return
        self._analyzed_at[target.name] = grown
        db.session.execute(text(f"ANALYZE {target.name}"))
        db.session.execute(text(f"ANALYZE {ImportedRow.__tablename__}"))
        db.session.commit()

    # -- reading ------------------------------------------------------------------------

    def _ledger(self, target: TargetTable, keys: list[str]) -> dict[str, tuple[str, int | None]]:
        if not keys:
            return {}
        ledger = ImportedRow.__table__
        rows = db.session.execute(
            select(ledger.c.row_key, ledger.c.digest, ledger.c.counter)
            .where(ledger.c.source == self.source, ledger.c.table_name == target.name,
                   member_of([ledger.c.row_key], [(k,) for k in keys]))).all()
        return {row[0]: (row[1], row[2]) for row in rows}

    def current(self, target: TargetTable, rows: list[Row]) -> dict[str, dict[str, Any]]:
        """The rows with these keys as Cueline holds them now (mapped columns only)."""
        if not rows:
            return {}
        table = target.table
        found = db.session.execute(
            select(*[table.c[c] for c in target.columns])
            .where(_key_clause(target, [r.values for r in rows]))).mappings().all()
        return {target.key_of(dict(row)): dict(row) for row in found}

    def existing(self, table_name: str, column: str, values: Iterable[Any]) -> set[Any]:
        """Which of ``values`` occur in ``table_name.column`` in Cueline."""
        values = list({v for v in values if v is not None})
        if not values:
            return set()
        col = db.metadata.tables[table_name].c[column]
        return {row[0] for row in db.session.execute(
            select(col).where(member_of([col], [(v,) for v in values])))}

    def _unique_conflicts(self, target: TargetTable, rows: list[Row]) -> dict[str, RowNote]:
        conflicts: dict[str, RowNote] = {}
        table = target.table
        for unique in target.unique_keys:
            applicable = [r for r in rows if r.key not in conflicts and unique.binds(r.values)]
            if not applicable:
                continue
            seen: dict[tuple, str] = {}
            for row in applicable:  # two rows of this batch wanting the same value
                value = tuple(canonical(row.values[c]) for c in unique.columns)
                if value in seen:
                    conflicts[row.key] = RowNote(
                        target.name, row.key, CONFLICT, unique.code,
                        f"{unique.what} is also wanted by {seen[value]} of this import")
                else:
                    seen[value] = row.key
            columns = [table.c[c] for c in unique.columns]
            wanted = [tuple(r.values[c] for c in unique.columns) for r in applicable]
            clause = member_of(columns, wanted)
            if unique.live_column is not None:
                clause = and_(clause, table.c[unique.live_column].is_(None))
            if unique.flag_column is not None:
                clause = and_(clause, table.c[unique.flag_column].is_(True))
            holders = db.session.execute(
                select(*[table.c[c] for c in target.key_columns], *columns)
                .where(clause)).mappings().all()
            held = {tuple(canonical(h[c]) for c in unique.columns): target.key_of(dict(h))
                    for h in holders}
            for row in applicable:
                holder = held.get(tuple(canonical(row.values[c]) for c in unique.columns))
                if holder is not None and holder != row.key and row.key not in conflicts:
                    conflicts[row.key] = RowNote(
                        target.name, row.key, CONFLICT, unique.code,
                        f"{unique.what} is already held in Cueline by {holder}")
        return conflicts

    # -- deciding and writing -----------------------------------------------------------

    def apply(self, target: TargetTable, rows: list[Row]) -> dict[str, str]:
        """Reconcile ``rows`` with ``target``; return each row key's status."""
        stats = self.report.table(target.name)
        status: dict[str, str] = {}
        ledger = self._ledger(target, [r.key for r in rows])
        pending = []
        for row in rows:
            previous = ledger.get(row.key)
            if previous is not None and previous[0] == row.digest:
                status[row.key] = UNCHANGED
            else:
                pending.append(row)
        current = self.current(target, pending)
        inserts: list[Row] = []
        updates: list[Row] = []
        adopted: list[Row] = []
        for row in pending:
            previous, now = ledger.get(row.key), current.get(row.key)
            if now is None:
                if previous is None:
                    inserts.append(row)
                else:
                    status[row.key] = KEPT_DELETED
                    self.report.note(RowNote(target.name, row.key, KEPT, "deleted_in_cueline",
                                             "deleted in Cueline after an earlier import; not "
                                             "brought back"))
                continue
            if target.counter is not None:
                base = previous[1] if previous is not None else 0
                merged = dict(row.values)
                merged[target.counter] = (now[target.counter] or 0) + \
                    row.values[target.counter] - (base or 0)
                if merged[target.counter] == now[target.counter]:
                    status[row.key] = UNCHANGED
                    adopted.append(row)
                else:
                    updates.append(Row(row.key, merged, row.digest, row.counter))
                continue
            current_digest = digest_of(now, target.columns)
            if current_digest == row.digest:
                status[row.key] = UNCHANGED
                adopted.append(row)
            elif previous is None:
                status[row.key] = REFUSED
                self.report.note(RowNote(
                    target.name, row.key, CONFLICT, "exists_in_cueline",
                    "Cueline already has a different row with this key that no import wrote"))
            elif target.as_imported(now, previous[0]):
                updates.append(row)
            else:
                status[row.key] = KEPT_CHANGED
                self.report.note(RowNote(
                    target.name, row.key, KEPT, "changed_in_cueline",
                    "changed both upstream and in Cueline since the last import; Cueline's "
                    "copy is kept"))
        for key, note in self._unique_conflicts(target, inserts + updates).items():
            status[key] = REFUSED
            self.report.note(note)
        inserts = [r for r in inserts if r.key not in status]
        updates = [r for r in updates if r.key not in status]
        if not self.dry_run:
            for key, problem in self._write(target, inserts, updates, adopted).items():
                status[key] = REFUSED
                self.report.note(RowNote(target.name, key, CONFLICT, "refused_by_database",
                                         f"the database refused it ({problem})"))
        for row in inserts:
            status.setdefault(row.key, INSERTED)
        for row in updates:
            status.setdefault(row.key, UPDATED)
        stats.inserted += sum(1 for r in inserts if status[r.key] == INSERTED)
        stats.updated += sum(1 for r in updates if status[r.key] == UPDATED)
        stats.unchanged += sum(1 for s in status.values() if s == UNCHANGED)
        return status

    def _ledger_statement(self):
        table = ImportedRow.__table__
        dialect = postgresql if dialect_name() == "postgresql" else sqlite
        insert = dialect.insert(table).values(
            source=bindparam("l_source"), table_name=bindparam("l_table_name"),
            row_key=bindparam("l_row_key"), digest=bindparam("l_digest"),
            counter=bindparam("l_counter"), imported_at=bindparam("l_imported_at"))
        return insert.on_conflict_do_update(
            index_elements=[table.c.source, table.c.table_name, table.c.row_key],
            set_={"digest": insert.excluded.digest, "counter": insert.excluded.counter,
                  "imported_at": insert.excluded.imported_at})

    def _execute(self, target: TargetTable, inserts: list[Row], updates: list[Row],
                 ledger_rows: list[Row]) -> None:
        table = target.table
        now = utcnow()
        if inserts:
            insert_rows(table, [r.values for r in inserts])
        if updates:
            keys = target.key_columns
            statement = (update(table)
                         .where(and_(*[table.c[k] == bindparam(f"k_{k}") for k in keys]))
                         .values({c: bindparam(f"v_{c}") for c in target.columns
                                  if c not in keys}))
            db.session.execute(statement, [
                {**{f"k_{k}": r.values[k] for k in keys},
                 **{f"v_{c}": r.values[c] for c in target.columns if c not in keys}}
                for r in updates])
        # An inserted row has no ledger entry yet (that is why it was inserted): plain
        # inserts; the others replace theirs.
        fresh = {r.key for r in inserts}
        entries = [{"source": self.source, "table_name": target.name, "row_key": r.key,
                    "digest": r.digest, "counter": r.counter, "imported_at": now}
                   for r in ledger_rows]
        if fresh:
            insert_rows(ImportedRow.__table__, [e for e in entries if e["row_key"] in fresh])
        replaced = [{f"l_{k}": v for k, v in e.items()} for e in entries
                    if e["row_key"] not in fresh]
        if replaced:
            db.session.execute(self._ledger_statement(), replaced)

    def _write(self, target: TargetTable, inserts: list[Row], updates: list[Row],
               adopted: list[Row]) -> dict[str, str]:
        """Write one batch; return the keys the database refused, with what it refused."""
        if not (inserts or updates or adopted):
            return {}
        try:
            self._execute(target, inserts, updates, inserts + updates + adopted)
            db.session.commit()
            self._keep_statistics(target, len(inserts) + len(adopted))
            return {}
        except (IntegrityError, DataError):
            db.session.rollback()
        refused: dict[str, str] = {}
        for row in inserts + updates:
            try:
                self._execute(target, [row] if row in inserts else [],
                              [row] if row in updates else [], [row])
                db.session.commit()
            except (IntegrityError, DataError) as exc:
                db.session.rollback()
                refused[row.key] = _constraint(exc)
        if adopted:
            self._execute(target, [], [], adopted)
            db.session.commit()
        return refused

    def delete_unchanged(self, target: TargetTable, keys: list[str]) -> int:
        """Delete the rows of ``keys`` (gone upstream) that Cueline still has as imported.

        A row changed in Cueline since it was imported is kept (noted).  Returns how many rows
        are (or, in a dry run, would be) deleted.
        """
        if not keys:
            return 0
        ledger = self._ledger(target, keys)
        probes = [Row(key, target.key_values(key), "") for key in keys]
        current = self.current(target, probes)
        doomed, forgotten = [], []
        for key in keys:
            now = current.get(key)
            if now is None:
                forgotten.append(key)
            elif target.as_imported(now, ledger[key][0]):
                doomed.append(key)
            else:
                self.report.note(RowNote(target.name, key, KEPT, "changed_in_cueline",
                                         "deleted upstream but changed in Cueline since the "
                                         "import; kept"))
        self.report.table(target.name).deleted += len(doomed)
        if self.dry_run:
            return len(doomed)
        if doomed:
            db.session.execute(delete(target.table).where(
                _key_clause(target, [target.key_values(k) for k in doomed])))
        ledger_table = ImportedRow.__table__
        db.session.execute(delete(ledger_table).where(
            ledger_table.c.source == self.source, ledger_table.c.table_name == target.name,
            ledger_table.c.row_key.in_(doomed + forgotten)))
        db.session.commit()
        return len(doomed)

    def ledger_keys(self, target: TargetTable, batch: int):
        """Every ledger key of ``target``, in batches (keyset pagination: flat memory)."""
        ledger = ImportedRow.__table__
        last = ""
        while True:
            keys = list(db.session.scalars(
                select(ledger.c.row_key)
                .where(ledger.c.source == self.source, ledger.c.table_name == target.name,
                       ledger.c.row_key > last)
                .order_by(ledger.c.row_key).limit(batch)))
            db.session.rollback()
            if not keys:
                return
            yield keys
            last = keys[-1]
