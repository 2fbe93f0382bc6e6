"""The worked example of docs/messaging.md ("Events and subscriptions"), request by request,
over real HTTP against a threaded server (so the long poll waits)."""

from __future__ import annotations

import threading
import time

import httpx

from app.events import waiting
from tests.messaging.conftest import Party


def test_events_worked_example(make_app, live_server):
    app = make_app(EVENTS_LONG_POLL_SECONDS=30)
    alice = Party(app.test_client())
    alice.agent("Planner", slug="planner")
    alice.agent("Executor", slug="executor")
    server = live_server(app)
    executor = f"executor@{alice.slug}"
    with httpx.Client(base_url=server.url, headers=alice.headers, timeout=60,
                      trust_env=False) as http:
        # curl -d sends a form content type; Cueline reads JSON from it like CueAPI does.
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        sub = http.post(f"/v1/agents/{executor}/subscriptions", headers=form,
                        content='{"event_type": "message.delivered", "delivery_target": '
                                '"pull", "inline_body": true}')
        assert sub.status_code == 201, sub.text
        assert sub.json()["inline_body"] is True and sub.json()["last_acked_event_id"] is None
        sent = http.post("/v1/messages", headers={**form, "X-Cueapi-From-Agent":
                                                  f"planner@{alice.slug}"},
                         content=f'{{"to": "{executor}", "body": "Run it"}}')
        assert sent.status_code == 201, sent.text
        page = http.get(f"/v1/agents/{executor}/events", params={"since": 0}).json()
        [event] = page["events"]
        assert event["event_type"] == "message.delivered"
        assert event["payload"]["body"] == "Run it"
        assert event["payload"]["message_id"] == sent.json()["id"]
        assert page["next_cursor"] == event["id"] and page["has_more"] is False
        results = []

        def long_poll():
            results.append(http.get(f"/v1/agents/{executor}/events",
                                    params={"since": page["next_cursor"], "wait": "long"}))

        poller = threading.Thread(target=long_poll)
        poller.start()
        with httpx.Client(base_url=server.url, headers=alice.headers, timeout=60,
                          trust_env=False) as other:
            end = time.monotonic() + 20
            while waiting.waiters.count == 0:
                assert time.monotonic() < end
                time.sleep(0.01)
            other.post("/v1/messages", headers={"X-Cueapi-From-Agent": f"planner@{alice.slug}"},
                       json={"to": executor, "body": "Next"})
        poller.join(40)
        [response] = results
        assert [e["payload"]["body"] for e in response.json()["events"]] == ["Next"]
