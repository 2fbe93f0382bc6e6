"""Cueline configuration: typed defaults, one environment loader, and ``validate()``.

Every setting is a class attribute of :class:`Config` with a type annotation and a default; the
annotation drives parsing, so adding a setting is one line here plus one row in
``docs/configuration.md`` (a test keeps the two in step).  Nothing here reads the environment at
import time: :func:`load_config` does, when ``create_app`` (or ``flask config check``) asks.

Problems are collected, never raised one at a time, so an operator sees every mistake in one go.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, get_type_hints

from dotenv import dotenv_values
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

#: Minimum length of ``INTERNAL_AUTH_TOKEN`` (and ``SESSION_SECRET``) accepted at start-up.
MIN_SECRET_LENGTH = 32
GENERATE_SECRET_HINT = (
    "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'")

ENVIRONMENTS = ("development", "test", "production")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(Exception):
    """Raised when the configuration is unusable; ``problems`` lists every reason at once."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"Invalid Cueline configuration:\n{lines}")


class Config:
    """Defaults for every setting.  Types are enforced by :func:`load_config`."""

    # --- deployment -------------------------------------------------------------------------
    ENV: str = "development"
    DATABASE_URL: str = ""  # empty = SQLite file under the instance folder
    BASE_URL: str = "http://localhost:8000"
    LOG_LEVEL: str = "INFO"
    SESSION_SECRET: str = ""

    # --- identity ---------------------------------------------------------------------------
    EXTERNAL_AUTH_BACKEND: bool = False
    INTERNAL_AUTH_TOKEN: str = ""
    ALLOW_REGISTER: bool = True

    # --- delegation: env-token rotation, service principals, audit trail ---------------------
    INTERNAL_AUTH_TOKEN_PREVIOUS: str = ""
    SERVICE_RATE_LIMIT_PER_MINUTE: int = 0
    AUDIT_RETENTION_DAYS: int = 90
    AUDIT_RETENTION_INTERVAL_SECONDS: int = 3600
    AUDIT_FLUSH_INTERVAL_SECONDS: float = 0.5
    AUDIT_FLUSH_BATCH: int = 500

    # --- packaging flags --------------------------------------------------------------------
    DISABLE_DEVICE_CODE: bool = False
    DISABLE_CUE_PRIMITIVE: bool = False
    DISABLE_QUOTA_ENFORCEMENT: bool = False

    # --- request rate limiting -------------------------------------------------------------
    RATELIMIT_ENABLED: bool = True
    RATELIMIT_STORAGE_URI: str = "memory://"
    RATE_LIMIT_ANONYMOUS_PER_MINUTE: int = 60

    # --- database pool (PostgreSQL) ---------------------------------------------------------
    DB_POOL_SIZE: int = 5
    DB_MAX_OVERFLOW: int = 10
    DB_CONNECT_TIMEOUT_SECONDS: int = 5
    DB_PING_IDLE_SECONDS: float = 5.0

    # --- scheduling: outbound webhooks and the background worker ----------------------------
    ALLOW_PRIVATE_CALLBACK_URLS: bool = False
    WEBHOOK_TIMEOUT_SECONDS: float = 30.0
    POLLER_INTERVAL_SECONDS: float = 0.5
    POLLER_BATCH_SIZE: int = 500
    POLLER_MAX_CATCH_UP_SLOTS: int = 1
    DELIVERY_CONCURRENCY: int = 16
    EXECUTION_STALE_AFTER_SECONDS: int = 300
    WORKER_HEARTBEAT_TIMEOUT_SECONDS: int = 180
    WORKER_CLAIM_TIMEOUT_SECONDS: int = 900
    WORKER_UNCLAIMED_TIMEOUT_SECONDS: int = 900
    WORKER_SHUTDOWN_GRACE_SECONDS: float = 10.0

    # --- messaging: retention, push delivery, authorization ----------------------------------
    MESSAGE_TTL_DAYS: int = 30
    MESSAGE_EXPIRED_RETENTION_DAYS: int = 7
    MESSAGE_RETENTION_INTERVAL_SECONDS: int = 3600
    MESSAGE_DELIVERY_STALE_AFTER_SECONDS: int = 300
    MAX_CONCURRENT_DELIVERIES_PER_USER: int = 50
    AUTHORIZATION_BACKEND: str = ""
    AUTHZ_HOOK_URL: str = ""
    AUTHZ_HOOK_SECRET: str = ""
    AUTHZ_HOOK_TIMEOUT_SECONDS: float = 5.0
    AUTHZ_ALLOWLIST: str = ""

    # --- e-mail (device-code login links) ---------------------------------------------------
    SMTP_URL: str = ""  # empty = log messages instead of sending them (development)
    MAIL_FROM: str = ""


