"""Path 2: service credential + X-On-Behalf-Of, and the internal user upsert."""

import threading
import uuid

import httpx
import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.users.models import User
from tests.helpers import (
    SERVICE_TOKEN,
    error_of,
    key_headers,
    mint_session,
    register,
    service_headers,
)


def upsert(client, user_id, body=None, headers=None):
    body = body if body is not None else {"email": f"{user_id}@example.com",
                                          "slug": f"u-{str(user_id)[:8]}"}
    return client.put(f"/v1/internal/users/{user_id}", json=body,
                      headers=headers if headers is not None else service_headers())


# --- the nine cases of the upstream change ----------------------------------------------------

def test_flag_off_route_absent(make_app):
    app = make_app(INTERNAL_AUTH_TOKEN=SERVICE_TOKEN)
    client = app.test_client()
    response = upsert(client, uuid.uuid4())
    assert response.status_code == 404
    assert error_of(response)["code"] == "http_error"
    assert not [r for r in app.url_map.iter_rules() if r.rule.startswith("/v1/internal")]
    paths = client.get("/openapi.json").get_json()["paths"]
    assert not [p for p in paths if p.startswith("/v1/internal")]


def test_flag_off_token_unusable(make_app):
    client = make_app(INTERNAL_AUTH_TOKEN=SERVICE_TOKEN).test_client()
    key, _ = register(client)
    user_id = client.get("/v1/auth/me", headers=key_headers(key)).get_json()["id"]
    for style in ("bearer", "key"):
        response = client.get("/v1/auth/me", headers=service_headers(user_id, style=style))
        assert response.status_code == 401, style
    assert error_of(client.get("/v1/auth/me", headers=service_headers(style="bearer")))[
        "code"] == "invalid_session"


def test_flag_on_route_mounted(delegation_app):
    rules = {r.rule for r in delegation_app.url_map.iter_rules()}
    assert "/v1/internal/users/<user_id>" in rules
    paths = delegation_app.test_client().get("/openapi.json").get_json()["paths"]
    assert "/v1/internal/users/{user_id}" in paths


def test_create_then_update_without_clobbering(delegation_client):
    user_id = uuid.uuid4()
    first = upsert(delegation_client, user_id, {
        "email": "carol@example.com", "slug": "carol", "plan": "pro", "active_cue_limit": 50,
        "rate_limit_per_minute": 600, "external_owner": "tenant-7"})
    assert first.status_code == 200
    assert first.get_json() == {
        "id": str(user_id), "email": "carol@example.com", "slug": "carol", "plan": "pro",
        "active_cue_limit": 50, "monthly_execution_limit": 300, "monthly_message_limit": 300,
        "rate_limit_per_minute": 600, "active": True, "created": True}
    second = upsert(delegation_client, user_id, {
        "email": "carol@new.example", "slug": "carol2", "plan": None, "monthly_message_limit": 5})
    assert second.status_code == 200
    assert second.get_json() == {
        "id": str(user_id), "email": "carol@new.example", "slug": "carol2", "plan": "pro",
        "active_cue_limit": 50, "monthly_execution_limit": 300, "monthly_message_limit": 5,
        "rate_limit_per_minute": 600, "active": True, "created": False}
    assert "external_owner" not in second.get_json()


def test_wrong_token_is_401(delegation_client):
    bad = "w" * 48
    response = upsert(delegation_client, uuid.uuid4(), headers=service_headers(token=bad))
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_internal_token"
    user_id = upsert(delegation_client, uuid.uuid4()).get_json()["id"]
    for style in ("bearer", "key"):
        response = delegation_client.get("/v1/auth/me",
                                         headers=service_headers(user_id, bad, style))
        assert response.status_code == 401
        assert error_of(response)["code"] == "invalid_internal_token"


@pytest.mark.parametrize("style", ["bearer", "key"])
def test_valid_on_behalf_of_authenticates(delegation_client, style):
    user_id = upsert(delegation_client, uuid.uuid4(),
                     {"email": "dan@example.com", "slug": "dan"}).get_json()["id"]
    response = delegation_client.get("/v1/auth/me", headers=service_headers(user_id, style=style))
    assert response.status_code == 200
    body = response.get_json()
    assert (body["id"], body["email"], body["auth_path"]) == (user_id, "dan@example.com",
                                                              "delegated")


@pytest.mark.parametrize("style", ["bearer", "key"])
def test_missing_on_behalf_of_is_400(delegation_client, style):
    for headers in (service_headers(style=style),
                    {**service_headers(style=style), "X-On-Behalf-Of": "  "}):
        response = delegation_client.get("/v1/auth/me", headers=headers)
        assert response.status_code == 400
        assert error_of(response)["code"] == "internal_token_requires_on_behalf_of"


