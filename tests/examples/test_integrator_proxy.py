"""The integrator example end to end: Cueline and the proxy each on a loopback port.

Two end users sign up at the proxy, log in with its JWTs, and use Cueline through it; the proxy
acts for each with the service credential.  Checks isolation, the proxy's plan cap under
concurrency, error pass-through, and that upstream failures become a clean 502.
"""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import cueline
import httpx
import jwt
import pytest

from examples.integrator_proxy.app import create_app as create_proxy
from tests.client.conftest import require_routes
from tests.helpers import SERVICE_TOKEN

JWT_SECRET = "proxy-test-jwt-secret-" + "q" * 20
CUE_ROUTES = (("POST", "/v1/cues"), ("GET", "/v1/cues"), ("GET", "/v1/cues/<cue_id>"),
              ("DELETE", "/v1/cues/<cue_id>"))


class Proxy:
    """The proxy app on a loopback port, plus a logged-in HTTP session per end user."""

    def __init__(self, live_server, upstream_url: str, db_path, caps=None,
                 token: str = SERVICE_TOKEN):
        self.app = create_proxy({
            "CUELINE_URL": upstream_url, "CUELINE_SERVICE_TOKEN": token,
            "PROXY_JWT_SECRET": JWT_SECRET, "PROXY_DATABASE": str(db_path),
            "PLAN_CUE_CAPS": caps or {"free": 2, "pro": 5}, "CUELINE_TIMEOUT": 5.0})
        self.url = live_server(self.app).url
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def login(self, email: str, password: str = "correct horse") -> dict:
        assert self.http.post("/auth/signup", json={"email": email, "password": password}
                              ).status_code == 201
        token = self.http.post("/auth/login", json={"email": email, "password": password}
                               ).json()["token"]
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def cueline_url(delegation_app, live_server):
    return live_server(delegation_app).url


@pytest.fixture
def proxy(live_server, cueline_url, tmp_path):
    return Proxy(live_server, cueline_url, tmp_path / "proxy.db")


def _service(url: str) -> cueline.Client:
    return cueline.Client(SERVICE_TOKEN, base_url=url, service=True)


def test_users_are_mirrored_on_first_sight_and_act_as_themselves(proxy, cueline_url):
    ann, bob = proxy.login("ann@example.com"), proxy.login("bob@example.com")
    ann_me = proxy.http.get("/api/me", headers=ann)
    bob_me = proxy.http.get("/api/me", headers=bob)
    assert ann_me.status_code == 200 and bob_me.status_code == 200
    assert (ann_me.json()["email"], ann_me.json()["auth_path"]) == ("ann@example.com",
                                                                     "delegated")
    assert bob_me.json()["email"] == "bob@example.com"
    # Cueline holds each user under the proxy's own id, with the plan cap as its limit.
    store = proxy.app.extensions["proxy_store"]
    ann_id = store.user_by_email("ann@example.com").id
    assert ann_me.json()["id"] == ann_id and ann_me.json()["active_cue_limit"] == 2
    assert _service(cueline_url).as_user(ann_id).auth.me()["email"] == "ann@example.com"

    # A plan change is mirrored on the next request.
    store.set_plan(ann_id, "pro")
    me = proxy.http.get("/api/me", headers=ann).json()
    assert (me["plan"], me["active_cue_limit"]) == ("pro", 5)


