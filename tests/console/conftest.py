"""Fixtures for the operator console: an app with the console on, signed-in operators, and
seeded data built through the same services and endpoints the API uses."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest

from tests.helpers import SERVICE_TOKEN, key_headers, register

ADMIN = "ops@example.com"
OTHER_ADMIN = "second@example.com"
ADMINS = f"{ADMIN}, Second@Example.com"
PUBLIC_URL = "https://192.0.2.10/hook"  # TEST-NET-1 literal: never resolved, never routed
# Directories the browser suite wrote screenshots to this run (for the terminal summary).
SCREENSHOTS = pytest.StashKey[set]()
_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


def csrf_of(response) -> str:
    """The CSRF token in a console page's forms."""
    match = _CSRF.search(response.get_data(as_text=True))
    assert match, response.get_data(as_text=True)[:500]
    return match.group(1)


def issue_link(app, email: str = ADMIN) -> str:
    """A one-time sign-in token, as ``flask console login`` makes it."""
    from app.console.auth import issue_login_link

    with app.app_context():
        return issue_login_link(email, app.config["CONSOLE_ADMINS"], "cli")


def sign_in(client, app, email: str = ADMIN) -> str:
    """Sign ``client`` in through the link pages; return the session's CSRF token."""
    token = issue_link(app, email)
    confirm = client.get(f"/console/login/link?token={token}")
    assert confirm.status_code == 200
    response = client.post("/console/login/link",
                           data={"token": token, "csrf_token": csrf_of(confirm)})
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    assert response.headers["Location"].endswith("/console/")
    return csrf_of(client.get("/console/"))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say where the browser suite left its screenshots."""
    for path in sorted(config.stash.get(SCREENSHOTS, ())):
        terminalreporter.write_line(f"console screenshots: {path}")


@pytest.fixture
def console_app(make_app):
    """The console on, delegation on (so service principals can be tried against it)."""
    return make_app(CONSOLE_ENABLED=True, CONSOLE_ADMINS=ADMINS, EXTERNAL_AUTH_BACKEND=True,
                    INTERNAL_AUTH_TOKEN=SERVICE_TOKEN)


@dataclass
class Operator:
    """A signed-in operator's browser: its client and the CSRF token of its session."""

    app: object
    client: object
    csrf: str

    def post(self, path: str, **data):
        return self.client.post(path, data={"csrf_token": self.csrf, **data})


@pytest.fixture
def operator(console_app) -> Operator:
    client = console_app.test_client()
    return Operator(console_app, client, sign_in(client, console_app))


@dataclass
class Seed:
    """Data for the pages: a user with a key, a cue with executions, a principal, messages."""

    user_id: str
    email: str
    api_key: str
    cue_id: str
    principal: str
    principal_key: str
    agent_id: str
    message_subject: str
    failure_error: str


def seed_data(app, client) -> Seed:
    """Create one of everything the console shows, through the API and the services."""
    email = f"alice-{uuid.uuid4().hex[:6]}@example.com"
    api_key, _ = register(client, email)
    headers = key_headers(api_key)
    user_id = client.get("/v1/auth/me", headers=headers).get_json()["id"]
    cue = client.post("/v1/cues", headers=headers, json={
        "name": "nightly-report", "schedule": {"type": "recurring", "cron": "0 9 * * *"},
        "callback": {"url": PUBLIC_URL}, "payload": {"task": "report"}})
    assert cue.status_code == 201, cue.get_json()
    cue_id = cue.get_json()["id"]
    agent = client.post("/v1/agents", headers=headers, json={"display_name": "Planner"})
    assert agent.status_code == 201, agent.get_json()
    agent_id = agent.get_json()["id"]
    sent = client.post("/v1/messages", headers={**headers, "X-Cueapi-From-Agent": agent_id},
                       json={"to": agent_id, "body": "hello", "subject": "Quarterly numbers"})
    assert sent.status_code == 201, sent.get_json()
    from app.auth.principals import create_principal
    from app.db import utcnow
    from app.extensions import db
    from app.scheduling.models import Execution

    with app.app_context():
        new = create_principal("billing-backend")
        now = utcnow()
        error = "HTTP 502 from receiver"
        for hours, status, code in ((3, "success", 200), (2, "failed", 502), (1, "missed", None)):
            scheduled = now - timedelta(hours=hours)
            db.session.add(Execution(
                cue_id=cue_id, scheduled_for=scheduled, status=status, attempts=1 if code else 0,
                http_status=code, started_at=scheduled + timedelta(seconds=2) if code else None,
                error_message=error if status == "failed" else None, created_at=scheduled,
                updated_at=scheduled))
        db.session.commit()
        principal_name, principal_key = new.principal.name, new.token
    return Seed(user_id=user_id, email=email, api_key=api_key, cue_id=cue_id,
                principal=principal_name, principal_key=principal_key, agent_id=agent_id,
                message_subject="Quarterly numbers", failure_error="HTTP 502 from receiver")


