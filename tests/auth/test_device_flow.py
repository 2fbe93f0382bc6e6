"""Device-code login end to end and every documented outcome (wire protocol §5)."""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.auth.crypto import decrypt_secret
from app.auth.device.models import DeviceCode
from app.extensions import db
from app.users.models import User
from tests.auth.conftest import local_path
from tests.auth.flow import CODE, approve, poll, start, submit
from tests.helpers import SESSION_SECRET, error_of, key_headers, register

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _row(app, code: str = CODE) -> DeviceCode:
    with app.app_context():
        row = db.session.execute(
            select(DeviceCode).where(DeviceCode.device_code == code)).scalar_one()
        db.session.expunge(row)
        return row


def _user(app, email: str) -> User:
    with app.app_context():
        user = db.session.execute(select(User).where(User.email == email)).scalar_one()
        db.session.expunge(user)
        return user


def test_full_flow_new_user(app, client, mail_log):
    created = start(client)
    assert created == {"verification_url": f"http://localhost:8000/auth/device?code={CODE}",
                       "expires_in": 900}
    assert poll(client) == {"status": "pending"}

    page = client.get(local_path(created["verification_url"]))
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert CODE in html and 'type="email"' in html and '<label for="email"' in html
    assert "/v1/auth/device-code/submit-email" in html
    assert "nonce-" in page.headers["Content-Security-Policy"]
    assert page.headers["Referrer-Policy"] == "no-referrer"

    response = submit(client, "New.Person@Example.COM")
    assert response.status_code == 200 and response.get_json() == {"status": "email_sent"}
    assert poll(client) == {"status": "email_sent"}
    [link] = mail_log.links()
    assert link.startswith("http://localhost:8000/v1/auth/verify?token=")
    token = re.search(r"token=([0-9a-f]+)", link).group(1)
    assert HEX64.match(token)
    row = _row(app)
    assert row.email == "New.Person@example.com"  # the domain is normalised
    assert row.verification_token_hash != token and len(row.verification_token_hash) == 64

    verified = client.get(local_path(link))
    assert verified.status_code == 200
    assert "New.Person@example.com" in verified.get_data(as_text=True)
    row = _row(app)
    assert row.status == "approved" and row.new_user and row.verification_token_hash is None
    assert row.pending_api_key_encrypted  # the key waits encrypted, never in plaintext

    body = poll(client)
    assert set(body) == {"status", "api_key", "email", "session_token"}
    assert body["email"] == "New.Person@example.com"
    assert re.fullmatch(r"cue_sk_[0-9a-f]{32}", body["api_key"])
    assert HEX64.match(body["session_token"])
    assert poll(client) == {"status": "claimed"}

    # The waiting copy is wiped; the user's revealable copy decrypts to the same key.
    row = _row(app)
    assert row.status == "claimed" and row.pending_api_key_encrypted is None
    assert row.session_token_hash != body["session_token"]
    user = _user(app, "New.Person@example.com")
    assert decrypt_secret(user.api_key_encrypted, SESSION_SECRET) == body["api_key"]
    assert user.webhook_secret.startswith("whsec_") and user.slug == "new-person"
    with app.app_context():
        for value in db.session.execute(select(DeviceCode.__table__)).one():
            assert body["api_key"] not in str(value)

    me = client.get("/v1/auth/me", headers=key_headers(body["api_key"]))
    assert me.status_code == 200 and me.get_json()["email"] == "New.Person@example.com"

    session = client.post("/v1/auth/session", json={"token": body["session_token"]})
    assert session.status_code == 200
    jwt = session.get_json()
    assert jwt["email"] == "New.Person@example.com"
    me = client.get("/v1/auth/me", headers=key_headers(jwt["session_token"]))
    assert me.status_code == 200 and me.get_json()["auth_path"] == "session"

    refreshed = client.post("/v1/auth/session/refresh", headers=key_headers(jwt["session_token"]))
    assert refreshed.status_code == 200
    assert client.get("/v1/auth/me", headers=key_headers(
        refreshed.get_json()["session_token"])).status_code == 200
    # The CLI's fallback: reveal the key with the JWT.
    revealed = client.get("/v1/auth/key", headers=key_headers(jwt["session_token"]))
    assert revealed.get_json()["api_key"] == body["api_key"]


