"""Agent endpoints (§10.1-10.2): create, list, roster, get, patch, delete, webhook secrets."""

from __future__ import annotations

import re

import pytest

from tests.helpers import error_of


@pytest.fixture
def alice(party):
    return party("alice@example.com")


def test_create_returns_agent_with_secret_only_when_webhook(alice, client, monkeypatch):
    plain = alice.agent("Planner Bot")
    assert re.fullmatch(r"agt_[a-z0-9]{12}", plain["id"])
    assert plain["slug"] == "planner-bot"
    assert plain["status"] == "online"
    assert plain["webhook_secret"] is None and plain["webhook_url"] is None
    assert plain["metadata"] == {} and plain["deleted_at"] is None
    assert plain["user_id"] == alice.id
    assert plain["created_at"].endswith("Z")

    monkeypatch.setattr("app.outbound.ssrf.resolve_addresses",
                        lambda host: [__import__("ipaddress").ip_address("93.184.216.34")])
    hooked = alice.agent("Hooked", webhook_url="https://hooks.example.com/in")
    assert re.fullmatch(r"whsec_[0-9a-f]{64}", hooked["webhook_secret"])
    got = client.get(f"/v1/agents/{hooked['id']}", headers=alice.headers).get_json()
    assert got["webhook_secret"] is None
    listed = client.get("/v1/agents", headers=alice.headers).get_json()
    assert all(a["webhook_secret"] is None for a in listed["agents"])


def test_slug_rules(alice, client):
    first = alice.agent("Worker", slug="worker")
    assert first["slug"] == "worker"
    dup = client.post("/v1/agents", headers=alice.headers,
                      json={"display_name": "Other", "slug": "worker"})
    assert dup.status_code == 409 and error_of(dup)["code"] == "slug_taken"
    derived = alice.agent("Worker")  # derived slug collides → suffix
    assert re.fullmatch(r"worker-[0-9a-f]{4}", derived["slug"])
    reserved = client.post("/v1/agents", headers=alice.headers,
                           json={"display_name": "x", "slug": "admin"})
    assert reserved.status_code == 400 and error_of(reserved)["code"] == "reserved_slug"
    derived_reserved = alice.agent("Admin")
    assert derived_reserved["slug"].startswith("admin-")
    fallback = alice.agent("!!!")
    assert fallback["slug"] == "agent"
    bad = client.post("/v1/agents", headers=alice.headers,
                      json={"display_name": "x", "slug": "Bad_Slug"})
    assert bad.status_code == 422 and error_of(bad)["code"] == "validation_error"


def test_unknown_keys_rejected(alice, client):
    response = client.post("/v1/agents", headers=alice.headers,
                           json={"display_name": "x", "parent_agent_id": "agt_x"})
    assert response.status_code == 422
    assert error_of(response)["details"][0]["field"] == "body.parent_agent_id"
    agent = alice.agent("y")
    patch = client.patch(f"/v1/agents/{agent['id']}", headers=alice.headers,
                         json={"slug": "new"})
    assert patch.status_code == 422


def test_create_requires_auth_before_validation(client):
    response = client.post("/v1/agents", json={"bogus": 1})
    assert response.status_code == 401


def test_webhook_url_ssrf_checked(alice, client):
    response = client.post("/v1/agents", headers=alice.headers,
                           json={"display_name": "x", "webhook_url": "https://127.0.0.1/hook"})
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_callback_url"


def test_addressing_by_slug_and_errors(alice, party, client):
    agent = alice.agent("Finder", slug="finder")
    by_slug = client.get(f"/v1/agents/finder@{alice.slug}", headers=alice.headers)
    assert by_slug.status_code == 200 and by_slug.get_json()["id"] == agent["id"]
    for bad in ("nope", "agt_short", "a@b@c", "UPPER@x"):
        response = client.get(f"/v1/agents/{bad}", headers=alice.headers)
        assert response.status_code == 400, bad
        assert error_of(response)["code"] == "invalid_agent_address"
    missing = client.get("/v1/agents/agt_000000000000", headers=alice.headers)
    assert missing.status_code == 404 and error_of(missing)["code"] == "agent_not_found"
    bob = party("bob@example.com")
    other = client.get(f"/v1/agents/{agent['id']}", headers=bob.headers)
    assert other.status_code == 404 and error_of(other)["code"] == "agent_not_found"


