"""API resources.  Each method describes one HTTP call and hands it to the owning client.

Methods return the decoded JSON (dicts and lists, exactly as the server sent them) — or, on an
:class:`~cueline.AsyncClient`, an awaitable of it.  ``None`` stands for an empty ``204``.
"""

from __future__ import annotations

from typing import Any

from cueline.resources.account import Auth, System
from cueline.resources.internal import Audit, InternalUsers
from cueline.resources.messaging import Agents, Messages
from cueline.resources.scheduling import Cues, Executions, Usage, Workers

__all__ = ["Agents", "Audit", "Auth", "Cues", "Executions", "InternalUsers", "Messages",
           "System", "Usage", "Workers", "attach_resources"]


def attach_resources(client: Any) -> None:
    """Give ``client`` one instance of every resource bound to it."""
    client.auth = Auth(client)
    client.cues = Cues(client)
    client.executions = Executions(client)
    client.workers = Workers(client)
    client.usage = Usage(client)
    client.agents = Agents(client)
    client.messages = Messages(client)
    client.internal_users = InternalUsers(client)
    client.audit = Audit(client)
    client.system = System(client)
