"""The SDK against the real app: credentials and delegation headers as seen on the wire."""

from __future__ import annotations

import uuid

import cueline
import pytest
from cueline import AuthenticationError, Client, ConfigurationError, NotFoundError

from tests.helpers import SERVICE_TOKEN


def _register(url: str) -> tuple[str, str]:
    email = f"sdk-{uuid.uuid4().hex[:8]}@example.com"
    return cueline.register(email, base_url=url)["api_key"], email


def test_api_key_client_sends_only_the_bearer_key(app, served):
    server = served(app)
    key, email = _register(server.url)
    with Client(key, base_url=server.url) as client:
        me = client.auth.me()
    assert me["email"] == email and me["auth_path"] == "api_key"
    sent = server.wire.to("/v1/auth/me")[-1].headers
    assert sent["authorization"] == f"Bearer {key}"
    assert "x-on-behalf-of" not in sent and "x-service-key" not in sent
    assert sent["user-agent"].startswith("cueline-python/")
    assert sent["accept"] == "application/json"


def test_delegated_client_sends_service_bearer_and_on_behalf_of(delegation_app, served):
    server = served(delegation_app)
    key, email = _register(server.url)
    user_id = Client(key, base_url=server.url).auth.me()["id"]

    client = Client(SERVICE_TOKEN, base_url=server.url, act_as_user_id=user_id.upper())
    me = client.auth.me()
    assert (me["id"], me["email"], me["auth_path"]) == (user_id, email, "delegated")
    sent = server.wire.last.headers
    assert sent["authorization"] == f"Bearer {SERVICE_TOKEN}"
    assert sent["x-on-behalf-of"] == user_id  # canonical lower-case form
    assert "x-service-key" not in sent
    assert key not in " ".join(sent.values())  # never the user's own credential


def test_delegated_client_with_service_key_header_sends_no_authorization(delegation_app,
                                                                          served):
    server = served(delegation_app)
    key, _ = _register(server.url)
    user_id = Client(key, base_url=server.url).auth.me()["id"]

    client = Client(SERVICE_TOKEN, base_url=server.url, act_as_user_id=user_id,
                    service_header="x-service-key")
    assert client.auth.me()["id"] == user_id
    sent = server.wire.last.headers
    assert sent["x-service-key"] == SERVICE_TOKEN
    assert sent["x-on-behalf-of"] == user_id
    assert "authorization" not in sent


@pytest.mark.parametrize("bad", ["", "not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g"])
def test_malformed_act_as_user_id_raises_before_any_request(app, served, bad):
    server = served(app)
    with pytest.raises(ConfigurationError, match="act_as_user_id must be a UUID"):
        Client(SERVICE_TOKEN, base_url=server.url, act_as_user_id=bad)
    assert server.wire.exchanges == []


def test_client_refuses_credential_headers_in_extra_headers():
    with pytest.raises(ConfigurationError):
        Client("cue_sk_x", headers={"X-On-Behalf-Of": str(uuid.uuid4())})
    with pytest.raises(ConfigurationError):
        Client("cue_sk_x", headers={"authorization": "Bearer other"})
    with pytest.raises(ConfigurationError):
        Client("cue_sk_x", service_header="cookie")


def test_as_user_views_share_the_pool_and_act_for_their_user(delegation_app, served):
    server = served(delegation_app)
    users = []
    for _ in range(2):
        key, email = _register(server.url)
        users.append((Client(key, base_url=server.url).auth.me()["id"], email))

    service = Client(SERVICE_TOKEN, base_url=server.url, service=True)
    views = [service.as_user(uid) for uid, _ in users]
    assert all(view._http is service._http for view in views)
    for view, (uid, email) in zip(views, users, strict=True):
        assert view.auth.me()["email"] == email
        assert server.wire.last.headers["x-on-behalf-of"] == uid
        assert server.wire.last.headers["authorization"] == f"Bearer {SERVICE_TOKEN}"
    assert service.act_as_user_id is None  # the parent is unchanged

    views[0].close()  # a view never closes the shared pool
    assert views[1].auth.me()["email"] == users[1][1]
    service.close()
    with pytest.raises(RuntimeError):
        views[1].auth.me()


def test_as_user_needs_a_service_client():
    with pytest.raises(ConfigurationError, match="service client"):
        Client("cue_sk_abc").as_user(uuid.uuid4())
    with pytest.raises(ConfigurationError, match="UUID"):
        Client("svc", service=True).as_user("nope")


