"""What one request of the main endpoints costs in round trips, pinned so a regression fails.

Per request of ``GET /v1/auth/me``, ``GET /v1/cues?limit=20`` (by key and by delegation),
``PUT /v1/internal/users/{id}`` (update) and ``POST /v1/messages``, on both backends and with
the Redis rate limiter (the production configuration):

* SQL statements, counted with SQLAlchemy's ``before_cursor_execute`` event — no ORM lazy
  load, no ``SELECT 1`` ping, no second lookup of the caller;
* on PostgreSQL, that the views that need no transaction ran every statement in autocommit
  (no ``BEGIN``/``COMMIT``/``ROLLBACK`` round trips, which that event does not see);
* Redis round trips (one ``send_packed_command`` is one request written to the server, a single
  command or a whole pipeline) and the commands they carried: one ``EVALSHA`` per limited
  request, covering the user's and the service principal's buckets together.

The page holds several cues, so a per-row query would show up as more statements.  See
bench/README.md for what these counts cost in time.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from tests.helpers import SERVICE_TOKEN, service_headers

CUES_ON_PAGE = 3


class Costs:
    """Counts a request's SQL statements and Redis round trips while :meth:`counting`."""

    def __init__(self, app, monkeypatch):
        import redis.connection

        from app.extensions import db

        self.active = False
        self.sql: list[tuple[str, bool | None]] = []
        self.redis: list[list[str]] = []
        with app.app_context():
            engine = db.engine
        event.listen(engine, "before_cursor_execute", self._on_sql)
        # Fired by SQLAlchemy's own execution only: the statements ``app.db`` runs straight
        # on the driver (``fetch_one_direct``, ``fetch_loaded_direct``) do not show here.
        event.listen(engine, "before_execute", self._on_execute)
        self.executed: list[str] = []
        original = redis.connection.AbstractConnection.send_packed_command
        costs = self

        def send_packed_command(connection, command, check_health=True):
            if costs.active:
                costs.redis.append(_command_names(command))
            return original(connection, command, check_health)

        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command",
                            send_packed_command)

    def _on_execute(self, _conn, clause, *_rest):
        if self.active:
            self.executed.append(str(clause)[:80])

    def _on_sql(self, conn, _cursor, statement, _params, _context, _many):
        if self.active:
            autocommit = getattr(conn.connection.dbapi_connection, "autocommit", None)
            self.sql.append((statement, autocommit))

    @contextmanager
    def counting(self):
        self.sql, self.redis, self.executed, self.active = [], [], [], True
        try:
            yield self
        finally:
            self.active = False

    @property
    def statements(self) -> list[str]:
        return [statement for statement, _autocommit in self.sql]


def _command_names(command) -> list[str]:
    """The command names in one packed RESP write (``*N\\r\\n$len\\r\\nNAME\\r\\n…``)."""
    data = command if isinstance(command, bytes) else b"".join(
        part if isinstance(part, bytes) else part.encode() for part in command)
    names, lines = [], data.split(b"\r\n")
    for i, line in enumerate(lines[:-2]):
        if line.startswith(b"*") and lines[i + 1].startswith(b"$"):
            names.append(lines[i + 2].decode().upper())
    return names


@pytest.fixture
def limited_app(make_app, redis_url):
    """Production-like: the Redis limiter on, delegation on, a per-principal limit."""
    return make_app(RATELIMIT_ENABLED=True, RATELIMIT_STORAGE_URI=redis_url,
                    EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=SERVICE_TOKEN,
                    SERVICE_RATE_LIMIT_PER_MINUTE=10_000, DISABLE_QUOTA_ENFORCEMENT=True)


