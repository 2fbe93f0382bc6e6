"""Health probes and the public description of a deployment (no secrets)."""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app
from sqlalchemy import text

from app.db import utcnow
from app.extensions import db

log = logging.getLogger(__name__)


def database_ok() -> bool:
    """True when a trivial query succeeds; never raises."""
    try:
        db.session.execute(text("SELECT 1"))
        db.session.rollback()
        return True
    except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
        log.warning("health: database check failed: %s", type(exc).__name__)
        db.session.rollback()
        return False


def health_report() -> dict[str, Any]:
    """The body of ``GET /health``."""
    database = "ok" if database_ok() else "error"
    report = {
        "status": "healthy" if database == "ok" else "degraded",
        "version": current_app.config["VERSION"],
        "timestamp": utcnow().isoformat(),
        "services": {"database": database},
        "queue": {},
    }
    if database == "ok":
        from app.scheduling.health import add_scheduling_health

        add_scheduling_health(report)
    return report


def disabled_primitives(config) -> list[str]:
    """Names of the primitives switched off by packaging flags, in the wire order."""
    flags = (("cues", "DISABLE_CUE_PRIMITIVE"), ("quotas", "DISABLE_QUOTA_ENFORCEMENT"),
             ("device_code", "DISABLE_DEVICE_CODE"))
    return [name for name, flag in flags if config[flag]]


def deployment_info() -> dict[str, Any]:
    """The body of ``GET /v1/info``: enabled auth paths and modules, never a secret."""
    config = current_app.config
    from app.messaging.authorization import get_backend

    return {
        "version": config["VERSION"],
        "authorization_backend": type(get_backend()).__name__,
        "authentication_paths": {
            "per_user_api_key": True,
            "session_token": bool(config["SESSION_SECRET"]),
            "internal_token_with_on_behalf_of": bool(
                config["EXTERNAL_AUTH_BACKEND"] and config["INTERNAL_AUTH_TOKEN"]),
        },
        "disabled_primitives": disabled_primitives(config),
        "modules": list(current_app.extensions["cueline_modules"]),
    }
