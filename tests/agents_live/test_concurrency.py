"""Races over real HTTP, on SQLite and PostgreSQL: concurrent default flips leave exactly one
default, two reconcilers of one daemon leave one of their two views, two daemons attaching
one label give one 201 and one 409 — and nothing is ever a 5xx."""

from __future__ import annotations

import threading
import httpx

from tests.agents_live.conftest import Owner, daemon, ulid

ROUNDS = 6


def _race(server, owner, calls: list[tuple[str, str, dict]]) -> list[httpx.Response]:
    """Send the ``(method, path, options)`` requests at the same instant, one thread and
    connection each; their responses, in order."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(index: int) -> None:
        with httpx.Client(base_url=server.url, headers=owner.headers, timeout=60,
                          trust_env=False) as http:
            barrier.wait()
            try:
                method, path, options = calls[index]
                results[index] = http.request(method, path, **options)
            except Exception as exc:  # noqa: BLE001 - reported by the caller's assertions
                results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        assert isinstance(result, httpx.Response), result
        assert result.status_code < 500, result.text
    return results


def _active_defaults(app, agent_id) -> list[str]:
    from sqlalchemy import select

    from app.agents_live.models import LiveSession
    from app.extensions import db

    with app.app_context():
        return list(db.session.execute(
            select(LiveSession.label).where(LiveSession.agent_id == agent_id,
                                            LiveSession.detached_at.is_(None),
                                            LiveSession.is_default.is_(True))).scalars())


def _transports(app, agent_id) -> dict[str, str]:
    from sqlalchemy import select

    from app.agents_live.models import LiveSession
    from app.extensions import db

    with app.app_context():
        return dict(db.session.execute(
            select(LiveSession.label, LiveSession.transport)
            .where(LiveSession.agent_id == agent_id, LiveSession.detached_at.is_(None))).all())


def test_concurrent_default_flips_leave_exactly_one_default(app, live_server):
    owner = Owner(app.test_client())
    labels = ["a", "b", "c", "d"]
    for label in labels:
        assert owner.register(label, is_default=label == "a").status_code == 201
    server = live_server(app)
    url = owner.sessions_url()
    for _round in range(ROUNDS):
        responses = _race(server, owner, [
            ("PATCH", f"{url}/{label}", {"json": {"is_default": True}}) for label in labels])
        assert [r.status_code for r in responses] == [200] * len(labels)
        defaults = _active_defaults(app, owner.agent_id)
        assert len(defaults) == 1, defaults
        assert [s["label"] for s in owner.sessions() if s["is_default"]] == defaults


def test_flip_racing_a_default_registration(app, live_server):
    owner = Owner(app.test_client())
    owner.register("a", is_default=True)
    owner.register("b")
    server = live_server(app)
    url = owner.sessions_url()
    for round_ in range(ROUNDS):
        flip, register = _race(server, owner, [
            ("PATCH", f"{url}/{'b' if round_ % 2 == 0 else 'a'}", {"json": {"is_default": True}}),
            ("POST", url, {"json": {"label": f"new{round_}", "cue_id": ulid(), "task_name": "t",
                                    "is_default": True}})])
        assert flip.status_code == 200
        assert register.status_code in (201, 409)
        if register.status_code == 409:
            assert register.json()["error"]["code"] == "live_session_conflict"
        assert len(_active_defaults(app, owner.agent_id)) == 1
        # Put the default back on a or b for the next round.
        owner.client.patch(f"{url}/a", headers=owner.headers, json={"is_default": True})


def test_two_reconcilers_of_one_daemon_leave_one_of_their_views(app, live_server):
    owner = Owner(app.test_client())
    the_daemon = daemon()
    tokens = {f"s{i}": ulid() for i in range(6)}
    for label, token in tokens.items():
        assert owner.attach(the_daemon, label, token).status_code == 201
    server = live_server(app)
    headers = {"X-CueAPI-Daemon-Id": the_daemon}

    def view(labels):
        return {"daemon_id": the_daemon, "reconciled_at": "2026-05-12T09:00:00Z",
                "attachments": [{"label": label, "task_name": "t",
                                 "ipc_session_token": tokens[label],
                                 "attached_at": "2026-05-12T09:00:00Z"} for label in labels]}

    views = [({"s0", "s1", "s2"}, {"s3", "s4", "s5"}), ({"s0", "s2", "s4"}, {"s1", "s3"}),
             (set(), set(tokens)), ({"s5"}, {"s0", "s5"})]
    ipc_before = set(tokens)
    for round_ in range(ROUNDS):
        first, second = views[round_ % len(views)]
        responses = _race(server, owner, [
            ("POST", "/v1/agents/reconcile-attachments", {"headers": headers,
                                                          "json": view(labels)})
            for labels in (first, second)])
        assert [r.status_code for r in responses] == [200, 200]
        for response, labels in zip(responses, (first, second), strict=True):
            assert response.json()["upserted_count"] == len(labels)
        ipc = {label for label, t in _transports(app, owner.agent_id).items() if t == "ipc"}
        assert ipc in (first, second), (ipc, first, second)
        # The counts are those of the two reconciles run one after the other.
        earlier = 0 if ipc == second else 1
        views_in_order = [(first, second)[earlier], (first, second)[1 - earlier]]
        assert responses[earlier].json()["downgraded_count"] == len(ipc_before -
                                                                     views_in_order[0])
        assert responses[1 - earlier].json()["downgraded_count"] == len(views_in_order[0] -
                                                                         views_in_order[1])
        ipc_before = ipc


def test_two_daemons_attaching_one_label(app, live_server):
    owner = Owner(app.test_client())
    server = live_server(app)
    url = f"/v1/agents/{owner.agent_id}/attachments"
    for round_ in range(ROUNDS):
        daemons, tokens = [daemon(), daemon()], [ulid(), ulid()]
        label = "main" if round_ == 0 else f"label-{round_}"
        responses = _race(server, owner, [
            ("POST", url, {"headers": {"X-CueAPI-Daemon-Id": daemons[i]},
                           "json": {"label": label, "task_name": "t",
                                    "ipc_session_token": tokens[i]}})
            for i in range(2)])
        statuses = [r.status_code for r in responses]
        assert sorted(statuses) == [201, 409], statuses
        winner = statuses.index(201)
        conflict = responses[1 - winner].json()["error"]
        assert conflict["code"] == "attachment_exists"
        assert conflict["existing_daemon_id"] == daemons[winner]
        assert conflict["existing_token"] == tokens[winner]
        active = [s for s in owner.sessions() if s["label"] == label]
        assert [s["cue_id"] for s in active] == [tokens[winner]]
    assert len(_active_defaults(app, owner.agent_id)) == 1  # "main"


def test_one_daemon_racing_itself_supersedes_cleanly(app, live_server):
    owner = Owner(app.test_client())
    server = live_server(app)
    url = f"/v1/agents/{owner.agent_id}/attachments"
    the_daemon = daemon()
    for round_ in range(ROUNDS):
        tokens = [ulid(), ulid()]
        label = f"self-{round_}"
        responses = _race(server, owner, [
            ("POST", url, {"headers": {"X-CueAPI-Daemon-Id": the_daemon},
                           "json": {"label": label, "task_name": "t",
                                    "ipc_session_token": tokens[i]}})
            for i in range(2)])
        assert [r.status_code for r in responses] == [201, 201]
        supersedes = [r.json()["supersedes_token"] for r in responses]
        # One created the session, the other replaced it.
        assert supersedes.count(None) == 1, supersedes
        later = 0 if supersedes[0] is not None else 1
        assert supersedes[later] == tokens[1 - later]
        active = [s for s in owner.sessions() if s["label"] == label]
        assert [s["cue_id"] for s in active] == [tokens[later]]


def test_registration_racing_an_attach(app, live_server):
    owner = Owner(app.test_client())
    server = live_server(app)
    for round_ in range(ROUNDS):
        label, cue_id = f"race-{round_}", f"cue_race{round_:08d}"
        register, attach = _race(server, owner, [
            ("POST", owner.sessions_url(), {"json": {"label": label, "cue_id": cue_id,
                                                     "task_name": "t"}}),
            ("POST", f"/v1/agents/{owner.agent_id}/attachments", {
                "headers": {"X-CueAPI-Daemon-Id": daemon()},
                "json": {"label": label, "task_name": "t", "ipc_session_token": ulid()}})])
        assert attach.status_code == 201
        assert register.status_code in (201, 409)
        active = [s for s in owner.sessions() if s["label"] == label]
        assert len(active) == 1
        if register.status_code == 201:  # registered first, then taken over by the daemon
            assert active[0]["cue_id"] == cue_id
        else:
            assert register.json()["error"]["code"] == "live_session_conflict"
        assert _transports(app, owner.agent_id)[label] == "ipc"
