"""A cueapi-core database for the import tests: the schema of ``cueapi_schema.sql`` and a few
hundred realistic rows, made the way cueapi-core makes them (``cue_sk_`` keys stored as their
SHA-256 and first 12 characters, ``whsec_`` secrets, Fernet copies of keys under a
``SESSION_SECRET``, push jobs in ``dispatch_outbox``, …).

``populate`` is deterministic for a seed; the :class:`Upstream` it returns tells the tests the
plaintext keys and which rows are which.
"""

from __future__ import annotations

import base64
import hashlib
import random
import secrets
import string
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from cryptography.fernet import Fernet
from psycopg.types.json import Jsonb

SCHEMA = Path(__file__).with_name("cueapi_schema.sql")

#: Columns only cueapi-core's models declare (a database built by its migrations lacks them).
MODEL_ONLY_COLUMNS = {
    "users": ("api_key_encrypted",),
    "executions": ("outcome_deadline_seconds", "outcome_deadline_at", "outcome_state",
                   "last_heartbeat_at", "triggered_by", "evidence_external_id",
                   "evidence_result_url", "evidence_result_ref", "evidence_result_type",
                   "evidence_summary", "evidence_validation_state", "evidence_produced_at",
                   "evidence_artifacts", "evidence_metadata"),
    "device_codes": ("session_token", "user_id"),
}


