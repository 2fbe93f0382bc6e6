"""Fixtures for event tests: users with agents (messaging's ``Party``) and event reads."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.messaging.conftest import Party
from tests.messaging.test_push import Receiver


@pytest.fixture
def party(client):
    """``party()`` registers a new user on the test client."""
    return lambda email=None: Party(client, email)


@pytest.fixture
def receivers():
    """``receivers(statuses=…, delay=…)`` → a loopback webhook receiver (messaging's)."""
    made = []

    def _make(**kwargs):
        receiver = Receiver(**kwargs)
        made.append(receiver)
        return receiver

    yield _make
    for receiver in made:
        receiver.close()


@pytest.fixture
def alice(party):
    return party()


@pytest.fixture
def pair(alice):
    """Two agents of alice: (sender, recipient)."""
    return alice.agent("Sender"), alice.agent("Recipient")


def stored_events(app, **filters):
    """Every event row (optionally filtered by column values), oldest first."""
    from app.events.models import Event
    from app.extensions import db

    with app.app_context():
        query = select(Event).order_by(Event.id)
        for name, value in filters.items():
            query = query.where(getattr(Event, name) == value)
        rows = list(db.session.execute(query).scalars())
        db.session.remove()
        return rows


def subscribe(party, agent_id, **fields):
    body = {"event_type": "message.delivered", "delivery_target": "pull", **fields}
    return party.client.post(f"/v1/agents/{agent_id}/subscriptions", headers=party.headers,
                             json=body)
