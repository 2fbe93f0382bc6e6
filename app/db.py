"""Database helpers that hide the few places where SQLite and PostgreSQL differ.

Everything dialect-specific (engine options, several inserts as one write, naming the columns of
a violated unique constraint) lives here so services stay portable.
"""

from __future__ import annotations

import json
import operator
import re
import time
from collections import namedtuple
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, event
from sqlalchemy.types import TypeDecorator
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from app.extensions import db


def _system_clock() -> datetime:
    return datetime.now(UTC)


#: The clock every service reads through :func:`utcnow`; tests replace it to travel in time.
clock = _system_clock


def utcnow() -> datetime:
    """Timezone-aware now in UTC (the only clock the services read)."""
    return clock()


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def engine_options(url: str, config: dict[str, Any]) -> dict[str, Any]:
    """SQLAlchemy engine options for ``url``: pooling and timeouts per dialect."""
    backend = make_url(url).get_backend_name()
    if backend == "postgresql":
        return {
            "hide_parameters": True,  # SQL parameters (secrets) never reach error messages
            # No pre-ping on every checkout (a round trip per request): only connections idle
            # longer than DB_PING_IDLE_SECONDS are pinged (install_idle_ping), which is what
            # finds the ones a database restart killed while they sat in the pool.
            # Connections are opened on demand, so a web process (one request at a time per
            # worker) never opens the extra DELIVERY_CONCURRENCY ones; a worker process keeps
            # one per delivery thread instead of reconnecting for every delivery.
            "pool_size": config["DB_POOL_SIZE"] + config["DELIVERY_CONCURRENCY"],
            "max_overflow": config["DB_MAX_OVERFLOW"],
            "pool_timeout": 10,
            "connect_args": {"connect_timeout": config["DB_CONNECT_TIMEOUT_SECONDS"]},
            "json_deserializer": _json_from_utf8,
        }
    # SQLite: one file shared by web and worker processes; wait for locks instead of failing.
    return {"hide_parameters": True,
            "connect_args": {"timeout": 30, "check_same_thread": False}}


def install_idle_ping(engine: Engine, idle_seconds: float) -> None:
    """Ping a pooled PostgreSQL connection before reuse when it sat idle over ``idle_seconds``.

    Saves a round trip on every request compared with ``pool_pre_ping``: a connection checked
    in and out again within ``idle_seconds`` (a busy process) is trusted, because it just
    worked.  One idle through a database outage or restart is dead although the pool cannot
    tell; the ping finds it and the pool replaces it with a fresh connection before the request
    uses it, so the first request after a restart succeeds (``tests/reliability/test_faults``).
    A failed ping raises ``DisconnectionError``, which makes the pool discard the connection
    and connect again (up to three times); if the database is still down, that connection
    attempt fails and the request answers 503.
    """
    if engine.dialect.name != "postgresql":
        return
    from sqlalchemy.exc import DisconnectionError

    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _stamp(dbapi_connection, record):
        if dbapi_connection is not None:
            record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection, record, proxy):
        # ``info`` is cleared when a connection is replaced, so fresh connections are not pinged.
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is None or time.monotonic() - checked_in_at <= idle_seconds:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("pooled connection failed its idle ping") from exc


def install_safe_session_teardown(app) -> None:
    """End each request's session without letting a dead connection fail the response.

    Flask-SQLAlchemy's teardown closes the session, which rolls back on the connection; when
    the database went away during the request that rollback raises, after the response (a 201
    or the 503 envelope) was already built, and the server turns it into a 500.  This teardown
    runs first (teardowns run in reverse order of registration): it closes the session and, if
    that fails, invalidates its connections instead (no rollback is sent; the pool replaces
    them).  Flask-SQLAlchemy's own teardown then finds nothing to do.
    """
    import logging

    log = logging.getLogger(__name__)

    @app.teardown_appcontext
    def _close_session(_exc):
        try:
            db.session.remove()
        except Exception as exc:  # noqa: BLE001 - any failure here is a lost connection
            log.warning("closing the session failed (%s); discarding its connections",
                        type(exc).__name__)
            try:
                db.session.registry().invalidate()
            except Exception:  # noqa: BLE001
                log.debug("invalidating the session failed", exc_info=True)
            db.session.registry.clear()


_decode_json = json.JSONDecoder().decode