def test_unknown_user_is_404(delegation_client):
    response = delegation_client.get("/v1/auth/me", headers=service_headers(uuid.uuid4()))
    assert response.status_code == 404
    assert error_of(response)["code"] == "user_not_found"


def test_legacy_keys_still_work_with_flag_on(delegation_client):
    key, _ = register(delegation_client)
    response = delegation_client.get("/v1/auth/me", headers=key_headers(key))
    assert response.status_code == 200
    assert response.get_json()["auth_path"] == "api_key"
    bad = delegation_client.get("/v1/auth/me", headers=key_headers("cue_sk_" + "f" * 32))
    assert bad.status_code == 401
    assert error_of(bad)["code"] == "invalid_api_key"


# --- beyond the seeds ---------------------------------------------------------------------------

def test_invalid_uuid_header_is_400(delegation_client):
    for value in ("not-a-uuid", "1234", "'; DROP TABLE users;--"):
        response = delegation_client.get("/v1/auth/me", headers={
            **service_headers(), "X-On-Behalf-Of": value})
        assert response.status_code == 400
        assert error_of(response)["code"] == "invalid_on_behalf_of"


def test_on_behalf_of_with_api_key_is_rejected(delegation_client):
    key, _ = register(delegation_client)
    other = upsert(delegation_client, uuid.uuid4()).get_json()["id"]
    response = delegation_client.get("/v1/auth/me", headers={
        **key_headers(key), "X-On-Behalf-Of": other})
    assert response.status_code == 400
    assert error_of(response)["code"] == "on_behalf_of_requires_service_credential"


def test_on_behalf_of_with_session_is_rejected(delegation_client):
    key, _ = register(delegation_client)
    me = delegation_client.get("/v1/auth/me", headers=key_headers(key)).get_json()["id"]
    other = upsert(delegation_client, uuid.uuid4()).get_json()["id"]
    response = delegation_client.get("/v1/auth/me", headers={
        **key_headers(mint_session(me)), "X-On-Behalf-Of": other})
    assert response.status_code == 400
    assert error_of(response)["code"] == "on_behalf_of_requires_service_credential"


def test_on_behalf_of_with_user_credential_rejected_when_flag_off(client):
    key, _ = register(client)
    response = client.get("/v1/auth/me", headers={**key_headers(key),
                                                  "X-On-Behalf-Of": str(uuid.uuid4())})
    assert response.status_code == 400
    assert error_of(response)["code"] == "on_behalf_of_requires_service_credential"


def test_both_credential_headers_are_rejected(delegation_client):
    user_id = upsert(delegation_client, uuid.uuid4()).get_json()["id"]
    response = delegation_client.get("/v1/auth/me", headers={
        **service_headers(user_id), "X-Service-Key": SERVICE_TOKEN})
    assert response.status_code == 400
    assert error_of(response)["code"] == "conflicting_credentials"


def test_internal_endpoint_refuses_user_credentials(delegation_client):
    key, _ = register(delegation_client)
    response = upsert(delegation_client, uuid.uuid4(), headers=key_headers(key))
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_internal_token"
    assert error_of(upsert(delegation_client, uuid.uuid4(), headers={}))["code"] == \
        "invalid_internal_token"


def test_internal_upsert_with_x_service_key(delegation_client):
    response = upsert(delegation_client, uuid.uuid4(), headers=service_headers(style="key"))
    assert response.status_code == 200
    assert response.get_json()["created"] is True


def test_bad_user_id_is_400(delegation_client):
    response = upsert(delegation_client, "not-a-uuid")
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_user_id"


def test_auth_precedes_validation(delegation_client):
    response = delegation_client.put(f"/v1/internal/users/{uuid.uuid4()}", json={},
                                     headers=service_headers(token="w" * 40))
    assert response.status_code == 401


@pytest.mark.parametrize("body,field", [
    ({"slug": "ok"}, "body.email"),
    ({"email": "x@example.com"}, "body.slug"),
    ({"email": "nope", "slug": "ok"}, "body.email"),
    ({"email": "x@example.com", "slug": "Bad_Slug"}, "body.slug"),
    ({"email": "x@example.com", "slug": "-lead"}, "body.slug"),
    ({"email": "x@example.com", "slug": "a" * 65}, "body.slug"),
    ({"email": "x@example.com", "slug": "ok", "plan": "p" * 21}, "body.plan"),
    ({"email": "x@example.com", "slug": "ok", "active_cue_limit": -1}, "body.active_cue_limit"),
    ({"email": "x@example.com", "slug": "ok", "rate_limit_per_minute": "10"},
     "body.rate_limit_per_minute"),
    ({"email": "x@example.com", "slug": "ok", "external_owner": "o" * 65},
     "body.external_owner"),
])
def test_invalid_body_is_422(delegation_client, body, field):
    response = upsert(delegation_client, uuid.uuid4(), body)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert field in [d["field"] for d in error["details"]]


