"""Cueline: the application factory and the ``MODULES`` table deciding what is mounted."""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, g, request

from config import ConfigError, load_config, validate

__version__ = "0.1.0"


@dataclass(frozen=True)
class Module:
    """A blueprint and the flag that gates it.

    ``requires``: mounted only when that flag is true.  ``disabled_by``: removed when that flag
    is true.  A module that is off is not imported, so it is absent from the URL map and from
    the OpenAPI document.  ``api=False`` marks a browser surface (a plain Flask blueprint of
    HTML pages): registered on the app directly, so it is not part of the OpenAPI document.
    """

    name: str
    blueprint: str  # "package.module" exposing ``blp``
    requires: str | None = None
    disabled_by: str | None = None
    api: bool = True

    def enabled(self, config: Mapping[str, Any]) -> bool:
        if self.requires and not config[self.requires]:
            return False
        return not (self.disabled_by and config[self.disabled_by])


MODULES: tuple[Module, ...] = (
    Module("system", "app.system.routes"),
    Module("auth", "app.auth.routes"),
    Module("internal_users", "app.users.routes", requires="EXTERNAL_AUTH_BACKEND"),
    Module("internal_invites", "app.auth.invite_routes", requires="EXTERNAL_AUTH_BACKEND"),
    Module("agents", "app.messaging.routes.agents"),
    Module("messages", "app.messaging.routes.messages"),
    Module("events", "app.events.routes"),
    Module("cues", "app.scheduling.routes.cues", disabled_by="DISABLE_CUE_PRIMITIVE"),
    Module("executions", "app.scheduling.routes.executions", disabled_by="DISABLE_CUE_PRIMITIVE"),
    Module("workers", "app.scheduling.routes.workers", disabled_by="DISABLE_CUE_PRIMITIVE"),
    Module("usage", "app.quotas.routes"),
    Module("device_code", "app.auth.device.routes", disabled_by="DISABLE_DEVICE_CODE"),
    Module("sessions", "app.auth.sessions"),
    Module("live_sessions", "app.agents_live.routes.live_sessions"),
    Module("ipc_attachments", "app.agents_live.routes.attachments"),
    Module("alerts", "app.alerts.routes"),
    Module("echo", "app.echo.routes"),
    Module("metrics", "app.metrics", requires="METRICS_ENABLED"),
    Module("console", "app.console.routes", requires="CONSOLE_ENABLED", api=False),
)

#: Every model module, imported regardless of flags: the schema is the same for every packaging.
MODEL_MODULES = ("app.users.models", "app.scheduling.models", "app.messaging.models",
                 "app.auth.models", "app.auth.device.models", "app.agents_live.models",
                 "app.events.models", "app.importers.models", "app.alerts.models",
                 "app.echo.models", "app.console.models")

#: Largest accepted request body (wire protocol §1.9).
MAX_BODY_BYTES = 1024 * 1024
#: Response headers browsers may read (wire protocol §1.7).
EXPOSED_HEADERS = ["X-Request-Id", "X-RateLimit-Limit", "X-RateLimit-Remaining",
                   "X-RateLimit-Reset", "Retry-After", "X-CueAPI-Usage-Warning"]
#: Paths CORS applies to: everything but the operator console (``/console``, ``/console/…``).
NOT_CONSOLE = r"^(?!/console(?:/|$))"


def security_for(config: Mapping[str, Any]) -> tuple[dict[str, dict], list[dict]]:
    """OpenAPI security schemes and the default requirement for the enabled credential paths."""
    schemes: dict[str, dict] = {
        "ApiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "cue_sk_…",
                   "description": "Per-user API key (Path 1)."},
        "SessionToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                         "description": "Session token from the login flow (Path 3)."},
    }
    security: list[dict] = [{"ApiKey": []}, {"SessionToken": []}]
    if config["EXTERNAL_AUTH_BACKEND"]:
        schemes.update({
            "ServiceToken": {"type": "http", "scheme": "bearer",
                             "description": "Service credential (Path 2)."},
            "ServiceKey": {"type": "apiKey", "in": "header", "name": "X-Service-Key",
                           "description": "Service credential in its own header (Path 2)."},
            "OnBehalfOf": {"type": "apiKey", "in": "header", "name": "X-On-Behalf-Of",
                           "description": "UUID of the user a service acts for (Path 2)."},
        })
        security += [{"ServiceToken": [], "OnBehalfOf": []},
                     {"ServiceKey": [], "OnBehalfOf": []}]
    return schemes, security


