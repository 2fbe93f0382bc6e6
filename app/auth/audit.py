"""The audit trail of service principals: buffered in memory, written in batches, queried, pruned.

Every request a service principal makes — delegated (``X-On-Behalf-Of``) or on ``/v1/internal``
— leaves one :class:`~app.auth.models.AuditRecord`: principal, key id, subject user, method,
path, status, request id and time.  Writing that row inside the request would add a round trip
and a commit to every delegated call, so instead:

* an ``after_request`` hook appends a tuple to the app's in-process :class:`AuditWriter`;
* a daemon thread writes the buffer every ``AUDIT_FLUSH_INTERVAL_SECONDS`` (or as soon as
  ``AUDIT_FLUSH_BATCH`` records wait) in one multi-row insert;
* the buffer is flushed on a clean stop (``atexit``, which also runs when a gunicorn worker
  exits normally) and synchronously by :func:`flush_audit` (tests, the audit endpoint).

If the database is unreachable the batch is kept and retried; beyond ``AUDIT_BUFFER_MAX``
waiting records the oldest are dropped with an error in the log rather than exhausting memory.

The same thread records when each principal key was last used, at most once a minute per key,
so ``last_used_at`` costs no write on the request path.
"""

from __future__ import annotations

import atexit
import logging
import threading
import uuid
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import Flask, current_app, g, request
from sqlalchemy import delete, event, func, select, update
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from app.auth.identity import ServicePrincipal
from app.auth.models import AuditRecord, ServiceKey
from app.db import dialect_name, driver_cursor, utcnow
from app.extensions import db

log = logging.getLogger(__name__)

AUDIT_BUFFER_MAX = 100_000
MAX_RETRY_SECONDS = 30.0
LAST_USED_GRANULARITY = timedelta(minutes=1)
PATH_MAX = 512
PRINCIPAL_MAX = 320
_COLUMNS = ("at", "principal", "owner", "key_id", "user_id", "method", "path", "status",
            "request_id")

_writers: weakref.WeakSet[AuditWriter] = weakref.WeakSet()