@pytest.fixture
def world(limited_app):
    """A user with a key, a few cues and two agents, a second user to update, a principal."""
    from app.auth.principals import create_principal

    client = limited_app.test_client()
    user_id = str(uuid.uuid4())
    assert client.put(f"/v1/internal/users/{user_id}", headers=service_headers(), json={
        "email": f"{user_id[:8]}@example.com", "slug": f"c-{user_id[:8]}",
        "rate_limit_per_minute": 10_000, "active_cue_limit": 100}).status_code == 200
    key = client.post("/v1/auth/key/regenerate", headers={
        **service_headers(user_id), "X-Confirm-Destructive": "true"}).get_json()["api_key"]
    bearer = {"Authorization": f"Bearer {key}"}
    for i in range(CUES_ON_PAGE):
        assert client.post("/v1/cues", headers=bearer, json={
            "name": f"cost-{i}", "transport": "worker",
            "schedule": {"type": "recurring", "cron": "0 0 1 1 *"},
            "payload": {"i": i}}).status_code == 201
    agents = [client.post("/v1/agents", headers=bearer, json={
        "display_name": slug, "slug": slug}).get_json()["id"] for slug in ("sender", "receiver")]
    other = str(uuid.uuid4())
    other_body = {"email": f"{other[:8]}@example.com", "slug": f"o-{other[:8]}"}
    assert client.put(f"/v1/internal/users/{other}", headers=service_headers(),
                      json=other_body).status_code == 200
    with limited_app.app_context():
        principal_token = create_principal("costs").token
    return {"client": client, "user_id": user_id, "bearer": bearer, "sender": agents[0],
            "receiver": agents[1], "other": other, "other_body": other_body,
            "principal": principal_token}


@pytest.fixture
def costs(limited_app, monkeypatch):
    return Costs(limited_app, monkeypatch)


def _measure(costs, send):
    """Send once to warm up (statements built, Lua script loaded), then count one request."""
    assert send().status_code < 300
    with costs.counting():
        response = send()
    assert response.status_code < 300, response.get_json()
    return response


def _assert_no_transaction(costs, backend):
    if backend == "postgresql":
        assert all(autocommit for _statement, autocommit in costs.sql), costs.sql


def _assert_straight_on_the_driver(costs, backend):
    """On PostgreSQL every statement skipped SQLAlchemy's execution layer and ORM loading
    (about a quarter of a cue page, a sixth of a send: bench/README.md)."""
    if backend == "postgresql":
        assert costs.executed == [], costs.executed


def _assert_one_limiter_call(costs):
    assert costs.redis == [["EVALSHA"]], costs.redis


@pytest.mark.parametrize("credential", ["key", "env", "principal"])
def test_me(world, costs, backend, credential):
    client = world["client"]
    headers = {"key": world["bearer"], "env": service_headers(world["user_id"]),
               "principal": service_headers(world["user_id"], token=world["principal"])
               }[credential]
    response = _measure(costs, lambda: client.get("/v1/auth/me", headers=headers))
    assert response.headers["X-RateLimit-Limit"] == "10000"
    assert len(costs.statements) == 1, costs.statements  # the key lookup reads the usage too
    _assert_no_transaction(costs, backend)
    _assert_straight_on_the_driver(costs, backend)
    _assert_one_limiter_call(costs)


def test_cue_page_by_key(world, costs, backend):
    client = world["client"]
    response = _measure(costs, lambda: client.get("/v1/cues?limit=20",
                                                  headers=world["bearer"]))
    assert len(response.get_json()["cues"]) == CUES_ON_PAGE
    # The key lookup reads the page and its total: no per-row or lazy-load query.
    assert len(costs.statements) == 1, costs.statements
    _assert_no_transaction(costs, backend)
    _assert_straight_on_the_driver(costs, backend)
    _assert_one_limiter_call(costs)


@pytest.mark.parametrize("credential", ["env", "principal"])
def test_cue_page_by_delegation(world, costs, backend, credential):
    client = world["client"]
    token = SERVICE_TOKEN if credential == "env" else world["principal"]
    headers = service_headers(world["user_id"], token=token)
    response = _measure(costs, lambda: client.get("/v1/cues?limit=20", headers=headers))
    assert len(response.get_json()["cues"]) == CUES_ON_PAGE
    # The env token's subject lookup reads the page too, and so does a named principal's key
    # lookup (the key, the principal, the subject user and the page in one statement).
    assert len(costs.statements) == 1, costs.statements
    _assert_no_transaction(costs, backend)
    _assert_straight_on_the_driver(costs, backend)
    # The subject user's bucket and (for a named principal) the principal's: one script call.
    _assert_one_limiter_call(costs)


