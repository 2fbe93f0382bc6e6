"""The MODULES table decides what is mounted: URL map and OpenAPI agree with every flag."""

import itertools
import re

import pytest

from app import MODULES
from config import Config

FLAGS = ("EXTERNAL_AUTH_BACKEND", "DISABLE_DEVICE_CODE", "DISABLE_CUE_PRIMITIVE",
         "DISABLE_QUOTA_ENFORCEMENT", "METRICS_ENABLED", "CONSOLE_ENABLED")
TOKEN = "t" * 40
DOC_RULES = {"/openapi.json", "/docs", "/docs/<path:filename>"}


def _rules(app) -> set[str]:
    return {r.rule for r in app.url_map.iter_rules()} - DOC_RULES


def _console_rules(rules: set[str]) -> set[str]:
    return {r for r in rules if r == "/console" or r.startswith("/console/")}


def _openapi_paths(app) -> set[str]:
    paths = app.test_client().get("/openapi.json").get_json()["paths"]
    return {re.sub(r"\{(\w+)\}", r"<\1>", p) for p in paths}


def _module_rules(app, module) -> set[str]:
    blueprint = module.blueprint
    return {r.rule for r in app.url_map.iter_rules()
            if app.view_functions[r.endpoint].__module__ == blueprint}


def test_every_flag_is_declared_and_boolean():
    for flag in FLAGS:
        assert Config.__annotations__[flag] in (bool, "bool")
        assert getattr(Config, flag) is False
    gated = {m.requires for m in MODULES} | {m.disabled_by for m in MODULES}
    assert gated - {None} <= set(FLAGS)


def _combinations() -> list[tuple[bool, ...]]:
    """Every combination of the four packaging flags; the operator settings (metrics, console)
    are independent of packaging, so each is on in half of them (in a different half) instead
    of multiplying the matrix by four."""
    combos = []
    for packaging in itertools.product([False, True], repeat=4):
        external, device, cue, quota = packaging
        combos.append((*packaging, external != device, cue != quota))
    return combos


COMBINATIONS = _combinations()


@pytest.mark.parametrize("values", COMBINATIONS,
                         ids=lambda v: "".join("1" if x else "0" for x in v))
def test_flag_matrix(make_app, values):
    flags = dict(zip(FLAGS, values, strict=True))
    app = make_app(**flags, INTERNAL_AUTH_TOKEN=TOKEN, CONSOLE_ADMINS="ops@example.com")
    mounted = set(app.extensions["cueline_modules"])
    expected = {m.name for m in MODULES if m.enabled(flags)}
    assert mounted == expected
    rules = _rules(app)
    # The operator console (HTML) exists only with its flag, and never in the OpenAPI document.
    console = _console_rules(rules)
    assert bool(console) == flags["CONSOLE_ENABLED"]
    if console:
        assert {"/console/", "/console/login", "/console/users", "/console/audit"} <= console
    # The OpenAPI document shows exactly the mounted API surface.
    assert _openapi_paths(app) == rules - console
    # Alerts and echo have no gate (wire §3): mounted in every packaging.
    assert {"/v1/alerts", "/v1/auth/alert-webhook-secret",
            "/v1/auth/alert-webhook-secret/regenerate", "/v1/echo/<token>"} <= rules
    internal = {r for r in rules if r.startswith("/v1/internal")}
    assert bool(internal) == flags["EXTERNAL_AUTH_BACKEND"]
    for module in MODULES:
        if module.name not in mounted:
            assert not _module_rules(app, module), module.name
    # /v1/info tells the truth about the flags.
    info = app.test_client().get("/v1/info").get_json()
    # Exactly the wire protocol's keys (§12.4); the module list only when asked for.
    assert set(info) == {"version", "authorization_backend", "authentication_paths",
                         "disabled_primitives"}
    listed = app.test_client().get("/v1/info?include=modules").get_json()
    assert listed["modules"] == [m.name for m in MODULES if m.name in mounted]
    assert info["authentication_paths"]["internal_token_with_on_behalf_of"] == \
        flags["EXTERNAL_AUTH_BACKEND"]
    assert info["disabled_primitives"] == [name for name, flag in (
        ("cues", "DISABLE_CUE_PRIMITIVE"), ("quotas", "DISABLE_QUOTA_ENFORCEMENT"),
        ("device_code", "DISABLE_DEVICE_CODE")) if flags[flag]]


@pytest.mark.parametrize("on", [False, True])
def test_security_schemes_follow_the_flag(make_app, on):
    app = make_app(EXTERNAL_AUTH_BACKEND=on, INTERNAL_AUTH_TOKEN=TOKEN)
    spec = app.test_client().get("/openapi.json").get_json()
    schemes = set(spec["components"]["securitySchemes"])
    assert {"ApiKey", "SessionToken"} <= schemes
    assert ({"ServiceToken", "ServiceKey", "OnBehalfOf"} <= schemes) is on
    assert ({"ServiceToken": [], "OnBehalfOf": []} in spec["security"]) is on
    assert spec["paths"]["/health"]["get"]["security"] == []
    assert "security" not in spec["paths"]["/v1/auth/me"]["get"]  # root default applies


