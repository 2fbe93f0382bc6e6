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
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, get_type_hints
from urllib.parse import urlsplit

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


#: Exit status of a process that refuses to start over its configuration.  It is gunicorn's
#: "App failed to load" status, so a gunicorn master whose workers exit with it stops at once
#: instead of respawning them.
CONFIG_ERROR_EXIT_STATUS = 4


def format_problems(problems: list[str], heading: str = "Invalid Cueline configuration:") -> str:
    """One clean, readable list: a heading and one ``  - problem`` line each."""
    return "\n".join([heading, *(f"  - {p}" for p in problems)])


@contextmanager
def exit_on_config_error() -> Iterator[None]:
    """For process entry points (``wsgi.py``, ``gunicorn.conf.py``): a :class:`ConfigError`
    raised inside prints its list of problems to stderr, without a traceback, and ends the
    process with :data:`CONFIG_ERROR_EXIT_STATUS`.  Library code (``create_app``) keeps
    raising the ordinary exception."""
    try:
        yield
    except ConfigError as exc:
        print(format_problems(exc.problems), file=sys.stderr)
        print("Nothing was started. Fix the settings above (environment or .env); "
              "`flask --app wsgi config check` validates them without starting anything.",
              file=sys.stderr)
        sys.stderr.flush()
        raise SystemExit(CONFIG_ERROR_EXIT_STATUS) from None


def check_environment() -> dict[str, Any]:
    """Load and validate the configuration from the environment (and ``.env``), raising
    :class:`ConfigError` with every problem; the settings when they are usable."""
    values = load_config(None)
    problems = validate(values)
    if problems:
        raise ConfigError(problems)
    return values


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

    # --- events: long poll, digests, webhook subscriptions ----------------------------------
    EVENTS_LONG_POLL_SECONDS: float = 30.0
    EVENTS_LONG_POLL_RECHECK_SECONDS: float = 1.0
    EVENTS_LONG_POLL_MAX_WAITERS: int = 100
    DIGEST_PERIOD_SECONDS: float = 600.0
    DIGEST_MIN_BATCH_SIZE: int = 1
    PRIORITY_4_DEBOUNCE_SECONDS: float = 2.0
    EVENT_RETENTION_DAYS: int = 7
    # --- metrics (Prometheus) ---------------------------------------------------------------
    METRICS_ENABLED: bool = False
    METRICS_TOKEN: str = ""

    # --- e-mail (device-code login links) ---------------------------------------------------
    SMTP_URL: str = ""  # empty = log messages instead of sending them (development)
    MAIL_FROM: str = ""

    # --- operator console (/console) --------------------------------------------------------
    CONSOLE_ENABLED: bool = False
    CONSOLE_ADMINS: str = ""  # comma-separated e-mail addresses of the operators
    CONSOLE_SESSION_HOURS: int = 12


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
    metrics_token = values["METRICS_TOKEN"]
    if metrics_token and (len(metrics_token) < 16 or re.search(r"\s", metrics_token)):
        problems.append("METRICS_TOKEN must be at least 16 characters without whitespace "
                        f"(or empty); {GENERATE_SECRET_HINT}")
    if not 0 <= values["DB_PING_IDLE_SECONDS"] <= 3600:
        problems.append("DB_PING_IDLE_SECONDS must be between 0 and 3600 (0 = ping every reuse)")
    if values["LOG_LEVEL"].upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        problems.append(f"LOG_LEVEL: {values['LOG_LEVEL']!r} is not a logging level")
    problems.extend(_scheduling_problems(values))
    problems.extend(_messaging_problems(values))
    problems.extend(_events_problems(values))
    problems.extend(_mail_problems(values))
    problems.extend(_delegation_problems(values))
    problems.extend(_console_problems(values))
    return problems


#: Longest operator address accepted in ``CONSOLE_ADMINS`` (the SMTP limit on a path).
CONSOLE_ADMIN_MAX_LENGTH = 254
_ADMIN_ADDRESS = re.compile(r"^[^@\s,]+@[^@\s,]+\.[^@\s,]+$")


def console_admins(value: str) -> list[str]:
    """The operator addresses in a ``CONSOLE_ADMINS`` value, trimmed, lower-cased, de-duplicated
    (e-mail matching is case-insensitive for the console: the link always goes to the address
    configured here)."""
    return list(dict.fromkeys(part.strip().lower() for part in value.split(",") if part.strip()))


def _console_problems(values: Mapping[str, Any]) -> list[str]:
    """Problems with the operator console settings."""
    problems: list[str] = []
    admins = console_admins(values["CONSOLE_ADMINS"])
    for address in admins:
        if len(address) > CONSOLE_ADMIN_MAX_LENGTH or not _ADMIN_ADDRESS.match(address):
            problems.append(f"CONSOLE_ADMINS: {address[:80]!r} is not an e-mail address "
                            "(use a comma-separated list such as ops@example.com,me@example.com)")
    if not 1 <= values["CONSOLE_SESSION_HOURS"] <= 720:
        problems.append("CONSOLE_SESSION_HOURS must be between 1 and 720")
    if values["CONSOLE_ENABLED"]:
        if not admins:
            problems.append("CONSOLE_ENABLED=true needs CONSOLE_ADMINS: the e-mail addresses of "
                            "the operators who may sign in")
        if not values["SESSION_SECRET"]:
            problems.append("CONSOLE_ENABLED=true needs SESSION_SECRET (it signs the console's "
                            f"CSRF tokens); {GENERATE_SECRET_HINT}")
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


