"""``app.db.fetch_one_direct``: a prebuilt statement straight on psycopg gives what SQLAlchemy's
execution would (values through their types, errors as SQLAlchemy's, listeners told), on both
backends; a dropped connection is invalidated so the next request gets a good one."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import JSON, String, bindparam, event, literal, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from app.db import fetch_one_direct, utcnow, violated_columns
from app.extensions import db
from app.users.models import User
from app.users.services import OPTIONAL_UPSERT_FIELDS, _upsert_statement


def _user_values(**overrides):
    now = utcnow()
    values = {**OPTIONAL_UPSERT_FIELDS, "active": True, "id": uuid.uuid4(),
              "email": "direct@example.com", "slug": "direct",
              "api_key_hash": secrets.token_hex(32),
              "api_key_prefix": "cue_sk_aaaa", "webhook_secret": "whsec_x",
              "created_at": now, "updated_at": now}
    values.update(overrides)
    return {f"new_{name}": value for name, value in values.items()}


def test_the_row_is_what_sqlalchemy_reads(app, backend):
    with app.app_context():
        if backend == "postgresql":
            # A server zone other than UTC: the column's type still answers in UTC.
            db.session.execute(text("SET TIME ZONE 'America/New_York'"))
        params = _user_values()
        row = fetch_one_direct(_upsert_statement(backend, (), False), params)
        db.session.commit()
        stored = db.session.execute(select(*User.__table__.c).where(
            User.id == params["new_id"])).one()
        assert row._asdict() == stored._asdict()
        assert row.created_at.tzinfo is UTC or row.created_at.utcoffset().total_seconds() == 0
        assert row.created_at == params["new_created_at"]
        assert isinstance(row.id, uuid.UUID) and row.active is True


def test_literals_and_json_parameters_are_bound(app):
    statement = select(bindparam("doc", type_=JSON).label("doc"),
                       literal("constant", String).label("word"))
    with app.app_context():
        row = fetch_one_direct(statement, {"doc": {"a": [1, 2], "b": None}})
    assert row.doc == {"a": [1, 2], "b": None}
    assert row.word == "constant"


def test_a_value_computed_per_execution_is_computed_each_time(app):
    counter = iter(range(1, 100))
    statement = select(bindparam("n", callable_=lambda: str(next(counter)), type_=String)
                       .label("n"))
    with app.app_context():
        assert [fetch_one_direct(statement, {}).n for _ in range(2)] == ["1", "2"]


def test_a_statement_without_rows_answers_none(app):
    with app.app_context():
        assert fetch_one_direct(
            User.__table__.delete().where(User.id == bindparam("gone")),
            {"gone": uuid.uuid4()}) is None


def test_a_unique_violation_is_sqlalchemys_integrity_error(app, backend):
    statement = _upsert_statement(backend, (), False)
    with app.app_context():
        fetch_one_direct(statement, _user_values())
        db.session.commit()
        with pytest.raises(IntegrityError) as caught:
            fetch_one_direct(statement, _user_values(slug="other"))
        db.session.rollback()
        assert violated_columns(caught.value) == {"users.email"}
        assert "SQL parameters hidden" in str(caught.value)


def test_listeners_see_the_statement(app):
    seen = []
    with app.app_context():
        event.listen(db.engine, "before_cursor_execute",
                     lambda _c, _cur, statement, *_rest: seen.append(statement))
        fetch_one_direct(select(literal(1, String).label("one")), {})
    assert len(seen) == 1 and seen[0].startswith("SELECT")


def test_a_dropped_connection_is_invalidated_and_replaced(app, backend):
    if backend != "postgresql":
        pytest.skip("a PostgreSQL server connection")
    statement = select(literal(1, String).label("one"))
    with app.app_context():
        pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar()
        with db.engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(OperationalError) as caught:
            fetch_one_direct(statement, {})
        assert caught.value.connection_invalidated
        db.session.rollback()
        db.session.close()
        assert fetch_one_direct(statement, {}).one == "1"
        assert datetime.now(UTC)  # the app context still works after the failure


def test_the_caller_read_straight_off_the_driver_is_a_loaded_user(app, backend):
    """The key lookup on PostgreSQL builds the ``User`` from the driver's row: it is the row
    the ORM would load (UTC timestamps under a non-UTC server zone), persistent and unchanged
    in the session, and a change to it is saved on commit like any loaded user's."""
    from sqlalchemy import inspect

    from app.auth.resolver import _user_by_key_hash
    from app.db import fetch_loaded_direct

    params = _user_values()
    with app.app_context():
        fetch_one_direct(_upsert_statement(backend, (), False), params)
        db.session.commit()
        db.session.remove()
        if backend == "postgresql":
            db.session.execute(text("SET TIME ZONE 'Asia/Kolkata'"))
        row = fetch_loaded_direct(_user_by_key_hash(None),
                                  {"key_hash": params["new_api_key_hash"]})
        if backend != "postgresql":
            assert row is NotImplemented  # SQLite reads the caller through the ORM
            return
        (user,) = row  # the row as SQLAlchemy's would be: the one entity
        assert row.User is user
        state = inspect(user)
        assert state.persistent and not db.session.dirty and not db.session.new
        assert user.created_at == params["new_created_at"]
        assert user.created_at.utcoffset().total_seconds() == 0
        assert db.session.get(User, params["new_id"]) is user  # in the identity map
        user.plan = "pro"
        db.session.commit()
        db.session.remove()
        assert db.session.get(User, params["new_id"]).plan == "pro"
        assert fetch_loaded_direct(_user_by_key_hash(None), {"key_hash": "0" * 64}) is None


