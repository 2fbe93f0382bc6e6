"""Internal user mirroring with a service client, against the real internal endpoints."""

from __future__ import annotations

import uuid

import pytest
from cueline import APIError, Client, ConfigurationError

from tests.client.conftest import require_routes
from tests.helpers import SERVICE_TOKEN


def test_upsert_creates_then_updates_and_sends_no_on_behalf_of(delegation_app, served):
    server = served(delegation_app)
    service = Client(SERVICE_TOKEN, base_url=server.url, service=True)
    user_id = uuid.uuid4()
    created = service.internal_users.upsert(user_id, email="ann@example.com", slug="ann",
                                            plan="pro", active_cue_limit=25)
    assert created["created"] is True and created["id"] == str(user_id)
    assert (created["plan"], created["active_cue_limit"]) == ("pro", 25)
    # An as_user view still sends the service credential alone to internal endpoints.
    updated = service.as_user(user_id).internal_users.upsert(
        str(user_id), email="ann@example.com", slug="ann-2")
    assert updated["created"] is False and updated["slug"] == "ann-2"
    assert updated["active_cue_limit"] == 25  # omitted limits are kept
    for exchange in server.wire.to("/v1/internal/users"):
        assert exchange.headers["authorization"] == f"Bearer {SERVICE_TOKEN}"
        assert "x-on-behalf-of" not in exchange.headers
    # The mirrored user is now usable by delegation.
    assert service.as_user(user_id).auth.me()["slug"] == "ann-2"


def test_internal_endpoints_need_a_service_client(delegation_app, served):
    server = served(delegation_app)
    with pytest.raises(ConfigurationError, match="service credential"):
        Client("cue_sk_" + "1" * 32, base_url=server.url).internal_users.upsert(
            uuid.uuid4(), email="a@example.com", slug="a")
    with pytest.raises(ConfigurationError, match="UUID"):
        Client(SERVICE_TOKEN, base_url=server.url, service=True).internal_users.upsert(
            "42", email="a@example.com", slug="a")
    assert server.wire.exchanges == []


def test_bulk_sync(delegation_app, served):
    require_routes(delegation_app, ("PUT", "/v1/internal/users"))
    server = served(delegation_app)
    service = Client(SERVICE_TOKEN, base_url=server.url, service=True)
    ids = [uuid.uuid4(), uuid.uuid4()]
    service.internal_users.sync([{"id": i, "email": f"s{n}@example.com", "slug": f"s{n}"}
                                 for n, i in enumerate(ids)])
    sync_call = [e for e in server.wire.exchanges if e.path == "/v1/internal/users"]
    assert [e.method for e in sync_call] == ["PUT"]
    assert "x-on-behalf-of" not in sync_call[0].headers
    assert sync_call[0].headers["authorization"] == f"Bearer {SERVICE_TOKEN}"
    assert service.as_user(ids[1]).auth.me()["email"] == "s1@example.com"


def test_get_and_deactivate(delegation_app, served):
    require_routes(delegation_app, ("GET", "/v1/internal/users/<user_id>"),
                   ("DELETE", "/v1/internal/users/<user_id>"))
    server = served(delegation_app)
    service = Client(SERVICE_TOKEN, base_url=server.url, service=True)
    user_id = uuid.uuid4()
    service.internal_users.upsert(user_id, email="gone@example.com", slug="gone")
    assert service.internal_users.get(user_id)["email"] == "gone@example.com"
    service.internal_users.deactivate(user_id)
    deactivate = [e for e in server.wire.exchanges if e.method == "DELETE"]
    assert deactivate[0].path == f"/v1/internal/users/{user_id}" and deactivate[0].status == 200
    assert "x-on-behalf-of" not in deactivate[0].headers
    with pytest.raises(APIError) as info:
        service.as_user(user_id).auth.me()
    assert info.value.status in (401, 403, 404)
    assert server.wire.last.headers["x-on-behalf-of"] == str(user_id)


def test_audit_lists_delegated_requests(delegation_app, served):
    require_routes(delegation_app, ("GET", "/v1/internal/audit"))
    server = served(delegation_app)
    service = Client(SERVICE_TOKEN, base_url=server.url, service=True)
    user_id = uuid.uuid4()
    service.internal_users.upsert(user_id, email="aud@example.com", slug="aud")
    me_request = service.as_user(user_id).auth.me()
    assert me_request["id"] == str(user_id)
    page = service.audit.list(user_id=user_id, limit=10)
    assert set(page) >= {"records", "total", "limit", "offset"} and page["limit"] == 10
    paths = {(r["method"], r["path"], r["status"]) for r in page["records"]}
    assert ("GET", "/v1/auth/me", 200) in paths
    assert all(r["user_id"] in (str(user_id), None) for r in page["records"])
    assert server.wire.last.query.startswith(f"user_id={user_id}")
    assert "x-on-behalf-of" not in server.wire.last.headers
