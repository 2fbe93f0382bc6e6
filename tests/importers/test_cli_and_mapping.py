"""The ``import-cueapi`` command (output, progress, exit status, bad input) and the mapping of
cueapi-core's enumerations onto Cueline's."""

from __future__ import annotations

import io
import json
import re
import uuid

import pytest

from app.importers.cueapi import mapping
from app.importers.cueapi.source import SourceError, normalize_url, redacted
from app.importers.progress import Progress
from tests.importers.upstream import SCHEMA, execute


def invoke(app, *args):
    return app.test_cli_runner().invoke(args=["import-cueapi", *args])


def test_dry_run_prints_counts_conflicts_and_what_stays_behind(make_app, upstream):
    app = make_app()
    result = invoke(app, "--from", upstream.url, "--dry-run")
    assert result.exit_code == 2, result.output  # the fixture's two orphan rows
    out = result.stdout
    assert "DRY RUN: nothing was written" in out
    assert re.search(r"^\s+users\s+12\s+12\s+0\s+0\s+0\s+0\s+0\s+0$", out, re.M), out
    assert re.search(rf"^\s+executions\s+{upstream.counts['executions']}\s", out, re.M)
    assert f"conflict workers {upstream.orphan_worker}: orphan" in out
    # Events, subscriptions, alerts and live sessions are imported now; what stays behind is
    # still listed.
    left_behind = re.search(r"^Source tables that do not carry over \(rows\):\n(.*)$", out,
                            re.M).group(1)
    assert "device_codes (1)" in left_behind and "dispatch_outbox (" in left_behind
    for table in ("events", "subscriptions", "alerts", "agent_live_sessions"):
        assert f"{table} (" not in left_behind
        assert re.search(rf"^\s+{table}\s+\d+\s+\d+\s", out, re.M), table
    assert "users.stripe_customer_id: 1" in out
    assert "executions.live_claim_session_token" not in out
    assert "users.alert_webhook_url" not in out
    assert "Next catch-up: --since " in out
    # Progress goes to stderr, as periodic lines when not on a terminal.
    assert "users: 12 rows to read" in result.stderr
    assert re.search(r"executions: \d+ rows read in [\d.]+s", result.stderr)
    # The password of the URL is never printed.
    assert "password" not in out
    second = invoke(app, "--from", upstream.url)
    assert second.exit_code == 2
    assert "Import finished." in second.stdout


def test_a_clean_import_exits_zero_and_writes_a_json_report(make_app, new_source, tmp_path):
    source = new_source()
    execute(source.url, "DELETE FROM workers WHERE id = %(id)s", {"id": source.orphan_worker})
    execute(source.url, "DELETE FROM usage_monthly WHERE user_id NOT IN (SELECT id FROM users)")
    app = make_app()
    path = tmp_path / "report.json"
    result = invoke(app, "--from", source.url, "--report", str(path), "--batch-size", "50")
    assert result.exit_code == 0, result.output
    report = json.loads(path.read_text())
    assert report["conflicts"] == 0
    assert report["tables"]["users"]["inserted"] == len(source.users)
    assert report["revision"] == "035"
    again = invoke(app, "--from", source.url, "--since", "2020-01-01T00:00:00")
    assert again.exit_code == 0
    assert "Total: changed 0 rows, 0 conflicts." in again.stdout


@pytest.mark.parametrize("url, message", [
    ("mysql://root@127.0.0.1/cueapi", "must be a PostgreSQL URL"),
    ("not a url at all", "not a database URL"),
    ("postgresql://nobody@127.0.0.1:1/cueapi", "cannot read the source database"),
])
def test_bad_sources_are_refused_with_a_reason(make_app, url, message):
    result = invoke(make_app(), "--from", url)
    assert result.exit_code == 1
    assert message in result.output


def test_a_database_that_is_not_cueapi_core_is_refused(make_app, pg_cluster):
    url = pg_cluster.create_database(f"not_cueapi_{uuid.uuid4().hex[:8]}")
    result = invoke(make_app(), "--from", url)
    assert result.exit_code == 1
    assert "is it a cueapi-core database" in result.output


def test_bad_since_and_missing_from_are_usage_errors(make_app, upstream):
    app = make_app()
    result = invoke(app, "--from", upstream.url, "--since", "yesterday")
    assert result.exit_code == 2
    assert "not an ISO 8601 timestamp" in result.output
    assert invoke(app).exit_code == 2