def test_a_commit_after_autocommitted_statements_only_saves_what_is_unsaved(app, backend):
    """``commit_keeping_state`` in a single-statement view on PostgreSQL: the statements have
    committed themselves, so with nothing unsaved in the session it commits nothing (the
    transaction stays until teardown); a change to a loaded object is still saved."""
    from app.db import begin_autocommit, commit_keeping_state

    params = _user_values()
    with app.app_context():
        if backend == "postgresql":
            begin_autocommit()
        fetch_one_direct(_upsert_statement(backend, (), False), params)
        commit_keeping_state()
        skipped = db.session().get_transaction() is not None
        assert skipped == (backend == "postgresql")
        with db.engine.connect() as other:  # written, whichever way
            assert other.execute(select(User.id).where(User.id == params["new_id"])).scalar()
        db.session.remove()

        if backend == "postgresql":
            begin_autocommit()
        user = db.session.get(User, params["new_id"])
        user.plan = "pro"
        commit_keeping_state()
        assert db.session().get_transaction() is None  # committed: there was a change
        assert user.plan == "pro"  # and not expired
        db.session.remove()
        assert db.session.get(User, params["new_id"]).plan == "pro"
        db.session.remove()

        # A commit in between ends the autocommit transaction: the next one is a real one.
        if backend == "postgresql":
            begin_autocommit()
        db.session.commit()
        later = _user_values(email="later@example.com", slug="later")
        fetch_one_direct(_upsert_statement(backend, (), False), later)
        commit_keeping_state()
        assert db.session().get_transaction() is None
        with db.engine.connect() as other:
            assert other.execute(select(User.id).where(User.id == later["new_id"])).scalar()


def _stored_user(backend, **overrides):
    params = _user_values(**overrides)
    fetch_one_direct(_upsert_statement(backend, (), False), params)
    db.session.commit()
    db.session.remove()
    return params["new_id"]


def _agent(user_id, agent_id, **fields):
    from app.messaging.models import Agent

    now = utcnow()
    agent = Agent(id=agent_id, user_id=user_id, slug=agent_id[-6:], display_name="A",
                  meta={"k": [1]}, status="online", created_at=now, updated_at=now, **fields)
    db.session.add(agent)
    db.session.commit()
    db.session.remove()


def test_joined_entities_are_built_as_loaded_and_a_missing_one_is_none(app, backend):
    """A send's lookup (the caller and two outer-joined agents): each agent is the object the
    ORM would load, persistent and unchanged; an id naming no agent joins None; one agent named
    twice is one object."""
    from sqlalchemy import inspect

    from app.auth.resolver import _user_by_key_hash
    from app.db import fetch_loaded_direct
    from app.messaging.addressing import SEND_AGENTS
    from app.messaging.models import Agent

    statement = _user_by_key_hash(SEND_AGENTS)
    with app.app_context():
        user_id = _stored_user(backend, api_key_hash="a" * 64)
        _agent(user_id, "agt_directaaaaa1")
        params = {"key_hash": "a" * 64, "send_agent_0": "agt_directaaaaa1"}
        row = fetch_loaded_direct(statement, {**params, "send_agent_1": "agt_nosuchagent1"})
        if backend != "postgresql":
            assert row is NotImplemented
            return
        user, sender, missing = row
        assert (user.id, missing) == (user_id, None)
        assert row.send_agent_0 is sender
        assert inspect(sender).persistent and not db.session.dirty
        assert db.session.get(Agent, "agt_directaaaaa1") is sender
        loaded = db.session.execute(select(*Agent.__table__.c).where(
            Agent.id == sender.id)).one()
        assert {c.key: getattr(sender, c.key) for c in Agent.__mapper__.column_attrs} == {
            c.key: loaded._mapping[c.columns[0].name] for c in Agent.__mapper__.column_attrs}
        sender.display_name = "Renamed"
        db.session.commit()
        db.session.remove()
        assert db.session.get(Agent, "agt_directaaaaa1").display_name == "Renamed"
        db.session.remove()

        twice = fetch_loaded_direct(statement, {**params, "send_agent_1": "agt_directaaaaa1"})
        assert twice[1] is twice[2]
        db.session.remove()

        # An entity the session holds already is left to the ORM (its state there wins).
        held = db.session.get(Agent, "agt_directaaaaa1")
        assert fetch_loaded_direct(statement, {**params, "send_agent_1": None}) is NotImplemented
        assert held.display_name == "Renamed"


def test_a_page_of_rows_by_name_after_the_user(app, backend):
    """The cue page's lookup: the user built once for every row, the cue columns (and the
    ``_total`` counter) read by name off each row."""
    from app.auth.resolver import _user_by_key_hash
    from app.db import fetch_loaded_direct
    from app.scheduling.services.cues import _PAGE_EXTRAS

    extras = _PAGE_EXTRAS[False, backend == "postgresql"]
    statement = _user_by_key_hash(extras)
    with app.app_context():
        _stored_user(backend, api_key_hash="b" * 64)
        rows = fetch_loaded_direct(statement, {"key_hash": "b" * 64, "page_status": None,
                                               "page_limit": 20, "page_offset": 0,
                                               "lateral_offset": 0}, many=True)
        if backend != "postgresql":
            assert rows is NotImplemented
            return
        [page_row] = rows  # no cues: one row, its cue columns empty
        user = page_row[0]
        assert user.api_key_hash == "b" * 64
        assert page_row.id is None and page_row._total is None


def test_row_types_read_underscore_names():
    from app.db import row_type

    Row = row_type(["id", "_total", "id", "anon_1"])
    row = Row(1, 2, 3, 4)
    assert (row.id, row._total, row[2], row.anon_1, tuple(row)) == (1, 2, 3, 4, (1, 2, 3, 4))
    assert row._asdict()["id"] == 1
