"""Structured request logs: one JSON line per request, and never a key, token or secret."""

import json
import uuid

from tests.helpers import SERVICE_TOKEN, SESSION_SECRET, key_headers, mint_session, service_headers

CONFIRM = {"X-Confirm-Destructive": "true"}


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_one_json_line_per_request(delegation_client, capfd):
    user_id = str(uuid.uuid4())
    delegation_client.put(f"/v1/internal/users/{user_id}", headers=service_headers(),
                          json={"email": "log@example.com", "slug": "log"})
    delegation_client.get("/v1/auth/me?probe=1", headers=service_headers(user_id))
    delegation_client.get("/v1/nope")
    requests = [e for e in _lines(capfd.readouterr().err) if e["logger"] == "cueline.request"]
    assert [(e["method"], e["path"], e["status"]) for e in requests] == [
        ("PUT", f"/v1/internal/users/{user_id}", 200), ("GET", "/v1/auth/me", 200),
        ("GET", "/v1/nope", 404)]
    me = requests[1]
    assert (me["user_id"], me["auth_path"], me["principal"]) == (user_id, "delegated", "env")
    assert len(me["request_id"]) == 36 and me["duration_ms"] >= 0
    assert requests[0]["auth_path"] == "service"


def test_no_secret_reaches_the_logs(delegation_client, capfd, caplog):
    client = delegation_client
    secrets_seen = {SERVICE_TOKEN, SESSION_SECRET}
    response = client.post("/v1/auth/register", json={"email": "s@example.com"})
    key = response.get_json()["api_key"]
    secrets_seen.add(key)
    user_id = client.get("/v1/auth/me", headers=key_headers(key)).get_json()["id"]
    new_key = client.post("/v1/auth/key/regenerate",
                          headers={**key_headers(key), **CONFIRM}).get_json()["api_key"]
    secrets_seen.add(new_key)
    client.get("/v1/auth/me", headers=key_headers(key))  # rotated key → 401
    session = mint_session(user_id)
    secrets_seen.add(session)
    client.get("/v1/auth/me", headers=key_headers(session))
    client.get(f"/v1/auth/key?token={new_key}", headers=key_headers(new_key))
    secrets_seen.add(client.get("/v1/auth/webhook-secret", headers=key_headers(new_key))
                     .get_json()["webhook_secret"])
    secrets_seen.add(client.post("/v1/auth/webhook-secret/regenerate",
                                 headers={**key_headers(new_key), **CONFIRM})
                     .get_json()["webhook_secret"])
    secrets_seen.add(client.post("/v1/internal/invites", json={}, headers=service_headers())
                     .get_json()["token"])
    client.get("/v1/auth/me", headers=service_headers(user_id, style="key"))
    client.get("/v1/auth/me", headers=service_headers(user_id, token="wrong-" + SERVICE_TOKEN))
    client.post("/v1/auth/register", json={"email": "s@example.com"})  # 409
    captured = capfd.readouterr()
    text = captured.out + captured.err + caplog.text
    assert "cueline.request" in text
    for secret in secrets_seen:
        assert secret not in text


def test_database_error_detail_is_not_logged(make_app, backend, capfd):
    """A unique violation's DETAIL (PostgreSQL quotes the row's values, here a stored key hash)
    never reaches the log, although the error itself is logged."""
    import uuid as uuid_module

    from app.extensions import db
    from app.users.models import User

    app = make_app()

    @app.post("/test-duplicate-key")
    def duplicate_key():
        existing = db.session.scalars(db.select(User)).one()
        db.session.add(User(id=uuid_module.uuid4(), email="dup@example.com", slug="dup",
                            api_key_hash=existing.api_key_hash, api_key_prefix="cue_sk_x"))
        db.session.commit()
        return "unreachable"

    client = app.test_client()
    client.post("/v1/auth/register", json={"email": "owner@example.com"})
    with app.app_context():
        stored_hash = db.session.scalars(db.select(User.api_key_hash)).one()
    capfd.readouterr()
    response = client.post("/test-duplicate-key")
    assert response.status_code == 500
    logged = capfd.readouterr().err
    errors = [e for e in _lines(logged) if e["level"] == "ERROR"]
    assert errors and "IntegrityError" in errors[0]["exception"]
    assert stored_hash not in logged
    if backend == "postgresql":
        assert "uq_users_api_key_hash" in errors[0]["exception"]  # what failed is still said
        assert "DETAIL:  (hidden)" in errors[0]["exception"]


def test_scrub_database_detail_keeps_the_rest():
    from app.logs import scrub_database_detail

    text = ('(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint '
            '"uq_users_email"\nDETAIL:  Key (email)=(a@example.com\nsecond line) already '
            'exists.\nCONTEXT:  unnamed portal parameter $1 = \'secret\'\n[SQL: INSERT …]\n'
            '(Background on this error at: https://sqlalche.me/e/20/gkpj)')
    scrubbed = scrub_database_detail(text)
    assert "a@example.com" not in scrubbed and "second line" not in scrubbed
    assert "secret" not in scrubbed
    assert scrubbed.startswith('(psycopg.errors.UniqueViolation) duplicate key value violates')
    assert "[SQL: INSERT …]" in scrubbed and "(Background on this error" in scrubbed
    assert scrub_database_detail("no database text") == "no database text"