def test_existing_user_keeps_key(app, client, mail_log):
    api_key, _ = register(client, "old@example.com")
    body = approve(client, mail_log, "old@example.com")
    # /v1/auth/register stores no revealable copy, so the CLI is told to use its session.
    assert body == {"status": "approved", "email": "old@example.com",
                    "session_token": body["session_token"], "existing_user": True}
    assert client.get("/v1/auth/me", headers=key_headers(api_key)).status_code == 200
    assert _row(app).new_user is False


def test_existing_user_with_revealable_key_gets_it(app, client, mail_log):
    api_key, _ = register(client, "rot@example.com")
    regenerated = client.post("/v1/auth/key/regenerate", headers={
        **key_headers(api_key), "X-Confirm-Destructive": "true"})
    assert regenerated.status_code == 200, regenerated.get_json()
    new_key = regenerated.get_json()["api_key"]
    body = approve(client, mail_log, "rot@example.com")
    assert body["api_key"] == new_key and "existing_user" not in body


def test_without_session_secret_the_new_user_still_gets_a_working_key(make_app, mail_log):
    app = make_app(SESSION_SECRET="")
    client = app.test_client()
    body = approve(client, mail_log, "nosecret@example.com")
    assert client.get("/v1/auth/me", headers=key_headers(body["api_key"])).status_code == 200
    user = _user(app, "nosecret@example.com")
    assert user.api_key_encrypted is None and user.api_key_prefix == body["api_key"][:12]
    exchanged = client.post("/v1/auth/session", json={"token": body["session_token"]})
    assert exchanged.status_code == 503
    assert error_of(exchanged)["code"] == "session_unavailable"


# --- step 1: create ---------------------------------------------------------------------------

@pytest.mark.parametrize("code", ["ABCDE", "x" * 129, "ABCD\tEFGH", "ABCD\u200bEFGH"])
def test_create_rejects_bad_codes(client, code):
    response = client.post("/v1/auth/device-code", json={"device_code": code})
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_device_code"


def test_create_accepts_the_length_bounds(client):
    assert client.post("/v1/auth/device-code", json={"device_code": "ABCDEF"}).status_code == 201
    assert client.post("/v1/auth/device-code",
                       json={"device_code": "y" * 128}).status_code == 201


def test_create_requires_a_code(client):
    response = client.post("/v1/auth/device-code", json={})
    assert response.status_code == 422
    assert error_of(response)["details"][0]["field"] == "body.device_code"


def test_create_conflicts_while_in_use_and_replaces_finished_codes(client, mail_log, clock):
    start(client)
    response = client.post("/v1/auth/device-code", json={"device_code": CODE})
    assert response.status_code == 409
    assert error_of(response)["code"] == "device_code_exists"
    clock.advance(seconds=901)
    start(client)  # expired → replaced
    assert poll(client) == {"status": "pending"}
    assert submit(client, "again@example.com").status_code == 200
    client.get(local_path(mail_log.links()[-1]))
    assert poll(client)["status"] == "approved"
    start(client)  # claimed → replaced
    assert poll(client) == {"status": "pending"}


def test_verification_url_escapes_the_code(client):
    body = start(client, "a&b=c d/e#f")
    assert body["verification_url"].endswith("/auth/device?code=a%26b%3Dc%20d%2Fe%23f")


# --- step 3: submit-email ---------------------------------------------------------------------

def test_submit_errors(client, mail_log, clock):
    response = submit(client, "a@example.com", code="NOPE-NOPE")
    assert response.status_code == 404
    assert error_of(response)["code"] == "device_code_not_found"

    start(client)
    response = submit(client, "not-an-email")
    assert response.status_code == 422
    assert error_of(response)["details"][0]["field"] == "body.email"

    assert submit(client, "a@example.com").status_code == 200
    response = submit(client, "b@example.com")
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_status"
    assert len(mail_log.links()) == 1

    start(client, "LATE-CODE")
    clock.advance(seconds=900)
    response = submit(client, "a@example.com", code="LATE-CODE")
    assert response.status_code == 400
    assert error_of(response)["code"] == "device_code_expired"


# --- step 4: the magic link -------------------------------------------------------------------

def _failure(client, path: str, status: int = 400) -> str:
    response = client.get(path)
    assert response.status_code == status, response.data
    assert response.mimetype == "text/html"
    return response.get_data(as_text=True)


