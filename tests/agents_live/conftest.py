"""Fixtures for live sessions and IPC attachments: a user with an agent, tokens, daemons."""

from __future__ import annotations

import secrets
import uuid

import pytest

from tests.messaging.conftest import Party

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid() -> str:
    """A random 26-character token in Crockford base32 (the shape of a daemon's ULID)."""
    return "".join(secrets.choice(CROCKFORD) for _ in range(26))


def daemon() -> str:
    return str(uuid.uuid4())


class Owner(Party):
    """A user with one agent, and shortcuts for the live-session and attachment routes."""

    def __init__(self, client, email=None):
        super().__init__(client, email)
        self.agent_id = self.agent("Monitor")["id"]

    def sessions_url(self, agent=None):
        return f"/v1/agents/{agent or self.agent_id}/live-sessions"

    def register(self, label="main", cue_id=None, task_name="task", agent=None, **fields):
        return self.client.post(self.sessions_url(agent), headers=self.headers, json={
            "label": label, "cue_id": cue_id or f"cue_{secrets.token_hex(6)}",
            "task_name": task_name, **fields})

    def sessions(self, agent=None, **params):
        response = self.client.get(self.sessions_url(agent), headers=self.headers,
                                   query_string=params)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def attach(self, daemon_id, label="main", token=None, task_name="task", agent=None,
               **fields):
        return self.client.post(
            f"/v1/agents/{agent or self.agent_id}/attachments",
            headers={**self.headers, "X-CueAPI-Daemon-Id": daemon_id},
            json={"label": label, "task_name": task_name,
                  "ipc_session_token": ulid() if token is None else token, **fields})

    def detach_attachment(self, daemon_id, token, agent=None):
        return self.client.delete(f"/v1/agents/{agent or self.agent_id}/attachments/{token}",
                                  headers={**self.headers, "X-CueAPI-Daemon-Id": daemon_id})

    def reconcile(self, header_daemon, attachments, body_daemon=None, **fields):
        return self.client.post(
            "/v1/agents/reconcile-attachments",
            headers={**self.headers, "X-CueAPI-Daemon-Id": header_daemon},
            json={"daemon_id": body_daemon or header_daemon,
                  "reconciled_at": "2026-05-12T09:00:00Z", "attachments": attachments,
                  **fields})


@pytest.fixture
def owner(client):
    return Owner(client)


@pytest.fixture
def stranger(client):
    return Owner(client)