def _json_from_utf8(data: bytes | str):
    """Decode a JSON column value exactly as ``json.loads`` does, minus its encoding sniff.

    psycopg hands over bytes, and ``json.loads`` first probes them for UTF-16 and UTF-32 (a
    third of its time on a cue list's small documents).  PostgreSQL never sends either, so the
    probe always ends in UTF-8: decode as that directly.
    """
    if isinstance(data, bytes | bytearray):
        data = data.decode("utf-8", "surrogatepass")
    return _decode_json(data)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record):  # pragma: no cover - trivial
    """Enable WAL and foreign keys on every new SQLite connection."""
    module = type(dbapi_connection).__module__
    if not module.startswith("sqlite3"):
        return
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def read_only(view):
    """Mark a view method as reading only: on PostgreSQL it then runs without a transaction.

    Each statement of such a request autocommits, which saves the BEGIN and ROLLBACK round
    trips (about a quarter of a simple GET's cost).  Only for views that never write: a write
    in one would not be atomic.
    """
    view._autocommit = True
    return view


def single_statement(view):
    """Mark a write view whose change is one statement (atomic by itself): on PostgreSQL it runs
    without BEGIN and COMMIT round trips, like a :func:`read_only` view.

    Only for views whose every write is complete on its own: one statement (several inserts can
    be one, see :func:`insert_together`), or a further statement that may land without the
    others (a presence heartbeat).  The reads before it need no transaction either.
    """
    view._autocommit = True
    return view


def start_autocommit_request() -> None:
    """``before_request``: switch the session's connection to autocommit for the views marked
    :func:`read_only` or :func:`single_statement`."""
    from app.api import view_handler

    handler = view_handler()
    if (getattr(handler, "_autocommit", False) and dialect_name() == "postgresql"
            and not db.session().in_transaction()):  # (a request nested in another's session)
        try:
            begin_autocommit()
        except SQLAlchemyError:
            # Database unreachable: the view decides (503, or a degraded /health).
            db.session.rollback()


def begin_autocommit() -> None:
    """Take the session's connection in autocommit mode (PostgreSQL): each statement commits
    itself, without BEGIN or COMMIT round trips."""
    session = db.session()
    session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    session.info[_AUTOCOMMIT_TRANSACTION] = session.get_transaction()


def commit_keeping_state() -> None:
    """Commit without expiring the session's objects.

    For a write whose response is built from the rows it just wrote: a normal commit expires
    every loaded object, so serializing them re-reads each one (a round trip apiece).  The
    values in memory are the ones just committed; columns the database filled in itself are
    still loaded lazily, and the next request has a fresh session.

    In a :func:`single_statement` view on PostgreSQL every statement has already committed
    itself; when the session holds no unsaved change either, there is nothing to commit, and
    the ORM's commit (flush, connection commit, closing the transaction: about 100 µs of a
    message send) is skipped.  The request's teardown closes the session as it does after any
    read.
    """
    session = db.session()
    if _autocommitted_and_clean(session):
        return
    previous = session.expire_on_commit
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = previous


def _autocommitted_and_clean(session) -> bool:
    """Whether ``session``'s transaction runs on an autocommit connection (see
    :func:`start_autocommit_request`) and has nothing to flush."""
    transaction = session.get_transaction()
    return (transaction is not None
            and session.info.get(_AUTOCOMMIT_TRANSACTION) is transaction
            and not (session.new or session.deleted or session.dirty))


#: ``session.info`` key: the session transaction :func:`start_autocommit_request` began on an
#: autocommit connection (a commit or rollback since then ends it, and the next one is not).
_AUTOCOMMIT_TRANSACTION = "cueline.autocommit_transaction"


#: Combined statements of :func:`insert_together`, by the identities of their parts.
_combined: dict[tuple[int, ...], tuple[tuple, Any]] = {}


def insert_together(*writes: tuple[Any, dict[str, Any]]) -> None:
    """Execute several ``(statement, parameters)`` INSERTs (or upserts) as one atomic write.

    On PostgreSQL they are sent as one statement, all but the last as data-modifying CTEs, so
    the write is atomic without a transaction (one round trip, and none for BEGIN or COMMIT in
    a :func:`single_statement` view).  Elsewhere they run in order inside the caller's
    transaction.  Either way a failure of any one (a unique violation, say) writes nothing.

    The statements are meant to be built once, with bind parameters named uniquely across
    them; the combination is then built once too.
    """
    if dialect_name() != "postgresql" or len(writes) == 1:
        for statement, params in writes:
            db.session.execute(statement, params)
        return
    statements = tuple(statement for statement, _params in writes)
    key = tuple(map(id, statements))
    cached = _combined.get(key)
    if cached is None or cached[0] != statements:
        if len(_combined) >= 64:  # statements built per call would otherwise pile up here
            _combined.clear()
        *first, last = statements
        combined = last.add_cte(*(s.cte(f"write_{i}") for i, s in enumerate(first)))
        cached = _combined[key] = (statements, combined)
    params: dict[str, Any] = {}
    for _statement, part in writes:
        params.update(part)
    fetch_one_direct(cached[1], params)