def test_proxy_login_is_required_and_checked(proxy):
    assert proxy.http.get("/api/me").json()["error"]["code"] == "invalid_token"
    assert proxy.http.get("/api/me", headers={"Authorization": "Bearer not-a-jwt"}
                          ).status_code == 401
    user = proxy.app.extensions["proxy_store"].create_user("eve@example.com", "x")
    forged = jwt.encode({"sub": user.id, "iss": "integrator-proxy", "exp": 4102444800},
                        "some-other-secret-" + "z" * 20, algorithm="HS256")
    response = proxy.http.get("/api/me", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_token"
    proxy.login("carl@example.com")
    wrong = proxy.http.post("/auth/login", json={"email": "carl@example.com",
                                                 "password": "wrong password"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_credentials"


def test_each_user_sees_only_their_own_cues(delegation_app, proxy):
    require_routes(delegation_app, *CUE_ROUTES)
    ann, bob = proxy.login("ann@example.com"), proxy.login("bob@example.com")
    created = proxy.http.post("/api/cues", headers=ann, json={
        "name": "ann nightly", "cron": "0 3 * * *", "transport": "worker"})
    assert created.status_code == 201, created.text
    cue_id = created.json()["id"]

    assert proxy.http.get("/api/cues", headers=ann).json()["total"] == 1
    assert proxy.http.get("/api/cues", headers=bob).json()["total"] == 0
    for method in ("GET", "DELETE"):
        response = proxy.http.request(method, f"/api/cues/{cue_id}", headers=bob)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "cue_not_found"
    assert proxy.http.get(f"/api/cues/{cue_id}", headers=ann).json()["name"] == "ann nightly"


def test_upstream_client_errors_pass_through_with_their_codes(delegation_app, proxy):
    require_routes(delegation_app, *CUE_ROUTES)
    ann = proxy.login("ann@example.com")
    cue = {"name": "dup", "cron": "0 3 * * *", "transport": "worker"}
    assert proxy.http.post("/api/cues", headers=ann, json=cue).status_code == 201
    duplicate = proxy.http.post("/api/cues", headers=ann, json=cue)
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "duplicate_cue_name"
    invalid = proxy.http.post("/api/cues", headers=ann, json={**cue, "name": "x",
                                                             "transport": "pigeon"})
    assert invalid.status_code == 422
    error = invalid.json()["error"]
    assert error["code"] == "validation_error" and error["details"]
    # Failed creates gave their slot back: the cap (2) still leaves room for one more.
    assert proxy.app.extensions["proxy_store"].cue_slots_used(
        proxy.app.extensions["proxy_store"].user_by_email("ann@example.com").id) == 1
    assert proxy.http.post("/api/cues", headers=ann, json={**cue, "name": "second"}
                           ).status_code == 201


def test_plan_cap_holds_under_concurrent_creates_and_frees_on_delete(delegation_app, proxy,
                                                                     cueline_url):
    require_routes(delegation_app, *CUE_ROUTES)
    ann = proxy.login("ann@example.com")
    proxy.http.get("/api/me", headers=ann)  # mirrored before the burst
    barrier = threading.Barrier(6)

    def create(n):
        barrier.wait()
        with httpx.Client(base_url=proxy.url, timeout=30) as http:
            return http.post("/api/cues", headers=ann, json={
                "name": f"burst {n}", "cron": "0 3 * * *", "transport": "worker"})

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(create, range(6)))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [201, 201, 403, 403, 403, 403]
    # Refused by the proxy itself (not by Cueline's own active_cue_limit behind it).
    for refused in (r.json()["error"] for r in results if r.status_code == 403):
        assert refused["code"] == "cue_limit_reached" and refused["limit"] == 2
    ann_id = proxy.app.extensions["proxy_store"].user_by_email("ann@example.com").id
    assert _service(cueline_url).as_user(ann_id).cues.list()["total"] == 2

    victim = next(r for r in results if r.status_code == 201).json()["id"]
    assert proxy.http.delete(f"/api/cues/{victim}", headers=ann).status_code == 204
    again = proxy.http.post("/api/cues", headers=ann, json={
        "name": "after delete", "cron": "0 3 * * *", "transport": "worker"})
    assert again.status_code == 201


def test_messages_are_forwarded_and_private(delegation_app, proxy):
    require_routes(delegation_app, ("POST", "/v1/agents"), ("POST", "/v1/messages"),
                   ("GET", "/v1/messages/<msg_id>"), ("GET", "/v1/agents/<ref>/inbox"))
    ann, bob = proxy.login("ann@example.com"), proxy.login("bob@example.com")
    writer = proxy.http.post("/api/agents", headers=ann, json={"display_name": "Writer"}).json()
    reader = proxy.http.post("/api/agents", headers=ann, json={"display_name": "Reader"}).json()
    sent = proxy.http.post("/api/messages", headers={**ann, "Idempotency-Key": "m1"}, json={
        "from": writer["id"], "to": reader["id"], "body": "draft ready"})
    assert sent.status_code == 201, sent.text
    message = sent.json()
    inbox = proxy.http.get(f"/api/agents/{reader['id']}/inbox", headers=ann).json()
    assert [m["id"] for m in inbox["messages"]] == [message["id"]]

    hidden = proxy.http.get(f"/api/messages/{message['id']}", headers=bob)
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "message_not_found"
    spoof = proxy.http.post("/api/messages", headers=bob, json={
        "from": writer["id"], "to": reader["id"], "body": "not mine"})
    assert spoof.status_code == 403
    assert spoof.json()["error"]["code"] == "from_agent_not_owned"


def _failing_upstream(environ, start_response):
    body = b"Traceback (most recent call last): secret-db-password=hunter2"
    start_response("500 Internal Server Error", [("Content-Type", "text/plain"),
                                                 ("Content-Length", str(len(body)))])
    return [body]


def test_upstream_5xx_becomes_a_clean_502(live_server, tmp_path):
    upstream = live_server(_failing_upstream).url
    proxy = Proxy(live_server, upstream, tmp_path / "p.db")
    ann = proxy.login("ann@example.com")
    response = proxy.http.get("/api/me", headers=ann)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_error"
    assert "hunter2" not in response.text and "Traceback" not in response.text


def test_unreachable_upstream_becomes_a_clean_502(live_server, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proxy = Proxy(live_server, f"http://127.0.0.1:{port}", tmp_path / "p.db")
    ann = proxy.login("ann@example.com")
    response = proxy.http.get("/api/me", headers=ann)
    assert response.status_code == 502
    assert response.json()["error"] == {
        "code": "upstream_error", "status": 502,
        "message": "The scheduling service is unreachable; try again later"}


def test_wrong_service_credential_is_a_502_not_a_401_for_the_user(delegation_app, live_server,
                                                                   tmp_path):
    proxy = Proxy(live_server, live_server(delegation_app).url, tmp_path / "p.db",
                  token="not-the-token-" + "w" * 30)
    ann = proxy.login("ann@example.com")
    response = proxy.http.get("/api/me", headers=ann)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