def test_production_hides_docs(make_app):
    client = make_app(ENV="production").test_client()
    assert client.get("/openapi.json").status_code == 404
    assert client.get("/docs").status_code == 404


def test_docs_page_is_served(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert b"swagger" in response.data.lower()


def test_docs_page_loads_only_local_assets(client):
    """``/docs`` works offline: every script and style it loads is served by this app."""
    page = client.get("/docs").get_data(as_text=True)
    references = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert references, page
    assert {"/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js"} <= set(references)
    for ref in references:
        assert ref.startswith("/") and not ref.startswith("//"), ref
        asset = client.get(ref)
        assert asset.status_code == 200 and len(asset.data) > 1000, ref
    assert "SwaggerUIBundle" in client.get("/docs/swagger-ui-bundle.js").get_data(as_text=True)
    assert not re.search(r"https?://", " ".join(references))
    for bad in ("/docs/VERSION", "/docs/nope.js", "/docs/../setup.cfg"):
        response = client.get(bad)
        assert response.status_code == 404 and response.get_json()["error"]["status"] == 404


def test_production_serves_no_docs_assets(make_app):
    client = make_app(ENV="production").test_client()
    assert client.get("/docs/swagger-ui-bundle.js").status_code == 404


CUE_PRIMITIVE_ROUTES = {
    "/v1/cues", "/v1/cues/<cue_id>", "/v1/cues/<cue_id>/fire", "/v1/executions",
    "/v1/executions/claimable", "/v1/executions/claim", "/v1/executions/<execution_id>",
    "/v1/executions/<execution_id>/claim", "/v1/executions/<execution_id>/heartbeat",
    "/v1/executions/<execution_id>/outcome", "/v1/executions/<execution_id>/replay",
    "/v1/executions/<execution_id>/verify", "/v1/executions/<execution_id>/verification-pending",
    "/v1/executions/<execution_id>/evidence", "/v1/executions/<execution_id>/live-claim",
    "/v1/worker/heartbeat", "/v1/workers",
    "/v1/workers/<worker_id>"}


@pytest.mark.parametrize("disabled", [False, True])
def test_cue_primitive_routes_follow_the_flag(make_app, disabled):
    app = make_app(DISABLE_CUE_PRIMITIVE=disabled)
    rules = _rules(app)
    assert (CUE_PRIMITIVE_ROUTES & rules) == (set() if disabled else CUE_PRIMITIVE_ROUTES)
    assert not any(r.startswith(("/v1/cues", "/v1/executions", "/v1/worker")) for r in
                   rules - CUE_PRIMITIVE_ROUTES)
    assert "/v1/usage" in rules  # usage stays in every packaging
    paths = _openapi_paths(app)
    assert ("/v1/cues" in paths) is not disabled and "/v1/usage" in paths


LIVE_ROUTES = {
    "/v1/agents/<ref>/live-sessions", "/v1/agents/<ref>/live-sessions/<label>",
    "/v1/agents/<ref>/live-sessions/<label>/heartbeat", "/v1/agents/<ref>/attachments",
    "/v1/agents/<ref>/attachments/<token>", "/v1/agents/reconcile-attachments"}


@pytest.mark.parametrize("flag", FLAGS)
def test_live_sessions_and_attachments_are_mounted_in_every_packaging(make_app, flag):
    """Wire §3 rows 59-66 have no gate: no flag removes them."""
    app = make_app(**{flag: True}, INTERNAL_AUTH_TOKEN=TOKEN, CONSOLE_ADMINS="ops@example.com")
    assert {"live_sessions", "ipc_attachments"} <= set(app.extensions["cueline_modules"])
    assert LIVE_ROUTES <= _rules(app)
    assert LIVE_ROUTES <= _openapi_paths(app)
    module_rules = set()
    for module in MODULES:
        if module.name in ("live_sessions", "ipc_attachments"):
            module_rules |= _module_rules(app, module)
    assert module_rules == LIVE_ROUTES


EVENT_ROUTES = {"/v1/agents/<ref>/subscriptions",
                "/v1/agents/<ref>/subscriptions/<subscription_id>",
                "/v1/agents/<ref>/subscriptions/<subscription_id>/ack",
                "/v1/agents/<ref>/events"}


@pytest.mark.parametrize("values", COMBINATIONS,
                         ids=lambda v: "".join("1" if x else "0" for x in v))
def test_event_routes_are_always_mounted(make_app, values):
    """Events and subscriptions are part of the messaging primitive: no flag removes them."""
    app = make_app(**dict(zip(FLAGS, values, strict=True)), INTERNAL_AUTH_TOKEN=TOKEN,
                   CONSOLE_ADMINS="ops@example.com")
    assert "events" in app.extensions["cueline_modules"]
    assert EVENT_ROUTES <= _rules(app) and EVENT_ROUTES <= _openapi_paths(app)
