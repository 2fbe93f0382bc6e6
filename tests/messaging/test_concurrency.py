"""Concurrent inbox polls over real HTTP: every message is handed out exactly once."""

from __future__ import annotations

import threading

import httpx

from tests.messaging.conftest import Party

MESSAGES = 120
POLLERS = 6


def test_concurrent_polls_never_deliver_one_message_twice(make_app, live_server):
    app = make_app(DISABLE_QUOTA_ENFORCEMENT=True)
    client = app.test_client()
    alice = Party(client)
    sender, inbox_agent = alice.agent("S"), alice.agent("R")
    sent = {alice.send(sender["id"], inbox_agent["id"], body=str(i)).get_json()["id"]
            for i in range(MESSAGES)}
    assert len(sent) == MESSAGES
    server = live_server(app)
    barrier = threading.Barrier(POLLERS)
    received: list[list[str]] = [[] for _ in range(POLLERS)]
    errors: list[str] = []

    def poll(index: int) -> None:
        try:
            _poll(index)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(repr(exc))

    def _poll(index: int) -> None:
        with httpx.Client(base_url=server.url, headers=alice.headers, timeout=60,
                          trust_env=False) as http:
            barrier.wait()
            for _ in range(200):
                r = http.get(f"/v1/agents/{inbox_agent['id']}/inbox",
                             params={"state": "queued", "limit": 7})
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                    return
                page = r.json()["messages"]
                for message in page:
                    if message["delivery_state"] != "delivered":
                        errors.append(f"state {message['delivery_state']}")
                    received[index].append(message["id"])
                if not page:
                    # A poll that lost every row to another poller shows nothing; stop only
                    # when nothing is left to take.
                    left = http.get(f"/v1/agents/{inbox_agent['id']}/inbox",
                                    params={"state": "queued", "count_only": "true"})
                    if left.json()["count"] == 0:
                        return

    threads = [threading.Thread(target=poll, args=(i,)) for i in range(POLLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:5]
    flat = [mid for ids in received for mid in ids]
    assert len(flat) == len(set(flat)), "a message was handed out twice"
    missing = sent - set(flat)
    states = {mid: client.get(f"/v1/messages/{mid}", headers=alice.headers).get_json()[
        "delivery_state"] for mid in missing}
    assert not missing, f"never handed out: {states} {[len(r) for r in received]}"
    assert sum(1 for ids in received if ids) >= 2, "the polls did not overlap"
    everything = client.get(f"/v1/agents/{inbox_agent['id']}/inbox?limit=200",
                            headers=alice.headers).get_json()
    assert everything["total"] == MESSAGES
    assert all(m["delivery_state"] == "delivered" for m in everything["messages"])
