"""The operator CLI (``flask cues``, ``flask executions show``, ``flask users show/import``,
``flask worker sweep``) through Flask's CLI runner, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta

import click
import pytest

from app.extensions import db
from app.operator_cli import Progress
from app.scheduling import jobs
from app.scheduling.delivery import deliver_webhook
from app.scheduling.models import Cue
from tests.helpers import key_headers, register, user_id_of
from tests.scheduling.conftest import cue_body
from tests.scheduling.conftest import receiver as _receiver_fixture

receiver = _receiver_fixture  # the scheduling tests' webhook receiver


@pytest.fixture
def app(make_app):
    return make_app(ALLOW_PRIVATE_CALLBACK_URLS=True)


@pytest.fixture
def cli(app):
    runner = app.test_cli_runner()

    def invoke(*args):
        return runner.invoke(args=list(args), catch_exceptions=False)

    return invoke


@pytest.fixture
def world(app, receiver):
    """Two users; ada's webhook cue has one failed attempt (HTTP 500) and one success."""
    client = app.test_client()
    ada_key, _ = register(client, "ada-ops@example.com")
    bob_key, _ = register(client, "bob-ops@example.com")
    ada, bob = key_headers(ada_key), key_headers(bob_key)
    hook = client.post("/v1/cues", json=cue_body(name="nightly report",
                                                 callback={"url": receiver.url}),
                       headers=ada).get_json()
    paused = client.post("/v1/cues", json=cue_body(name="paused one"), headers=ada).get_json()
    client.patch(f"/v1/cues/{paused['id']}", json={"status": "paused"}, headers=ada)
    other = client.post("/v1/cues", json=cue_body(name="bob's"), headers=bob).get_json()
    receiver.statuses[:] = [500]
    with app.app_context():
        from app.db import utcnow

        now = utcnow()
        db.session.get(Cue, hook["id"]).next_run = now - timedelta(minutes=1)
        db.session.commit()
        assert jobs.schedule_due_cues(now) == 1
        [(failed_id, claimed)] = jobs.claim_webhook_executions(now, 10)
        assert deliver_webhook(failed_id, claimed) == "retrying"
    fired = client.post(f"/v1/cues/{hook['id']}/fire", headers=ada).get_json()
    return {"hook": hook, "paused": paused, "other": other, "failed": str(failed_id),
            "fired": fired["id"], "ada_id": user_id_of(client, ada_key)}