def test_single_character_slug_is_valid(delegation_client):
    assert upsert(delegation_client, uuid.uuid4(), {"email": "s@example.com",
                                                    "slug": "s"}).status_code == 200


def test_email_and_slug_conflicts_change_nothing(delegation_app, delegation_client):
    a, b = uuid.uuid4(), uuid.uuid4()
    upsert(delegation_client, a, {"email": "a@example.com", "slug": "alpha"})
    upsert(delegation_client, b, {"email": "b@example.com", "slug": "beta"})
    taken_email = upsert(delegation_client, b, {"email": "a@EXAMPLE.com", "slug": "beta2",
                                                "plan": "pro"})
    assert taken_email.status_code == 409
    assert error_of(taken_email)["code"] == "email_taken"
    taken_slug = upsert(delegation_client, uuid.uuid4(), {"email": "c@example.com",
                                                          "slug": "alpha"})
    assert taken_slug.status_code == 409
    assert error_of(taken_slug)["code"] == "slug_taken"
    with delegation_app.app_context():
        rows = {u.id: (u.email, u.slug, u.plan) for u in db.session.scalars(select(User))}
    assert rows == {a: ("a@example.com", "alpha", "free"), b: ("b@example.com", "beta", "free")}


def test_email_conflict_is_reported_before_slug_conflict(delegation_client):
    """Another user holds both: the database names one constraint, the answer is email_taken."""
    upsert(delegation_client, uuid.uuid4(), {"email": "both@example.com", "slug": "both"})
    for target in (uuid.uuid4(), None):  # a new id, and an existing user changing both fields
        if target is None:
            target = uuid.uuid4()
            assert upsert(delegation_client, target).status_code == 200
        response = upsert(delegation_client, target, {"email": "both@example.com",
                                                      "slug": "both"})
        assert response.status_code == 409
        assert error_of(response)["code"] == "email_taken"


def test_upsert_is_one_statement_without_a_transaction_on_postgresql(delegation_app, backend):
    """On PostgreSQL the upsert autocommits its single statement (no BEGIN/COMMIT)."""
    from sqlalchemy import event

    seen: list[str] = []
    transactions: list[bool] = []

    request_thread = threading.get_ident()  # the test client serves requests on this thread

    def record(conn, cursor, statement, *args):
        if threading.get_ident() != request_thread:  # e.g. the audit trail's writer thread
            return
        seen.append(statement.split(None, 1)[0].upper())
        # psycopg sends BEGIN itself before a statement unless the connection autocommits
        transactions.append(not getattr(conn.connection.dbapi_connection, "autocommit", False))

    client = delegation_app.test_client()
    with delegation_app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        user_id = uuid.uuid4()
        assert upsert(client, user_id).get_json()["created"] is True
        assert upsert(client, user_id, {"email": "n@example.com", "slug": "n",
                                        "plan": "pro"}).get_json()["created"] is False
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert seen == ["INSERT", "INSERT"]
    assert transactions == [backend != "postgresql"] * 2


def test_registered_user_slug_conflict(delegation_client):
    key, _ = register(delegation_client, "taken@example.com")
    response = upsert(delegation_client, uuid.uuid4(), {"email": "z@example.com",
                                                        "slug": "taken"})
    assert response.status_code == 409
    assert error_of(response)["code"] == "slug_taken"


def test_minted_user_key_is_random_and_never_returned(delegation_app, delegation_client):
    ids = [uuid.uuid4(), uuid.uuid4()]
    bodies = [upsert(delegation_client, i).get_json() for i in ids]
    for body in bodies:
        assert not any("key" in k for k in body)
    with delegation_app.app_context():
        users = [db.session.get(User, i) for i in ids]
        assert users[0].api_key_hash != users[1].api_key_hash
        assert all(u.api_key_prefix.startswith("cue_sk_") for u in users)
        assert all(u.webhook_secret.startswith("whsec_") for u in users)