def upsert(model, values: dict[str, Any], keys: tuple[str, ...]) -> None:
    """INSERT ``values`` into ``model``'s table, or update the row with the same ``keys``.

    One statement (``INSERT … ON CONFLICT DO UPDATE``) on both backends, so two concurrent
    writers of one key never collide: the later one wins.
    """
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if dialect_name() == "postgresql" else sqlite
    stmt = dialect.insert(model.__table__).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(keys),
        set_={name: stmt.excluded[name] for name in values if name not in keys})
    db.session.execute(stmt)


class _DriverStatement:
    """A prebuilt Core statement compiled once for psycopg, with SQLAlchemy's type processing
    for its parameters and result columns looked up once (see :func:`fetch_one_direct`)."""

    def __init__(self, statement, dialect):
        compiled = statement.compile(dialect=dialect)
        self.statement = statement
        self.sql = str(compiled)
        # Statements whose SQL or values are finished only per execution (expanding ``IN``,
        # renamed parameters, values computed by a callable) keep to SQLAlchemy's path.
        self.direct = not (compiled.post_compile_params or compiled.literal_execute_params
                           or compiled.escaped_bind_names
                           or any(bind.callable is not None for bind in compiled.binds.values()))
        # Keyed by the names the SQL renders (anonymous parameters get theirs when compiled);
        # the processors are the dialect's versions of each type's, as SQLAlchemy applies them.
        names = compiled.bind_names
        self.bind_processors = {
            names[bind]: processor for bind in compiled.binds.values()
            if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect))}
        #: Values bound when the statement was built (``literal`` comparisons, constants).
        self.bound = {names[bind]: bind.effective_value for bind in compiled.binds.values()
                      if not bind.required} if self.direct else {}
        columns = list(statement.exported_columns)
        # Known here, not asked of the cursor: psycopg builds ``cursor.description`` afresh on
        # each access, an object per column (about 70 µs for a send's 42 columns).
        self.returns_rows = bool(columns)
        self.row_type = row_type([str(column.key) for column in columns])
        self.result_processors = [
            (index, processor) for index, column in enumerate(columns)
            if (processor := column.type.dialect_impl(dialect).result_processor(dialect, None))]


#: :class:`_DriverStatement` of each statement given to :func:`fetch_one_direct` (they are
#: module-level or cached, so this stays small).
_driver_statements: dict[int, _DriverStatement] = {}


def _first_row(result):
    return result.first() if getattr(result, "returns_rows", True) else None


def fetch_one_direct(statement, params: dict[str, Any], session=None):
    """Execute a prebuilt Core statement on the session's connection and return its first row
    (attribute access, like a SQLAlchemy ``Row``) or None.

    On PostgreSQL the statement goes straight to psycopg: SQLAlchemy's execution layer (its
    execution context, cursor result and row metadata) costs about 110 µs a statement here,
    as much again as psycopg's own work (docs/operations.md, "Sizing").  What that
    layer does for such a statement is kept: the SQL compiled once, every parameter and column
    through its SQLAlchemy type's processors (UTC timestamps), errors raised as SQLAlchemy's
    (``IntegrityError`` …), a dropped connection invalidated, ``before_cursor_execute``
    listeners told.  For statements whose rows are read as values, not ORM objects; on SQLite
    it is an ordinary ``session.execute``.  ``session`` defaults to the app's.
    """
    session = session if session is not None else db.session
    ran = _execute_direct(statement, params, session, many=False)
    if ran is None:
        return _first_row(session.execute(statement, params))
    prepared, rows = ran
    return prepared.row_type(*rows[0]) if rows else None


def _execute_direct(statement, params: dict[str, Any], session, *, many: bool):
    """Run ``statement`` straight on psycopg (see :func:`fetch_one_direct`): its
    :class:`_DriverStatement` and its first row (or all rows), each a list of processed values;
    None where it must go through SQLAlchemy instead (SQLite, per-execution SQL)."""
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name != "postgresql":
        return None
    prepared = _driver_statements.get(id(statement))
    if prepared is None or prepared.statement is not statement:
        if len(_driver_statements) >= 256:  # statements built per call would pile up here
            _driver_statements.clear()
        prepared = _driver_statements[id(statement)] = _DriverStatement(statement, dialect)
    if not prepared.direct:
        return None
    if prepared.bound or prepared.bind_processors:
        params = {**prepared.bound, **params}
        for name, processor in prepared.bind_processors.items():
            if name in params:
                params[name] = processor(params[name])
    with driver_cursor(connection, prepared.sql, params) as cursor:
        connection.dispatch.before_cursor_execute(
            connection, cursor, prepared.sql, params, None, False)
        cursor.execute(prepared.sql, params)
        if not prepared.returns_rows:
            rows = []
        elif many:
            rows = cursor.fetchall()
        else:
            first = cursor.fetchone()
            rows = [first] if first is not None else []
    rows = [list(row) for row in rows]
    if prepared.result_processors:
        for row in rows:
            for index, processor in prepared.result_processors:
                row[index] = processor(row[index])
    return prepared, rows