def test_url_spellings():
    assert normalize_url("postgresql+asyncpg://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalize_url("postgres://u@h:5433/db") == "postgresql+psycopg://u@h:5433/db"
    assert redacted("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    with pytest.raises(SourceError):
        normalize_url("sqlite:///x.db")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal():
    stream = Terminal()
    progress = Progress(stream)
    progress.start("executions", 3000)
    progress.advance(1000)
    progress.advance(2000)
    progress.finish()
    drawn = stream.getvalue()
    assert "executions" in drawn and "3000/3000" in drawn and "100%" in drawn
    assert "rows to read" not in drawn  # a bar, not lines


def test_every_upstream_value_maps_to_the_same_cueline_value():
    for column, (upstream, cueline) in mapping.ENUMERATIONS.items():
        assert set(upstream) <= set(cueline), column
    # The fixture's CHECK constraints (written from cueapi-core's migrations) agree.
    schema = SCHEMA.read_text()
    for column, name in (("cues.status", "valid_status"),
                         ("executions.status", "valid_exec_status"),
                         ("agents.status", "valid_agent_status"),
                         ("messages.delivery_state", "valid_delivery_state"),
                         ("cues.callback_transport", "valid_callback_transport")):
        check = re.search(rf"CONSTRAINT {name} CHECK \((.*?)\)\)?,?\n(?!\s+')", schema, re.S)
        values = set(re.findall(r"'([a-z_]+)'", check.group(1)))
        assert values == set(mapping.ENUMERATIONS[column][0]), column


def test_mapping_refuses_what_it_cannot_carry():
    user = {"id": None, "email": "a@B.example", "slug": "a", "plan": "free",
            "active_cue_limit": 1, "monthly_execution_limit": 1, "monthly_message_limit": None,
            "rate_limit_per_minute": 1, "api_key_hash": "A" * 64, "api_key_prefix": "cue_sk_aaaaa",
            "api_key_encrypted": None, "webhook_secret": None, "external_owner": None,
            "alert_webhook_url": "", "alert_webhook_secret": None, "created_at": None,
            "updated_at": None}
    values = mapping.user(user)
    assert values["email"] == "a@b.example"           # Cueline's normalisation
    assert values["api_key_hash"] == "a" * 64          # hex digests compare in lower case
    assert values["monthly_message_limit"] == 300      # a source older than migration 021
    with pytest.raises(mapping.Unmappable) as caught:
        mapping.user({**user, "api_key_hash": "sha1:abc"})
    assert caught.value.code == "api_key_unverifiable"
    with pytest.raises(mapping.Unmappable) as caught:
        mapping.execution_usage({"user_id": None, "month_start": __import__("datetime").date(
            2026, 3, 2), "execution_count": 1})
    assert caught.value.code == "invalid_value"
    assert mapping.addressable("planner@user0")
    assert not mapping.addressable("Planner_1@user0")
    assert values["alert_webhook_url"] is None           # an empty URL is no URL


def test_mapping_of_subscriptions_events_and_live_sessions():
    sub = {"id": None, "subscriber_agent_id": "agt_a", "event_type": "message.delivered",
           "delivery_target": "webhook", "webhook_url": "http://127.0.0.1:9/e",
           "webhook_secret": "whsec_x", "inline_body": None, "last_dispatched_event_id": 4,
           "last_dispatched_at": None, "last_acked_event_id": 3, "consecutive_failures": None,
           "paused_until": None, "created_at": None, "detached_at": None}
    values = mapping.subscription(sub)
    assert (values["inline_body"], values["consecutive_failures"]) == (False, 0)
    for broken, code in (({"webhook_secret": None}, "missing_value"),
                         ({"webhook_url": None}, "invalid_value"),
                         ({"event_type": "cue.fired"}, "unknown_value"),
                         ({"delivery_target": "email"}, "unknown_value")):
        with pytest.raises(mapping.Unmappable) as caught:
            mapping.subscription({**sub, **broken})
        assert caught.value.code == code, broken
    # A pull subscription carries no secret even if a hand-edited row has one.
    assert mapping.subscription({**sub, "delivery_target": "pull", "webhook_url": None}
                                )["webhook_secret"] is None
    event = {"id": 7, "event_type": "message.delivered", "recipient_agent_id": "agt_a",
             "payload": {"priority": 2}, "emitted_at": None, "idempotency_key": None,
             "digested_at": None}
    assert mapping.event(event)["priority"] == 2
    assert mapping.event({**event, "payload": {"priority": True}})["priority"] is None
    assert mapping.event({**event, "event_type": "turn.pass"})["priority"] is None
    with pytest.raises(mapping.Unmappable):
        mapping.event({**event, "payload": [1]})
    created = __import__("datetime").datetime(2026, 1, 1)
    live = {"id": None, "agent_id": "agt_a", "label": "l", "cue_id": "c", "task_name": "t",
            "is_default": True, "transport": "poll", "monitor_version": None,
            "session_token": None, "daemon_id": None, "ipc_session_token": None,
            "attached_at": None, "detached_at": created, "last_heartbeat": None,
            "last_claim_at": None, "last_reconciled_at": None, "created_at": created}
    values = mapping.live_session(live)
    assert values["is_default"] is False and values["attached_at"] == created
    for broken in ({"transport": "ipc"}, {"ipc_session_token": "tok"},
                   {"transport": "carrier-pigeon"}):
        with pytest.raises(mapping.Unmappable):
            mapping.live_session({**live, **broken})