def create_app(config: Mapping[str, Any] | None = None, **overrides: Any) -> Flask:
    """Build a Cueline app.

    ``config=None`` reads the environment (and ``.env``); a mapping is used instead of the
    environment (tests build hermetic apps this way).  ``overrides`` win over both.  Raises
    :class:`config.ConfigError` (an ordinary exception) listing every problem when the
    configuration is unusable, so a WSGI server stops at once.
    """
    # 1. Config, validated before anything is bound.
    values = load_config(config, **overrides)
    problems = validate(values)
    if problems:
        raise ConfigError(problems)
    app = Flask(__name__, static_folder=None)
    app.config.update(values)
    app.config["VERSION"] = __version__
    if not app.config["DATABASE_URL"]:
        os.makedirs(app.instance_path, exist_ok=True)
        app.config["DATABASE_URL"] = "sqlite:///" + os.path.join(app.instance_path, "cueline.db")
    _configure_flask(app)

    # 2. Extensions.
    from app.db import engine_options, install_idle_ping, install_safe_session_teardown
    from app.extensions import db, migrate

    app.config["SQLALCHEMY_DATABASE_URI"] = app.config["DATABASE_URL"]
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(app.config["DATABASE_URL"],
                                                             app.config)
    for module in MODEL_MODULES:
        importlib.import_module(module)
    db.init_app(app)
    install_safe_session_teardown(app)  # after init_app, so it runs before its teardown
    with app.app_context():
        install_idle_ping(db.engine, app.config["DB_PING_IDLE_SECONDS"])
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(__file__), "..",
                                                     "migrations"))

    # 3. The Api, with the security schemes of the enabled credential paths.
    from app.api import build_api

    api = build_api(app, *security_for(app.config))

    # 4. Error handlers: every error becomes the wire envelope.
    from app.errors import register_error_handlers

    register_error_handlers(app)

    # 5. Request plumbing; authentication itself is lazy (see app.auth.decorators).
    _install_request_hooks(app)
    from app.auth.audit import init_audit

    init_audit(app)  # the buffered audit trail of service principals

    # 6. Blueprints from MODULES.
    mounted = []
    for module in MODULES:
        if module.enabled(app.config):
            blueprint = importlib.import_module(module.blueprint).blp
            (api if module.api else app).register_blueprint(blueprint)
            mounted.append(module.name)
    app.extensions["cueline_modules"] = tuple(mounted)
    if app.config["METRICS_ENABLED"]:
        from app.metrics import init_metrics

        init_metrics(app)  # the request hook: installed only when metrics are on
    app.extensions["cueline_api"] = api

    # 7. CLI groups.
    from app.cli import register_cli

    register_cli(app)
    return app


def _configure_flask(app: Flask) -> None:
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["JSON_SORT_KEYS"] = False
    app.json.sort_keys = False
    app.url_map.strict_slashes = False
    app.url_map.redirect_defaults = False


def _install_request_hooks(app: Flask) -> None:
    """Request id on every response; oversized bodies refused, JSON bodies parsed once."""
    from app.errors import AppError

    @app.before_request
    def _start_request():
        g.request_id = str(uuid.uuid4())
        length = request.content_length
        if length is not None and length > MAX_BODY_BYTES:
            raise AppError("request_too_large", f"Request body exceeds {MAX_BODY_BYTES} bytes",
                           413)

    from app.db import start_autocommit_request

    app.before_request(start_autocommit_request)

    # The limiter's before_request hook runs after the size check, before body parsing:
    # 413 → 429 → 400 invalid_json → 401 → 422, as the wire protocol orders them.
    from app.api import parse_json_body
    from app.ratelimit import build_limiter

    build_limiter(app)
    app.before_request(parse_json_body)

    from app import verify_echo

    verify_echo.install(app)  # the generic body-verify echo of every write (§1.10)

    @app.after_request
    def _stamp_request_id(response):
        response.headers["X-Request-Id"] = g.get("request_id") or str(uuid.uuid4())
        return response

    # CORS as the wire protocol specifies: any origin, credentials allowed, our headers exposed.
    # Not for the operator console: its pages are for its own origin only.
    from flask_cors import CORS

    CORS(app, resources={NOT_CONSOLE: {}}, origins="*", supports_credentials=True,
         allow_headers="*",
         methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
         expose_headers=EXPOSED_HEADERS)

    from app.logs import configure_logging

    configure_logging(app)