def setting_types() -> dict[str, type]:
    """Return ``{name: type}`` for every declared setting."""
    return {name: tp for name, tp in get_type_hints(Config).items() if name.isupper()}


def _parse(name: str, tp: type, raw: Any, problems: list[str]) -> Any:
    """Turn one raw value (usually a string from the environment) into ``tp``."""
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        problems.append(f"{name}: {raw!r} is not a boolean (use true or false)")
        return None
    if tp is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        try:
            return int(str(raw).strip())
        except ValueError:
            problems.append(f"{name}: {raw!r} is not an integer")
            return None
    if tp is float:
        try:
            return float(str(raw).strip())
        except ValueError:
            problems.append(f"{name}: {raw!r} is not a number")
            return None
    if not isinstance(raw, str):
        problems.append(f"{name}: expected a string, got {type(raw).__name__}")
        return None
    return raw.strip()


def load_config(
    source: Mapping[str, Any] | None = None,
    env_file: str | None = ".env",
    **overrides: Any,
) -> dict[str, Any]:
    """Build the typed settings dict.

    With ``source=None`` the values come from ``env_file`` (if it exists) overlaid by
    ``os.environ``; with an explicit ``source`` mapping only that mapping is used (tests build
    hermetic apps this way).  ``overrides`` win over both.  Unknown keys in ``source`` or
    ``overrides`` that are not settings are passed through untouched (Flask options such as
    ``TESTING``).  Raises :class:`ConfigError` listing every unparsable value.
    """
    if source is None:
        merged: dict[str, Any] = {}
        if env_file and os.path.exists(env_file):
            merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        merged.update(os.environ)
    else:
        merged = dict(source)
    merged.update(overrides)

    types = setting_types()
    problems: list[str] = []
    values: dict[str, Any] = {}
    for name, tp in types.items():
        raw = merged.get(name, getattr(Config, name))
        values[name] = _parse(name, tp, raw, problems)
    if problems:
        raise ConfigError(problems)
    # Pass through extra keys given explicitly (never the whole process environment).
    extras = overrides if source is None else {**source, **overrides}
    for key, value in extras.items():
        if key not in types:
            values[key] = value
    values["DATABASE_URL"] = normalize_database_url(values["DATABASE_URL"])
    return values