class AuditWriter:
    """One app's audit buffer and the background thread that writes it."""

    def __init__(self, app: Flask):
        # Weak, so a discarded app (tests build hundreds) can be collected with its pool; the
        # thread ends when the app is gone.
        self._app = weakref.ref(app)
        self.interval = float(app.config["AUDIT_FLUSH_INTERVAL_SECONDS"])
        self.batch = int(app.config["AUDIT_FLUSH_BATCH"])
        self._buffer: list[tuple] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        #: key id → last time it authenticated a request (not yet written).
        self._key_used: dict[uuid.UUID, datetime] = {}
        self._key_written: dict[uuid.UUID, datetime] = {}
        self._disposing = False

    # -- request side (cheap: no I/O) -----------------------------------------------------------

    def record(self, row: tuple) -> None:
        """Queue one audit row; wakes the writer when a batch is full."""
        with self._lock:
            self._buffer.append(row)
            size = len(self._buffer)
            if size > AUDIT_BUFFER_MAX:
                del self._buffer[: size - AUDIT_BUFFER_MAX]
                log.error("audit buffer full: dropped the oldest records (is the database up?)")
        if self._thread is None:
            self._start()
        if size >= self.batch:
            self._wake.set()

    def key_used(self, key_id: uuid.UUID, when: datetime) -> None:
        self._key_used[key_id] = when
        if self._thread is None:
            self._start()

    # -- writer side ----------------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stopping.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="cueline-audit", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set() and self._app() is not None:
            # Back off while the database is unreachable (0.5 s, 1 s, 2 s … at most 30 s).
            self._wake.wait(min(self.interval * 2 ** failures, MAX_RETRY_SECONDS))
            self._wake.clear()
            try:
                self.flush()
                failures = 0
            except Exception:
                if failures == 0:
                    log.exception("audit flush failed; retrying with back-off")
                failures = min(failures + 1, 10)

    def flush(self) -> int:
        """Write every queued record (and due key-usage times) now; return how many records.

        Serialised with the background thread, so when this returns every record queued before
        the call is in the database.  On a database error the records go back to the buffer.
        """
        with self._flush_lock:
            with self._lock:
                rows, self._buffer = self._buffer, []
            usage = self._due_key_usage()
            if not rows and not usage:
                return 0
            app = self._app()
            if app is None:
                return 0
            try:
                with app.app_context():
                    try:
                        self._write(rows, usage)
                    except (OperationalError, InterfaceError):
                        raise  # the database is unreachable: keep everything for a retry
                    except SQLAlchemyError:
                        # One unstorable row must not block the trail: write row by row.
                        db.session.rollback()
                        self._write_one_by_one(rows, usage)
            except Exception:
                with self._lock:
                    self._buffer[:0] = rows
                raise
            self._key_written.update(usage)
            return len(rows)

    @staticmethod
    def _write(rows: list[tuple], usage: dict[uuid.UUID, datetime]) -> None:
        if rows and dialect_name() == "postgresql":
            _copy_records(rows)
        elif rows:
            db.session.execute(AuditRecord.__table__.insert(), [
                {"id": uuid.uuid4(), **dict(zip(_COLUMNS, row, strict=True))} for row in rows])
        for key_id, when in usage.items():
            db.session.execute(update(ServiceKey).where(ServiceKey.id == key_id)
                               .values(last_used_at=when))
        db.session.commit()

    def _write_one_by_one(self, rows: list[tuple], usage: dict[uuid.UUID, datetime]) -> None:
        for row in rows:
            try:
                self._write([row], {})
            except (OperationalError, InterfaceError):
                raise
            except SQLAlchemyError:
                db.session.rollback()
                log.error("audit: dropped a record that cannot be stored (request %s)", row[-1])
        self._write([], usage)

    def _due_key_usage(self) -> dict[uuid.UUID, datetime]:
        due = {}
        for key_id, when in list(self._key_used.items()):
            written = self._key_written.get(key_id)
            if written is None or when - written >= LAST_USED_GRANULARITY:
                due[key_id] = when
        return due

    def engine_disposed(self, engine) -> None:
        """The app's engine was disposed (a shutdown, or a test tearing its app down): write the
        buffer now, then release the connection that took, so none is left open behind."""
        if self._disposing:
            return
        self._disposing = True
        try:
            self.flush()
        except Exception:  # the database may be gone already
            log.error("audit: %d records could not be written when the engine was disposed",
                      len(self._buffer))
        finally:
            engine.dispose()
            self._disposing = False

    def stop(self) -> None:
        """Stop the thread and write what is left (clean shutdown)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self.flush()
        except Exception:
            log.exception("audit: %d records could not be written at shutdown",
                          len(self._buffer))


_COPY_RECORDS = f"COPY audit_records (id, {', '.join(_COLUMNS)}) FROM STDIN"


def _copy_records(rows: list[tuple]) -> None:
    """Write ``rows`` with ``COPY`` (PostgreSQL), in the session's transaction.

    The writer thread shares its process's CPU with the requests: the same rows as a
    multi-row INSERT through SQLAlchemy cost it 14–35 µs each, through ``COPY`` 4 µs
    (bench/README.md, "Production profile").  The rows are already typed as the columns
    are (the request hook writes UTC datetimes and UUIDs); PostgreSQL checks the rest, and a
    row it refuses fails the batch as an INSERT would.
    """
    connection = db.session.connection()
    with driver_cursor(connection, _COPY_RECORDS) as cursor, cursor.copy(_COPY_RECORDS) as copy:
        for row in rows:
            copy.write_row((uuid.uuid4(), *row))


def _writer(app: Flask | None = None) -> AuditWriter | None:
    app = app or current_app
    return app.extensions.get("cueline_audit")


def note_key_used(principal: ServicePrincipal) -> None:
    """Remember that ``principal``'s stored key authenticated a request (for ``last_used_at``)."""
    writer = _writer()
    if writer is not None and principal.principal_id is not None:
        writer.key_used(uuid.UUID(principal.key_id), utcnow())


def _record_request(response):
    """``after_request``: queue the audit row of a request a service principal made."""
    principal: ServicePrincipal | None = g.get("service_principal")
    if principal is not None:
        writer = _writer()
        if writer is not None:
            # Method and path are client-chosen: bound them and drop NULs (PostgreSQL text
            # cannot hold them) so every record is storable.
            path = request.path.replace("\x00", "\ufffd")[:PATH_MAX]
            writer.record((utcnow(), principal.name, principal.owner, principal.key_id,
                           g.get("on_behalf_of"), request.method[:10], path,
                           response.status_code, g.get("request_id") or ""))
    return response


