"""The trigger-kept list totals (app/scheduling/totals.py) and the list answers built on them.

Every test compares a counter with a real ``count(*)`` after writes by different paths: the
API, a multi-row SQL statement (the importer's and the scheduler's kind), an update that
moves rows to another owner, rollbacks, cascades from deleting a cue or a user.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from app.extensions import db
from app.scheduling import totals
from app.scheduling.models import Execution
from tests.helpers import key_headers, register, user_id_of
from tests.scheduling.conftest import cue_body


def _counted(app) -> tuple[dict, dict]:
    """(counter per user, counter per cue), without zero rows."""
    with app.app_context():
        users = {str(k): v for k, v in db.session.execute(
            text("SELECT user_id, cues FROM user_cue_totals WHERE cues <> 0"))}
        cues = dict(db.session.execute(text(
            "SELECT cue_id, executions FROM cue_execution_totals WHERE executions <> 0")).all())
    return users, cues


def _actual(app) -> tuple[dict, dict]:
    """The same, from ``count(*)`` over the rows."""
    with app.app_context():
        users = {str(k): v for k, v in db.session.execute(
            text("SELECT user_id, count(*) FROM cues GROUP BY user_id"))}
        cues = dict(db.session.execute(
            text("SELECT cue_id, count(*) FROM executions GROUP BY cue_id")).all())
    return users, cues


def _assert_counters_exact(app) -> None:
    assert _counted(app) == _actual(app)


def _fire(client, headers, cue_id) -> str:
    response = client.post(f"/v1/cues/{cue_id}/fire", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["id"]


def _bulk_executions(app, cue_ids: list[str], count: int, day: int = 1) -> None:
    """``count`` executions per cue in one multi-row INSERT, as a bulk writer makes them."""
    start = datetime(2026, 1, day, tzinfo=UTC)
    rows = [{"id": uuid.uuid4().hex if db.engine.dialect.name == "sqlite" else uuid.uuid4(),
             "cue_id": cue_id, "at": start + timedelta(minutes=i)}
            for i in range(count) for cue_id in cue_ids]
    db.session.execute(text(
        "INSERT INTO executions (id, cue_id, scheduled_for, status, triggered_by, attempts,"
        " created_at, updated_at) VALUES (:id, :cue_id, :at, 'success', 'scheduler', 1, :at,"
        " :at)"), rows)


def test_api_writes_keep_the_counters_exact(app, client, headers, make_cue):
    first, second = make_cue(name="a"), make_cue(name="b")
    make_cue(name="c")
    for _ in range(3):
        _fire(client, headers, first["id"])
    _fire(client, headers, second["id"])
    _assert_counters_exact(app)
    assert client.delete(f"/v1/cues/{second['id']}", headers=headers).status_code == 204
    _assert_counters_exact(app)
    users, cues = _counted(app)
    assert sorted(users.values()) == [2] and cues == {first["id"]: 3}


def test_bulk_statements_moves_and_rollbacks_are_counted(app, client, headers, make_cue):
    first, second = make_cue(name="a"), make_cue(name="b")
    with app.app_context():
        # A statement over one cue, then one over two cues.
        _bulk_executions(app, [first["id"]], 2, day=1)
        _bulk_executions(app, [first["id"], second["id"]], 3, day=2)
        db.session.commit()
    _assert_counters_exact(app)
    assert _counted(app)[1] == {first["id"]: 5, second["id"]: 3}
    with app.app_context():
        # Rows moved to another cue move their count; a rolled-back write counts nothing.
        db.session.execute(text(
            "UPDATE executions SET cue_id = :other WHERE id IN (SELECT id FROM executions"
            " WHERE cue_id = :cue ORDER BY scheduled_for LIMIT 2)"),
            {"cue": first["id"], "other": second["id"]})
        db.session.commit()
        _bulk_executions(app, [first["id"]], 3, day=3)
        db.session.execute(text("DELETE FROM executions WHERE cue_id = :cue"),
                           {"cue": second["id"]})
        db.session.rollback()
    _assert_counters_exact(app)
    assert _counted(app)[1] == {first["id"]: 3, second["id"]: 5}
    with app.app_context():
        db.session.execute(text("DELETE FROM executions WHERE cue_id = :cue"),
                           {"cue": second["id"]})
        db.session.commit()
    _assert_counters_exact(app)


def test_deleting_a_user_cascades_through_the_counters(app, client):
    api_key, _ = register(client)
    headers = key_headers(api_key)
    for name in ("a", "b"):
        cue = client.post("/v1/cues", json=cue_body(name=name), headers=headers).get_json()
        _fire(client, headers, cue["id"])
    other_key, _ = register(client)
    client.post("/v1/cues", json=cue_body(name="kept"), headers=key_headers(other_key))
    user_id = uuid.UUID(user_id_of(client, api_key))
    with app.app_context():
        db.session.execute(text("DELETE FROM users WHERE id = :id"), {
            "id": user_id if db.engine.dialect.name == "postgresql" else user_id.hex})
        db.session.commit()
    _assert_counters_exact(app)
    assert list(_counted(app)[0].values()) == [1]


def test_recount_repairs_a_counter(app, client, headers, make_cue):
    cue = make_cue()
    _fire(client, headers, cue["id"])
    with app.app_context():
        db.session.execute(text("UPDATE cue_execution_totals SET executions = 40"))
        db.session.execute(text("UPDATE user_cue_totals SET cues = 9"))
        db.session.commit()
        totals.recount(db.session.connection())
        db.session.commit()
    _assert_counters_exact(app)


def test_cue_list_totals(client, headers, make_cue):
    for name in ("a", "b", "c", "d", "e"):
        make_cue(name=name)
    cue_id = client.get("/v1/cues?limit=1", headers=headers).get_json()["cues"][0]["id"]
    assert client.patch(f"/v1/cues/{cue_id}", json={"status": "paused"},
                        headers=headers).status_code == 200
    page = client.get("/v1/cues?limit=2&offset=1", headers=headers).get_json()
    assert page["total"] == 5 and [c["name"] for c in page["cues"]] == ["d", "c"]
    past = client.get("/v1/cues?limit=2&offset=9", headers=headers).get_json()
    assert past["total"] == 5 and past["cues"] == []
    paused = client.get("/v1/cues?status=paused", headers=headers).get_json()
    assert paused["total"] == 1 and [c["name"] for c in paused["cues"]] == ["e"]
    assert client.get("/v1/cues?status=active&offset=10", headers=headers).get_json()[
        "total"] == 4
    assert client.get("/v1/cues?status=nonsense", headers=headers).get_json()["total"] == 0
    stranger = key_headers(register(client)[0])
    assert client.get("/v1/cues", headers=stranger).get_json()["total"] == 0
    assert client.get("/v1/cues?offset=3", headers=stranger).get_json()["total"] == 0


@pytest.mark.parametrize("offset", [0, 3, 7, 8, 30])
def test_cue_pages_walk_the_index_in_order(client, headers, make_cue, offset):
    names = [f"cue-{i}" for i in range(8)]
    for name in names:
        make_cue(name=name)
    page = client.get(f"/v1/cues?limit=3&offset={offset}", headers=headers).get_json()
    assert [c["name"] for c in page["cues"]] == list(reversed(names))[offset:offset + 3]
    assert page["total"] == 8


def test_execution_list_totals_and_oldest_claim(app, client, headers):
    worker = client.post("/v1/cues", json=cue_body(name="w", transport="worker", callback=None),
                         headers=headers).get_json()
    hook = client.post("/v1/cues", json=cue_body(name="h"), headers=headers).get_json()
    fired = [_fire(client, headers, worker["id"]) for _ in range(3)]
    _fire(client, headers, hook["id"])
    assert client.post(f"/v1/executions/{fired[1]}/claim", json={"worker_id": "w1"},
                       headers=headers).status_code == 200
    with app.app_context():
        claimed_at = db.session.scalars(
            select(Execution.claimed_at).where(Execution.claimed_at.is_not(None))).one()

    one = client.get(f"/v1/executions?cue_id={worker['id']}&limit=2", headers=headers).get_json()
    assert one["total"] == 3 and one["has_more"] is True and len(one["executions"]) == 2
    assert one["oldest_claimed_at"] is not None
    assert datetime.fromisoformat(one["oldest_claimed_at"]).replace(tzinfo=None) == \
        claimed_at.replace(tzinfo=None)
    assert client.get(f"/v1/executions?cue_id={hook['id']}", headers=headers).get_json()[
        "oldest_claimed_at"] is None
    everything = client.get("/v1/executions", headers=headers).get_json()
    assert everything["total"] == 4 and everything["oldest_claimed_at"] == \
        one["oldest_claimed_at"]
    filtered = client.get(f"/v1/executions?cue_id={worker['id']}&status=pending",
                          headers=headers).get_json()
    assert filtered["total"] == 2 and filtered["oldest_claimed_at"] is None
    past = client.get(f"/v1/executions?cue_id={worker['id']}&offset=10",
                      headers=headers).get_json()
    assert past["total"] == 3 and past["executions"] == [] and past["has_more"] is False

    # Another user's cue: its counter is not theirs to read.
    stranger = key_headers(register(client)[0])
    foreign = client.get(f"/v1/executions?cue_id={worker['id']}", headers=stranger).get_json()
    assert foreign == {**foreign, "total": 0, "executions": [], "oldest_claimed_at": None}
    assert client.get("/v1/executions", headers=stranger).get_json()["total"] == 0
    assert client.get(f"/v1/cues/{worker['id']}", headers=headers).get_json()[
        "execution_total"] == 3


@pytest.mark.parametrize("backend_name", ["sqlite", "postgresql"])
def test_the_migration_backfills_and_downgrades(request, tmp_path, backend_name):
    """Rows written before 0013 are counted by its backfill; down and up again is clean."""
    from flask_migrate import downgrade, upgrade

    from app import create_app

    if backend_name == "sqlite":
        url = f"sqlite:///{tmp_path / 'totals.db'}"
    else:
        url = request.getfixturevalue("pg_cluster").create_database(
            f"totals_{uuid.uuid4().hex[:8]}")
    app = create_app({"ENV": "test", "DATABASE_URL": url})
    with app.app_context():
        upgrade(revision="0012_console")
    client = app.test_client()
    api_key, _ = register(client)
    headers = key_headers(api_key)
    cue = client.post("/v1/cues", json=cue_body(name="old"), headers=headers).get_json()
    client.post("/v1/cues", json=cue_body(name="older"), headers=headers)
    for _ in range(2):
        _fire(client, headers, cue["id"])
    with app.app_context():
        upgrade()
    _assert_counters_exact(app)
    assert sorted(_counted(app)[1].values()) == [2]
    with app.app_context():
        downgrade(revision="0012_console")
    _fire(client, headers, cue["id"])  # written while nothing counts
    with app.app_context():
        upgrade()
    _assert_counters_exact(app)
    assert client.get(f"/v1/executions?cue_id={cue['id']}", headers=headers).get_json()[
        "total"] == 3
    with app.app_context():
        db.engine.dispose()