def normalize_database_url(url: str) -> str:
    """Map the common spellings of a PostgreSQL URL onto the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def validate(values: Mapping[str, Any]) -> list[str]:
    """Return every problem with a loaded configuration (empty list = usable)."""
    problems: list[str] = []
    env = values["ENV"]
    if env not in ENVIRONMENTS:
        problems.append(f"ENV: {env!r} is not one of {', '.join(ENVIRONMENTS)}")

    token = values["INTERNAL_AUTH_TOKEN"]
    if values["EXTERNAL_AUTH_BACKEND"]:
        if not token:
            problems.append(
                "INTERNAL_AUTH_TOKEN is empty but EXTERNAL_AUTH_BACKEND=true needs it as the "
                f"service credential; {GENERATE_SECRET_HINT}"
            )
        elif len(token) < MIN_SECRET_LENGTH:
            problems.append(
                f"INTERNAL_AUTH_TOKEN is {len(token)} characters; EXTERNAL_AUTH_BACKEND=true "
                f"needs at least {MIN_SECRET_LENGTH}; {GENERATE_SECRET_HINT}"
            )
    if token and re.search(r"\s", token):
        problems.append("INTERNAL_AUTH_TOKEN must not contain whitespace")

    secret = values["SESSION_SECRET"]
    if secret and len(secret) < MIN_SECRET_LENGTH:
        problems.append(
            f"SESSION_SECRET is {len(secret)} characters; use at least {MIN_SECRET_LENGTH} "
            f"(or leave it empty to disable sessions); {GENERATE_SECRET_HINT}"
        )

    url = values["DATABASE_URL"]
    if url:
        try:
            backend = make_url(url).get_backend_name()
        except ArgumentError:
            problems.append(f"DATABASE_URL: cannot parse {_redact_url(url)!r}")
        else:
            if backend not in ("sqlite", "postgresql"):
                problems.append(
                    f"DATABASE_URL: unsupported database {backend!r} (use sqlite or postgresql)"
                )

    for name in ("DB_POOL_SIZE", "DB_CONNECT_TIMEOUT_SECONDS"):
        if values[name] < 1:
            problems.append(f"{name} must be at least 1")
    if values["RATE_LIMIT_ANONYMOUS_PER_MINUTE"] < 0:
        problems.append("RATE_LIMIT_ANONYMOUS_PER_MINUTE must not be negative (0 = unlimited)")
    if not values["RATELIMIT_STORAGE_URI"].startswith(("memory://", "redis://", "rediss://",
                                                        "redis+unix://", "redis+sentinel://")):
        problems.append("RATELIMIT_STORAGE_URI must be memory:// or a redis:// URL")
    if values["DB_MAX_OVERFLOW"] < 0:
        problems.append("DB_MAX_OVERFLOW must not be negative")
    if not 0 <= values["DB_PING_IDLE_SECONDS"] <= 3600:
        problems.append("DB_PING_IDLE_SECONDS must be between 0 and 3600 (0 = ping every reuse)")
    if values["LOG_LEVEL"].upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        problems.append(f"LOG_LEVEL: {values['LOG_LEVEL']!r} is not a logging level")
    problems.extend(_scheduling_problems(values))
    problems.extend(_messaging_problems(values))
    problems.extend(_mail_problems(values))
    problems.extend(_delegation_problems(values))
    return problems


def _delegation_problems(values: Mapping[str, Any]) -> list[str]:
    """Problems with the env-token rotation, service rate limit and audit settings."""
    problems: list[str] = []
    previous = values["INTERNAL_AUTH_TOKEN_PREVIOUS"]
    if previous:
        if len(previous) < MIN_SECRET_LENGTH or re.search(r"\s", previous):
            problems.append(f"INTERNAL_AUTH_TOKEN_PREVIOUS must be at least {MIN_SECRET_LENGTH} "
                            "characters without whitespace (or empty)")
        if previous == values["INTERNAL_AUTH_TOKEN"]:
            problems.append("INTERNAL_AUTH_TOKEN_PREVIOUS equals INTERNAL_AUTH_TOKEN; set it to "
                            "the old value during a rotation, or leave it empty")
    for name in ("SERVICE_RATE_LIMIT_PER_MINUTE", "AUDIT_RETENTION_DAYS"):
        if values[name] < 0:
            problems.append(f"{name} must not be negative (0 = no limit / keep forever)")
    if values["AUDIT_RETENTION_INTERVAL_SECONDS"] < 1 or values["AUDIT_FLUSH_BATCH"] < 1:
        problems.append("AUDIT_RETENTION_INTERVAL_SECONDS and AUDIT_FLUSH_BATCH must be at least 1")
    if not 0 < values["AUDIT_FLUSH_INTERVAL_SECONDS"] <= 60:
        problems.append("AUDIT_FLUSH_INTERVAL_SECONDS must be greater than 0 and at most 60")
    return problems


def _scheduling_problems(values: Mapping[str, Any]) -> list[str]:
    """Problems with the scheduling / background-worker settings."""
    problems: list[str] = []
    for name in ("WEBHOOK_TIMEOUT_SECONDS", "POLLER_INTERVAL_SECONDS"):
        if not 0 < values[name] <= 300:
            problems.append(f"{name} must be greater than 0 and at most 300 seconds")
    for name in ("POLLER_BATCH_SIZE", "DELIVERY_CONCURRENCY", "EXECUTION_STALE_AFTER_SECONDS",
                 "WORKER_HEARTBEAT_TIMEOUT_SECONDS", "WORKER_CLAIM_TIMEOUT_SECONDS",
                 "WORKER_UNCLAIMED_TIMEOUT_SECONDS"):
        if values[name] < 1:
            problems.append(f"{name} must be at least 1")
    if not 1 <= values["POLLER_MAX_CATCH_UP_SLOTS"] <= 1000:
        problems.append("POLLER_MAX_CATCH_UP_SLOTS must be between 1 and 1000")
    if values["WORKER_SHUTDOWN_GRACE_SECONDS"] < 0:
        problems.append("WORKER_SHUTDOWN_GRACE_SECONDS must not be negative")
    # A delivery still waiting on its HTTP response must not be declared stale and re-sent.
    if values["EXECUTION_STALE_AFTER_SECONDS"] <= values["WEBHOOK_TIMEOUT_SECONDS"]:
        problems.append("EXECUTION_STALE_AFTER_SECONDS must be longer than "
                        "WEBHOOK_TIMEOUT_SECONDS, or in-flight deliveries would be re-sent")
    return problems


def _redact_url(url: str) -> str:
    """Hide a password in a database URL before it appears in a message."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def _messaging_problems(values: Mapping[str, Any]) -> list[str]:
    """Problems with the messaging settings, including the authorization backend selection."""
    problems: list[str] = []
    for name in ("MESSAGE_TTL_DAYS", "MESSAGE_RETENTION_INTERVAL_SECONDS",
                 "MAX_CONCURRENT_DELIVERIES_PER_USER"):
        if values[name] < 1:
            problems.append(f"{name} must be at least 1")
    if values["MESSAGE_EXPIRED_RETENTION_DAYS"] < 0:
        problems.append("MESSAGE_EXPIRED_RETENTION_DAYS must not be negative")
    # A push still waiting on its HTTP response must not be declared stale and sent twice.
    if values["MESSAGE_DELIVERY_STALE_AFTER_SECONDS"] <= values["WEBHOOK_TIMEOUT_SECONDS"]:
        problems.append("MESSAGE_DELIVERY_STALE_AFTER_SECONDS must be longer than "
                        "WEBHOOK_TIMEOUT_SECONDS, or in-flight pushes would be re-sent")
    if not 0 < values["AUTHZ_HOOK_TIMEOUT_SECONDS"] <= 60:
        problems.append("AUTHZ_HOOK_TIMEOUT_SECONDS must be greater than 0 and at most 60")
    from app.messaging.authorization import configuration_problems

    problems.extend(configuration_problems(values))
    return problems


def _mail_problems(values: Mapping[str, Any]) -> list[str]:
    """Problems with the SMTP settings (the password in SMTP_URL is never echoed)."""
    url = values["SMTP_URL"]
    if not url:
        return []
    from app.mail import parse_smtp_url

    problems: list[str] = []
    try:
        parse_smtp_url(url)
    except ValueError as exc:
        problems.append(f"SMTP_URL {exc} (expected smtp://user:password@host:port or "
                        "smtps://user:password@host:port)")
    if "@" not in values["MAIL_FROM"]:
        problems.append("MAIL_FROM must be set to a sender address (e.g. "
                        "'Cueline <noreply@example.com>') when SMTP_URL is set")
    return problems
