"""An integrator's backend in front of Cueline: the whole delegation pattern in one small app.

    CUELINE_URL=http://127.0.0.1:8000 CUELINE_SERVICE_TOKEN=... PROXY_JWT_SECRET=... \\
        flask --app examples.integrator_proxy.app run --port 8100

End users sign up and log in *here* (``/auth/*``, the proxy's own JWTs).  The proxy mirrors each
of them into Cueline with the internal upsert and forwards their cue and message calls with the
``cueline`` SDK acting for them (``/api/*``).  Cueline must run with
``EXTERNAL_AUTH_BACKEND=true`` and ``INTERNAL_AUTH_TOKEN`` equal to ``CUELINE_SERVICE_TOKEN``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import cueline
from flask import Flask

from examples.integrator_proxy import api, auth
from examples.integrator_proxy.errors import register_error_handlers
from examples.integrator_proxy.store import Store

DEFAULTS: dict[str, Any] = {
    "CUELINE_URL": "http://127.0.0.1:8000",
    "CUELINE_SERVICE_TOKEN": "",
    "CUELINE_TIMEOUT": 10.0,
    "PROXY_JWT_SECRET": "",
    "PROXY_DATABASE": os.path.join("instance", "integrator_proxy.db"),  # git-ignored
    # Cues a user may hold, per plan.  From the environment as JSON: {"free": 3, "pro": 50}.
    "PLAN_CUE_CAPS": {"free": 3, "pro": 50},
}


def _from_environment() -> dict[str, Any]:
    values = {k: os.environ[k] for k in DEFAULTS if k in os.environ}
    if "PLAN_CUE_CAPS" in values:
        values["PLAN_CUE_CAPS"] = json.loads(values["PLAN_CUE_CAPS"])
    if "CUELINE_TIMEOUT" in values:
        values["CUELINE_TIMEOUT"] = float(values["CUELINE_TIMEOUT"])
    return values


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the proxy; ``config`` replaces the environment (tests pass it explicitly)."""
    settings = {**DEFAULTS, **(dict(config) if config is not None else _from_environment())}
    if len(settings["PROXY_JWT_SECRET"]) < 32:
        raise ValueError("PROXY_JWT_SECRET must be at least 32 characters")
    if not settings["CUELINE_SERVICE_TOKEN"]:
        raise ValueError("CUELINE_SERVICE_TOKEN is required (Cueline's INTERNAL_AUTH_TOKEN)")
    app = Flask(__name__, static_folder=None)
    app.config.update(settings)
    folder = os.path.dirname(settings["PROXY_DATABASE"])
    if folder:
        os.makedirs(folder, exist_ok=True)
    app.extensions["proxy_store"] = Store(settings["PROXY_DATABASE"])
    # One service client (one connection pool) for every user; views use as_user().
    app.extensions["cueline"] = cueline.Client(
        settings["CUELINE_SERVICE_TOKEN"], base_url=settings["CUELINE_URL"],
        timeout=settings["CUELINE_TIMEOUT"], service=True, max_retries=1)
    app.register_blueprint(auth.bp)
    app.register_blueprint(api.bp)
    register_error_handlers(app)
    return app


if __name__ == "__main__":  # pragma: no cover - manual run
    create_app().run(host="127.0.0.1", port=int(os.environ.get("PORT", "8100")))
