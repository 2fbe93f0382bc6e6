"""The MODULES table decides what is mounted: URL map and OpenAPI agree with every flag."""

import itertools
import re

import pytest

from app import MODULES
from config import Config

FLAGS = ("EXTERNAL_AUTH_BACKEND", "DISABLE_DEVICE_CODE", "DISABLE_CUE_PRIMITIVE",
         "DISABLE_QUOTA_ENFORCEMENT", "CONSOLE_ENABLED")
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


@pytest.mark.parametrize("values", list(itertools.product([False, True], repeat=len(FLAGS))),
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
    internal = {r for r in rules if r.startswith("/v1/internal")}
    assert bool(internal) == flags["EXTERNAL_AUTH_BACKEND"]
    for module in MODULES:
        if module.name not in mounted:
            assert not _module_rules(app, module), module.name
    # /v1/info tells the truth about the flags.
    info = app.test_client().get("/v1/info").get_json()
    assert info["modules"] == [m.name for m in MODULES if m.name in mounted]
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


CUE_PRIMITIVE_ROUTES = {
    "/v1/cues", "/v1/cues/<cue_id>", "/v1/cues/<cue_id>/fire", "/v1/executions",
    "/v1/executions/claimable", "/v1/executions/claim", "/v1/executions/<execution_id>",
    "/v1/executions/<execution_id>/claim", "/v1/executions/<execution_id>/heartbeat",
    "/v1/executions/<execution_id>/outcome", "/v1/executions/<execution_id>/replay",
    "/v1/executions/<execution_id>/verify", "/v1/executions/<execution_id>/verification-pending",
    "/v1/executions/<execution_id>/evidence", "/v1/worker/heartbeat", "/v1/workers",
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