def test_verify_failures_are_html_pages(app, client, mail_log, clock):
    start(client)
    submit(client, "v@example.com")
    link = local_path(mail_log.links()[-1])
    good_token = re.search(r"token=([0-9a-f]+)", link).group(1)

    assert "incomplete" in _failure(client, "/v1/auth/verify")
    assert "incomplete" in _failure(client, f"/v1/auth/verify?device_code={CODE}")
    assert "unknown" in _failure(client, f"/v1/auth/verify?token={good_token}&device_code=ZZZZZZ")
    assert "not valid" in _failure(client, f"/v1/auth/verify?token={'0' * 64}&device_code={CODE}")
    assert "not valid" in _failure(client, f"/v1/auth/verify?token=short&device_code={CODE}")
    assert _row(app).status == "email_sent"  # wrong tokens change nothing

    assert client.get(link).status_code == 200
    assert "already been used" in _failure(client, link)

    start(client, "EXPI-RING")
    submit(client, "w@example.com", code="EXPI-RING")
    late = local_path(mail_log.links()[-1])
    clock.advance(minutes=15)
    assert "expired" in _failure(client, late)
    assert poll(client, "EXPI-RING") == {"status": "expired"}


def test_verify_before_email_is_submitted_fails(client):
    start(client)
    assert "already been used" in _failure(
        client, f"/v1/auth/verify?token={'a' * 64}&device_code={CODE}")


def test_closed_registration_refuses_new_users_but_not_existing_ones(make_app, mail_log):
    app = make_app(ALLOW_REGISTER=False)
    client = app.test_client()
    start(client)
    submit(client, "stranger@example.com")
    assert "sign-up is closed" in _failure(client, local_path(mail_log.links()[-1]), 403)
    assert poll(client) == {"status": "expired"}
    with app.app_context():
        assert db.session.execute(select(User)).first() is None

    with app.app_context():
        from app.users.services import register_user

        register_user("member@example.com")
    body = approve(client, mail_log, "member@example.com", code="MEMB-ER01")
    assert body["existing_user"] is True


# --- step 5: poll -----------------------------------------------------------------------------

def test_poll_unknown_code_is_expired(client):
    assert poll(client, "NEVER-SEEN") == {"status": "expired"}


def test_poll_requires_a_code(client):
    response = client.post("/v1/auth/device-code/poll", json={"code": CODE})
    assert response.status_code == 422


def test_expiry_follows_the_clock(app, client, mail_log, clock):
    start(client)
    clock.advance(seconds=899)
    assert poll(client) == {"status": "pending"}
    clock.advance(seconds=1)
    assert poll(client) == {"status": "expired"}
    assert _row(app).status == "expired"


def test_approved_but_unclaimed_key_is_wiped_at_expiry(app, client, mail_log, clock):
    start(client)
    submit(client, "slow@example.com")
    client.get(local_path(mail_log.links()[-1]))
    assert _row(app).pending_api_key_encrypted
    clock.advance(minutes=16)
    assert poll(client) == {"status": "expired"}
    row = _row(app)
    assert row.status == "expired" and row.pending_api_key_encrypted is None


def test_services_take_now(app):
    from app.auth.device import services

    with app.app_context():
        created = services.create_device_code("SERV-ICE1", "https://example.test")
        assert created["verification_url"] == "https://example.test/auth/device?code=SERV-ICE1"
        row = _row(app, "SERV-ICE1")
        assert row.expires_at - row.created_at == timedelta(seconds=900)
        assert services.poll_device_code("SERV-ICE1", secret=SESSION_SECRET,
                                         now=row.created_at + timedelta(seconds=899)) \
            == {"status": "pending"}
        assert services.poll_device_code("SERV-ICE1", secret=SESSION_SECRET,
                                         now=row.created_at + timedelta(seconds=900)) \
            == {"status": "expired"}


# --- HTML safety ------------------------------------------------------------------------------

HOSTILE = "<script>alert('x')</script>\"&"


def test_hostile_code_is_escaped_everywhere(client, mail_log):
    start(client, HOSTILE)
    page = client.get("/auth/device", query_string={"code": HOSTILE})
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&#34;&amp;" in html

    assert submit(client, "h@example.com", code=HOSTILE).status_code == 200
    link = mail_log.links()[-1]
    assert "%3Cscript%3E" in link  # the code travels URL-encoded in the magic link
    ok = client.get(local_path(link))
    assert ok.status_code == 200 and "<script>alert" not in ok.get_data(as_text=True)

    unknown = client.get("/v1/auth/verify", query_string={"device_code": "<b>x</b>" * 2,
                                                          "token": "<i>"})
    assert unknown.status_code == 400
    assert "<b>" not in unknown.get_data(as_text=True)
    page = client.get("/auth/device", query_string={"code": "<img src=x onerror=alert(1)>"})
    assert page.status_code == 200 and "<img" not in page.get_data(as_text=True)
    assert "&lt;img src=x" in page.get_data(as_text=True)


