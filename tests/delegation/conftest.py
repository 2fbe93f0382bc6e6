"""Fixtures for delegation tests: principals minted through the service layer, user upserts."""

from __future__ import annotations

import uuid

import pytest

from app.auth.audit import flush_audit
from app.auth.principals import create_principal
from tests.helpers import SERVICE_TOKEN, service_headers


@pytest.fixture
def app(make_app):
    """Delegation on, with the env token and the default (no) per-principal limit."""
    return make_app(EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=SERVICE_TOKEN)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def principal(app):
    """``principal(name, owner=None, scopes=None)`` → the new principal's ``svc_`` token."""

    def _make(name: str, owner: str | None = None, scopes=None) -> str:
        with app.app_context():
            return create_principal(name, owner=owner, scopes=scopes).token

    return _make


def upsert(client, token=SERVICE_TOKEN, user_id=None, style="bearer", **fields):
    """PUT one user with ``token``; returns the response."""
    user_id = user_id or uuid.uuid4()
    body = {"email": f"{str(user_id)[:8]}@example.com", "slug": f"u-{str(user_id)[:8]}",
            **fields}
    return client.put(f"/v1/internal/users/{user_id}", json=body,
                      headers=service_headers(token=token, style=style))


def new_user(client, token=SERVICE_TOKEN, **fields) -> str:
    """Upsert a fresh user and return its id (asserting success)."""
    response = upsert(client, token, **fields)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["id"]


def me(client, token, user_id, style="bearer"):
    return client.get("/v1/auth/me", headers=service_headers(user_id, token=token, style=style))


def audit_rows(app):
    """Flush the buffer and return every audit record, oldest first."""
    from app.auth.models import AuditRecord
    from app.extensions import db

    flush_audit(app)
    with app.app_context():
        rows = db.session.scalars(db.select(AuditRecord).order_by(AuditRecord.at)).all()
        db.session.expunge_all()
        return rows