def test_user_upsert_update(world, costs, backend):
    client = world["client"]
    path = f"/v1/internal/users/{world['other']}"
    response = _measure(costs, lambda: client.put(path, headers=service_headers(),
                                                  json=world["other_body"]))
    assert response.get_json()["created"] is False
    assert len(costs.statements) == 1, costs.statements  # INSERT … ON CONFLICT … RETURNING
    _assert_no_transaction(costs, backend)
    _assert_straight_on_the_driver(costs, backend)
    assert costs.redis == []  # /v1/internal/* is not rate limited


def test_message_send(world, costs, backend):
    client = world["client"]
    headers = {**world["bearer"], "X-Cueapi-From-Agent": world["sender"]}
    response = _measure(costs, lambda: client.post("/v1/messages", headers=headers, json={
        "to": world["receiver"], "body": "counted"}))
    assert response.status_code == 201
    if backend == "postgresql":
        # The key lookup reads both agents; the message, its idempotency key, counter and
        # event are one statement of data-modifying CTEs, so no transaction either.
        assert len(costs.statements) == 2, costs.statements
        _assert_no_transaction(costs, backend)
        _assert_straight_on_the_driver(costs, backend)
    else:
        assert len(costs.statements) == 4, costs.statements  # the same writes, one by one
    _assert_one_limiter_call(costs)


def test_refusals_are_counted_in_no_bucket_on_redis(make_app, redis_url):
    """On Redis too: a request the principal's bucket refuses costs its user nothing, and a
    request the user's bucket refuses costs the principal nothing."""
    from app.auth.principals import create_principal
    from tests.delegation.conftest import me, new_user
    from tests.helpers import error_of

    app = make_app(RATELIMIT_ENABLED=True, RATELIMIT_STORAGE_URI=redis_url,
                   EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=SERVICE_TOKEN,
                   SERVICE_RATE_LIMIT_PER_MINUTE=2)
    client = app.test_client()
    with app.app_context():
        noisy = create_principal("noisy").token
    user_id = new_user(client, noisy, rate_limit_per_minute=5)
    assert [me(client, noisy, user_id).status_code for _ in range(2)] == [200, 200]
    for _ in range(10):
        refused = me(client, noisy, user_id)
        assert refused.status_code == 429 and error_of(refused)["limit_scope"] == "service"
        assert "X-RateLimit-Remaining" not in refused.headers
    # The user's own key sees the 2 of 5 requests left (3 were counted: the principal's two
    # allowed requests and the key regeneration).
    key = client.post("/v1/auth/key/regenerate", headers={
        **service_headers(user_id), "X-Confirm-Destructive": "true"}).get_json()["api_key"]
    statuses = [client.get("/v1/auth/me", headers={"Authorization": f"Bearer {key}"})
                for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in statuses] == ["1", "0", "0"]

    tight = new_user(client, SERVICE_TOKEN, rate_limit_per_minute=1)
    with app.app_context():
        fresh = create_principal("fresh").token
    assert me(client, fresh, tight).status_code == 200
    for _ in range(5):
        refused = me(client, fresh, tight)
        assert refused.status_code == 429 and "limit_scope" not in error_of(refused)
    roomy = new_user(client, SERVICE_TOKEN, rate_limit_per_minute=100)
    assert me(client, fresh, roomy).status_code == 200  # the principal's second request
    assert me(client, fresh, roomy).status_code == 429


def test_page_read_with_the_caller_answers_like_the_page_query(world, mint_session_for):
    """The page read in the caller's lookup (key, env delegation) and the page query (a
    session) give the same answers, for every shape of page."""
    client = world["client"]
    session = {"Authorization": f"Bearer {mint_session_for(world['user_id'])}"}
    delegated = service_headers(world["user_id"])
    for query in ("", "?limit=2", "?limit=2&offset=2", "?offset=3", "?offset=50",
                  "?status=active", "?status=paused", "?status=active&limit=1&offset=1"):
        expected = client.get(f"/v1/cues{query}", headers=session)
        assert expected.status_code == 200
        by_principal = service_headers(world["user_id"], token=world["principal"])
        for headers in (world["bearer"], delegated, by_principal):
            assert client.get(f"/v1/cues{query}", headers=headers).get_json() == \
                expected.get_json(), query
    for query in ("?limit=0", "?limit=101", "?limit=x", "?offset=-1"):
        response = client.get(f"/v1/cues{query}", headers=world["bearer"])
        assert response.status_code == 422, query


