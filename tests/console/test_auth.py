"""Who may open the console: sign-in by e-mailed link and by ``flask console login``, the
session cookie, CSRF, and refusal of every other credential on every console route."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from app.console import auth
from tests.console.conftest import (
    ADMIN,
    ADMINS,
    OTHER_ADMIN,
    csrf_of,
    issue_link,
    seed_data,
    sign_in,
)
from tests.helpers import SERVICE_TOKEN, key_headers, mint_session, register

LINK = re.compile(r"(https?://\S+/console/login/link\?token=[0-9a-f]{64})")


def _cookies(response) -> dict[str, str]:
    return {header.split("=", 1)[0]: header for header in response.headers.getlist("Set-Cookie")}


@pytest.fixture
def mailbox(monkeypatch):
    """Messages the console sends, instead of the log."""
    sent = []
    monkeypatch.setattr(auth, "send_mail", lambda to, subject, text: sent.append((to, text)))
    return sent


# -- sign-in ----------------------------------------------------------------------------------


def test_sign_in_by_emailed_link(console_app, mailbox):
    client = console_app.test_client()
    form = client.get("/console/login")
    assert form.status_code == 200
    response = client.post("/console/login", data={"email": "OPS@example.com",
                                                    "csrf_token": csrf_of(form)})
    assert response.status_code == 200
    assert "Check your inbox" in response.get_data(as_text=True)
    [(to, text)] = mailbox
    assert to == ADMIN  # the configured address, whatever the case typed
    link = LINK.search(text).group(1)
    path = link.split("localhost:8000", 1)[1]
    confirm = client.get(path)
    assert confirm.status_code == 200 and ADMIN in confirm.get_data(as_text=True)
    assert confirm.headers["Referrer-Policy"] == "no-referrer"
    token = path.split("token=", 1)[1]
    done = client.post("/console/login/link", data={"token": token,
                                                     "csrf_token": csrf_of(confirm)})
    assert done.status_code == 303 and done.headers["Location"].endswith("/console/")
    overview = client.get("/console/")
    assert overview.status_code == 200
    assert ADMIN in overview.get_data(as_text=True)


def test_sign_in_form_does_not_reveal_who_is_an_operator(console_app, mailbox):
    client = console_app.test_client()
    form = client.get("/console/login")
    stranger = client.post("/console/login", data={"email": "mallory@example.com",
                                                    "csrf_token": csrf_of(form)})
    operator = client.post("/console/login", data={"email": ADMIN, "csrf_token": csrf_of(form)})
    assert stranger.status_code == operator.status_code == 200
    assert stranger.get_data(as_text=True) == operator.get_data(as_text=True)
    assert [to for to, _ in mailbox] == [ADMIN]


def test_sign_in_form_rejects_a_non_address(console_app, mailbox):
    client = console_app.test_client()
    form = client.get("/console/login")
    response = client.post("/console/login", data={"email": "nope", "csrf_token": csrf_of(form)})
    assert response.status_code == 422
    assert "Enter your e-mail address" in response.get_data(as_text=True)
    assert mailbox == []


def test_a_link_works_once_and_a_get_never_spends_it(console_app):
    token = issue_link(console_app)
    client = console_app.test_client()
    for _ in range(2):  # mail scanners open links: the confirmation page spends nothing
        confirm = client.get(f"/console/login/link?token={token}")
        assert confirm.status_code == 200
    data = {"token": token, "csrf_token": csrf_of(confirm)}
    assert client.post("/console/login/link", data=data).status_code == 303
    again = console_app.test_client()
    page = again.get(f"/console/login/link?token={token}")
    assert page.status_code == 400
    assert "invalid, expired or already used" in page.get_data(as_text=True)
    assert page.content_type.startswith("text/html")


def test_an_expired_link_is_refused(console_app, monkeypatch):
    from app import db as app_db

    token = issue_link(console_app)
    client = console_app.test_client()
    confirm = client.get(f"/console/login/link?token={token}")
    later = app_db.utcnow() + auth.LINK_TTL + timedelta(seconds=1)
    monkeypatch.setattr(app_db, "clock", lambda: later)
    response = client.post("/console/login/link",
                           data={"token": token, "csrf_token": csrf_of(confirm)})
    assert response.status_code == 400
    assert auth.SESSION_COOKIE not in _cookies(response)


def test_sign_in_by_cli_link(console_app):
    result = console_app.test_cli_runner().invoke(args=["console", "login", "Second@Example.com"])
    assert result.exit_code == 0, result.output
    link = LINK.search(result.output).group(1)
    client = console_app.test_client()
    confirm = client.get(link.split("localhost:8000", 1)[1])
    assert OTHER_ADMIN in confirm.get_data(as_text=True)
    token = link.split("token=", 1)[1]
    response = client.post("/console/login/link",
                           data={"token": token, "csrf_token": csrf_of(confirm)})
    assert response.status_code == 303
    assert OTHER_ADMIN in client.get("/console/").get_data(as_text=True)


def test_cli_refuses_non_operators_and_a_disabled_console(console_app, make_app):
    result = console_app.test_cli_runner().invoke(args=["console", "login", "mallory@example.com"])
    assert result.exit_code != 0
    assert "not listed in CONSOLE_ADMINS" in result.output
    off = make_app(CONSOLE_ADMINS=ADMINS)
    result = off.test_cli_runner().invoke(args=["console", "login", ADMIN])
    assert result.exit_code != 0 and "CONSOLE_ENABLED=true" in result.output


def test_session_cookie_flags(console_app, make_app):
    client = console_app.test_client()
    token = issue_link(console_app)
    confirm = client.get(f"/console/login/link?token={token}")
    response = client.post("/console/login/link",
                           data={"token": token, "csrf_token": csrf_of(confirm)})
    cookie = _cookies(response)[auth.SESSION_COOKIE]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # ENV=test serves plain HTTP
    production = make_app(ENV="production", CONSOLE_ENABLED=True, CONSOLE_ADMINS=ADMINS)
    client = production.test_client()
    token = issue_link(production)
    confirm = client.get(f"/console/login/link?token={token}")
    assert "; Secure" in _cookies(confirm)[auth.PRE_SESSION_COOKIE]
    response = client.post("/console/login/link",
                           data={"token": token, "csrf_token": csrf_of(confirm)})
    cookie = _cookies(response)[auth.SESSION_COOKIE]
    assert "; Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_sign_out_ends_the_session(operator):
    cookie = operator.client.get_cookie(auth.SESSION_COOKIE, path="/console").value
    response = operator.post("/console/logout")
    assert response.status_code == 303 and "/console/login" in response.headers["Location"]
    stolen = operator.app.test_client()
    stolen.set_cookie(auth.SESSION_COOKIE, cookie, path="/console")
    assert stolen.get("/console/").status_code == 303


def test_an_expired_session_is_refused(operator, monkeypatch):
    from app import db as app_db

    later = app_db.utcnow() + timedelta(hours=operator.app.config["CONSOLE_SESSION_HOURS"],
                                        seconds=1)
    monkeypatch.setattr(app_db, "clock", lambda: later)
    assert operator.client.get("/console/users").status_code == 303


def test_an_operator_removed_from_the_configuration_is_locked_out(operator, make_app):
    cookie = operator.client.get_cookie(auth.SESSION_COOKIE, path="/console").value
    narrowed = make_app(CONSOLE_ENABLED=True, CONSOLE_ADMINS=OTHER_ADMIN)
    client = narrowed.test_client()
    client.set_cookie(auth.SESSION_COOKIE, cookie, path="/console")
    response = client.get("/console/")
    assert response.status_code == 303 and response.headers["Location"].endswith("/login")


def test_unauthenticated_requests_are_redirected_to_sign_in(console_app):
    client = console_app.test_client()
    for path in ("/console", "/console/", "/console/users", "/console/audit?principal=x"):
        response = client.get(path)
        assert response.status_code in (303, 308), path
        if response.status_code == 303:
            assert response.headers["Location"].endswith("/console/login")
    assert client.get("/console/login").status_code == 200


# -- CSRF ---------------------------------------------------------------------------------------


def test_posts_without_the_sessions_csrf_token_are_refused(operator, seed):
    from tests.console.conftest import audit_rows

    path = f"/console/users/{seed.user_id}/deactivate"
    stranger = operator.app.test_client()
    other_csrf = sign_in(stranger, operator.app, OTHER_ADMIN)  # valid, but another session's
    for data in ({}, {"csrf_token": "0" * 64}, {"csrf_token": other_csrf}):
        response = operator.client.post(path, data=data)
        assert response.status_code == 403
        assert response.content_type.startswith("text/html")
        assert "csrf_failed" in response.get_data(as_text=True)
    headers = key_headers(seed.api_key)
    assert operator.client.get("/v1/auth/me", headers=headers).status_code == 200  # still active
    refused = audit_rows(operator.app, path=path)
    assert [r.status for r in refused] == [403, 403, 403]
    assert {r.principal for r in refused} == {"console:" + ADMIN}


def test_sign_in_forms_need_their_csrf_token(console_app, mailbox):
    client = console_app.test_client()
    assert client.post("/console/login", data={"email": ADMIN}).status_code == 403
    token = issue_link(console_app)
    response = client.post("/console/login/link", data={"token": token, "csrf_token": "f" * 64})
    assert response.status_code == 403
    assert mailbox == []
    # The link was not spent by the refused attempt.
    assert client.get(f"/console/login/link?token={token}").status_code == 200


# -- nobody else opens a console page --------------------------------------------------------


def _console_routes(app, seed) -> list[tuple[str, str]]:
    from app.auth.principals import live_keys, get_principal

    with app.app_context():
        key_id = str(live_keys(get_principal(seed.principal))[0].id)
    values = {"user_id": seed.user_id, "cue_id": seed.cue_id, "name": seed.principal,
              "key_id": key_id}
    routes = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/console") or rule.endpoint in auth_public_endpoints():
            continue
        path = rule.rule
        for name in rule.arguments:
            path = path.replace(f"<{name}>", values[name])
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            routes.append((method, path))
    return routes


def auth_public_endpoints():
    from app.console.routes import PUBLIC_ENDPOINTS

    return PUBLIC_ENDPOINTS


def test_every_console_route_is_covered(console_app, seed):
    routes = _console_routes(console_app, seed)
    paths = {path for _method, path in routes}
    assert len(routes) >= 17
    assert f"/console/users/{seed.user_id}/deactivate" in paths
    assert f"/console/principals/{seed.principal}/revoke" in paths


def test_no_other_credential_opens_a_console_page(console_app, seed):
    """API keys (also an operator's own), session JWTs, service keys and the env token with
    X-On-Behalf-Of: every console route answers them with the sign-in redirect, nothing else,
    and no action happens."""
    client = console_app.test_client()
    admin_key, _ = register(client, ADMIN)  # an operator's own API key grants nothing here
    admin_id = client.get("/v1/auth/me", headers=key_headers(admin_key)).get_json()["id"]
    credentials = {
        "user api key": key_headers(seed.api_key),
        "operator's api key": key_headers(admin_key),
        "session jwt": {"Authorization": f"Bearer {mint_session(seed.user_id, seed.email)}"},
        "operator's session jwt": {"Authorization": f"Bearer {mint_session(admin_id, ADMIN)}"},
        "service key": {"X-Service-Key": seed.principal_key},
        "service key + on behalf of": {"Authorization": f"Bearer {seed.principal_key}",
                                       "X-On-Behalf-Of": seed.user_id},
        "env token + on behalf of": {"Authorization": f"Bearer {SERVICE_TOKEN}",
                                     "X-On-Behalf-Of": admin_id},
        "nothing": {},
    }
    routes = _console_routes(console_app, seed)
    for label, headers in credentials.items():
        for method, path in routes:
            response = client.open(path, method=method, headers=headers,
                                   data={"csrf_token": "0" * 64} if method == "POST" else None)
            assert response.status_code == 303, (label, method, path, response.status_code)
            assert response.headers["Location"].endswith("/console/login"), (label, path)
            assert "cueline_console=" not in response.headers.get("Set-Cookie", "")
    # Nothing happened: the user is active, the principal unrevoked, the cue active.
    assert client.get("/v1/auth/me", headers=key_headers(seed.api_key)).status_code == 200
    cue = client.get(f"/v1/cues/{seed.cue_id}", headers=key_headers(seed.api_key)).get_json()
    assert cue["status"] == "active"
    internal = client.get(f"/v1/internal/users/{seed.user_id}",
                          headers={"X-Service-Key": seed.principal_key})
    assert internal.status_code == 200


def test_the_console_cookie_is_no_api_credential(operator, seed):
    cookie = operator.client.get_cookie(auth.SESSION_COOKIE, path="/console").value
    client = operator.app.test_client()
    client.set_cookie(auth.SESSION_COOKIE, cookie, path="/")
    response = client.get("/v1/auth/me")
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "invalid_api_key"
    bearer = client.get("/v1/auth/me", headers={"Authorization": f"Bearer {cookie}"})
    assert bearer.status_code == 401


def test_a_forged_or_garbled_cookie_is_refused(console_app):
    client = console_app.test_client()
    for value in ("x", "0" * 64, "g" * 64, "a" * 300):
        client.set_cookie(auth.SESSION_COOKIE, value, path="/console")
        assert client.get("/console/").status_code == 303


def test_console_absent_without_its_flag(make_app):
    client = make_app(CONSOLE_ADMINS=ADMINS).test_client()
    response = client.get("/console/login")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "http_error"  # the API's envelope


@pytest.mark.parametrize("overrides, problem", [
    ({"CONSOLE_ADMINS": ""}, "CONSOLE_ENABLED=true needs CONSOLE_ADMINS"),
    ({"SESSION_SECRET": ""}, "CONSOLE_ENABLED=true needs SESSION_SECRET"),
    ({"CONSOLE_ADMINS": "ops@example.com, not-an-address"}, "'not-an-address' is not an e-mail"),
    ({"CONSOLE_SESSION_HOURS": 0}, "CONSOLE_SESSION_HOURS must be between 1 and 720"),
])
def test_console_settings_are_validated(overrides, problem):
    from config import load_config, validate

    values = load_config({"CONSOLE_ENABLED": True, "CONSOLE_ADMINS": ADMIN,
                          "SESSION_SECRET": "s" * 40, **overrides}, env_file=None)
    assert any(problem in p for p in validate(values)), validate(values)


def test_seeded_pages_need_no_second_sign_in(operator):
    seed = seed_data(operator.app, operator.app.test_client())
    assert seed.email in operator.client.get("/console/users").get_data(as_text=True)