@pytest.fixture
def seed(console_app) -> Seed:
    return seed_data(console_app, console_app.test_client())


def audit_rows(app, **filters):
    """The audit records matching ``filters`` (column=value), newest first."""
    from sqlalchemy import select

    from app.auth.audit import flush_audit
    from app.auth.models import AuditRecord
    from app.extensions import db

    with app.app_context():
        flush_audit()
        query = select(AuditRecord).order_by(AuditRecord.at.desc())
        for name, value in filters.items():
            query = query.where(getattr(AuditRecord, name) == value)
        rows = list(db.session.scalars(query))
        db.session.expunge_all()
        return rows


def seed_showcase(app, client) -> Seed:
    """:func:`seed_data` plus what makes the pages look like a working instance: more users
    (one deactivated), a second cue, a day of executions with outcomes and start delays, and
    a service principal's requests in the audit trail."""
    import random

    from app.auth.models import AuditRecord
    from app.db import utcnow
    from app.extensions import db
    from app.scheduling.models import Execution
    from app.users.services import deactivate_user

    seed = seed_data(app, client)
    others = []
    for name in ("bob", "carol", "dave", "erin"):
        key, _ = register(client, f"{name}@example.com")
        others.append(client.get("/v1/auth/me", headers=key_headers(key)).get_json()["id"])
    headers = key_headers(seed.api_key)
    hourly = client.post("/v1/cues", headers=headers, json={
        "name": "hourly-sync", "schedule": {"type": "recurring", "cron": "*/5 * * * *"},
        "callback": {"url": PUBLIC_URL}})
    assert hourly.status_code == 201, hourly.get_json()
    hourly_id = hourly.get_json()["id"]
    rng = random.Random(19)
    with app.app_context():
        deactivate_user(uuid.UUID(others[-1]))
        now = utcnow().replace(second=0, microsecond=0)
        for step in range(1, 24 * 12):  # every five minutes for a day
            scheduled = now - timedelta(minutes=5 * step)
            roll = rng.random()
            status, code, error = "success", 200, None
            if roll < 0.06:
                status, code, error = "failed", 503, "HTTP 503 from receiver after 3 attempts"
            elif roll < 0.09:
                status, code = "missed", None
            elif roll < 0.13:
                status, code = "retrying", 500
            delay = rng.uniform(0.1, 1.5) if step % 37 else rng.uniform(20, 45)
            started = scheduled + timedelta(seconds=delay) if code else None
            db.session.add(Execution(
                cue_id=hourly_id, scheduled_for=scheduled, status=status,
                attempts=3 if status == "failed" else (1 if code else 0), http_status=code,
                error_message=error, started_at=started, last_attempt_at=started,
                delivered_at=started if status == "success" else None,
                created_at=scheduled, updated_at=scheduled))
        for i in range(12):
            db.session.add(AuditRecord(
                at=now - timedelta(minutes=7 * i), principal="billing-backend", owner=None,
                key_id=str(uuid.uuid4()), user_id=uuid.UUID(seed.user_id),
                method="PUT" if i % 3 == 0 else "GET",
                path=f"/v1/internal/users/{seed.user_id}" if i % 3 == 0 else "/v1/cues",
                status=200 if i % 5 else 404, request_id=str(uuid.uuid4())))
        db.session.commit()
    return seed
