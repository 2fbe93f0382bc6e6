"""The cueapi-core import: which source tables, in which order, read how, checked against what.

Order: users, cues, executions, workers, agents, messages, the spent idempotency keys of the
last 24 hours, the two monthly counters, the agents' live sessions, subscriptions and events,
then alerts — parents before the rows that refer to them.  A row whose parent was not imported
in this run (a conflict) is skipped and noted, and so is a row whose parent exists neither in
Cueline nor in this run; so a user that conflicts takes its cues, executions, workers, agents,
messages, counters, live sessions, subscriptions, events and alerts with it, and nothing of it
is half-imported.

Events keep their ids, so the pull cursors agents hold and the subscriptions' watermarks stay
valid; Cueline's event id sequence is first moved past cueapi-core's highest id.

``--since`` reads only rows whose timestamps show a change at or after that time (see
:data:`CHANGE_COLUMNS`); the monthly counters, alerts, subscriptions and live sessions have no
such timestamps and are always read whole.  Cues, workers, subscriptions and live sessions
deleted upstream since an earlier import are deleted in Cueline too, unless Cueline changed
them since.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import inspect, text

from app.auth.crypto import decrypt_secret
from app.auth.tokens import hash_secret
from app.db import dialect_name
from app.extensions import db
from app.importers import targets
from app.importers.cueapi import mapping
from app.importers.cueapi.source import Source, SourceError, quote, redacted
from app.importers.engine import NOT_WRITTEN, TargetTable, Writer
from app.importers.progress import Progress, Silent
from app.importers.report import CONFLICT, SKIPPED, WARNING, Report, RowNote

SOURCE = "cueapi"

#: The columns read from each source table: cueapi-core's schema after its migration 035,
#: plus the columns its models declare that its migrations never add (``users.
#: api_key_encrypted``; ``executions.outcome_state``, ``triggered_by``,
#: ``last_heartbeat_at``, ``outcome_deadline_*`` and ``evidence_*``).  A column the source
#: lacks is read as NULL and listed in the report.
READ_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("id", "email", "slug", "plan", "active_cue_limit", "monthly_execution_limit",
              "monthly_message_limit", "rate_limit_per_minute", "api_key_hash",
              "api_key_prefix", "api_key_encrypted", "webhook_secret", "external_owner",
              "alert_webhook_url", "alert_webhook_secret", "created_at", "updated_at"),
    "cues": ("id", "user_id", "name", "description", "status", "schedule_type", "schedule_cron",
             "schedule_at", "schedule_timezone", "callback_url", "callback_method",
             "callback_transport", "callback_headers", "payload", "retry_max_attempts",
             "retry_backoff_minutes", "next_run", "last_run", "run_count", "fired_count",
             "on_failure", "verification_mode", "created_at", "updated_at"),
    "executions": ("id", "cue_id", "scheduled_for", "status", "http_status", "response_body",
                   "attempts", "next_retry", "error_message", "started_at", "delivered_at",
                   "last_attempt_at", "claimed_by_worker", "claimed_at", "outcome_success",
                   "outcome_result", "outcome_error", "outcome_metadata", "outcome_recorded_at",
                   "outcome_state", "last_heartbeat_at", "triggered_by", "evidence_external_id",
                   "evidence_result_url", "evidence_result_ref", "evidence_result_type",
                   "evidence_summary", "evidence_artifacts", "evidence_metadata",
                   "live_claim_session_token", "live_claimed_at", "created_at", "updated_at"),
    "workers": ("id", "user_id", "worker_id", "handlers", "last_heartbeat", "created_at"),
    "agents": ("id", "user_id", "slug", "display_name", "webhook_url", "webhook_secret",
               "agent_metadata", "status", "last_seen_at", "deleted_at", "created_at",
               "updated_at"),
    "messages": ("id", "user_id", "from_agent_id", "to_agent_id", "thread_id", "reply_to",
                 "subject", "body", "priority", "expects_reply", "reply_to_agent_id",
                 "delivery_state", "message_metadata", "idempotency_key", "created_at",
                 "delivered_at", "read_at", "acked_at", "failed_at", "delivering_started_at",
                 "send_at", "expires_at", "dispatch_priority_bucket", "message_dispatch_error",
                 "correlation_id"),
    "usage_monthly": ("user_id", "month_start", "execution_count"),
    "usage_messages_monthly": ("user_id", "month_start", "message_count"),
    "agent_live_sessions": ("id", "agent_id", "label", "cue_id", "task_name", "is_default",
                            "transport", "monitor_version", "session_token", "daemon_id",
                            "ipc_session_token", "attached_at", "detached_at", "last_heartbeat",
                            "last_claim_at", "last_reconciled_at", "created_at"),
    "subscriptions": ("id", "subscriber_agent_id", "event_type", "delivery_target",
                      "webhook_url", "webhook_secret", "inline_body", "last_dispatched_event_id",
                      "last_dispatched_at", "last_acked_event_id", "consecutive_failures",
                      "paused_until", "created_at", "detached_at"),
    "events": ("id", "event_type", "recipient_agent_id", "payload", "emitted_at",
               "idempotency_key", "digested_at"),
    "alerts": ("id", "user_id", "cue_id", "execution_id", "alert_type", "severity", "message",
               "metadata", "acknowledged", "created_at"),
}

#: Source columns that are read but not copied because Cueline derives them: a message's
#: preview (the first 200 characters of its body), its idempotency fingerprint (recomputed,
#: see :func:`mapping.idempotency_key`), the counters' serial ids.
DERIVED_COLUMNS = {"messages": ("preview", "idempotency_fingerprint"),
                   "usage_monthly": ("id",), "usage_messages_monthly": ("id",)}

#: Without these a source cannot be imported at all (cueapi-core older than its migration 020).
REQUIRED_COLUMNS = {"users": ("id", "email", "slug", "api_key_hash", "api_key_prefix"),
                    "cues": ("id", "user_id", "name", "schedule_type"),
                    "executions": ("id", "cue_id", "scheduled_for", "status")}

#: Timestamps whose latest value says when a row last changed (``--since``).  Tables not
#: listed change without a timestamp saying so (an alert acknowledged, a subscription's ack
#: watermark or failure count moved, a live session made the default) and are read whole on
#: every run; the ledger's digests make their unchanged rows cheap.
CHANGE_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("created_at", "updated_at"),
    "cues": ("created_at", "updated_at", "last_run"),
    "executions": ("created_at", "updated_at", "last_attempt_at", "delivered_at", "claimed_at",
                   "outcome_recorded_at", "last_heartbeat_at", "live_claimed_at"),
    "workers": ("created_at", "last_heartbeat"),
    "agents": ("created_at", "updated_at", "last_seen_at", "deleted_at"),
    "messages": ("created_at", "delivered_at", "read_at", "acked_at", "failed_at",
                 "delivering_started_at"),
    "events": ("emitted_at", "digested_at"),
}

IMPORTED_TABLES = tuple(READ_COLUMNS)
#: How long a spent message idempotency key stays spent (as in Cueline and cueapi-core).
IDEMPOTENCY_WINDOW = timedelta(hours=24)
#: Overlap suggested for the next ``--since`` run (a transaction that started before the
#: snapshot may commit after it with earlier timestamps; re-reading rows is harmless).
CATCH_UP_OVERLAP = timedelta(minutes=5)


class ImportFailed(Exception):
    """The import could not run (source unreadable, target not migrated, …)."""


@dataclass
class Parent:
    """A row another table's row needs in Cueline before it can be written.

    ``field`` holds the parent's key in the source row; ``skip`` the keys of parents not
    written in this run; ``table`` is the Cueline table the parent must exist in (None: only
    the skip set is checked, for grandparents); ``present`` / ``in_run`` name source fields
    telling whether the parent exists upstream and is read in this run.
    """

    label: str
    field: str
    skip: set[str]
    table: str | None = None
    present: str | None = None
    in_run: str | None = None


class CueapiImport:
    """One run over an open :class:`Source`."""

    def __init__(self, source: Source, writer: Writer, report: Report, since: datetime | None,
                 batch: int, progress: Progress):
        self.source = source
        self.writer = writer
        self.report = report
        self.since = since
        self.batch = batch
        self.progress = progress
        self.params = {"since": since} if since else {}
        self.skipped: dict[str, set[str]] = {"users": set(), "cues": set(), "agents": set(),
                                             "messages": set()}
        self.session_secret = current_app.config.get("SESSION_SECRET") or ""
        self.encrypted = [0, 0]  # copies of API keys seen, and how many this instance decrypts

    # -- SQL ------------------------------------------------------------------------------

    def _select(self, table: str, alias: str) -> str:
        parts = []
        for column in READ_COLUMNS[table] + self._unmodeled(table):
            if self.source.has(table, column):
                parts.append(f"{alias}.{quote(column)}")
            else:
                parts.append(f"NULL AS {quote(column)}")
        return ", ".join(parts)

    def _unmodeled(self, table: str) -> tuple[str, ...]:
        known = set(READ_COLUMNS[table]) | set(DERIVED_COLUMNS.get(table, ()))
        return tuple(c for c in self.source.columns.get(table, ()) if c not in known)

    def _changed(self, table: str, alias: str) -> str:
        """SQL: the row of ``alias`` changed at or after ``:since`` (TRUE without --since)."""
        if self.since is None or table not in CHANGE_COLUMNS:
            return "TRUE"
        columns = [f"{alias}.{quote(c)}" for c in CHANGE_COLUMNS[table]
                   if self.source.has(table, c)]
        expression = columns[0] if len(columns) == 1 else f"GREATEST({', '.join(columns)})"
        return f"COALESCE({expression} >= :since, FALSE)"

    def _count(self, from_where: str) -> int:
        return int(self.source.scalar(f"SELECT count(*) {from_where}", self.params) or 0)

    # -- the generic loop ------------------------------------------------------------------

    def _table(self, source_table: str, target: TargetTable, select: str, from_where: str,
               order_by: str, map_row: Callable[[dict], dict], key_of: Callable[[dict], str],
               parents: tuple[Parent, ...] = (), skip_set: set[str] | None = None,
               check: Callable[[dict, dict], None] | None = None,
               count_unmodeled: bool = True) -> None:
        stats = self.report.table(target.name)
        self.progress.start(target.name, self._count(from_where))
        unmodeled = self._unmodeled(source_table) if count_unmodeled else ()
        sql = f"SELECT {select} {from_where} ORDER BY {order_by}"
        for batch in self.source.stream(sql, self.params, self.batch):
            stats.read += len(batch)
            existing = {p.label: {str(v) for v in self.writer.existing(
                p.table, "id", [src[p.field] for src in batch])} for p in parents if p.table}
            rows = []
            for src in batch:
                for column in unmodeled:
                    if src[column] is not None:
                        self.report.count_unmodeled(f"{source_table}.{column}")
                key = key_of(src)
                note = self._parent_problem(target.name, key, src, parents, existing)
                if note is None:
                    try:
                        values = map_row(src)
                        problem = target.problem(values)
                        if problem is not None:
                            raise mapping.Unmappable(*problem)
                    except mapping.Unmappable as exc:
                        note = RowNote(target.name, key, CONFLICT, exc.code, exc.message)
                if note is not None:
                    self.report.note(note)
                    if skip_set is not None:
                        skip_set.add(key)
                    continue
                if check is not None:
                    check(src, values)
                rows.append(target.row(values))
            for key, status in self.writer.apply(target, rows).items():
                if skip_set is not None and status in NOT_WRITTEN:
                    skip_set.add(key)
            self.progress.advance(len(batch))
        self.progress.finish()

    def _parent_problem(self, table: str, key: str, src: dict, parents: tuple[Parent, ...],
                        existing: dict[str, set[str]]) -> RowNote | None:
        for parent in parents:
            value = src[parent.field]
            if value is None:
                continue
            parent_key = str(value)
            if parent_key in parent.skip:
                return RowNote(table, key, SKIPPED, f"{parent.label}_not_imported",
                               f"its {parent.label} {parent_key} was not imported")
            if parent.present is not None and not src[parent.present]:
                return RowNote(table, key, CONFLICT, "orphan",
                               f"its {parent.label} {parent_key} does not exist upstream")
            if parent.table is None or parent_key in existing[parent.label]:
                continue
            if self.writer.dry_run and parent.in_run and src[parent.in_run]:
                continue  # would be written earlier in this run
            return RowNote(table, key, CONFLICT, "parent_missing",
                           f"its {parent.label} {parent_key} is not in Cueline (an earlier "
                           "import did not bring it over)")
        return None

    # -- the tables ------------------------------------------------------------------------

    def run(self) -> None:
        users, cues, agents = self.skipped["users"], self.skipped["cues"], self.skipped["agents"]
        self._table("users", targets.USERS, self._select("users", "u"),
                    f"FROM users u WHERE {self._changed('users', 'u')}", "u.id",
                    mapping.user, lambda r: str(r["id"]), skip_set=users,
                    check=self._check_user)
        self._table(
            "cues", targets.CUES,
            f"{self._select('cues', 'c')}, u.id IS NOT NULL AS _user_present, "
            f"{self._changed('users', 'u')} AS _user_in_run",
            f"FROM cues c LEFT JOIN users u ON u.id = c.user_id "
            f"WHERE {self._changed('cues', 'c')}", "c.id",
            mapping.cue, lambda r: r["id"],
            (Parent("user", "user_id", users, "users", "_user_present", "_user_in_run"),),
            skip_set=cues)
        self._table(
            "executions", targets.EXECUTIONS,
            f"{self._select('executions', 'e')}, c.user_id AS _owner_id, "
            f"c.id IS NOT NULL AS _cue_present, {self._changed('cues', 'c')} AS _cue_in_run",
            f"FROM executions e LEFT JOIN cues c ON c.id = e.cue_id "
            f"WHERE {self._changed('executions', 'e')}", "e.id",
            mapping.execution, lambda r: str(r["id"]),
            (Parent("user", "_owner_id", users),
             Parent("cue", "cue_id", cues, "cues", "_cue_present", "_cue_in_run")),
            check=self._check_execution)
        if self.source.has("workers"):
            self._table(
                "workers", targets.WORKERS,
                f"{self._select('workers', 'w')}, u.id IS NOT NULL AS _user_present, "
                f"{self._changed('users', 'u')} AS _user_in_run",
                f"FROM workers w LEFT JOIN users u ON u.id = w.user_id "
                f"WHERE {self._changed('workers', 'w')}", "w.id",
                mapping.worker, lambda r: str(r["id"]),
                (Parent("user", "user_id", users, "users", "_user_present", "_user_in_run"),))
        if self.source.has("agents"):
            self._table(
                "agents", targets.AGENTS,
                f"{self._select('agents', 'a')}, u.id IS NOT NULL AS _user_present, "
                f"{self._changed('users', 'u')} AS _user_in_run",
                f"FROM agents a LEFT JOIN users u ON u.id = a.user_id "
                f"WHERE {self._changed('agents', 'a')}", "a.id",
                mapping.agent, lambda r: r["id"],
                (Parent("user", "user_id", users, "users", "_user_present", "_user_in_run"),),
                skip_set=agents, check=self._check_agent)
        if self.source.has("messages") and self.source.has("agents"):
            self._messages()
        for table, target, map_row in (
                ("usage_monthly", targets.EXECUTION_USAGE, mapping.execution_usage),
                ("usage_messages_monthly", targets.MESSAGE_MONTHLY_COUNTS,
                 mapping.message_count)):
            if not self.source.has(table):
                continue
            self._table(
                table, target,
                f"{self._select(table, 't')}, u.id IS NOT NULL AS _user_present, "
                "TRUE AS _user_in_run",
                f"FROM {table} t LEFT JOIN users u ON u.id = t.user_id", "t.user_id, "
                "t.month_start", map_row,
                lambda r: f"{r['user_id']}|{r['month_start']}",
                (Parent("user", "user_id", users, "users", "_user_present", "_user_in_run"),))
        self._agent_rows()
        if self.source.has("alerts"):
            self._table(
                "alerts", targets.ALERTS,
                f"{self._select('alerts', 'al')}, u.id IS NOT NULL AS _user_present, "
                f"{self._changed('users', 'u')} AS _user_in_run",
                "FROM alerts al LEFT JOIN users u ON u.id = al.user_id", "al.id",
                mapping.alert, lambda r: str(r["id"]),
                (Parent("user", "user_id", users, "users", "_user_present", "_user_in_run"),))
        self._deletions()
        self._not_carried()

    def _agent_rows(self) -> None:
        """Live sessions, subscriptions and events: rows of one agent each."""
        if not self.source.has("agents"):
            return
        agents = self.skipped["agents"]
        for table, alias, target, map_row, agent_column in (
                ("agent_live_sessions", "ls", targets.LIVE_SESSIONS, mapping.live_session,
                 "agent_id"),
                ("subscriptions", "s", targets.SUBSCRIPTIONS, mapping.subscription,
                 "subscriber_agent_id"),
                ("events", "ev", targets.EVENTS, mapping.event, "recipient_agent_id")):
            if not self.source.has(table):
                continue
            if table == "events":
                self._reserve_event_ids()
            self._table(
                table, target,
                f"{self._select(table, alias)}, ag.id IS NOT NULL AS _agent_present, "
                f"{self._changed('agents', 'ag')} AS _agent_in_run",
                f"FROM {table} {alias} LEFT JOIN agents ag ON ag.id = {alias}.{agent_column} "
                f"WHERE {self._changed(table, alias)}", f"{alias}.id", map_row,
                lambda r: str(r["id"]),
                (Parent("agent", agent_column, agents, "agents", "_agent_present",
                        "_agent_in_run"),))

    def _reserve_event_ids(self) -> None:
        """Move Cueline's event id sequence past cueapi-core's highest event id, before any
        event is copied: the imported events keep their ids (the pull cursors and the
        subscriptions' watermarks name them), and an event Cueline emits meanwhile or later
        gets a higher id than every imported one, so no reader's cursor skips it."""
        highest = self.source.scalar("SELECT max(id) FROM events")
        if highest is None:
            return
        highest = int(highest)
        if not self.writer.dry_run:
            if dialect_name() == "postgresql":
                sequence = db.session.scalar(text("SELECT pg_get_serial_sequence('events', "
                                                  "'id')"))
                if sequence is not None:
                    db.session.execute(
                        text(f"SELECT setval(CAST(:seq AS regclass), GREATEST(:top, "
                             f"(SELECT last_value FROM {sequence})))"),
                        {"seq": sequence, "top": highest})
            else:
                # SQLite's AUTOINCREMENT counter (it also moves when the rows are inserted;
                # moving it first keeps an event written meanwhile off the imported ids).
                moved = db.session.execute(
                    text("UPDATE sqlite_sequence SET seq = :top WHERE name = 'events' "
                         "AND seq < :top"), {"top": highest}).rowcount
                if not moved:
                    db.session.execute(
                        text("INSERT INTO sqlite_sequence (name, seq) SELECT 'events', :top "
                             "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence "
                             "WHERE name = 'events')"), {"top": highest})
            db.session.commit()
        self.report.info.append(f"New events get ids above {highest} (cueapi-core's highest "
                                "event id)")

    def _messages(self) -> None:
        users, agents = self.skipped["users"], self.skipped["agents"]
        push = self._push_state()
        changed = self._changed("messages", "m")
        if self.since is not None:
            changed = (f"({changed} OR (m.expires_at >= :since AND m.expires_at <= now())"
                       + (" OR m.id IN (SELECT o.payload->>'message_id' FROM dispatch_outbox o "
                          "WHERE o.created_at >= :since AND o.task_type IN "
                          "('deliver_message', 'retry_message'))"
                          if self.source.has("dispatch_outbox") else "") + ")")
        agent_parents = (
            Parent("sender agent", "from_agent_id", agents, "agents", "_from_present",
                   "_from_in_run"),
            Parent("recipient agent", "to_agent_id", agents, "agents", "_to_present",
                   "_to_in_run"),
            Parent("user", "user_id", users, "users", None, "_sender_in_run"),
            Parent("recipient user", "_to_user_id", users))
        joins = ("FROM messages m LEFT JOIN agents fa ON fa.id = m.from_agent_id "
                 "LEFT JOIN agents ta ON ta.id = m.to_agent_id "
                 "LEFT JOIN users su ON su.id = m.user_id")
        agent_fields = (f"ta.user_id AS _to_user_id, fa.id IS NOT NULL AS _from_present, "
                        f"ta.id IS NOT NULL AS _to_present, "
                        f"{self._changed('agents', 'fa')} AS _from_in_run, "
                        f"{self._changed('agents', 'ta')} AS _to_in_run, "
                        f"{self._changed('users', 'su')} AS _sender_in_run")
        self._table(
            "messages", targets.MESSAGES, f"{self._select('messages', 'm')}, {agent_fields}",
            f"{joins} WHERE {changed}", "m.id",
            lambda r: mapping.message(r, push.get(r["id"])), lambda r: r["id"],
            agent_parents, skip_set=self.skipped["messages"])
        # Spent idempotency keys still inside their window, so a retried send replays.
        self._table(
            "messages", targets.MESSAGE_IDEMPOTENCY_KEYS,
            f"m.id, m.user_id, m.to_agent_id, m.idempotency_key, m.body, m.subject, "
            f"m.priority, m.reply_to, m.message_metadata, m.created_at, "
            f"{self._changed('messages', 'm')} AS _message_in_run",
            "FROM messages m WHERE m.idempotency_key IS NOT NULL "
            "AND m.created_at > now() - interval '24 hours'", "m.id",
            mapping.idempotency_key, lambda r: f"{r['user_id']}|{r['idempotency_key']}",
            (Parent("user", "user_id", users),
             Parent("message", "id", self.skipped["messages"], "messages", None,
                    "_message_in_run")), count_unmodeled=False)

    def _push_state(self) -> dict[str, tuple[int, datetime | None]]:
        """``message id → (attempt, scheduled_at)`` of the latest push job of every message
        still in flight (bounded by the number of undelivered messages, not by the table)."""
        if not self.source.has("dispatch_outbox"):
            return {}
        rows = self.source.rows(
            "SELECT DISTINCT ON (o.payload->>'message_id') o.payload->>'message_id' AS id, "
            "CASE WHEN o.payload->>'attempt' ~ '^[0-9]{1,6}$' "
            "THEN (o.payload->>'attempt')::int ELSE 1 END AS attempt, o.scheduled_at "
            "FROM dispatch_outbox o JOIN messages m ON m.id = o.payload->>'message_id' "
            "WHERE o.task_type IN ('deliver_message', 'retry_message') "
            "AND m.delivery_state IN ('queued', 'retry_ready', 'delivering') "
            "ORDER BY o.payload->>'message_id', o.id DESC")
        return {row["id"]: (row["attempt"], row["scheduled_at"]) for row in rows}

    # -- row checks that do not stop a row -------------------------------------------------

    def _check_user(self, src: dict, values: dict) -> None:
        if not mapping.addressable(f"agent@{values['slug']}"):
            self.report.note(RowNote("users", str(values["id"]), WARNING, "slug_not_addressable",
                                     f"slug {values['slug']!r} cannot be written in a "
                                     "slug@user-slug address in Cueline (agent ids still work)"))
        ciphertext = values["api_key_encrypted"]
        if ciphertext:
            self.encrypted[0] += 1
            plain = decrypt_secret(ciphertext, self.session_secret)
            if plain is not None and hash_secret(plain) == values["api_key_hash"]:
                self.encrypted[1] += 1

    def _check_execution(self, src: dict, values: dict) -> None:
        if src["outcome_metadata"] is not None and src["outcome_recorded_at"] is None:
            # Metadata a manual fire pre-set for a live session, before any outcome.
            self.report.count_unmodeled("executions.outcome_metadata (no outcome recorded)")

    def _check_agent(self, src: dict, values: dict) -> None:
        if not mapping.addressable(values["id"]) or \
                not mapping.addressable(f"{values['slug']}@user"):
            self.report.note(RowNote("agents", values["id"], WARNING, "not_addressable",
                                     "this agent's id or slug is not an address Cueline "
                                     "accepts; it cannot be reached by that form"))

    # -- deletions and what is left behind --------------------------------------------------

    def _deletions(self) -> None:
        """Cues and workers gone upstream are deleted in Cueline (unless changed there);
        users and agents gone upstream are only counted (deleting them would cascade)."""
        for target, table, uuid_key, propagate in (
                (targets.CUES, "cues", False, True), (targets.WORKERS, "workers", True, True),
                (targets.LIVE_SESSIONS, "agent_live_sessions", True, True),
                (targets.SUBSCRIPTIONS, "subscriptions", True, True),
                (targets.USERS, "users", True, False), (targets.AGENTS, "agents", False, False)):
            if not self.source.has(table):
                continue
            gone_total = 0
            for keys in self.writer.ledger_keys(target, self.batch):
                cast = "CAST(:keys AS uuid[])" if uuid_key else "CAST(:keys AS text[])"
                found = {str(r["id"]) for r in self.source.rows(
                    f"SELECT id FROM {quote(table)} WHERE id = ANY({cast})", {"keys": keys})}
                gone = [k for k in keys if k not in found]
                gone_total += len(gone)
                if propagate and gone:
                    self.writer.delete_unchanged(target, gone)
            if gone_total and not propagate:
                self.report.info.append(
                    f"{gone_total} {table} imported earlier no longer exist upstream; they "
                    "are kept in Cueline (delete them there if they should go)")

    def _not_carried(self) -> None:
        for table in sorted(self.source.columns):
            if table in IMPORTED_TABLES or table == "alembic_version":
                continue
            self.report.not_carried_tables[table] = int(
                self.source.scalar(f"SELECT count(*) FROM {quote(table)}") or 0)
        for table in IMPORTED_TABLES:
            if not self.source.has(table):
                continue
            for column in READ_COLUMNS[table]:
                if not self.source.has(table, column):
                    self.report.missing_columns.append(f"{table}.{column}")
        seen, revealable = self.encrypted
        if seen:
            self.report.info.append(
                f"{seen} users have a stored copy of their API key; {revealable} decrypt with "
                "this instance's SESSION_SECRET (GET /v1/auth/key can reveal those; the others "
                "need cueapi-core's SESSION_SECRET here)")
        if self.source.snapshot_at is not None:
            self.report.info.append(
                "Next catch-up: --since "
                f"{(self.source.snapshot_at - CATCH_UP_OVERLAP).isoformat()}")


def _check_target() -> None:
    if not inspect(db.engine).has_table("import_ledger"):
        raise ImportFailed("Cueline's database has no import_ledger table: run "
                           "`flask --app wsgi db upgrade` first")


def _check_source(source: Source) -> None:
    for table, columns in REQUIRED_COLUMNS.items():
        missing = [c for c in columns if not source.has(table, c)]
        if missing:
            raise ImportFailed(
                f"the source's {table} table lacks {', '.join(missing)}: upgrade cueapi-core's "
                "schema to its current migration (alembic upgrade head) before importing")


def run_import(source_url: str, *, since: datetime | None = None, dry_run: bool = False,
               batch: int = 1000, progress: Progress | None = None,
               note_sink: Callable[[RowNote], None] | None = None) -> Report:
    """Import the cueapi-core database at ``source_url`` into the app's database.

    Runs inside an application context.  ``since`` limits the read to rows changed at or
    after it; ``dry_run`` writes nothing and reports what would be done.  Every row that is
    not written as it is upstream is passed to ``note_sink`` as it happens.  Raises
    :class:`ImportFailed` when the import cannot run at all.
    """
    report = Report(source=redacted(source_url), dry_run=dry_run, since=since, sink=note_sink)
    _check_target()
    try:
        with Source(source_url) as source:
            _check_source(source)
            report.revision = source.revision()
            report.snapshot_at = source.snapshot_at
            run = CueapiImport(source, Writer(SOURCE, report, dry_run), report, since,
                               batch, progress or Silent())
            run.run()
    except SourceError as exc:
        raise ImportFailed(str(exc)) from None
    finally:
        db.session.rollback()
    return report


