"""The console's pages with seeded data, each action and its audit record, keyset paging, and
how errors, CORS and the rate limiter treat ``/console`` (HTML there, the envelope elsewhere)."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest

from app.console import auth
from tests.console.conftest import ADMIN, ADMINS, audit_rows, csrf_of, seed_data, sign_in
from tests.helpers import key_headers, register


def _text(response) -> str:
    assert response.content_type.startswith("text/html"), response.content_type
    return response.get_data(as_text=True)


def _session_id(operator) -> str:
    from sqlalchemy import select

    from app.auth.tokens import hash_secret
    from app.console.models import ConsoleSession
    from app.extensions import db

    cookie = operator.client.get_cookie(auth.SESSION_COOKIE, path="/console").value
    with operator.app.app_context():
        return str(db.session.scalar(select(ConsoleSession.id).where(
            ConsoleSession.token_hash == hash_secret(cookie))))


# -- pages ------------------------------------------------------------------------------------


def test_overview_charts_are_inline_svg_that_needs_no_script(operator, seed):
    """Both charts arrive in the HTML itself as well-formed SVG (no script draws them, no asset
    is fetched for them), each labelled for screen readers, each bar with its number."""
    import xml.etree.ElementTree as ET

    svg_ns = "{http://www.w3.org/2000/svg}"
    html = _text(operator.client.get("/console/"))
    charts = re.findall(r"<svg\b.*?</svg>", html, flags=re.S)
    assert len(charts) == 2
    titles = []
    bars = {}
    for chart in charts:
        root = ET.fromstring(chart)  # raises on anything but well-formed SVG
        assert root.get("role") == "img" and root.get("aria-labelledby")
        titles.append(root.find(f"{svg_ns}title").text)
        for rect in root.iter(f"{svg_ns}rect"):
            assert float(rect.get("height")) > 0
            bars[rect.get("class")] = rect.find(f"{svg_ns}title").text
    assert titles == ["Delivery outcomes, last 24 hours", "Scheduler lateness, last 24 hours"]
    # The seeded success, failure and missed execution each have a bar saying so.
    assert bars["bar c-success"].endswith("1 success")
    assert bars["bar c-failed"].endswith("1 failed")
    assert bars["bar c-missed"].endswith("1 missed")
    # The only script is the console's own, deferred, and not needed for any of this.
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts == ['<script src="/console/static/console.js" defer>']
    # Nothing is loaded from anywhere but the console itself.
    assert "<img" not in html
    assert set(re.findall(r'(?:src|href)="([^"]*)"', html)) <= {
        "/console/static/console.css", "/console/static/console.js"} | set(
        re.findall(r'href="(/console/[^"]*)"', html))


def test_every_page_renders_the_seeded_data(operator, seed):
    client = operator.client
    overview = _text(client.get("/console/"))
    assert "Delivery outcomes, last 24 hours" in overview and "<svg" in overview
    assert 'class="bar c-success"' in overview and 'class="bar c-failed"' in overview
    assert "1 success" in overview and "1 failed" in overview and "1 missed" in overview
    users = _text(client.get("/console/users"))
    assert seed.email in users
    assert seed.email in _text(client.get("/console/users", query_string={"q": seed.email[:8]}))
    assert seed.email not in _text(client.get("/console/users", query_string={"q": "zzz-none"}))
    assert seed.email in _text(client.get("/console/users", query_string={"q": seed.user_id}))
    detail = _text(client.get(f"/console/users/{seed.user_id}"))
    assert seed.user_id in detail and "Deactivate" in detail
    principals = _text(client.get("/console/principals"))
    assert seed.principal in principals and seed.principal_key[:12] in principals
    assert seed.principal_key not in principals  # never the key itself
    cues = _text(client.get("/console/cues", query_string={"user": seed.email}))
    assert "nightly-report" in cues
    assert "nightly-report" not in _text(client.get("/console/cues",
                                                    query_string={"status": "paused"}))
    timeline = _text(client.get(f"/console/cues/{seed.cue_id}"))
    assert seed.failure_error in timeline and "502" in timeline and "missed" in timeline
    failures = _text(client.get("/console/failures"))
    assert seed.failure_error in failures and "missed" in failures
    assert "success" not in re.sub(r"<(nav|header|select)[\s\S]*?</\1>", "", failures)
    only_missed = _text(client.get("/console/failures", query_string={"status": "missed"}))
    assert seed.failure_error not in only_missed and "missed" in only_missed
    messages = _text(client.get("/console/messages"))
    assert seed.message_subject in messages
    by_agent = _text(client.get("/console/messages", query_string={"agent": seed.agent_id,
                                                                    "state": "queued"}))
    assert seed.message_subject in by_agent
    assert seed.message_subject not in _text(client.get(
        "/console/messages", query_string={"agent": seed.agent_id, "state": "failed"}))
    audit = _text(client.get("/console/audit"))
    assert "console:" + ADMIN in audit and "/console/login/link" in audit


def test_filters_answer_bad_input_with_an_html_400(operator):
    for path, query in (("/console/users", {"state": "weird"}),
                        ("/console/cues", {"status": "nope"}),
                        ("/console/failures", {"status": "success"}),
                        ("/console/messages", {"state": "lost"}),
                        ("/console/messages", {"direction": "sideways"}),
                        ("/console/audit", {"user": "not-a-uuid"}),
                        ("/console/audit", {"status": "abc"}),
                        ("/console/users", {"after": "garbage"}),
                        ("/console/audit", {"after": "2026-01-01T00:00:00~x"})):
        response = operator.client.get(path, query_string=query)
        assert response.status_code == 400, (path, query)
        assert "That did not work" in _text(response)


def test_unknown_things_are_html_404s(operator):
    for path in ("/console/users/not-a-uuid", f"/console/users/{uuid.uuid4()}",
                 "/console/cues/cue_nothinghere", "/console/nope"):
        response = operator.client.get(path)
        assert response.status_code == 404, path
        assert "Not found" in _text(response)
    # A path no route matches is answered before any session look-up: a plain page.
    assert 'href="/console/login"' in _text(operator.client.get("/console/nope"))


def test_errors_are_html_under_console_and_the_envelope_elsewhere(console_app):
    client = console_app.test_client()
    for method, path in (("GET", "/console/nope"), ("PUT", "/console/login"),
                         ("DELETE", "/console/users")):
        response = client.open(path, method=method)
        assert response.status_code in (404, 405), path
        assert response.content_type.startswith("text/html"), path
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    big = client.post("/console/login", data="x" * (1024 * 1024 + 1),
                      content_type="application/x-www-form-urlencoded")
    assert big.status_code == 413 and big.content_type.startswith("text/html")
    api = client.get("/v1/nope")
    assert api.status_code == 404 and api.get_json()["error"]["code"] == "http_error"
    consoled = client.get("/consoled")  # a prefix is a path segment, not a string prefix
    assert consoled.get_json()["error"]["status"] == 404


def test_console_pages_carry_security_headers_and_no_cors(operator):
    response = operator.client.get("/console/", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "<script>" not in _text(response) and " style=" not in _text(response)
    css = operator.client.get("/console/static/console.css")
    assert css.status_code == 200 and "no-store" not in css.headers.get("Cache-Control", "")
    api = operator.client.get("/health", headers={"Origin": "https://evil.example"})
    assert api.headers["Access-Control-Allow-Origin"] == "https://evil.example"


def test_the_api_rate_limiter_leaves_signed_in_pages_alone(make_app):
    app = make_app(CONSOLE_ENABLED=True, CONSOLE_ADMINS=ADMINS, RATELIMIT_ENABLED=True,
                   RATE_LIMIT_ANONYMOUS_PER_MINUTE=2)
    client = app.test_client()
    sign_in(client, app)
    for _ in range(6):
        assert client.get("/console/users").status_code == 200
        assert client.get("/console/static/console.css").status_code == 200
    statuses = [client.get("/v1/agents").status_code for _ in range(4)]
    assert 429 in statuses  # the API's anonymous limit still applies to the API


@pytest.mark.rate_window
def test_the_sign_in_form_is_rate_limited_with_an_html_429(make_app, monkeypatch):
    monkeypatch.setattr(auth, "send_mail", lambda *args: None)
    app = make_app(CONSOLE_ENABLED=True, CONSOLE_ADMINS=ADMINS, RATELIMIT_ENABLED=True)
    client = app.test_client()
    token = csrf_of(client.get("/console/login"))
    statuses = [client.post("/console/login", data={"email": ADMIN, "csrf_token": token})
                for _ in range(6)]
    assert [r.status_code for r in statuses] == [200] * 5 + [429]
    assert statuses[-1].content_type.startswith("text/html")
    assert int(statuses[-1].headers["Retry-After"]) > 0


# -- keyset paging ----------------------------------------------------------------------------


def _follow(client, page_path, pattern, **query) -> list[str]:
    """Every id matched on every page, following the "Older" links."""
    found, url, pages = [], page_path, 0
    while url:
        response = client.get(url, query_string=query if url == page_path else None)
        body = _text(response)
        found += re.findall(pattern, body)
        match = re.search(r'rel="next" href="([^"]+)"', body)
        url = match.group(1).replace("&amp;", "&") if match else None
        pages += 1
        assert pages < 20
    return found


def test_timeline_and_users_page_by_keyset_without_gaps_or_repeats(operator, seed):
    from app.db import utcnow
    from app.extensions import db
    from app.scheduling.models import Execution

    with operator.app.app_context():
        base = utcnow() - timedelta(days=2)
        for i in range(117):
            db.session.add(Execution(cue_id=seed.cue_id, scheduled_for=base + timedelta(minutes=i),
                                     status="success", attempts=1, http_status=200))
        db.session.commit()
    ids = _follow(operator.client, f"/console/cues/{seed.cue_id}",
                  r'<code class="muted">([0-9a-f-]{36})</code>')
    assert len(ids) == 120 and len(set(ids)) == 120  # 117 + the 3 seeded
    for _ in range(55):
        register(operator.client)
    emails = _follow(operator.client, "/console/users", r'/console/users/([0-9a-f-]{36})"')
    assert len(emails) == len(set(emails)) == 56
    failures = _follow(operator.client, "/console/failures", r'/console/cues/(cue_\w+)"')
    assert failures == [seed.cue_id, seed.cue_id]


# -- actions and their audit records ----------------------------------------------------------


def _only_record(operator, path):
    rows = audit_rows(operator.app, path=path)
    assert len(rows) == 1, rows
    record = rows[0]
    assert record.principal == "console:" + ADMIN
    assert record.key_id == _session_id(operator)
    assert record.method == "POST"
    assert record.request_id
    return record


def test_deactivate_and_reactivate_a_user(operator, seed):
    headers = key_headers(seed.api_key)
    path = f"/console/users/{seed.user_id}/deactivate"
    response = operator.post(path)
    assert response.status_code == 303
    assert "notice=deactivated" in response.headers["Location"]
    assert operator.client.get("/v1/auth/me", headers=headers).get_json()["error"]["code"] == \
        "user_inactive"
    page = _text(operator.client.get(response.headers["Location"]))
    assert "The user is deactivated" in page and "Reactivate" in page
    record = _only_record(operator, path)
    assert str(record.user_id) == seed.user_id and record.status == 303
    path = f"/console/users/{seed.user_id}/reactivate"
    assert operator.post(path).status_code == 303
    assert operator.client.get("/v1/auth/me", headers=headers).status_code == 200
    assert str(_only_record(operator, path).user_id) == seed.user_id


def test_rotate_retire_and_revoke_a_service_principal(operator, seed):
    client = operator.client
    path = f"/console/principals/{seed.principal}/rotate"
    response = client.post(path, data={"csrf_token": operator.csrf})
    assert response.status_code == 200
    new_key = re.search(r'id="new-key">(svc_[\w-]+)<', _text(response)).group(1)
    assert response.headers["Cache-Control"] == "no-store"
    internal = f"/v1/internal/users/{seed.user_id}"
    for key in (seed.principal_key, new_key):
        assert client.get(internal, headers={"X-Service-Key": key}).status_code == 200
    assert _only_record(operator, path).status == 200
    assert new_key not in str(audit_rows(operator.app)[0].__dict__)  # no secret in the trail
    # A third key is refused (at most two live): an HTML 409, audited.
    again = client.post(path, data={"csrf_token": operator.csrf})
    assert again.status_code == 409 and "too_many_keys" in _text(again)
    from app.auth.principals import get_principal, live_keys

    with operator.app.app_context():
        old_id = str(live_keys(get_principal(seed.principal))[0].id)
    path = f"/console/principals/{seed.principal}/keys/{old_id}/retire"
    assert operator.post(path).status_code == 303
    assert client.get(internal, headers={"X-Service-Key": seed.principal_key}).status_code == 401
    assert _only_record(operator, path).status == 303
    path = f"/console/principals/{seed.principal}/revoke"
    assert operator.post(path).status_code == 303
    assert client.get(internal, headers={"X-Service-Key": new_key}).status_code == 401
    assert _only_record(operator, path).status == 303
    assert "revoked" in _text(client.get("/console/principals"))


def test_pause_resume_and_fire_a_cue(operator, seed):
    headers = key_headers(seed.api_key)
    cue_url = f"/v1/cues/{seed.cue_id}"
    path = f"/console/cues/{seed.cue_id}/pause"
    assert operator.post(path).status_code == 303
    assert operator.client.get(cue_url, headers=headers).get_json()["status"] == "paused"
    assert str(_only_record(operator, path).user_id) == seed.user_id
    refused = operator.post(path)
    assert refused.status_code == 409 and "cue_not_active" in _text(refused)
    assert [r.status for r in audit_rows(operator.app, path=path)] == [409, 303]
    path = f"/console/cues/{seed.cue_id}/resume"
    assert operator.post(path).status_code == 303
    assert operator.client.get(cue_url, headers=headers).get_json()["status"] == "active"
    _only_record(operator, path)
    path = f"/console/cues/{seed.cue_id}/fire"
    assert operator.post(path).status_code == 303
    from sqlalchemy import select

    from app.extensions import db
    from app.scheduling.models import Execution

    with operator.app.app_context():
        triggers = db.session.scalars(select(Execution.triggered_by)
                                      .where(Execution.cue_id == seed.cue_id)).all()
    assert sorted(triggers) == ["manual_fire", "scheduler", "scheduler", "scheduler"]
    _only_record(operator, path)
    assert "manual_fire" in _text(operator.client.get(f"/console/cues/{seed.cue_id}"))


def test_sign_in_and_sign_out_are_in_the_audit_trail(operator):
    session_id = _session_id(operator)
    [signed_in] = audit_rows(operator.app, path="/console/login/link")
    assert signed_in.principal == "console:" + ADMIN and signed_in.key_id == session_id
    assert signed_in.status == 303
    operator.post("/console/logout")
    [signed_out] = audit_rows(operator.app, path="/console/logout")
    assert signed_out.key_id == session_id


def test_audit_page_filters_and_pages(operator, seed):
    from app.auth.models import AuditRecord
    from app.db import utcnow
    from app.extensions import db

    with operator.app.app_context():
        now = utcnow()
        for i in range(60):
            db.session.add(AuditRecord(at=now - timedelta(seconds=i), principal="billing-backend",
                                       key_id="env", user_id=uuid.UUID(seed.user_id),
                                       method="GET", path=f"/v1/cues/{i}",
                                       status=200 if i % 2 else 404,
                                       request_id=f"req-{i:04d}"))
        db.session.commit()
    pattern = r"<code>(req-\d{4})</code>"
    assert len(set(_follow(operator.client, "/console/audit", pattern,
                           principal="billing-backend"))) == 60
    assert _follow(operator.client, "/console/audit", pattern, request_id="req-0007") == \
        ["req-0007"]
    not_found = _follow(operator.client, "/console/audit", pattern, status="404",
                        user=seed.user_id)
    assert len(not_found) == 30
    assert _follow(operator.client, "/console/audit", pattern, path="/v1/cues/5") == \
        ["req-0005", "req-0050", "req-0051", "req-0052", "req-0053", "req-0054", "req-0055",
         "req-0056", "req-0057", "req-0058", "req-0059"]


def test_pages_follow_the_cue_primitive_flag(make_app):
    app = make_app(CONSOLE_ENABLED=True, CONSOLE_ADMINS=ADMINS, DISABLE_CUE_PRIMITIVE=True)
    client = app.test_client()
    sign_in(client, app)
    assert "/console/cues" not in _text(client.get("/console/"))
    assert client.get("/console/cues").status_code == 404
    assert client.get("/console/failures").status_code == 404


def test_seeding_twice_keeps_the_pages_apart(operator):
    other = seed_data(operator.app, operator.app.test_client())
    assert other.email in _text(operator.client.get("/console/users"))


@pytest.mark.parametrize("session_zone", [None, "Asia/Kolkata"])
def test_the_charts_hours_buckets_and_delays(console_app, seed, backend, session_zone):
    """Each execution lands in the UTC hour it was scheduled in (edges included and excluded
    exactly), whatever the database session's time zone; delays are start − scheduled."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    from app.console.queries import last_24_hours
    from app.extensions import db
    from app.scheduling.models import Execution

    if session_zone and backend != "postgresql":
        pytest.skip("SQLite has no session time zone")
    now = datetime(2026, 1, 10, 12, 30, tzinfo=UTC)  # far from the seeded executions
    start = datetime(2026, 1, 9, 13, 0, tzinfo=UTC)  # 24 whole hours ending after `now`
    rows = [  # (scheduled, status, delay in seconds or None)
        (start, "success", 2.0),
        (start + timedelta(minutes=10), "success", 4.0),
        (start + timedelta(hours=5, minutes=59, seconds=59), "failed", 30.0),
        (start + timedelta(hours=24) - timedelta(seconds=1), "missed", None),
        (start - timedelta(seconds=1), "success", 99.0),  # the hour before: not counted
        (start + timedelta(hours=24), "success", 99.0),  # the next hour: not counted
    ]
    with console_app.app_context():
        for scheduled, status, delay in rows:
            started = scheduled + timedelta(seconds=delay) if delay is not None else None
            db.session.add(Execution(cue_id=seed.cue_id, scheduled_for=scheduled, status=status,
                                     attempts=1 if started else 0, started_at=started,
                                     created_at=scheduled, updated_at=scheduled))
        db.session.commit()
        if session_zone:
            db.session.execute(text(f"SET TIME ZONE '{session_zone}'"))
        buckets, latest = last_24_hours(now)
        db.session.rollback()
        if session_zone:
            db.session.execute(text("RESET TIME ZONE"))
            db.session.commit()
    assert [b.start for b in buckets] == [start + timedelta(hours=i) for i in range(24)]
    nonempty = {i: b for i, b in enumerate(buckets) if b.total}
    assert set(nonempty) == {0, 5, 23}
    assert nonempty[0].counts == {"success": 2} and nonempty[0].started == 2
    close = {"abs": 0.01}  # SQLite's julianday arithmetic is good to ~10 µs
    assert nonempty[0].delay_avg == pytest.approx(3.0, **close)
    assert nonempty[0].delay_max == pytest.approx(4.0, **close)
    assert nonempty[5].counts == {"failed": 1}
    assert nonempty[5].delay_max == pytest.approx(30.0, **close)
    assert nonempty[23].counts == {"missed": 1} and nonempty[23].delay_max is None
    assert latest == start + timedelta(hours=5, minutes=59, seconds=59, milliseconds=30000)