def test_list_filters_and_paging(alice, client):
    ids = [alice.agent(f"A{i}")["id"] for i in range(3)]
    client.patch(f"/v1/agents/{ids[0]}", headers=alice.headers, json={"status": "away"})
    client.delete(f"/v1/agents/{ids[1]}", headers=alice.headers)
    body = client.get("/v1/agents", headers=alice.headers).get_json()
    assert body["total"] == 2 and body["limit"] == 50 and body["offset"] == 0
    assert [a["id"] for a in body["agents"]] == [ids[2], ids[0]]  # newest first
    away = client.get("/v1/agents?status=away", headers=alice.headers).get_json()
    assert [a["id"] for a in away["agents"]] == [ids[0]]
    everything = client.get("/v1/agents?include_deleted=true&limit=1&offset=1",
                            headers=alice.headers).get_json()
    assert everything["total"] == 3 and len(everything["agents"]) == 1
    bad = client.get("/v1/agents?status=sleeping", headers=alice.headers)
    assert bad.status_code == 400 and error_of(bad)["code"] == "invalid_status"
    assert client.get("/v1/agents?limit=101", headers=alice.headers).status_code == 422
    assert client.get("/v1/agents?offset=-1", headers=alice.headers).status_code == 422


def test_patch_tri_state_webhook(alice, client, monkeypatch):
    import ipaddress

    monkeypatch.setattr("app.outbound.ssrf.resolve_addresses",
                        lambda host: [ipaddress.ip_address("93.184.216.34")])
    agent = alice.agent("Tri")
    url = f"/v1/agents/{agent['id']}"
    set_url = client.patch(url, headers=alice.headers,
                           json={"webhook_url": "https://hooks.example.com/a"})
    assert set_url.status_code == 200 and set_url.get_json()["webhook_secret"] is None
    secret = client.get(url + "/webhook-secret", headers=alice.headers).get_json()
    assert secret["webhook_secret"].startswith("whsec_")
    # omitted → unchanged (secret kept)
    client.patch(url, headers=alice.headers, json={"display_name": "Renamed"})
    again = client.get(url + "/webhook-secret", headers=alice.headers).get_json()
    assert again == secret
    changed = client.patch(url, headers=alice.headers,
                           json={"webhook_url": "https://hooks.example.com/b"}).get_json()
    assert changed["webhook_url"] == "https://hooks.example.com/b"
    kept = client.get(url + "/webhook-secret", headers=alice.headers).get_json()
    assert kept == secret  # a secret is minted only when none exists
    cleared = client.patch(url, headers=alice.headers, json={"webhook_url": None}).get_json()
    assert cleared["webhook_url"] is None and cleared["display_name"] == "Renamed"
    gone = client.get(url + "/webhook-secret", headers=alice.headers)
    assert gone.status_code == 404 and error_of(gone)["code"] == "no_webhook_secret"


def test_patch_metadata_replaces_and_status_validated(alice, client):
    agent = alice.agent("Meta", metadata={"a": 1, "b": 2})
    url = f"/v1/agents/{agent['id']}"
    body = client.patch(url, headers=alice.headers, json={"metadata": {"c": 3}}).get_json()
    assert body["metadata"] == {"c": 3}
    bad = client.patch(url, headers=alice.headers, json={"status": "asleep"})
    assert bad.status_code == 422


def test_delete_is_soft_and_frees_slug(alice, client):
    agent = alice.agent("Gone", slug="gone")
    url = f"/v1/agents/{agent['id']}"
    response = client.delete(url, headers=alice.headers)
    assert response.status_code == 204 and response.data == b""
    assert client.delete(url, headers=alice.headers).status_code == 404
    assert client.get(url, headers=alice.headers).status_code == 404
    assert client.patch(url, headers=alice.headers, json={"display_name": "x"}).status_code == 404
    deleted = client.get(url + "?include_deleted=true", headers=alice.headers).get_json()
    assert deleted["deleted_at"] is not None
    replacement = alice.agent("Gone again", slug="gone")
    assert replacement["id"] != agent["id"]