def test_user_supplied_email_is_escaped_on_the_success_page(client, mail_log):
    start(client)
    assert submit(client, "o'brien&co@example.com").status_code == 200
    page = client.get(local_path(mail_log.links()[-1])).get_data(as_text=True)
    assert "o&#39;brien&amp;co@example.com" in page and "o'brien&co" not in page


def test_page_states(client, mail_log, clock):
    assert "login code" in _failure(client, "/auth/device", 404)
    # Any code gets its page, as upstream serves it (CueAPI's own test opens an unknown one).
    unknown = client.get("/auth/device?code=ABCD-EFGH")
    assert unknown.status_code == 200 and unknown.mimetype == "text/html"
    html = unknown.get_data(as_text=True)
    assert "ABCD-EFGH" in html and "unknown" in html and "CueAPI Login" in html
    start(client)
    submit(client, "p@example.com")
    page = client.get("/auth/device", query_string={"code": CODE}).get_data(as_text=True)
    assert "login link was sent" in page and 'id="login-form"' not in page
    assert "p@example.com" not in page  # knowing a code does not reveal the address
    client.get(local_path(mail_log.links()[-1]))
    assert "already approved" in client.get("/auth/device",
                                            query_string={"code": CODE}).get_data(as_text=True)
    clock.advance(minutes=15)
    assert "expired" in _failure(client, f"/auth/device?code={CODE}", 200)


# --- packaging flag ---------------------------------------------------------------------------

DEVICE_ROUTES = {"/v1/auth/device-code", "/v1/auth/device-code/poll",
                 "/v1/auth/device-code/submit-email", "/v1/auth/verify", "/auth/device"}


@pytest.mark.parametrize("disabled", [False, True])
def test_disable_device_code_removes_exactly_five_routes(make_app, disabled):
    app = make_app(DISABLE_DEVICE_CODE=disabled)
    rules = {r.rule for r in app.url_map.iter_rules()}
    paths = set(app.test_client().get("/openapi.json").get_json()["paths"])
    assert (DEVICE_ROUTES <= rules) is not disabled
    assert (DEVICE_ROUTES <= paths) is not disabled
    assert not disabled or not DEVICE_ROUTES & (rules | paths)
    assert {"/v1/auth/session", "/v1/auth/session/refresh"} <= rules & paths
    client = app.test_client()
    response = client.post("/v1/auth/device-code", json={"device_code": CODE})
    assert response.status_code == (404 if disabled else 201)
    if disabled:
        assert error_of(response)["code"] == "http_error"
        assert client.get("/auth/device?code=x").status_code == 404
    assert client.post("/v1/auth/session", json={"token": "x"}).status_code == 401


def test_html_pages_are_documented_as_html(client):
    spec = client.get("/openapi.json").get_json()
    for path in ("/auth/device", "/v1/auth/verify"):
        assert "text/html" in spec["paths"][path]["get"]["responses"]["200"]["content"]
    assert spec["paths"]["/v1/auth/device-code"]["post"]["security"] == []


# --- concurrency ------------------------------------------------------------------------------

def _concurrently(app, count: int, request) -> list:
    barrier = threading.Barrier(count)
    results: list = []

    def run():
        client = app.test_client()
        barrier.wait()
        results.append(request(client))

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == count
    return results


def test_concurrent_polls_hand_out_the_key_once(app, client, mail_log):
    start(client)
    submit(client, "race@example.com")
    client.get(local_path(mail_log.links()[-1]))
    results = _concurrently(app, 6, poll)
    approved = [r for r in results if r["status"] == "approved"]
    assert len(approved) == 1 and "api_key" in approved[0]
    assert sorted(r["status"] for r in results if r not in approved) == ["claimed"] * 5


def test_concurrent_clicks_on_one_link_approve_once(app, client, mail_log):
    start(client)
    submit(client, "clicks@example.com")
    link = local_path(mail_log.links()[-1])
    statuses = sorted(r.status_code for r in _concurrently(app, 4, lambda c: c.get(link)))
    assert statuses == [200, 400, 400, 400]
    body = poll(client)
    assert body["status"] == "approved"
    assert client.get("/v1/auth/me", headers=key_headers(body["api_key"])).status_code == 200
    with app.app_context():
        assert len(db.session.execute(select(User)).all()) == 1