def _events_problems(values: Mapping[str, Any]) -> list[str]:
    """Problems with the event settings (long poll, digests, webhook subscriptions)."""
    problems: list[str] = []
    if not 0 < values["EVENTS_LONG_POLL_SECONDS"] <= 30:
        problems.append("EVENTS_LONG_POLL_SECONDS must be greater than 0 and at most 30 "
                        "(the wire protocol's long-poll limit)")
    if values["EVENTS_LONG_POLL_RECHECK_SECONDS"] <= 0:
        problems.append("EVENTS_LONG_POLL_RECHECK_SECONDS must be greater than 0")
    if values["EVENTS_LONG_POLL_MAX_WAITERS"] < 0:
        problems.append("EVENTS_LONG_POLL_MAX_WAITERS must not be negative (0 = never wait)")
    if values["DIGEST_PERIOD_SECONDS"] < 1 or values["DIGEST_MIN_BATCH_SIZE"] < 1:
        problems.append("DIGEST_PERIOD_SECONDS and DIGEST_MIN_BATCH_SIZE must be at least 1")
    if values["PRIORITY_4_DEBOUNCE_SECONDS"] < 0:
        problems.append("PRIORITY_4_DEBOUNCE_SECONDS must not be negative (0 = no debounce)")
    if values["EVENT_RETENTION_DAYS"] < 0:
        problems.append("EVENT_RETENTION_DAYS must not be negative (0 = keep forever)")
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


_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")


def web_process_count(environ: Mapping[str, str] | None = None) -> int:
    """How many gunicorn workers ``gunicorn.conf.py`` starts (``WEB_CONCURRENCY`` or one per
    core): the figure the Redis warning compares against."""
    environ = os.environ if environ is None else environ
    raw = (environ.get("WEB_CONCURRENCY") or "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    return os.cpu_count() or 1


def production_warnings(values: Mapping[str, Any], web_processes: int = 1) -> list[str]:
    """Risks of a *valid* configuration, reported by ``flask config check`` (never refused at
    start-up: each has a legitimate use).  Most apply to ``ENV=production`` only; the list is
    documented in docs/configuration.md ("Production warnings")."""
    warnings: list[str] = []
    production = values["ENV"] == "production"
    limiter_in_memory = values["RATELIMIT_ENABLED"] and \
        values["RATELIMIT_STORAGE_URI"].startswith("memory://")
    if limiter_in_memory and web_processes > 1:
        warnings.append(
            f"RATELIMIT_STORAGE_URI is memory:// with {web_processes} web processes "
            "(WEB_CONCURRENCY or one per core): each counts on its own, so users get up to "
            f"{web_processes}x their limit; set RATELIMIT_STORAGE_URI=redis://host:6379/0")
    if values["METRICS_ENABLED"] and web_processes > 1 and not os.environ.get(
            "PROMETHEUS_MULTIPROC_DIR"):
        warnings.append(f"METRICS_ENABLED=true with {web_processes} web processes but no "
                        "PROMETHEUS_MULTIPROC_DIR: each scrape sees one process's counts; "
                        "set it to an empty directory shared by the web processes and worker")
    if not production:
        return warnings
    if values["METRICS_ENABLED"] and not values["METRICS_TOKEN"]:
        warnings.append("METRICS_ENABLED=true without METRICS_TOKEN: anyone who reaches "
                        "/metrics reads it (routes, principal names); set a token or block "
                        "/metrics at the proxy")
    if not values["SESSION_SECRET"]:
        warnings.append("SESSION_SECRET is empty: session tokens (CLI login) are refused and "
                        f"stored key copies cannot be revealed; {GENERATE_SECRET_HINT}")
    if not values["SMTP_URL"]:
        warnings.append("SMTP_URL is empty: login e-mails are written to the log instead of "
                        "sent, and anyone who reads the log can log in as the recipient")
    base = urlsplit(values["BASE_URL"])
    if (base.hostname or "") in _LOCAL_HOSTS or (base.hostname or "").startswith("127."):
        warnings.append(f"BASE_URL is {values['BASE_URL']!r}: links in e-mails and login "
                        "pages point at this machine; set the public URL users reach")
    elif base.scheme != "https":
        warnings.append(f"BASE_URL is {values['BASE_URL']!r}: use https, or login links and "
                        "API keys travel unencrypted")
    url = values["DATABASE_URL"]
    if not url or url.startswith("sqlite"):
        warnings.append("DATABASE_URL is SQLite: fine for one machine with one web process "
                        "and one worker; use PostgreSQL in production (docs/deploying.md)")
    if values["ALLOW_PRIVATE_CALLBACK_URLS"]:
        warnings.append("ALLOW_PRIVATE_CALLBACK_URLS=true: any user can make this server send "
                        "requests into your private network")
    if not values["RATELIMIT_ENABLED"]:
        warnings.append("RATELIMIT_ENABLED=false: nothing limits request rates unless a "
                        "gateway in front does")
    if values["AUTHORIZATION_BACKEND"].endswith(":EveryoneAuthorizationBackend"):
        warnings.append("AUTHORIZATION_BACKEND is EveryoneAuthorizationBackend: any user's "
                        "agent may message any other user's agent")
    if values["INTERNAL_AUTH_TOKEN_PREVIOUS"]:
        warnings.append("INTERNAL_AUTH_TOKEN_PREVIOUS is set: the old service token still "
                        "works; empty it once the rotation is rolled out")
    if values["LOG_LEVEL"].upper() == "DEBUG":
        warnings.append("LOG_LEVEL=DEBUG: verbose logs; use INFO in production")
    if values["DISABLE_QUOTA_ENFORCEMENT"]:
        warnings.append("DISABLE_QUOTA_ENFORCEMENT=true: no cue, execution or message quota "
                        "is enforced")
    return warnings