@contextmanager
def driver_cursor(connection, sql: str, params: Any = None):
    """A psycopg cursor on SQLAlchemy ``connection``'s own driver connection (PostgreSQL), for
    work SQLAlchemy's execution layer would only slow down.  Its errors come out as
    SQLAlchemy's (``IntegrityError``, ``OperationalError`` …, parameters hidden), and a dropped
    connection is invalidated, so the pool replaces it, as SQLAlchemy does for its own."""
    dialect = connection.dialect
    driver = connection.connection.driver_connection
    try:
        with driver.cursor() as cursor:
            yield cursor
    except dialect.loaded_dbapi.Error as exc:
        disconnected = dialect.is_disconnect(exc, driver, None)
        if disconnected:
            connection.invalidate(exc)
        raise DBAPIError.instance(sql, params, exc, dialect.loaded_dbapi.Error,
                                  hide_parameters=True, connection_invalidated=disconnected,
                                  dialect=dialect) from exc


def row_type(names: list[str]) -> type:
    """A named-tuple row type with fields ``names``, read like a SQLAlchemy ``Row``.

    A name a named tuple cannot take (``_total``, a repeated ``id``, a scalar subquery's
    anonymous one) gets a positional field; a valid one starting with ``_`` is still readable by
    its name, through a property.
    """
    base = namedtuple("Row", names, rename=True)
    aliases = {name: property(operator.itemgetter(index), doc=f"Field {index}")
               for index, (name, field) in enumerate(zip(names, base._fields, strict=True))
               if name != field and name.isidentifier() and name not in vars(base)
               and names.count(name) == 1}
    if not aliases:
        return base
    return type("Row", (base,), {"__slots__": (), **aliases})


@dataclass(frozen=True)
class _EntityPlan:
    """How a row of an ORM ``select`` maps to what SQLAlchemy would return: for each entity,
    its class, attribute keys (in column order), where its columns start, how many there are
    and where its primary key is among them; every other column is a value.  ``row_type``
    names the result's fields as SQLAlchemy's ``Row`` does (an entity by its name)."""

    entities: tuple[tuple[Any, tuple[str, ...], int, tuple[int, ...]], ...]
    #: (start, end) column slices in row order: an entity's columns, or one value column.
    parts: tuple[tuple[int, int, int | None], ...]
    row_type: type


def _is_entity(info) -> bool:
    return getattr(info, "is_mapper", False) or getattr(info, "is_aliased_class", False)


@lru_cache(maxsize=64)
def _entity_plan(statement) -> _EntityPlan | None:
    """The :class:`_EntityPlan` of ``statement``, or None when one of its entities is not a
    plain mapped table (validators, ``Mutable`` types, inheritance, computed columns)."""
    from sqlalchemy import inspect

    columns = list(statement.exported_columns)
    entities, parts, names, position = [], [], [], 0
    for description in statement.column_descriptions:
        info = inspect(description["expr"], raiseerr=False)
        if not _is_entity(info):
            parts.append((position, position + 1, None))
            names.append(str(columns[position].key) if position < len(columns) else "")
            position += 1
            continue
        mapper = info.mapper
        # Built the way the ORM's loader builds an object (values into its ``__dict__``, no
        # ``__init__``, no attribute events), less its ``load`` event: only for entities
        # without load listeners (``Mutable`` types), validators or inheritance.
        if (mapper.inherits is not None or mapper.polymorphic_on is not None
                or mapper.validators or mapper.class_manager.dispatch.load):
            return None
        attrs = mapper.column_attrs
        table = mapper.local_table
        keys = []
        for column in columns[position:position + len(attrs)]:
            table_column = table.c.get(column.key) if column.table is info.selectable else None
            if table_column is None:
                return None
            keys.append(mapper.get_property_by_column(table_column).key)
        if len(set(keys)) != len(attrs):
            return None
        primary = tuple(keys.index(mapper.get_property_by_column(column).key)
                        for column in mapper.primary_key)
        parts.append((position, position + len(attrs), len(entities)))
        entities.append((mapper.class_, tuple(keys), position, primary))
        names.append(str(description["name"]))
        position += len(attrs)
    if position != len(columns):
        return None
    return _EntityPlan(tuple(entities), tuple(parts), row_type(names))