def test_page_of_a_user_without_cues(limited_app):
    """No cues, a page past the end, unknown credentials and subjects: the page read with the
    caller never changes an answer."""
    from app.auth.principals import create_principal

    client = limited_app.test_client()
    user_id = str(uuid.uuid4())
    assert client.put(f"/v1/internal/users/{user_id}", headers=service_headers(), json={
        "email": f"{user_id[:8]}@example.com", "slug": f"e-{user_id[:8]}"}).status_code == 200
    with limited_app.app_context():
        token = create_principal("pages").token
    for headers in (service_headers(user_id), service_headers(user_id, token=token)):
        for query in ("", "?offset=5"):
            body = client.get(f"/v1/cues{query}", headers=headers).get_json()
            assert (body["cues"], body["total"]) == ([], 0)
    assert client.get("/v1/cues", headers={"Authorization": "Bearer cue_sk_" + "0" * 32}
                      ).status_code == 401
    unknown_key = client.get("/v1/cues?offset=5", headers=service_headers(
        user_id, token="svc_" + "0" * 43))
    assert unknown_key.status_code == 401
    assert unknown_key.get_json()["error"]["code"] == "invalid_internal_token"
    for query in ("", "?offset=5"):
        nobody = client.get(f"/v1/cues{query}", headers=service_headers(uuid.uuid4(), token=token))
        assert nobody.status_code == 404
        assert nobody.get_json()["error"]["code"] == "user_not_found"


@pytest.fixture
def mint_session_for(limited_app):
    from tests.helpers import SESSION_SECRET, mint_session

    limited_app.config["SESSION_SECRET"] = SESSION_SECRET
    return lambda user_id: mint_session(user_id)


def test_the_cue_page_takes_each_backends_shape_in_one_process(request):
    """A process serving PostgreSQL and then SQLite (the suite does) reads the caller's cue page
    as a LATERAL subquery on PostgreSQL and as a plain join on SQLite, whichever it built first
    (the lookup statements are cached per page shape, not built once for the first dialect)."""
    from app import create_app
    from app.auth import resolver
    from app.extensions import db
    from app.scheduling.services import cues
    from tests.helpers import SESSION_SECRET

    cues._page_source.cache_clear()
    resolver._user_by_key_hash.cache_clear()
    resolver._user_by_id.cache_clear()
    for backend in ("postgresql", "sqlite"):
        url = request.getfixturevalue(f"_{backend}_url")
        app = create_app({"ENV": "test", "DATABASE_URL": url, "SESSION_SECRET": SESSION_SECRET,
                          "RATELIMIT_ENABLED": False, "EXTERNAL_AUTH_BACKEND": True,
                          "INTERNAL_AUTH_TOKEN": SERVICE_TOKEN})
        client = app.test_client()
        user_id = str(uuid.uuid4())
        assert client.put(f"/v1/internal/users/{user_id}", headers=service_headers(), json={
            "email": f"{user_id[:8]}@example.com", "slug": f"s-{user_id[:8]}"}
        ).status_code == 200
        key = client.post("/v1/auth/key/regenerate", headers={
            **service_headers(user_id), "X-Confirm-Destructive": "true"}).get_json()["api_key"]
        bearer = {"Authorization": f"Bearer {key}"}
        assert client.post("/v1/cues", headers=bearer, json={
            "name": "shape", "transport": "worker",
            "schedule": {"type": "recurring", "cron": "0 0 1 1 *"}}).status_code == 201
        seen: list[str] = []
        with app.app_context():
            engine = db.engine
        event.listen(engine, "before_cursor_execute",
                     lambda _c, _cur, statement, *_rest, seen=seen: seen.append(statement))
        for by in (bearer, service_headers(user_id)):
            seen.clear()
            response = client.get("/v1/cues?limit=20", headers=by)
            assert response.status_code == 200, response.get_json()
            assert [c["name"] for c in response.get_json()["cues"]] == ["shape"]
            assert len(seen) == 1
            assert ("LATERAL" in seen[0]) == (backend == "postgresql")
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