def record_actor_request(actor: str, key_id: str, user_id: uuid.UUID | None, status: int,
                         *, durable: bool = False) -> None:
    """Queue the audit row of the current request for an actor that is not a service principal
    (the operator console records ``console:<email>`` with its session id as ``key_id``).

    ``durable`` writes the buffer before returning, for rare actions whose record must not wait
    for the next batch (an operator deactivating a user).  A write failure is logged, never
    raised: the action itself has already been committed.
    """
    writer = _writer()
    if writer is None:
        return
    path = request.path.replace("\x00", "\ufffd")[:PATH_MAX]
    writer.record((utcnow(), actor[:PRINCIPAL_MAX], None, key_id[:36], user_id,
                   request.method[:10], path, status, g.get("request_id") or ""))
    if durable:
        try:
            writer.flush()
        except Exception:  # noqa: BLE001 - kept in the buffer and retried by the writer thread
            log.exception("audit: could not write an actor's record now; it stays queued")


def init_audit(app: Flask) -> None:
    """Attach an :class:`AuditWriter` to ``app`` and record service requests after each one."""
    writer = AuditWriter(app)
    app.extensions["cueline_audit"] = writer
    _writers.add(writer)
    app.after_request(_record_request)
    with app.app_context():
        event.listen(db.engine, "engine_disposed", writer.engine_disposed)


def flush_audit(app: Flask | None = None) -> int:
    """Write ``app``'s (default: the current app's) queued audit records now; return how many."""
    writer = _writer(app)
    return writer.flush() if writer is not None else 0


@atexit.register
def _flush_all_at_exit() -> None:
    for writer in list(_writers):
        writer.stop()


# -- queries and retention -------------------------------------------------------------------


@dataclass(frozen=True)
class AuditPage:
    """One page of audit records and the total matching the filters."""

    records: list[AuditRecord]
    total: int


def list_audit(*, viewer: ServicePrincipal, principal: str | None = None,
               user_id: uuid.UUID | None = None, since: datetime | None = None,
               until: datetime | None = None, limit: int = 50, offset: int = 0) -> AuditPage:
    """Audit records newest first, filtered by principal name, subject user and time range.

    ``since`` is inclusive, ``until`` exclusive.  A principal bound to an owner sees only the
    records of principals bound to the same owner; an unbound one sees everything.  Records
    still in this process's buffer are written first, so a caller sees its own requests.
    """
    flush_audit()
    conditions = []
    if viewer.owner is not None:
        conditions.append(AuditRecord.owner == viewer.owner)
    if principal is not None:
        conditions.append(AuditRecord.principal == principal)
    if user_id is not None:
        conditions.append(AuditRecord.user_id == user_id)
    if since is not None:
        conditions.append(AuditRecord.at >= since)
    if until is not None:
        conditions.append(AuditRecord.at < until)
    total = db.session.scalar(select(func.count()).select_from(AuditRecord).where(*conditions))
    records = list(db.session.scalars(
        select(AuditRecord).where(*conditions)
        .order_by(AuditRecord.at.desc(), AuditRecord.id).limit(limit).offset(offset)))
    return AuditPage(records=records, total=total or 0)


def prune_audit_at(now: datetime, retention_days: int, batch: int = 10_000) -> int:
    """Delete up to ``batch`` records older than ``retention_days`` (0 = keep forever)."""
    if retention_days <= 0:
        return 0
    cutoff = now - timedelta(days=retention_days)
    ids = list(db.session.scalars(select(AuditRecord.id).where(AuditRecord.at < cutoff)
                                  .limit(batch)))
    if ids:
        db.session.execute(delete(AuditRecord).where(AuditRecord.id.in_(ids))
                           .execution_options(synchronize_session=False))
    db.session.commit()
    return len(ids)


def prune_audit(ctx) -> int:
    """Worker job: prune audit records past ``AUDIT_RETENTION_DAYS`` (one batch per run)."""
    deleted = prune_audit_at(ctx.now(), current_app.config["AUDIT_RETENTION_DAYS"])
    if deleted:
        log.info("audit retention: %d records deleted", deleted)
    return deleted
