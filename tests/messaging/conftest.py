"""Fixtures for messaging tests: users with agents, and a sender helper."""

from __future__ import annotations

import pytest

from tests.helpers import key_headers, register


class Party:
    """A registered user with an API key, for building requests."""

    def __init__(self, client, email=None):
        self.client = client
        self.key, _ = register(client, email)
        self.headers = key_headers(self.key)
        me = client.get("/v1/auth/me", headers=self.headers).get_json()
        self.id = me["id"]
        self.slug = me["slug"]

    def agent(self, display_name="Agent", **fields):
        response = self.client.post("/v1/agents", headers=self.headers,
                                    json={"display_name": display_name, **fields})
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def send(self, from_agent, to, body="hello", headers=None, **fields):
        return self.client.post(
            "/v1/messages",
            headers={**self.headers, "X-Cueapi-From-Agent": from_agent, **(headers or {})},
            json={"to": to, "body": body, **fields})


@pytest.fixture
def party(client):
    """``party()`` registers a new user on the test client."""
    return lambda email=None: Party(client, email)