def test_cues_list(cli, world):
    result = cli("cues", "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[-1] == "(3 cues)"
    assert lines[0].startswith(world["other"]["id"])  # newest first
    assert "bob-ops@example.com" in lines[0]
    only_ada = cli("cues", "list", "--user", "ada-ops@example.com", "--status", "paused")
    assert only_ada.output.splitlines() == [
        only_ada.output.splitlines()[0], "(1 cue)"]
    assert only_ada.output.startswith(f"{world['paused']['id']}  paused ")
    data = json.loads(cli("cues", "list", "--json", "--user", world["ada_id"]).output)
    assert [c["id"] for c in data] == [world["paused"]["id"], world["hook"]["id"]]
    assert data[1]["user_email"] == "ada-ops@example.com"
    assert data[1]["callback"]["url"].startswith("http://127.0.0.1:")
    missing = cli("cues", "list", "--user", "nobody@example.com")
    assert missing.exit_code == 1 and "user_not_found" in missing.output


def test_cues_show_with_its_execution_timeline(cli, world):
    result = cli("cues", "show", world["hook"]["id"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith(f"Cue {world['hook']['id']} (nightly report) of ada-ops@example.com\n")
    assert "Executions (2 of 2, newest first):" in out
    timeline = out.split("newest first):\n", 1)[1].splitlines()
    assert world["fired"] in timeline[0] and "by manual" in timeline[0]
    assert world["failed"] in timeline[1] and "retrying" in timeline[1]
    assert "http 500" in timeline[1] and "attempts 1" in timeline[1]
    data = json.loads(cli("cues", "show", world["hook"]["id"], "--json",
                          "--executions", "1").output)
    assert data["total_executions"] == 2
    assert [e["id"] for e in data["executions"]] == [world["fired"]]
    assert data["user_email"] == "ada-ops@example.com"
    missing = cli("cues", "show", "cue_doesnotexist")
    assert missing.exit_code == 1
    assert "cue_not_found: Cue 'cue_doesnotexist' not found" in missing.output


def test_executions_show(cli, world):
    result = cli("executions", "show", world["failed"])
    assert result.exit_code == 0, result.output
    fields = dict(line.strip().split(":", 1) for line in result.output.splitlines()[1:])
    fields = {k: v.strip() for k, v in fields.items()}
    assert fields["status"] == "retrying"
    assert fields["attempts"] == "1 of 4"  # max_attempts 3 retries after the first try
    assert fields["last response code"] == "500"
    assert "500" in fields["error"]
    assert fields["next retry"] != "-"
    data = json.loads(cli("executions", "show", world["failed"], "--json").output)
    assert data["http_status"] == 500 and data["attempts"] == 1
    assert data["user_email"] == "ada-ops@example.com" and data["transport"] == "webhook"
    for bad in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        missing = cli("executions", "show", bad)
        assert missing.exit_code == 1 and "execution_not_found" in missing.output


def test_users_show(cli, world):
    for ref in ("ada-ops@example.com", world["ada_id"], "ADA-OPS@example.com"):
        result = cli("users", "show", ref)
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"User {world['ada_id']} (ada-ops@example.com, slug ")
    data = json.loads(cli("users", "show", "ada-ops@example.com", "--json").output)
    assert data["active_cues"] == 1 and data["cues_counted_for_quota"] == 2
    assert data["active"] is True and data["api_key_prefix"].startswith("cue_sk_")
    assert "api_key" not in data and "api_key_hash" not in data
    slug = data["slug"]
    assert json.loads(cli("users", "show", slug, "--json").output)["id"] == world["ada_id"]
    missing = cli("users", "show", "ghost@example.com")
    assert missing.exit_code == 1 and "user_not_found" in missing.output


def test_users_import_with_progress(cli, app, tmp_path):
    import uuid

    ids = [str(uuid.uuid4()) for _ in range(5)]
    lines = [json.dumps({"id": i, "email": f"imp{n}@example.com", "slug": f"imp{n}"})
             for n, i in enumerate(ids)]
    lines.append(json.dumps({"id": "nope", "email": "bad@example.com", "slug": "bad"}))
    path = tmp_path / "users.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = cli("users", "import", str(path), "--batch", "2")
    assert result.exit_code == 1
    out = result.output.splitlines()
    assert "Importing users: 6/6" in out  # the final progress line (not a terminal)
    assert out[-1] == "5 created, 0 updated, 0 unchanged, 1 error"
    assert any(line.startswith("item 5: ") for line in out)
    again = cli("users", "import", str(tmp_path / "users.jsonl"), "--json")
    summary = json.loads(again.output[again.output.index("{"):again.output.rindex("}") + 1])
    assert summary == {"created": 0, "updated": 0, "unchanged": 5, "error": 1}
    array = tmp_path / "users.json"
    array.write_text(json.dumps([json.loads(line) for line in lines[:2]]))
    assert cli("users", "import", str(array)).output.splitlines()[-1] == \
        "0 created, 0 updated, 2 unchanged, 0 error"
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    failed = cli("users", "import", str(broken))
    assert failed.exit_code == 1 and "not a JSON array or JSON lines" in failed.output


def test_worker_sweep(cli, world):
    result = cli("worker", "sweep")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "executions: 0, messages: 0, audit_records: 0"
    assert json.loads(cli("worker", "sweep", "--json").output.split("\n", 1)[1]) == {
        "executions": 0, "messages": 0, "audit_records": 0}


def test_progress_lines_without_a_terminal(capsys):
    @click.command()
    def run():
        with Progress("Work", 3, interval=0, tty=False) as progress:
            for _ in range(3):
                progress.advance()

    from click.testing import CliRunner

    result = CliRunner().invoke(run)
    assert result.output.splitlines() == ["Work: 1/3", "Work: 2/3", "Work: 3/3", "Work: 3/3"]


def test_progress_bar_on_a_terminal(monkeypatch):
    bars = []

    class FakeBar:
        def __init__(self, **kwargs):
            self.kwargs, self.updates = kwargs, []
            bars.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def update(self, count):
            self.updates.append(count)

    monkeypatch.setattr(click, "progressbar", FakeBar)
    with Progress("Work", 5, tty=True) as progress:
        progress.advance(2)
        progress.advance(3)
    assert bars[0].kwargs == {"length": 5, "label": "Work"} and bars[0].updates == [2, 3]
