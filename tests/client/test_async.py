"""``AsyncClient`` against the real app: same headers, errors, retries and views as ``Client``."""

from __future__ import annotations

import asyncio
import uuid

import cueline
import pytest
from cueline import AsyncClient, ConflictError, NotFoundError, RateLimitError

from tests.helpers import SERVICE_TOKEN


def test_async_delegation_views_and_errors(delegation_app, served):
    server = served(delegation_app)
    ids = [uuid.uuid4(), uuid.uuid4()]

    async def scenario():
        async with AsyncClient(SERVICE_TOKEN, base_url=server.url, service=True) as service:
            for n, user_id in enumerate(ids):
                created = await service.internal_users.upsert(
                    user_id, email=f"as{n}@example.com", slug=f"as{n}")
                assert created["created"] is True
            views = [service.as_user(i) for i in ids]
            assert all(v._http is service._http for v in views)
            emails = await asyncio.gather(*(v.auth.me() for v in views))
            assert [e["email"] for e in emails] == ["as0@example.com", "as1@example.com"]
            with pytest.raises(ConflictError):
                await service.internal_users.upsert(uuid.uuid4(), email="as0@example.com",
                                                    slug="as9")
            with pytest.raises(NotFoundError) as info:
                await service.as_user(uuid.uuid4()).auth.me()
            return info.value

    error = asyncio.run(scenario())
    assert error.code == "user_not_found"
    me_calls = server.wire.to("/v1/auth/me")
    assert {e.headers["x-on-behalf-of"] for e in me_calls} >= {str(i) for i in ids}
    assert all(e.headers["authorization"] == f"Bearer {SERVICE_TOKEN}" for e in me_calls)


def test_async_retry_honours_retry_after(app, served):
    server = served(app)
    key = cueline.register("async-retry@example.com", base_url=server.url)["api_key"]
    server.faults.fail("/v1/auth/me", 429, "rate_limit_exceeded", count=1,
                       headers={"Retry-After": "3"})
    sleeps = []

    async def fake_sleep(seconds):
        sleeps.append(seconds)

    async def scenario():
        async with AsyncClient(key, base_url=server.url) as client:
            client._sleep = fake_sleep
            me = await client.auth.me()
            server.faults.fail("/v1/auth/me", 429, "rate_limit_exceeded", count=None,
                               headers={"Retry-After": "3"})
            client._settings.max_retries = 1
            with pytest.raises(RateLimitError):
                await client.auth.me()
            return me

    assert asyncio.run(scenario())["email"] == "async-retry@example.com"
    assert sleeps == [3.0, 3.0]
    assert [e.status for e in server.wire.to("/v1/auth/me")] == [429, 200, 429, 429]
