"""The official clients' event commands against a live server.

The published ``cueapi`` 0.2.0 and ``cueapi-sdk`` 0.1.3 on PyPI have no event commands; the
clients' source at version 0.2.0 does (``agents.subscriptions_*`` / ``events_pull`` in the SDK,
``cueapi subscriptions`` / ``cueapi events`` in the CLI).  Both install a top-level ``cueapi``
package, so each needs its own virtualenv holding a build that has them; point the suite at
it with ``CUELINE_CUEAPI_SDK_PYTHON`` (a python with that SDK) and ``CUELINE_CUEAPI_EVENTS_CLI``
(that ``cueapi`` executable).  Each test skips when its client is not configured.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.messaging.conftest import Party

SDK_PYTHON = os.environ.get("CUELINE_CUEAPI_SDK_PYTHON", "")
EVENTS_CLI = os.environ.get("CUELINE_CUEAPI_EVENTS_CLI", "")

SDK_SCRIPT = r"""
import json, sys
from cueapi import CueAPI
from cueapi.exceptions import CueAPIError

base, key, agent, sender = sys.argv[1:5]
client = CueAPI(key, base_url=base)
out = {}
out["create"] = client.agents.subscriptions_create(agent, event_type="message.delivered",
                                                    delivery_target="pull", inline_body=True)
try:
    client.agents.subscriptions_create(agent, event_type="message.delivered",
                                       delivery_target="pull")
except CueAPIError as exc:
    out["duplicate"] = [type(exc).__name__, str(exc)]
out["list"] = client.agents.subscriptions_list(agent)
sent = client.messages.send(to=agent, body="from the sdk", from_agent=sender)
out["sent"] = sent["id"]
out["pull"] = client.agents.events_pull(agent, limit=10)
out["pull_after"] = client.agents.events_pull(agent, since=out["pull"]["next_cursor"])
out["typed"] = client.agents.events_pull(agent, event_type="turn.pass")
out["delete"] = client.agents.subscriptions_delete(agent, out["create"]["id"])
out["list_after"] = client.agents.subscriptions_list(agent)
print(json.dumps(out))
"""


@pytest.mark.skipif(not (SDK_PYTHON and os.access(SDK_PYTHON, os.X_OK)),
                    reason="set CUELINE_CUEAPI_SDK_PYTHON to a python with cueapi-sdk 0.2.0")
def test_sdk_subscriptions_and_events_pull(make_app, live_server):
    app = make_app()
    alice = Party(app.test_client())
    sender, agent = alice.agent("S"), alice.agent("R")
    server = live_server(app)
    result = subprocess.run([SDK_PYTHON, "-c", SDK_SCRIPT, server.url, alice.key, agent["id"],
                             sender["id"]], capture_output=True, text=True, timeout=60,
                            env={"PATH": os.environ["PATH"]})
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["create"]["subscriber_agent_id"] == agent["id"]
    assert out["create"]["inline_body"] is True
    assert out["duplicate"][0] == "CueAPIError" and "already has an active" in out["duplicate"][1]
    assert [s["id"] for s in out["list"]["subscriptions"]] == [out["create"]["id"]]
    [event] = out["pull"]["events"]
    assert event["payload"]["message_id"] == out["sent"]
    assert event["payload"]["body"] == "from the sdk"
    assert out["pull"]["next_cursor"] == event["id"] and out["pull"]["has_more"] is False
    assert out["pull_after"]["events"] == [] and out["typed"]["events"] == []
    assert out["delete"] == {"detached": True}
    assert out["list_after"] == {"subscriptions": []}


@pytest.mark.skipif(not (EVENTS_CLI and os.access(EVENTS_CLI, os.X_OK)),
                    reason="set CUELINE_CUEAPI_EVENTS_CLI to a cueapi CLI with the events "
                           "commands")
def test_cli_subscriptions_and_events(make_app, live_server, tmp_path):
    app = make_app()
    alice = Party(app.test_client())
    sender, agent = alice.agent("S"), alice.agent("R")
    server = live_server(app)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "CUEAPI_API_BASE": f"{server.url}/v1",
           "CUEAPI_API_KEY": alice.key}

    def cli(*args, ok=True):
        done = subprocess.run([EVENTS_CLI, *args], capture_output=True, text=True, env=env,
                              timeout=60)
        assert (done.returncode == 0) is ok, done.stdout + done.stderr
        return done.stdout + done.stderr

    created = cli("subscriptions", "create", agent["id"], "--event-type", "message.delivered",
                  "--delivery-target", "pull", "--inline-body")
    assert "Subscription created:" in created, created
    [sub] = alice.client.get(f"/v1/agents/{agent['id']}/subscriptions",
                             headers=alice.headers).get_json()["subscriptions"]
    assert sub["id"] in created and sub["inline_body"] is True
    duplicate = cli("subscriptions", "create", agent["id"], "--event-type",
                    "message.delivered", "--delivery-target", "pull", ok=False)
    assert "HTTP 409" in duplicate  # (the CLI reads a hosted-era error shape, then this)
    listed = cli("subscriptions", "list", agent["id"])
    assert sub["id"] in listed and "message.delivered" in listed
    assert "No events." in cli("events", "list", agent["id"])
    alice.send(sender["id"], agent["id"], body="for the cli")
    alice.send(sender["id"], agent["id"], body="again")
    events = alice.client.get(f"/v1/agents/{agent['id']}/events",
                              headers=alice.headers).get_json()["events"]
    page = cli("events", "list", agent["id"], "--limit", "1")
    assert str(events[0]["id"]) in page and "message.delivered" in page
    assert f"Next cursor: {events[0]['id']}" in " ".join(page.split())
    rest = cli("events", "list", agent["id"], "--since", str(events[0]["id"]), "--event-type",
               "message.delivered")
    assert str(events[1]["id"]) in rest
    missing = cli("events", "list", "agt_000000000000", ok=False)
    assert "Agent not found" in missing
    deleted = cli("subscriptions", "delete", agent["id"], sub["id"])
    assert f"Subscription detached: {sub['id']}" in deleted
    assert "No active subscriptions." in cli("subscriptions", "list", agent["id"])