def test_service_client_without_user_refuses_user_endpoints(delegation_app, served):
    server = served(delegation_app)
    with pytest.raises(ConfigurationError, match="act for a user"):
        Client(SERVICE_TOKEN, base_url=server.url, service=True).auth.me()
    assert server.wire.exchanges == []


def test_delegation_to_unknown_user_is_not_found(delegation_app, served):
    server = served(delegation_app)
    missing = uuid.uuid4()
    with pytest.raises(NotFoundError) as info:
        Client(SERVICE_TOKEN, base_url=server.url, act_as_user_id=missing).auth.me()
    assert info.value.code == "user_not_found" and info.value.status == 404
    assert info.value.request_id == server.wire.last.response_headers["x-request-id"]


def test_wrong_service_token_is_an_authentication_error(delegation_app, served):
    server = served(delegation_app)
    client = Client("wrong-" + "z" * 40, base_url=server.url, act_as_user_id=uuid.uuid4(),
                    service_header="x-service-key")
    with pytest.raises(AuthenticationError) as info:
        client.auth.me()
    assert info.value.code == "invalid_internal_token"


def test_system_endpoints_send_no_credentials(app, served):
    server = served(app)
    with Client("cue_sk_" + "0" * 32, base_url=server.url) as client:
        assert client.system.health()["status"] in ("healthy", "degraded")
        info = client.system.info()
    assert "authentication_paths" in info
    for exchange in server.wire.exchanges:
        assert "authorization" not in exchange.headers


def test_key_regeneration_and_reveal(app, served):
    from tests.client.conftest import require_routes

    require_routes(app, ("POST", "/v1/auth/key/regenerate"), ("GET", "/v1/auth/key"))
    server = served(app)
    key, email = _register(server.url)
    old = Client(key, base_url=server.url)
    fresh = old.auth.regenerate_key()
    assert fresh["api_key"].startswith("cue_sk_") and fresh["api_key"] != key
    assert server.wire.last.headers["x-confirm-destructive"] == "true"
    with pytest.raises(AuthenticationError):
        old.auth.me()
    new = Client(fresh["api_key"], base_url=server.url)
    assert new.auth.me()["email"] == email
    revealed = new.auth.get_key()
    assert revealed.get("api_key") in (fresh["api_key"], None)


def test_user_webhook_secret_and_session_refresh(app, served):
    from tests.client.conftest import require_routes

    require_routes(app, ("GET", "/v1/auth/webhook-secret"),
                   ("POST", "/v1/auth/webhook-secret/regenerate"),
                   ("POST", "/v1/auth/session/refresh"))
    server = served(app)
    key, email = _register(server.url)
    client = Client(key, base_url=server.url)
    secret = client.auth.get_webhook_secret()["webhook_secret"]
    regenerated = client.auth.regenerate_webhook_secret()["webhook_secret"]
    assert secret.startswith("whsec_") and regenerated.startswith("whsec_")
    assert regenerated != secret
    session = client.auth.refresh_session()
    assert session["email"] == email
    assert Client(session["session_token"], base_url=server.url).auth.me()["auth_path"] == \
        "session"


def test_path_segments_are_encoded_and_empty_ids_refused(app, served):
    server = served(app)
    key, _ = _register(server.url)
    client = Client(key, base_url=server.url)
    with pytest.raises(ConfigurationError):
        client.cues.get("")
    with pytest.raises(NotFoundError):  # never resolved to /v1/auth/me
        client.agents.get("a/../../v1/auth/me")
    assert server.wire.last.raw_uri == "/v1/agents/a%2F..%2F..%2Fv1%2Fauth%2Fme"
    with pytest.raises(cueline.BadRequestError):  # decoded intact by the server
        client.agents.get("planner@some user")
    assert server.wire.last.raw_uri == "/v1/agents/planner@some%20user"


def test_update_me(app, served):
    from tests.client.conftest import require_routes

    require_routes(app, ("PATCH", "/v1/auth/me"))
    server = served(app)
    key, _ = _register(server.url)
    client = Client(key, base_url=server.url)
    answer = client.auth.update_me(email="renamed@example.com")
    assert "updated_at" in answer
    assert server.wire.last.method == "PATCH"
    assert client.auth.me()["email"] == "renamed@example.com"
    with pytest.raises(cueline.ValidationError):
        client.auth.update_me()  # nothing to change → 422 no_fields