def built_like_loaded(cls, values):
    """A transient instance of the mapped ``cls`` holding ``values`` (attribute key → value),
    built as the ORM's loader builds one: the values go into its ``__dict__``, without
    ``__init__`` or attribute events.  An attribute not given reads as None.

    For an object whose values are already what the database holds (a row just read or just
    written): ``cls(**values)`` costs a set event per attribute, about 20 µs for a message.
    Only for plain mapped classes (no validators, ``Mutable`` types or init listeners).
    """
    from sqlalchemy.orm.attributes import instance_dict

    instance = cls._sa_class_manager.new_instance()
    instance_dict(instance).update(values)
    return instance


def fetch_loaded_direct(statement, params: dict[str, Any], *, many: bool = False):
    """Run an ORM ``select`` of entities and values straight on the driver, and build its
    entities as if the ORM had loaded them.

    Returns the first row (None without one), or all rows with ``many``, shaped as
    SQLAlchemy's would be: each entity in its place (None where an outer join found none),
    each value column a value, read by index or by name.  An entity is built from its columns
    and attached to the session (``make_transient_to_detached`` + ``add``): persistent,
    unchanged, in the identity map, and saved on commit if a view changes it.  Against the
    ORM's execution and loading of the same statement, this took a quarter off a cue page and
    a sixth off a message send in-process (bench/README.md, "Production profile").

    Returns ``NotImplemented`` where it does not apply, and the caller runs the statement
    through the ORM: on SQLite, for statements of another shape (see :func:`_entity_plan`), or
    when one of the entities is in the session already (its state there wins).
    """
    from sqlalchemy.orm import make_transient_to_detached

    session = db.session()
    plan = _entity_plan(statement) if dialect_name() == "postgresql" else None
    if plan is None:
        return NotImplemented
    ran = _execute_direct(statement, params, session, many=many)
    if ran is None:
        return NotImplemented
    _prepared, raw_rows = ran
    identity_map = session.identity_map
    built: dict[Any, Any] = {}
    rows = []
    for raw in raw_rows:
        fields = []
        for start, end, entity in plan.parts:
            if entity is None:
                fields.append(raw[start])
                continue
            cls, keys, _start, primary = plan.entities[entity]
            key_values = tuple(raw[start + index] for index in primary)
            if None in key_values:
                fields.append(None)
                continue
            key = (cls, key_values, None)
            instance = built.get(key)
            if instance is None:
                if key in identity_map:
                    return NotImplemented
                instance = built[key] = built_like_loaded(cls, zip(keys, raw[start:end],
                                                                   strict=True))
            fields.append(instance)
        rows.append(plan.row_type(*fields))
    for instance in built.values():
        make_transient_to_detached(instance)
        session.add(instance)
    if many:
        return rows
    return rows[0] if rows else None


def fetch_first(statement, params: dict[str, Any]):
    """The first row of an ORM ``select`` (or None): straight off the driver where
    :func:`fetch_loaded_direct` applies, else through the session."""
    row = fetch_loaded_direct(statement, params)
    if row is NotImplemented:
        row = db.session.execute(statement, params).first()
    return row


def fetch_all(statement, params: dict[str, Any]) -> list:
    """Every row of an ORM ``select``, as :func:`fetch_first` reads one."""
    rows = fetch_loaded_direct(statement, params, many=True)
    if rows is NotImplemented:
        rows = db.session.execute(statement, params).all()
    return rows


def dialect_name() -> str:
    """Name of the bound database dialect (``sqlite`` or ``postgresql``)."""
    return db.engine.dialect.name


_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (.+)")


def violated_columns(exc: IntegrityError) -> set[str]:
    """Return the ``table.column`` names of the unique constraint ``exc`` violated (or empty)."""
    orig = exc.orig
    diag = getattr(orig, "diag", None)
    if diag is not None and getattr(diag, "constraint_name", None):
        name = diag.constraint_name
        for table in db.metadata.tables.values():
            for constraint in list(table.constraints) + list(table.indexes):
                if constraint.name == name:
                    return {f"{table.name}.{c.name}" for c in constraint.columns}
        return set()
    match = _SQLITE_UNIQUE.search(str(orig))
    if match:
        return {part.strip() for part in match.group(1).split(",")}
    return set()