def conninfo(url: str) -> str:
    """A libpq URL from the SQLAlchemy one the test cluster hands out."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def create_schema(url: str, shape: str = "models") -> None:
    """Create cueapi-core's tables in the (empty) database at ``url``.

    ``shape="migrations"`` drops the columns only the models declare, as a database upgraded
    with cueapi-core's Alembic migrations has it.
    """
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute(SCHEMA.read_text())
        if shape == "migrations":
            for table, columns in MODEL_ONLY_COLUMNS.items():
                for column in columns:
                    conn.execute(f'ALTER TABLE {table} DROP COLUMN "{column}"')


def api_key() -> str:
    return "cue_sk_" + secrets.token_hex(16)


def webhook_secret() -> str:
    return "whsec_" + secrets.token_hex(32)


def fernet_copy(key: str, session_secret: str) -> str:
    """The ``users.api_key_encrypted`` cueapi-core stores: Fernet under SHA-256(secret)."""
    fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(session_secret.encode()).digest()))
    return fernet.encrypt(key.encode()).decode()


def _id(prefix: str, rng: random.Random) -> str:
    return prefix + "".join(rng.choice(string.ascii_lowercase + string.digits)
                            for _ in range(12))


@dataclass
class UserRow:
    id: uuid.UUID
    email: str
    slug: str
    key: str
    webhook_secret: str
    plan: str
    external_owner: str | None


@dataclass
class AgentRow:
    id: str
    user_id: uuid.UUID
    slug: str
    user_slug: str
    webhook_secret: str | None
    deleted: bool


@dataclass
class Upstream:
    """What ``populate`` wrote, for the assertions."""

    url: str
    now: datetime
    users: list[UserRow] = field(default_factory=list)
    agents: list[AgentRow] = field(default_factory=list)
    cues: list[dict] = field(default_factory=list)
    executions: list[dict] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    workers: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    orphan_worker: uuid.UUID | None = None
    idempotent_message: dict | None = None
    alerts: list[dict] = field(default_factory=list)
    subscriptions: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    live_sessions: list[dict] = field(default_factory=list)
    alert_webhook_secret: str | None = None

    def user(self, index: int) -> UserRow:
        return self.users[index]

    def cues_of(self, user_id: uuid.UUID) -> list[dict]:
        return [c for c in self.cues if c["user_id"] == user_id]

    def agents_of(self, user_id: uuid.UUID) -> list[AgentRow]:
        return [a for a in self.agents if a.user_id == user_id]


def _insert(cur, table: str, rows: list[dict]) -> None:
    if not rows:
        return
    if any(set(row) != set(rows[0]) for row in rows):
        for row in rows:  # rows naming different columns: each leaves the others default
            _insert(cur, table, [row])
        return
    columns = list(rows[0])
    cur.executemany(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        f"({', '.join('%(' + c + ')s' for c in columns)})",
        [{c: (Jsonb(v) if isinstance(v, dict | list) else v) for c, v in row.items()}
         for row in rows])


def populate(url: str, seed: int = 7, users: int = 12, session_secret: str = "",
             other_secret: str = "another-deployments-session-secret") -> Upstream:
    """Fill the cueapi-core database at ``url`` with realistic rows.

    ``session_secret``: the ``SESSION_SECRET`` the copies of API keys are encrypted under (the
    last user's copy uses ``other_secret`` instead, as if made by another deployment).
    """
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=123456)
    up = Upstream(url=url, now=now)
    month = now.date().replace(day=1)
    last_month = (month - timedelta(days=1)).replace(day=1)
    user_rows, cue_rows, execution_rows, worker_rows, agent_rows = [], [], [], [], []
    message_rows, outbox_rows, usage_rows, message_usage_rows = [], [], [], []
    up.alert_webhook_secret = secrets.token_hex(32)  # as cueapi-core mints it (64 hex)
    for i in range(users):
        key = api_key()
        uid = uuid.UUID(int=rng.getrandbits(128), version=4)
        email = f"Person.{i}@example.com" if i == 3 else f"user{i}@example.com"
        slug = f"user{i}" if i != 5 else "team-five"
        row = UserRow(uid, email, slug, key, webhook_secret(), ("free", "pro", "scale")[i % 3],
                      "dock" if i % 4 == 1 else None)
        up.users.append(row)
        created = now - timedelta(days=200 - i)
        secret_for_copy = other_secret if i == users - 2 else session_secret
        user_rows.append({
            "id": uid, "email": email, "api_key_hash": hashlib.sha256(key.encode()).hexdigest(),
            "api_key_prefix": key[:12], "plan": row.plan,
            "plan_interval": "monthly", "stripe_customer_id": "cus_" + uid.hex[:10] if i == 2
            else None, "active_cue_limit": 10 + i, "monthly_execution_limit": 300 * (i + 1),
            "monthly_message_limit": 300 + i, "rate_limit_per_minute": 60 + i,
            "created_at": created, "updated_at": created + timedelta(days=3),
            "webhook_secret": row.webhook_secret,
            "alert_webhook_url": "https://alerts.example.com/hook" if i == 4 else None,
            "alert_webhook_secret": up.alert_webhook_secret if i == 4 else None,
            "slug": slug, "external_owner": row.external_owner,
            "api_key_encrypted": fernet_copy(key, secret_for_copy) if i % 2 == 0 else None,
        })
        # Cues, with executions.
        for j in range(rng.randint(3, 6)):
            cid = _id("cue_", rng)
            transport = "worker" if j % 3 == 2 else "webhook"
            once = j % 4 == 3
            status = ("active", "active", "paused", "completed" if once else "active")[j % 4]
            mode = (None, "none", "require_external_id", "manual", "require_artifacts")[j % 5]
            cue = {
                "id": cid, "user_id": uid, "name": f"job {j} · nightly ✓", "description":
                f"cue {j} of {slug}" if j % 2 else None, "status": status,
                "schedule_type": "once" if once else "recurring",
                "schedule_cron": None if once else ("*/5 * * * *", "0 9 * * 1-5",
                                                    "30 2 1 * *")[j % 3],
                "schedule_at": now + timedelta(days=2) if once else None,
                "schedule_timezone": ("UTC", "Europe/Paris", "America/New_York")[j % 3],
                "callback_url": None if transport == "worker" else
                f"http://127.0.0.1:9/hooks/{cid}",
                "callback_method": ("POST", "PUT", "GET", "PATCH")[j % 4],
                "callback_headers": {"X-Team": slug} if j % 2 else {},
                "payload": {"task": f"t{j}", "nested": {"n": j, "list": [1, "två", None]}},
                "retry_max_attempts": 1 + j % 5, "retry_backoff_minutes": [1, 5, 15][: 1 + j % 3],
                "next_run": None if status != "active" else now + timedelta(minutes=5 + j),
                "last_run": now - timedelta(hours=1), "run_count": 7 * j, "fired_count": 6 * j,
                "on_failure": {"email": j % 2 == 0, "webhook": None, "pause": j % 3 == 0}
                if j != 1 else None,
                "verification_mode": mode, "callback_transport": transport,
                "created_at": created + timedelta(days=1, minutes=j),
                "updated_at": now - timedelta(hours=2),
            }
            cue_rows.append(cue)
            up.cues.append(cue)
            statuses = ("success", "failed", "retrying", "retry_ready", "missed", "pending",
                        "delivering", "outcome_timeout", "pending_outcome")
            for k in range(rng.randint(4, 12)):
                status_k = statuses[(j + k) % len(statuses)]
                scheduled = now - timedelta(minutes=5 * (k + 1) + j)
                recorded = status_k in ("success", "failed") and k % 2 == 0
                ex = {
                    "id": uuid.UUID(int=rng.getrandbits(128), version=4), "cue_id": cid,
                    "scheduled_for": scheduled, "status": status_k,
                    "http_status": 200 if status_k == "success" else (500 if status_k in (
                        "failed", "retrying") else None),
                    "response_body": '{"ok": true}' if status_k == "success" else None,
                    "attempts": 1 + k % 3,
                    "next_retry": scheduled + timedelta(minutes=5) if status_k == "retrying"
                    else None,
                    "error_message": "HTTP 500" if status_k in ("failed", "retrying") else None,
                    "started_at": scheduled, "delivered_at": scheduled + timedelta(seconds=2)
                    if status_k == "success" else None, "last_attempt_at": scheduled,
                    "created_at": scheduled, "updated_at": scheduled + timedelta(seconds=3),
                    "outcome_success": (status_k == "success") if recorded else None,
                    "outcome_result": "done" if recorded and status_k == "success" else None,
                    "outcome_error": "boom" if recorded and status_k == "failed" else None,
                    "outcome_metadata": {"rows": k} if recorded else (
                        {"delivery_mode_requested": "ipc"} if k == 5 else None),
                    "outcome_recorded_at": scheduled + timedelta(seconds=30) if recorded else
                    None,
                    "claimed_by_worker": f"worker-{i}" if transport == "worker" and status_k in (
                        "delivering", "success") else None,
                    "claimed_at": scheduled if transport == "worker" and status_k in (
                        "delivering", "success") else None,
                    "live_claim_session_token": "01HV" + "A" * 22 if k == 7 else None,
                    "live_claimed_at": scheduled + timedelta(seconds=1) if k == 7 else None,
                    "outcome_deadline_seconds": 600 if k == 6 else None,
                    "outcome_state": None if not recorded or k == 4 else (
                        "reported_success" if status_k == "success" else "reported_failure"),
                    "last_heartbeat_at": scheduled if status_k == "delivering" else None,
                    "triggered_by": (None, None, "manual_fire", "replay")[k % 4],
                    "evidence_external_id": f"ext-{k}" if recorded and k % 4 == 0 else None,
                    "evidence_result_url": "https://example.com/r" if recorded else None,
                    "evidence_summary": "all rows synced" if recorded else None,
                    "evidence_artifacts": [{"name": "log.txt"}] if recorded and k == 0 else None,
                    "evidence_validation_state": "valid" if recorded else None,
                    "evidence_metadata": {"source": "ci"} if recorded and k == 2 else None,
                }
                execution_rows.append(ex)
                up.executions.append(ex)
        if i % 3 == 0:
            worker = {"id": uuid.UUID(int=rng.getrandbits(128), version=4), "user_id": uid,
                      "worker_id": f"worker-{i}", "handlers": ["sync", "report"] if i else None,
                      "last_heartbeat": now - timedelta(seconds=30 * (i + 1)),
                      "created_at": created}
            worker_rows.append(worker)
            up.workers.append(worker)
        # Agents.
        for a in range(3):
            aid = _id("agt_", rng)
            has_hook = a == 1
            deleted = i == 2 and a == 2
            secret = webhook_secret() if has_hook else None
            agent_rows.append({
                "id": aid, "user_id": uid, "slug": ("planner", "runner", "archivist")[a],
                "display_name": ("Planner", "Runner", "Archivist")[a],
                "webhook_url": f"http://127.0.0.1:9/agents/{aid}" if has_hook else None,
                "webhook_secret": secret, "agent_metadata": {"team": slug, "n": a},
                "status": ("online", "away", "offline")[a],
                "deleted_at": now - timedelta(days=1) if deleted else None,
                "created_at": created + timedelta(hours=a), "updated_at": created +
                timedelta(hours=a + 1), "last_seen_at": now - timedelta(minutes=a * 20),
            })
            up.agents.append(AgentRow(aid, uid, agent_rows[-1]["slug"], slug, secret, deleted))
        usage_rows += [{"user_id": uid, "month_start": month, "execution_count": 10 * i},
                       {"user_id": uid, "month_start": last_month, "execution_count": 100 + i}]
        message_usage_rows.append({"user_id": uid, "month_start": month, "message_count": 4 * i})
    # Messages between each user's agents, and a few across users.
    states = ("queued", "delivered", "read", "acked", "retry_ready", "delivering", "failed",
              "expired", "claimed")
    live = [a for a in up.agents if not a.deleted]
    for n in range(150):
        sender = live[n % len(live)]
        same_user = [a for a in live if a.user_id == sender.user_id and a.id != sender.id]
        recipient = same_user[n % len(same_user)] if n % 10 else live[(n * 7 + 3) % len(live)]
        if recipient.id == sender.id:
            recipient = same_user[0]
        state = states[n % len(states)]
        created = now - timedelta(hours=(150 - n))
        mid = _id("msg_", rng)
        parent = message_rows[-1] if n % 5 == 4 and message_rows[-1]["to_agent_id"] == \
            sender.id else None
        body = f"message {n}: " + "ünïcode ✓ " * (n % 4)
        msg = {
            "id": mid, "user_id": sender.user_id, "from_agent_id": sender.id,
            "to_agent_id": recipient.id, "thread_id": parent["thread_id"] if parent else mid,
            "reply_to": parent["id"] if parent else None,
            "subject": f"subject {n}" if n % 3 else None, "body": body, "preview": body[:200],
            "priority": 1 + n % 5, "expects_reply": n % 2 == 0,
            "reply_to_agent_id": sender.id if n % 6 == 0 else None, "delivery_state": state,
            "message_metadata": {"n": n} if n % 2 else {},
            "idempotency_key": f"idem-{n}" if n % 25 == 0 else None,
            "idempotency_fingerprint": "f" * 64 if n % 25 == 0 else None,
            "created_at": created,
            "delivered_at": created + timedelta(seconds=5) if state in (
                "delivered", "read", "acked", "claimed") else None,
            "read_at": created + timedelta(seconds=9) if state in ("read", "acked") else None,
            "acked_at": created + timedelta(seconds=20) if state == "acked" else None,
            "failed_at": created + timedelta(minutes=30) if state == "failed" else None,
            "expires_at": created + timedelta(days=30) if state != "expired" else
            now - timedelta(hours=1),
            "delivering_started_at": now - timedelta(minutes=20) if state == "delivering"
            else None,
            "dispatch_priority_bucket": 1 + n % 5,
            "message_dispatch_error": "HTTP 503" if state in ("retry_ready", "failed") else None,
            "correlation_id": f"corr-{n}" if n % 7 == 0 else None,
            "send_at": now + timedelta(hours=2) if n == 9 else None,
        }
        if n == 25:  # a fresh send whose Idempotency-Key is still spent
            msg["created_at"] = now - timedelta(hours=1)
            msg["delivery_state"] = "queued"
            up.idempotent_message = msg
        message_rows.append(msg)
        up.messages.append(msg)
        if recipient.webhook_secret is not None:
            outbox_rows.append({"task_type": "deliver_message", "dispatched": True,
                                "payload": {"message_id": mid, "to_agent_id": recipient.id},
                                "created_at": created, "scheduled_at": None})
            if msg["delivery_state"] in ("retry_ready", "failed", "delivering"):
                outbox_rows.append({"task_type": "retry_message",
                                    "dispatched": msg["delivery_state"] != "retry_ready",
                                    "payload": {"message_id": mid, "to_agent_id": recipient.id,
                                                "attempt": 2},
                                    "created_at": created + timedelta(minutes=1),
                                    "scheduled_at": now + timedelta(minutes=4)})
    up.orphan_worker = uuid.UUID(int=rng.getrandbits(128), version=4)
    worker_rows.append({"id": up.orphan_worker, "user_id": uuid.uuid4(), "worker_id": "ghost",
                        "handlers": None, "last_heartbeat": now, "created_at": now})
    usage_rows.append({"user_id": uuid.uuid4(), "month_start": month, "execution_count": 5})
    _agent_rows(up, now, message_rows)
    with psycopg.connect(conninfo(url)) as conn, conn.cursor() as cur:
        for table, rows in (("users", user_rows), ("cues", cue_rows),
                            ("executions", execution_rows), ("workers", worker_rows),
                            ("agents", agent_rows), ("messages", message_rows),
                            ("dispatch_outbox", outbox_rows), ("usage_monthly", usage_rows),
                            ("usage_messages_monthly", message_usage_rows)):
            present = {row[0] for row in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s",
                (table,))}
            _insert(cur, table, [{c: v for c, v in row.items() if c in present}
                                 for row in rows])
        _insert(cur, "alerts", up.alerts)
        _insert(cur, "agent_live_sessions", up.live_sessions)
        # The first event takes its id from the sequence, the others are given theirs (ids
        # with gaps, as a retention sweep leaves them); the sequence then moves past them.
        _insert(cur, "events", up.events[:1])
        up.events[0]["id"] = cur.execute("SELECT max(id) FROM events").fetchone()[0]
        _insert(cur, "events", up.events[1:])
        cur.execute("SELECT setval('events_id_seq', (SELECT max(id) FROM events))")
        _insert(cur, "subscriptions", up.subscriptions)
        _insert(cur, "device_codes", [{"device_code": "ABCD-EFGH", "status": "pending",
                                       "expires_at": now + timedelta(minutes=10)}])
        conn.commit()
    up.counts = {"users": len(user_rows), "cues": len(cue_rows),
                 "executions": len(execution_rows), "workers": len(worker_rows),
                 "agents": len(agent_rows), "messages": len(message_rows),
                 "usage_monthly": len(usage_rows),
                 "usage_messages_monthly": len(message_usage_rows)}
    return up


def _agent_rows(up: Upstream, now: datetime, message_rows: list[dict]) -> None:
    """Alerts, live sessions, events and subscriptions, into ``up`` (inserted by
    :func:`populate`)."""
    user0, user4 = up.users[0], up.users[4]
    first_agent = up.agents[0]                       # user 0's planner
    other = up.agents_of(up.users[1].id)[0]          # user 1's planner
    cue4 = up.cues_of(user4.id)[0]
    execution4 = next(e for e in up.executions if e["cue_id"] == cue4["id"])
    up.alerts = [
        {"id": uuid.UUID(int=1000 + n, version=4), "user_id": user_id, "cue_id": cue_id,
         "execution_id": execution_id, "alert_type": alert_type, "severity": severity,
         "message": message, "metadata": metadata, "acknowledged": acknowledged,
         "created_at": now - timedelta(hours=10 - n)}
        for n, (user_id, cue_id, execution_id, alert_type, severity, message, metadata,
                acknowledged) in enumerate((
                    (user0.id, None, None, "consecutive_failures", "warning", "3 failures",
                     {"consecutive_failures": 3}, False),
                    (user4.id, cue4["id"], execution4["id"], "outcome_timeout", "critical",
                     "no outcome within 600 s", {"deadline_seconds": 600}, False),
                    (user4.id, cue4["id"], execution4["id"], "verification_failed", "info",
                     "result_url missing", None, True)))]
    up.live_sessions = [
        {"id": uuid.UUID(int=2000, version=4), "agent_id": first_agent.id, "label": "laptop",
         "cue_id": "cue_live000001", "task_name": "inbox", "is_default": False,
         "attached_at": None, "created_at": now - timedelta(days=2)},
        {"id": uuid.UUID(int=2001, version=4), "agent_id": first_agent.id, "label": "desk",
         "cue_id": "cue_live000002", "task_name": "inbox", "is_default": True,
         "transport": "ipc", "daemon_id": uuid.UUID(int=2100, version=4),
         "ipc_session_token": "t" * 32, "session_token": "01HV" + "B" * 22,
         "monitor_version": "v2.1.0", "attached_at": now - timedelta(hours=3),
         "last_heartbeat": now - timedelta(seconds=40), "last_claim_at": now - timedelta(
             minutes=9), "last_reconciled_at": now - timedelta(minutes=1),
         "created_at": now - timedelta(hours=3)},
        # Detached while the default: cueapi-core leaves the flag, Cueline's constraint not.
        {"id": uuid.UUID(int=2002, version=4), "agent_id": first_agent.id, "label": "desk",
         "cue_id": "cue_live000000", "task_name": "inbox", "is_default": True,
         "attached_at": now - timedelta(days=5), "detached_at": now - timedelta(hours=4),
         "created_at": now - timedelta(days=5)}]
    mine = [m for m in message_rows if m["to_agent_id"] == first_agent.id]
    events = [{"event_type": "message.delivered", "recipient_agent_id": first_agent.id,
               "payload": {"message_id": message_rows[0]["id"]},
               "emitted_at": now - timedelta(hours=6)}]
    for n in range(12):
        message = mine[n % len(mine)]
        turn = n % 4 == 3
        events.append({
            "id": 100 + 3 * n, "event_type": "turn.pass" if turn else "message.delivered",
            "recipient_agent_id": first_agent.id if n < 10 else other.id,
            "payload": {"thread_id": message["thread_id"]} if turn else {
                "message_id": message["id"], "from_agent_id": message["from_agent_id"],
                "priority": 1 + n % 5, "subject": message["subject"]},
            "emitted_at": now - timedelta(hours=5, minutes=-n),
            "idempotency_key": f"turn-{n}" if turn else None,
            "digested_at": now - timedelta(hours=4) if n == 0 else None})
    up.events = events
    top = max(e["id"] for e in events[1:])
    up.subscriptions = [
        {"id": uuid.UUID(int=3000, version=4), "subscriber_agent_id": first_agent.id,
         "event_type": "message.delivered", "delivery_target": "webhook",
         "webhook_url": "http://127.0.0.1:9/events", "webhook_secret": webhook_secret(),
         "last_dispatched_event_id": 112, "last_dispatched_at": now - timedelta(hours=4),
         "last_acked_event_id": 112, "consecutive_failures": 3, "inline_body": True,
         "created_at": now - timedelta(days=3)},
        {"id": uuid.UUID(int=3001, version=4), "subscriber_agent_id": first_agent.id,
         "event_type": "message.delivered", "delivery_target": "pull",
         "last_acked_event_id": 109, "created_at": now - timedelta(days=3)},
        {"id": uuid.UUID(int=3002, version=4), "subscriber_agent_id": first_agent.id,
         "event_type": "turn.pass", "delivery_target": "pull",
         "created_at": now - timedelta(days=2)},
        {"id": uuid.UUID(int=3003, version=4), "subscriber_agent_id": first_agent.id,
         "event_type": "turn.pass", "delivery_target": "pull", "last_acked_event_id": 100,
         "created_at": now - timedelta(days=4), "detached_at": now - timedelta(days=2)},
        # Its circuit breaker open.
        {"id": uuid.UUID(int=3004, version=4), "subscriber_agent_id": other.id,
         "event_type": "message.delivered", "delivery_target": "webhook",
         "webhook_url": "http://127.0.0.1:9/other", "webhook_secret": webhook_secret(),
         "last_dispatched_event_id": top - 3, "consecutive_failures": 10,
         "paused_until": now + timedelta(minutes=30), "created_at": now - timedelta(days=1)}]


def execute(url: str, sql: str, params: dict | None = None) -> None:
    """Run one statement on the source (tests changing it between runs)."""
    with psycopg.connect(conninfo(url)) as conn:
        conn.execute(sql, {k: (Jsonb(v) if isinstance(v, dict | list) else v)
                           for k, v in (params or {}).items()})
        conn.commit()

