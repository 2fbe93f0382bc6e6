"""Users' lifecycle: read, deactivate (refused on every path, cues paused), reactivate, and the
bulk sync with per-item results."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.scheduling import jobs
from app.scheduling.models import Cue, Execution
from app.users.models import User
from tests.delegation.conftest import me, new_user, upsert
from tests.helpers import (
    SERVICE_TOKEN,
    error_of,
    key_headers,
    mint_session,
    register,
    service_headers,
)
from tests.scheduling.conftest import cue_body

T0 = datetime(2026, 5, 12, 9, 0, tzinfo=UTC)


def _user_path(user_id):
    return f"/v1/internal/users/{user_id}"


def test_get_reads_one_user(client):
    user_id = new_user(client, plan="pro")
    response = client.get(_user_path(user_id), headers=service_headers())
    assert response.status_code == 200
    body = response.get_json()
    assert body["id"] == user_id and body["plan"] == "pro" and body["active"] is True
    assert {"created_at", "updated_at"} <= set(body) and "external_owner" not in body
    missing = client.get(_user_path(uuid.uuid4()), headers=service_headers())
    assert missing.status_code == 404 and error_of(missing)["code"] == "user_not_found"
    bad = client.get(_user_path("nope"), headers=service_headers())
    assert bad.status_code == 400 and error_of(bad)["code"] == "invalid_user_id"


def test_deactivated_user_is_refused_on_all_three_paths(client):
    key, _ = register(client)
    user_id = client.get("/v1/auth/me", headers=key_headers(key)).get_json()["id"]
    session = mint_session(user_id)
    paths = {
        "api_key": key_headers(key),
        "session": key_headers(session),
        "delegated_bearer": service_headers(user_id),
        "delegated_key": service_headers(user_id, style="key"),
    }
    for name, headers in paths.items():
        assert client.get("/v1/auth/me", headers=headers).status_code == 200, name

    response = client.delete(_user_path(user_id), headers=service_headers())
    assert response.status_code == 200
    assert response.get_json()["active"] is False
    for name, headers in paths.items():
        refused = client.get("/v1/auth/me", headers=headers)
        assert refused.status_code == 403, name
        assert error_of(refused)["code"] == "user_inactive"
    # Deactivating again is harmless; nothing was deleted.
    assert client.delete(_user_path(user_id), headers=service_headers()).status_code == 200
    assert client.get(_user_path(user_id), headers=service_headers()).get_json()["active"] \
        is False

    # Reactivation through the upsert restores every path.
    body = client.get(_user_path(user_id), headers=service_headers()).get_json()
    again = client.put(_user_path(user_id), headers=service_headers(),
                       json={"email": body["email"], "slug": body["slug"], "active": True})
    assert again.status_code == 200 and again.get_json()["active"] is True
    for name, headers in paths.items():
        assert client.get("/v1/auth/me", headers=headers).status_code == 200, name


def test_upsert_can_create_inactive_and_omitted_active_keeps_state(client):
    user_id = str(uuid.uuid4())
    created = upsert(client, user_id=user_id, active=False)
    assert created.get_json()["active"] is False
    assert me(client, SERVICE_TOKEN, user_id).status_code == 403
    kept = upsert(client, user_id=user_id, plan="pro")
    assert kept.get_json()["active"] is False
    assert upsert(client, user_id=user_id, active="maybe").status_code == 422


def test_cues_of_inactive_users_stop_firing_and_resume_with_catch_up(make_app):
    app = make_app(EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=SERVICE_TOKEN,
                   POLLER_MAX_CATCH_UP_SLOTS=1)
    client = app.test_client()
    user_id = new_user(client)
    other_id = new_user(client)
    cue_ids = []
    for owner in (user_id, other_id):
        response = client.post("/v1/cues", headers=service_headers(owner), json=cue_body(
            schedule={"type": "recurring", "cron": "*/5 * * * *"}))
        assert response.status_code == 201, response.get_json()
        cue_ids.append(response.get_json()["id"])
    with app.app_context():
        for cue_id in cue_ids:
            db.session.get(Cue, cue_id).next_run = T0
        db.session.commit()
    assert client.delete(_user_path(user_id), headers=service_headers()).status_code == 200

    def fired(cue_id):
        return db.session.scalar(select(func.count()).select_from(Execution)
                                 .where(Execution.cue_id == cue_id))

    with app.app_context():
        assert jobs.schedule_due_cues(T0 + timedelta(seconds=1)) == 1  # only the active owner's
        assert fired(cue_ids[0]) == 0 and fired(cue_ids[1]) == 1
        assert jobs.schedule_due_cues(T0 + timedelta(hours=1, seconds=1)) == 1
        assert fired(cue_ids[0]) == 0
    body = client.get(_user_path(user_id), headers=service_headers()).get_json()
    client.put(_user_path(user_id), headers=service_headers(),
               json={"email": body["email"], "slug": body["slug"], "active": True})
    with app.app_context():
        # An hour of missed slots: the catch-up policy fires only the latest one.
        assert jobs.schedule_due_cues(T0 + timedelta(hours=2, seconds=1)) == 2
        assert fired(cue_ids[0]) == 1
        [execution] = db.session.scalars(select(Execution)
                                         .where(Execution.cue_id == cue_ids[0])).all()
        assert execution.scheduled_for == T0 + timedelta(hours=2)


# --- bulk sync ----------------------------------------------------------------------------------


def _sync(client, users, token=SERVICE_TOKEN):
    return client.put("/v1/internal/users", json={"users": users},
                      headers=service_headers(token=token))


def test_bulk_sync_partial_failure_applies_valid_items(app, client):
    existing = new_user(client, plan="pro")
    same = client.get(_user_path(existing), headers=service_headers()).get_json()
    taken = new_user(client)
    taken_email = client.get(_user_path(taken), headers=service_headers()).get_json()["email"]
    fresh = [str(uuid.uuid4()) for _ in range(3)]
    users = [
        {"id": fresh[0], "email": "new0@example.com", "slug": "new0", "plan": "team"},
        {"id": existing, "email": same["email"], "slug": same["slug"], "plan": "pro"},
        {"id": existing, "email": same["email"], "slug": same["slug"]},
        {"id": "not-a-uuid", "email": "x@example.com", "slug": "x"},
        {"id": fresh[1], "email": "bad", "slug": "Bad Slug"},
        {"id": fresh[2], "email": taken_email, "slug": "whatever"},
        "not an object",
        {"id": taken, "email": taken_email, "slug": "renamed", "active": False},
    ]
    response = _sync(client, users)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    statuses = [r["status"] for r in body["results"]]
    assert statuses == ["created", "unchanged", "error", "error", "error", "error", "error",
                        "updated"]
    codes = [r.get("error", {}).get("code") for r in body["results"]]
    assert codes == [None, None, "duplicate_user_id", "invalid_user_id", "validation_error",
                     "email_taken", "validation_error", None]
    assert body["results"][3]["id"] == "not-a-uuid"
    fields = {d["field"] for d in body["results"][4]["error"]["details"]}
    assert fields == {"users[4].email", "users[4].slug"}
    assert body["summary"] == {"created": 1, "updated": 1, "unchanged": 1, "error": 5}
    with app.app_context():
        new = db.session.get(User, uuid.UUID(fresh[0]))
        assert (new.plan, new.active, new.api_key_prefix[:7]) == ("team", True, "cue_sk_")
        assert new.webhook_secret.startswith("whsec_")
        renamed = db.session.get(User, uuid.UUID(taken))
        assert (renamed.slug, renamed.active) == ("renamed", False)
        assert db.session.get(User, uuid.UUID(fresh[1])) is None
        assert db.session.get(User, uuid.UUID(fresh[2])) is None
    assert me(client, SERVICE_TOKEN, fresh[0]).status_code == 200


def test_bulk_sync_conflicts_inside_one_call(client):
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    response = _sync(client, [{"id": a, "email": "same@example.com", "slug": "one"},
                              {"id": b, "email": "same@example.com", "slug": "two"}])
    results = response.get_json()["results"]
    assert results[0]["status"] == "created"
    assert results[1]["error"]["code"] == "email_taken"


def test_bulk_sync_is_idempotent_and_reports_updates(client):
    users = [{"id": str(uuid.uuid4()), "email": f"b{i}@example.com", "slug": f"b{i}"}
             for i in range(20)]
    assert _sync(client, users).get_json()["summary"]["created"] == 20
    assert _sync(client, users).get_json()["summary"]["unchanged"] == 20
    users[3]["plan"] = "pro"
    users[4]["email"] = "moved@example.com"
    assert _sync(client, users).get_json()["summary"] == {"created": 0, "updated": 2,
                                                          "unchanged": 18, "error": 0}


@pytest.mark.parametrize("body", [{}, {"users": []}, {"users": "x"},
                                  {"users": [{"id": str(uuid.uuid4())}] * 1001}])
def test_bulk_sync_body_limits(client, body):
    response = client.put("/v1/internal/users", json=body, headers=service_headers())
    assert response.status_code == 422
    assert error_of(response)["code"] == "validation_error"


def test_bulk_sync_of_a_thousand_users(app, client):
    users = [{"id": str(uuid.uuid4()), "email": f"k{i}@example.com", "slug": f"k{i}",
              "rate_limit_per_minute": i} for i in range(1000)]
    response = _sync(client, users)
    assert response.status_code == 200
    assert response.get_json()["summary"]["created"] == 1000
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 1000
        assert db.session.get(User, uuid.UUID(users[999]["id"])).rate_limit_per_minute == 999


def test_bulk_sync_falls_back_when_a_row_appears_concurrently(app, client, monkeypatch):
    """A user inserted between the call's read and its insert: still answered per item."""
    from app.users import sync

    racer = str(uuid.uuid4())
    real = sync.generate_webhook_secret
    raced = []

    def racing():
        if not raced:  # another request creates the same id while this call prepares inserts
            raced.append(upsert(client, user_id=racer, plan="pro").status_code)
        return real()

    monkeypatch.setattr(sync, "generate_webhook_secret", racing)
    response = _sync(client, [{"id": racer, "email": f"{racer[:8]}@example.com",
                               "slug": f"u-{racer[:8]}", "plan": "pro"},
                              {"id": str(uuid.uuid4()), "email": "z@example.com", "slug": "z"}])
    assert raced == [200]
    assert response.status_code == 200, response.get_json()
    assert [r["status"] for r in response.get_json()["results"]] == ["unchanged", "created"]
