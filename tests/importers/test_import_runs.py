"""Import runs: idempotent re-runs, dry runs, conflicts (nothing half-imported), ``--since``
catch-ups, rows changed or deleted on either side, counters, and both shapes of source schema.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from app.db import utcnow
from app.events.models import Event, Subscription
from app.extensions import db
from app.importers import targets
from app.importers.engine import canonical, digest_of
from app.importers.models import ImportedRow
from app.importers.report import CONFLICT, KEPT, SKIPPED
from app.messaging.models import Agent, Message
from app.quotas.cues import count_successful_delivery
from app.scheduling.models import Cue, Execution, ExecutionUsage, Worker
from app.users.models import User
from app.users.services import register_user
from tests.helpers import key_headers
from tests.importers.conftest import run
from tests.importers.upstream import execute

TABLES = ("users", "cues", "executions", "workers", "agents", "messages",
          "message_idempotency_keys", "execution_usage", "message_monthly_counts",
          "agent_live_sessions", "subscriptions", "events", "alerts", "import_ledger")


def snapshot(app) -> dict[str, list]:
    """Every row of the tables an import writes, canonically (to compare two states)."""
    with app.app_context():
        state = {}
        for name in TABLES:
            table = db.metadata.tables[name]
            rows = db.session.execute(select(table).order_by(*table.primary_key.columns))
            state[name] = [canonical(dict(row._mapping)) for row in rows]
        db.session.rollback()
        return state


def counts(app) -> dict[str, int]:
    with app.app_context():
        return {name: db.session.scalar(select(func.count()).select_from(
            db.metadata.tables[name])) for name in TABLES}


def notes(report, kind=None, code=None, table=None):
    return [n for n in report.notes if (kind is None or n.kind == kind)
            and (code is None or n.code == code) and (table is None or n.table == table)]


def test_a_second_run_changes_nothing(make_app, upstream):
    app = make_app()
    first = run(app, upstream.url)
    assert first.table("users").inserted == upstream.counts["users"]
    assert first.table("executions").inserted == upstream.counts["executions"]
    # The two rows without a user upstream are the only conflicts.
    assert {(n.table, n.code) for n in notes(first, CONFLICT)} == {
        ("workers", "orphan"), ("execution_usage", "orphan")}
    before = snapshot(app)
    again = run(app, upstream.url)
    assert again.changes == 0
    assert all(s.inserted == s.updated == s.deleted == 0 for s in again.tables.values())
    assert again.table("executions").unchanged == upstream.counts["executions"]
    after = snapshot(app)
    assert after == before
    # A catch-up over a window in which nothing changed changes nothing either.
    catch_up = run(app, upstream.url, since=first.snapshot_at - timedelta(minutes=5))
    assert catch_up.changes == 0
    assert snapshot(app) == before


def test_a_dry_run_writes_nothing_and_predicts_the_import(make_app, upstream):
    app = make_app()
    dry = run(app, upstream.url, dry_run=True)
    assert set(counts(app).values()) == {0}
    real = run(app, upstream.url)
    for name, stats in real.tables.items():
        predicted = dry.tables[name]
        assert (predicted.inserted, predicted.conflicts, predicted.skipped) == \
            (stats.inserted, stats.conflicts, stats.skipped), name
    assert dry.changes == real.changes > 0
    before = snapshot(app)
    assert run(app, upstream.url, dry_run=True).changes == 0
    assert snapshot(app) == before


def test_a_conflicting_user_takes_all_its_rows_with_it(make_app, new_source):
    source = new_source()
    app = make_app()
    victim, renamed = source.user(1), source.user(2)
    with app.app_context():
        native = register_user(victim.email).user.id        # holds the email, another id
        register_user(f"{renamed.slug}@elsewhere.example")  # takes the slug "user2"
    report = run(app, source.url)
    conflicts = {(n.table, n.key): n.code for n in notes(report, CONFLICT, table="users")}
    assert conflicts == {("users", str(victim.id)): "email_taken",
                         ("users", str(renamed.id)): "slug_taken"}
    skipped_ids = {victim.id, renamed.id}
    lost_cues = {c["id"] for c in source.cues if c["user_id"] in skipped_ids}
    lost_agents = {a.id for a in source.agents if a.user_id in skipped_ids}
    skipped = {(n.table, n.key) for n in notes(report, SKIPPED)}
    assert {("cues", c) for c in lost_cues} <= skipped
    assert {("executions", str(e["id"])) for e in source.executions
            if e["cue_id"] in lost_cues} <= skipped
    assert {("agents", a) for a in lost_agents} <= skipped
    assert {("messages", m["id"]) for m in source.messages
            if m["from_agent_id"] in lost_agents or m["to_agent_id"] in lost_agents} <= skipped
    with app.app_context():
        assert db.session.get(User, victim.id) is None
        assert db.session.get(User, native).email == victim.email  # untouched
        for model, column in ((Cue, Cue.user_id), (Agent, Agent.user_id),
                              (Worker, Worker.user_id), (ExecutionUsage, ExecutionUsage.user_id),
                              (Message, Message.user_id), (Message, Message.to_user_id)):
            assert db.session.scalar(select(func.count()).select_from(model)
                                     .where(column.in_(skipped_ids))) == 0
        assert db.session.scalar(select(func.count()).select_from(Execution)
                                 .where(Execution.cue_id.in_(lost_cues))) == 0
        assert db.session.scalar(select(func.count()).select_from(User)) == \
            len(source.users) - 2 + 2
    # Still a conflict on the next run, and still nothing of it written.
    again = run(app, source.url)
    assert again.changes == 0
    assert {(n.table, n.key) for n in notes(again, CONFLICT, table="users")} == set(conflicts)


def test_unmappable_rows_are_refused_whole(make_app, new_source):
    source = new_source()
    bad_zone, bad_trigger = source.cues[0], source.executions[-1]
    execute(source.url, "UPDATE cues SET schedule_timezone = 'Mars/Olympus_Mons' WHERE id = "
            "%(id)s", {"id": bad_zone["id"]})
    execute(source.url, "UPDATE executions SET triggered_by = 'api' WHERE id = %(id)s",
            {"id": bad_trigger["id"]})
    bad_key = source.user(6)
    execute(source.url, "UPDATE users SET api_key_hash = %(h)s WHERE id = %(id)s",
            {"h": "z" * 64, "id": bad_key.id})
    long_hook = next(a for a in source.agents if a.webhook_secret)
    execute(source.url, "UPDATE agents SET webhook_url = %(u)s WHERE id = %(id)s",
            {"u": "http://127.0.0.1:9/" + "a" * 3000, "id": long_hook.id})
    app = make_app()
    report = run(app, source.url)
    codes = {(n.table, n.key): n.code for n in notes(report, CONFLICT)}
    assert codes[("cues", bad_zone["id"])] == "invalid_timezone"
    assert codes[("executions", str(bad_trigger["id"]))] == "unknown_value"
    assert codes[("users", str(bad_key.id))] == "api_key_unverifiable"
    assert codes[("agents", long_hook.id)] == "value_too_long"
    with app.app_context():
        assert db.session.get(Cue, bad_zone["id"]) is None
        assert db.session.get(Execution, bad_trigger["id"]) is None
        assert db.session.get(User, bad_key.id) is None
        assert db.session.get(Agent, long_hook.id) is None
        assert db.session.scalar(select(func.count()).select_from(Execution).where(
            Execution.cue_id == bad_zone["id"])) == 0
    assert {("executions", str(e["id"])) for e in source.executions
            if e["cue_id"] == bad_zone["id"]} <= {(n.table, n.key) for n in notes(report,
                                                                                  SKIPPED)}


def test_a_catch_up_brings_over_what_changed(make_app, new_source):
    source = new_source()
    app = make_app()
    first = run(app, source.url)
    since = first.snapshot_at - timedelta(minutes=5)
    user, cue = source.user(3), source.cues[1]
    read_message = next(m for m in source.messages if m["delivery_state"] == "delivered")
    open_execution = next(e for e in source.executions if e["status"] == "pending")
    newcomer = uuid.uuid4()
    execute(source.url, "UPDATE users SET plan = 'scale', monthly_execution_limit = 9000, "
            "updated_at = now() WHERE id = %(id)s", {"id": user.id})
    execute(source.url, "UPDATE cues SET status = 'paused', next_run = NULL, updated_at = now() "
            "WHERE id = %(id)s", {"id": cue["id"]})
    execute(source.url, "UPDATE messages SET delivery_state = 'read', read_at = now() "
            "WHERE id = %(id)s", {"id": read_message["id"]})
    execute(source.url, "UPDATE executions SET status = 'success', http_status = 200, "
            "delivered_at = now(), updated_at = now() WHERE id = %(id)s",
            {"id": open_execution["id"]})
    execute(source.url, "INSERT INTO users (id, email, api_key_hash, api_key_prefix, slug, "
            "webhook_secret) VALUES (%(id)s, 'late@example.com', %(h)s, 'cue_sk_late0', "
            "'late', %(w)s)", {"id": newcomer, "h": "a" * 64, "w": "whsec_" + "b" * 64})
    execute(source.url, "INSERT INTO cues (id, user_id, name, schedule_type, schedule_cron) "
            "VALUES ('cue_latecomer01', %(id)s, 'late', 'recurring', '0 * * * *')",
            {"id": newcomer})
    execute(source.url, "INSERT INTO executions (cue_id, scheduled_for) VALUES "
            "('cue_latecomer01', now())")
    dry = run(app, source.url, since=since, dry_run=True)
    report = run(app, source.url, since=since)
    for name in ("users", "cues", "executions", "messages"):
        assert (dry.table(name).inserted, dry.table(name).updated) == \
            (report.table(name).inserted, report.table(name).updated), name
    assert (report.table("users").read, report.table("users").inserted,
            report.table("users").updated) == (2, 1, 1)
    assert (report.table("cues").inserted, report.table("cues").updated) == (1, 1)
    assert (report.table("executions").inserted, report.table("executions").updated) == (1, 1)
    assert report.table("messages").updated == 1
    assert report.table("executions").read < len(source.executions) / 10
    with app.app_context():
        row = db.session.get(User, user.id)
        assert (row.plan, row.monthly_execution_limit) == ("scale", 9000)
        assert db.session.get(Cue, cue["id"]).status == "paused"
        assert db.session.get(Message, read_message["id"]).delivery_state == "read"
        assert db.session.get(Execution, open_execution["id"]).status == "success"
        assert db.session.get(Cue, "cue_latecomer01").user_id == newcomer
    assert run(app, source.url, since=since).changes == 0


def test_rows_changed_on_both_sides_keep_cuelines_copy(make_app, new_source):
    source = new_source()
    app = make_app()
    run(app, source.url)
    client = app.test_client()
    user = source.user(0)
    mine = [c for c in source.cues_of(user.id) if c["status"] == "active"]
    both, upstream_only = mine[0], mine[1]
    assert client.patch(f"/v1/cues/{both['id']}", headers=key_headers(user.key),
                        json={"status": "paused"}).status_code == 200
    rotated = client.post("/v1/auth/key/regenerate", headers={
        **key_headers(user.key), "X-Confirm-Destructive": "true"})
    assert rotated.status_code == 200
    new_key = rotated.get_json()["api_key"]
    for cue in (both, upstream_only):
        execute(source.url, "UPDATE cues SET name = name || ' (renamed)', updated_at = now() "
                "WHERE id = %(id)s", {"id": cue["id"]})
    execute(source.url, "UPDATE users SET plan = 'pro', updated_at = now() WHERE id = %(id)s",
            {"id": user.id})
    report = run(app, source.url)
    kept = {(n.table, n.key) for n in notes(report, KEPT, "changed_in_cueline")}
    assert kept == {("cues", both["id"]), ("users", str(user.id))}
    assert report.table("cues").updated == 1
    with app.app_context():
        assert db.session.get(Cue, both["id"]).status == "paused"
        assert db.session.get(Cue, both["id"]).name == both["name"]
        assert db.session.get(Cue, upstream_only["id"]).name == upstream_only["name"] + \
            " (renamed)"
    # The rotated key stays rotated: the old one is not brought back by the import.
    assert client.get("/v1/auth/me", headers=key_headers(user.key)).status_code == 401
    assert client.get("/v1/auth/me", headers=key_headers(new_key)).status_code == 200


def test_deletions_on_either_side(make_app, new_source):
    source = new_source()
    app = make_app()
    run(app, source.url)
    client = app.test_client()
    user = source.user(0)
    gone_upstream, gone_here = source.cues_of(user.id)[0], source.cues_of(user.id)[1]
    worker = source.workers[0]
    execute(source.url, "DELETE FROM cues WHERE id = %(id)s", {"id": gone_upstream["id"]})
    execute(source.url, "DELETE FROM workers WHERE id = %(id)s", {"id": worker["id"]})
    assert client.delete(f"/v1/cues/{gone_here['id']}",
                         headers=key_headers(user.key)).status_code == 204
    # Upstream touches the cue Cueline deleted: it is still not brought back.
    execute(source.url, "UPDATE cues SET updated_at = now(), run_count = run_count + 1 "
            "WHERE id = %(id)s", {"id": gone_here["id"]})
    report = run(app, source.url)
    assert (report.table("cues").deleted, report.table("workers").deleted) == (1, 1)
    assert ("cues", gone_here["id"]) in {(n.table, n.key) for n in notes(
        report, KEPT, "deleted_in_cueline")}
    with app.app_context():
        assert db.session.get(Cue, gone_upstream["id"]) is None
        assert db.session.scalar(select(func.count()).select_from(Execution).where(
            Execution.cue_id == gone_upstream["id"])) == 0
        assert db.session.get(Worker, worker["id"]) is None
        assert db.session.get(Cue, gone_here["id"]) is None
    assert run(app, source.url).changes == 0


def test_counters_add_both_sides_increments(make_app, new_source):
    source = new_source()
    app = make_app()
    run(app, source.url)
    user = source.user(2)
    month = datetime.now(UTC).strftime("%Y-%m")
    with app.app_context():
        count_successful_delivery(user.id, utcnow())
        count_successful_delivery(user.id, utcnow())
        db.session.commit()
    execute(source.url, "UPDATE usage_monthly SET execution_count = execution_count + 3 "
            "WHERE user_id = %(id)s AND month_start = date_trunc('month', now())::date",
            {"id": user.id})
    report = run(app, source.url)
    assert report.table("execution_usage").updated == 1
    with app.app_context():
        assert db.session.get(ExecutionUsage, (user.id, month)).executions == 20 + 2 + 3
    assert run(app, source.url).changes == 0


def test_a_source_built_by_cueapi_cores_migrations(make_app, new_source):
    """A database upgraded by cueapi-core's migrations lacks the columns only its models
    declare: the import reads them as empty, says so, and derives the outcome states."""
    source = new_source(shape="migrations")
    app = make_app()
    report = run(app, source.url)
    assert {"users.api_key_encrypted", "executions.outcome_state",
            "executions.triggered_by"} <= set(report.missing_columns)
    assert report.table("executions").inserted == len(source.executions)
    with app.app_context():
        for ex in source.executions:
            row = db.session.get(Execution, ex["id"])
            if ex["outcome_recorded_at"]:
                assert row.outcome_state == ("reported_success" if ex["outcome_success"]
                                             else "reported_failure")
            else:
                assert row.outcome_state is None
            assert row.triggered_by == "scheduler"
    me = app.test_client().get("/v1/auth/me", headers=key_headers(source.user(5).key))
    assert me.get_json()["slug"] == "team-five"


def test_unique_values_held_in_cueline_are_conflicts(make_app, new_source):
    """A cue name, agent slug, worker id or execution slot that a Cueline row of the same user
    already holds: the upstream row is refused (and its executions with it)."""
    source = new_source()
    app = make_app(ALLOW_PRIVATE_CALLBACK_URLS=True)
    first = run(app, source.url)
    client = app.test_client()
    user = source.user(0)
    headers = key_headers(user.key)
    cue = next(c for c in source.cues_of(user.id) if c["callback_transport"] == "webhook")
    fired = client.post(f"/v1/cues/{cue['id']}/fire", headers=headers, json={})
    assert fired.status_code == 200, fired.get_json()
    with app.app_context():
        slot = db.session.scalar(select(Execution.scheduled_for).where(
            Execution.id == uuid.UUID(fired.get_json()["id"])))
    assert client.post("/v1/cues", headers=headers, json={
        "name": "made in cueline", "schedule": {"type": "recurring", "cron": "0 * * * *"},
        "callback": {"url": "http://127.0.0.1:9/x"}}).status_code == 201
    assert client.post("/v1/agents", headers=headers,
                       json={"display_name": "Scout", "slug": "scout"}).status_code == 201
    assert client.post("/v1/worker/heartbeat", headers=headers,
                       json={"worker_id": "laptop"}).status_code == 200
    # Upstream gets rows wanting the same values.
    execute(source.url, "INSERT INTO cues (id, user_id, name, schedule_type, schedule_cron, "
            "callback_url) VALUES ('cue_dupname0001', %(u)s, 'made in cueline', 'recurring', "
            "'0 * * * *', 'http://127.0.0.1:9/y')", {"u": user.id})
    execute(source.url, "INSERT INTO executions (cue_id, scheduled_for) VALUES "
            "('cue_dupname0001', now())")
    slot_id = uuid.uuid4()
    execute(source.url, "INSERT INTO executions (id, cue_id, scheduled_for) VALUES "
            "(%(id)s, %(c)s, %(t)s)", {"id": slot_id, "c": cue["id"], "t": slot})
    execute(source.url, "INSERT INTO agents (id, user_id, slug, display_name) VALUES "
            "('agt_dupslug00001', %(u)s, 'scout', 'Scout upstream')", {"u": user.id})
    worker_id = uuid.uuid4()
    execute(source.url, "INSERT INTO workers (id, user_id, worker_id) VALUES "
            "(%(id)s, %(u)s, 'laptop')", {"id": worker_id, "u": user.id})
    report = run(app, source.url, since=first.snapshot_at - timedelta(minutes=5))
    codes = {(n.table, n.key): n.code for n in notes(report)}
    assert codes[("cues", "cue_dupname0001")] == "cue_name_taken"
    assert codes[("executions", str(slot_id))] == "execution_slot_taken"
    assert codes[("agents", "agt_dupslug00001")] == "agent_slug_taken"
    assert codes[("workers", str(worker_id))] == "worker_id_taken"
    skipped = [n for n in notes(report, SKIPPED, table="executions")]
    assert [n.code for n in skipped] == ["cue_not_imported"]
    with app.app_context():
        assert db.session.get(Cue, "cue_dupname0001") is None
        assert db.session.get(Execution, slot_id) is None
        assert db.session.get(Agent, "agt_dupslug00001") is None
        assert db.session.get(Worker, worker_id) is None


def test_the_new_tables_are_imported_whole_and_caught_up(make_app, new_source):
    source = new_source()
    app = make_app()
    first = run(app, source.url)
    for name, rows in (("alerts", source.alerts), ("subscriptions", source.subscriptions),
                       ("events", source.events),
                       ("agent_live_sessions", source.live_sessions)):
        assert first.table(name).inserted == len(rows), name
    assert not notes(first, CONFLICT, table="events")
    since = first.snapshot_at - timedelta(minutes=5)
    agent = source.agents[0]
    alert, pull = source.alerts[0], source.subscriptions[1]
    # Changes without a timestamp saying so (an ack, a watermark), and a new event and
    # subscription; plus a Cueline-native subscription holding the slot a new upstream one
    # wants.
    execute(source.url, "UPDATE alerts SET acknowledged = true WHERE id = %(id)s",
            {"id": alert["id"]})
    execute(source.url, "UPDATE subscriptions SET last_acked_event_id = 121 WHERE id = %(id)s",
            {"id": pull["id"]})
    execute(source.url, "INSERT INTO events (id, event_type, recipient_agent_id, payload) "
            "VALUES (500, 'turn.pass', %(agent)s, %(payload)s)",
            {"agent": agent.id, "payload": {"thread_id": "t"}})
    taken = uuid.uuid4()
    execute(source.url, "INSERT INTO subscriptions (id, subscriber_agent_id, event_type, "
            "delivery_target, webhook_url, webhook_secret) VALUES (%(id)s, %(agent)s, "
            "'turn.pass', 'webhook', 'http://127.0.0.1:9/t', 'whsec_' || repeat('a', 64))",
            {"id": taken, "agent": agent.id})
    with app.app_context():
        native = Subscription(subscriber_agent_id=agent.id, event_type="turn.pass",
                              delivery_target="webhook", webhook_url="http://127.0.0.1:9/n",
                              webhook_secret="whsec_" + "b" * 64)
        db.session.add(native)
        db.session.commit()
        native_id = native.id
    dry = run(app, source.url, since=since, dry_run=True)
    report = run(app, source.url, since=since)
    assert dry.table("alerts").updated == report.table("alerts").updated == 1
    assert dry.table("subscriptions").updated == report.table("subscriptions").updated == 1
    assert dry.table("events").inserted == report.table("events").inserted == 1
    # --since reads only the events that changed since; the small tables are read whole.
    assert report.table("events").read == 1
    assert report.table("alerts").read == len(source.alerts)
    assert {(n.key, n.code) for n in notes(report, CONFLICT, table="subscriptions")} == {
        (str(taken), "subscription_exists")}
    with app.app_context():
        assert db.session.get(Subscription, pull["id"]).last_acked_event_id == 121
        assert db.session.get(Subscription, taken) is None
        assert db.session.get(Subscription, native_id).webhook_url == "http://127.0.0.1:9/n"
        assert db.session.get(Event, 500).event_type == "turn.pass"
    # A live session and a subscription gone upstream go in Cueline too (unchanged there).
    execute(source.url, "DELETE FROM agent_live_sessions WHERE id = %(id)s",
            {"id": source.live_sessions[0]["id"]})
    execute(source.url, "DELETE FROM subscriptions WHERE id = %(id)s",
            {"id": source.subscriptions[2]["id"]})
    gone = run(app, source.url, since=since)
    assert gone.table("agent_live_sessions").deleted == 1
    assert gone.table("subscriptions").deleted == 1


def test_new_events_get_ids_above_the_imported_ones(make_app, new_source):
    source = new_source()
    app = make_app()
    top = max(e["id"] for e in source.events)
    assert run(app, source.url, dry_run=True).changes > 0
    with app.app_context():  # a dry run leaves the sequence alone too
        assert db.session.scalar(select(func.count()).select_from(Event)) == 0
    report = run(app, source.url)
    assert any(f"above {top}" in line for line in report.info)
    with app.app_context():
        from app.events.emission import emit
        agent_id = source.agents[0].id
        event = emit("turn.pass", agent_id, {"thread_id": "x"}, emitted_at=utcnow())
        db.session.commit()
        assert event.id > top
        assert db.session.scalar(select(func.count()).select_from(Event)) == \
            len(source.events) + 1


def test_a_ledger_written_before_these_columns_came_along(make_app, new_source):
    """Rows imported by the first version of the import (no alert webhook, no live claim
    columns) are updated with the new columns, not reported as changed in Cueline."""
    source = new_source()
    app = make_app()
    run(app, source.url)
    ledger = ImportedRow.__table__
    with app.app_context():
        for target in (targets.USERS, targets.EXECUTIONS):
            legacy = target.legacy_columns[0]
            new = [c for c in target.columns if c not in legacy]
            table = target.table
            # (updated_at kept: as the first version left the rows, no onupdate bump)
            db.session.execute(table.update().values(
                {**{c: None for c in new}, "updated_at": table.c.updated_at}))
            for row in db.session.execute(select(*[table.c[c] for c in target.columns])
                                          ).mappings():
                db.session.execute(
                    ledger.update().where(ledger.c.table_name == target.name,
                                          ledger.c.row_key == target.key_of(dict(row)))
                    .values(digest=digest_of(dict(row), legacy)))
        db.session.commit()
    report = run(app, source.url)
    assert not notes(report, KEPT)
    assert report.table("users").updated == 1            # the one with an alert webhook
    assert report.table("executions").updated == sum(
        1 for e in source.executions if e["live_claim_session_token"])
    with app.app_context():
        assert db.session.get(User, source.user(4).id).alert_webhook_secret == \
            source.alert_webhook_secret
    assert run(app, source.url).changes == 0
