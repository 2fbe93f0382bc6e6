"""Health probes and the public description of a deployment (no secrets)."""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app
from sqlalchemy import text

from app.db import dialect_name, utcnow
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


def redis_status() -> str:
    """``ok`` / ``error`` for the Redis of ``RATELIMIT_STORAGE_URI``; ``none`` when no Redis is
    in use (``memory://`` storage, or rate limiting switched off)."""
    limiter = current_app.extensions["cueline_limiter"]
    if (not limiter.enabled
            or not current_app.config["RATELIMIT_STORAGE_URI"].startswith(("redis", "rediss"))):
        return "none"
    try:
        return "ok" if limiter.storage.check() else "error"
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        log.warning("health: redis check failed: %s", type(exc).__name__)
        return "error"


def health_report() -> dict[str, Any]:
    """The body of ``GET /health`` (wire §12.2).

    ``services``: ``database`` (Cueline's own key, whatever the backend), ``postgres`` (the
    same check when the database is PostgreSQL, ``none`` on SQLite), ``redis`` (``none`` when
    no Redis is configured) and ``worker`` (``ok`` when a pull worker sent a heartbeat
    recently, ``none`` otherwise — not a fault: webhook-only deployments have none).
    """
    database = "ok" if database_ok() else "error"
    redis = redis_status()
    postgres = database if dialect_name() == "postgresql" else "none"
    report = {
        "status": "healthy" if database == "ok" and redis != "error" else "degraded",
        "version": current_app.config["VERSION"],
        "timestamp": utcnow().isoformat(),
        "services": {"database": database, "postgres": postgres, "redis": redis,
                     "worker": "unknown"},
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


def deployment_info(include_modules: bool = False) -> dict[str, Any]:
    """The body of ``GET /v1/info``: exactly the wire protocol's four keys (§12.4), plus the
    mounted ``modules`` when asked for (``?include=modules``, a Cueline extension; CueAPI's
    clients and tests expect the four keys alone).  Never a secret."""
    config = current_app.config
    from app.messaging.authorization import get_backend

    info = {
        "version": config["VERSION"],
        "authorization_backend": type(get_backend()).__name__,
        "authentication_paths": {
            "per_user_api_key": True,
            "session_token": bool(config["SESSION_SECRET"]),
            "internal_token_with_on_behalf_of": bool(
                config["EXTERNAL_AUTH_BACKEND"] and config["INTERNAL_AUTH_TOKEN"]),
        },
        "disabled_primitives": disabled_primitives(config),
    }
    if include_modules:
        info["modules"] = list(current_app.extensions["cueline_modules"])
    return info