def test_regenerate_secret(alice, client, monkeypatch):
    import ipaddress

    monkeypatch.setattr("app.outbound.ssrf.resolve_addresses",
                        lambda host: [ipaddress.ip_address("93.184.216.34")])
    hooked = alice.agent("Hook", webhook_url="https://hooks.example.com/x")
    url = f"/v1/agents/{hooked['id']}/webhook-secret/regenerate"
    unconfirmed = client.post(url, headers=alice.headers)
    assert unconfirmed.status_code == 400
    assert error_of(unconfirmed)["code"] == "confirmation_required"
    wrong_case = client.post(url, headers={**alice.headers, "X-Confirm-Destructive": "TRUE"})
    assert wrong_case.status_code == 400
    confirmed = client.post(url, headers={**alice.headers, "X-Confirm-Destructive": "true"})
    assert confirmed.status_code == 200
    new = confirmed.get_json()["webhook_secret"]
    assert new != hooked["webhook_secret"] and new.startswith("whsec_")
    plain = alice.agent("Plain")
    no_url = client.post(f"/v1/agents/{plain['id']}/webhook-secret/regenerate",
                         headers={**alice.headers, "X-Confirm-Destructive": "true"})
    assert no_url.status_code == 409 and error_of(no_url)["code"] == "no_webhook_url"


def test_roster_etag_and_presence(alice, client, monkeypatch):
    import ipaddress

    monkeypatch.setattr("app.outbound.ssrf.resolve_addresses",
                        lambda host: [ipaddress.ip_address("93.184.216.34")])
    alice.agent("Zed", slug="zed", metadata={"description": "last"})
    alice.agent("Amy", slug="amy", webhook_url="https://hooks.example.com/x",
                metadata={"description": 5})
    response = client.get("/v1/agents/roster", headers=alice.headers)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "private, max-age=300"
    etag = response.headers["ETag"]
    assert re.fullmatch(r'W/"[0-9a-f]{16}"', etag)
    body = response.get_json()
    assert [a["name"] for a in body["agents"]] == ["amy", "zed"]
    amy, zed = body["agents"]
    assert amy["preferred_contact"] == "sync" and zed["preferred_contact"] == "async"
    assert amy["description"] is None and zed["description"] == "last"
    assert zed["last_seen_relative"] == "never" and zed["online"] is False
    assert zed["status"] == "offline"
    cached = client.get("/v1/agents/roster",
                        headers={**alice.headers, "If-None-Match": f"  {etag} "})
    assert cached.status_code == 304 and cached.data == b""
    assert cached.headers["ETag"] == etag
    client.patch("/v1/agents/zed@" + alice.slug, headers=alice.headers,
                 json={"display_name": "Zed 2"})
    changed = client.get("/v1/agents/roster", headers={**alice.headers, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag


def test_concurrent_creates_with_one_slug(app, live_server, alice):
    import threading

    import httpx

    server = live_server(app)
    barrier = threading.Barrier(6)
    statuses = []

    def create():
        with httpx.Client(base_url=server.url, headers=alice.headers, timeout=30,
                          trust_env=False) as http:
            barrier.wait()
            r = http.post("/v1/agents", json={"display_name": "Racer", "slug": "racer"})
            statuses.append((r.status_code, r.json().get("error", {}).get("code")))

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [(201, None)] + [(409, "slug_taken")] * 5, statuses


def test_sending_bumps_last_seen_at_at_most_every_30_seconds(alice, app, monkeypatch):
    from datetime import UTC, datetime, timedelta

    import app.db as app_db
    from app.extensions import db
    from app.messaging.models import Agent

    start = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    now = [start]
    monkeypatch.setattr(app_db, "clock", lambda: now[0])
    sender, recipient = alice.agent("Sender"), alice.agent("Recipient")

    def last_seen():
        with app.app_context():
            return db.session.get(Agent, sender["id"]).last_seen_at

    assert last_seen() is None
    assert alice.send(sender["id"], recipient["id"]).status_code == 201
    first = last_seen()
    assert first == start
    now[0] = start + timedelta(seconds=29)
    assert alice.send(sender["id"], recipient["id"]).status_code == 201
    assert last_seen() == first  # within the resolution: no write to the agent's row
    now[0] = start + timedelta(seconds=30)
    assert alice.send(sender["id"], recipient["id"]).status_code == 201
    assert last_seen() == start + timedelta(seconds=30)


def test_new_ids_use_the_whole_alphabet_at_every_position():
    """Ids are 12 characters of [a-z0-9], drawn uniformly: over 2,000 ids every character shows
    up at every position (a miss has probability below 1e-20) and no id repeats."""
    import string

    from app.messaging.addressing import new_id

    ids = [new_id("msg_") for _ in range(2000)]
    assert all(re.fullmatch(r"msg_[a-z0-9]{12}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    for position in range(4, 16):
        assert {i[position] for i in ids} == set(string.ascii_lowercase + string.digits)