def test_concurrent_upserts_of_one_new_user(delegation_app, live_server, backend):
    """50 concurrent PUTs of one new id: all 200, exactly one created, one row."""
    server = live_server(delegation_app)
    user_id = uuid.uuid4()
    barrier = threading.Barrier(50)
    results: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def put(i):
        with httpx.Client(base_url=server.url, timeout=60) as http:
            barrier.wait()
            response = http.put(f"/v1/internal/users/{user_id}",
                                json={"email": "race@example.com", "slug": "race",
                                      "plan": f"p{i % 3}"},
                                headers=service_headers())
        with lock:
            results.append((response.status_code, response.json()))

    threads = [threading.Thread(target=put, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [status for status, _ in results] == [200] * 50, results[:3]
    assert sum(body["created"] for _, body in results) == 1
    with delegation_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 1


def test_me_reads_its_counts_with_the_callers_row(delegation_app, backend):
    """/v1/auth/me by key or delegation is one statement (counts included); by session, two.
    The counts are the same whichever way they were read."""
    from sqlalchemy import event

    from app.db import utcnow
    from app.scheduling.models import ExecutionUsage

    client = delegation_app.test_client()
    user_id = uuid.uuid4()
    assert upsert(client, user_id).status_code == 200
    delegated = {**service_headers(), "X-On-Behalf-Of": str(user_id)}
    key = client.post("/v1/auth/key/regenerate",
                      headers={**delegated, "X-Confirm-Destructive": "true"}).get_json()["api_key"]
    cue_ids = []
    for name in ("a", "b"):
        response = client.post("/v1/cues", headers=key_headers(key), json={
            "name": name, "transport": "worker",
            "schedule": {"type": "recurring", "cron": "0 0 1 1 *"}})
        assert response.status_code == 201, response.get_json()
        cue_ids.append(response.get_json()["id"])
    assert client.patch(f"/v1/cues/{cue_ids[1]}", headers=key_headers(key),
                        json={"status": "paused"}).status_code == 200
    this_month = utcnow().strftime("%Y-%m")
    with delegation_app.app_context():
        db.session.add_all([ExecutionUsage(user_id=user_id, month=this_month, executions=7),
                            ExecutionUsage(user_id=user_id, month="2000-01", executions=99)])
        db.session.commit()
        engine = db.engine
    statements: list[str] = []

    request_thread = threading.get_ident()  # the test client serves requests on this thread

    def record(conn, cursor, statement, *args):
        if threading.get_ident() != request_thread:  # e.g. the audit trail's writer thread
            return
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        answers = {}
        for path, headers in (("key", key_headers(key)), ("delegated", delegated),
                              ("session", {"Authorization":
                                           f"Bearer {mint_session(user_id)}"})):
            statements.clear()
            response = client.get("/v1/auth/me", headers=headers)
            assert response.status_code == 200, response.get_json()
            answers[path] = (len(statements), response.get_json()["active_cues"],
                             response.get_json()["executions_this_month"])
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert answers == {"key": (1, 1, 7), "delegated": (1, 1, 7), "session": (2, 1, 7)}


def test_upsert_retries_when_a_concurrent_upsert_of_the_same_id_wins(delegation_app,
                                                                     monkeypatch):
    """PostgreSQL may report a race between two upserts of one new id as a unique violation on
    the email or slug index: the loser runs again and updates the winner's row (200)."""
    from sqlalchemy import insert as sql_insert
    from sqlalchemy.exc import IntegrityError

    from app.db import utcnow
    from app.users import services

    client = delegation_app.test_client()
    user_id = uuid.uuid4()
    body = {"email": "race@example.com", "slug": "race", "plan": "pro"}
    real_fetch = services.fetch_one_direct
    raced = []

    def fetch(statement, params):
        if not raced and getattr(statement, "table", None) is User.__table__:
            raced.append(True)
            with db.engine.begin() as other:  # the concurrent winner commits first
                other.execute(sql_insert(User.__table__).values(
                    id=user_id, email=body["email"], slug=body["slug"], plan="free",
                    active_cue_limit=10, monthly_execution_limit=300,
                    monthly_message_limit=300, rate_limit_per_minute=60,
                    api_key_hash="0" * 64, api_key_prefix="cue_sk_0000", webhook_secret="w",
                    active=True, created_at=utcnow(), updated_at=utcnow()))
            raise IntegrityError("INSERT INTO users …", {}, Exception("users_email_key"))
        return real_fetch(statement, params)

    monkeypatch.setattr(services, "fetch_one_direct", fetch)
    response = upsert(client, user_id, body)
    assert raced == [True]
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["created"] is False
    assert response.get_json()["plan"] == "pro"
