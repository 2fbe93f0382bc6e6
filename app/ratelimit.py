"""Request rate limiting with Flask-Limiter: per user, per client address, and per endpoint.

* Every request except the exempt paths counts against one bucket: the authenticated user's
  (``rate_limit_per_minute``, read fresh each request, so an upsert changes it at once) — the
  same bucket whether the user called with their key, a session, or through delegation — or,
  for anonymous traffic and failed credentials, the client address
  (``RATE_LIMIT_ANONYMOUS_PER_MINUTE``).
  A limit of 0 means unlimited.
* Allowed responses carry ``X-RateLimit-Limit/Remaining/Reset``; a refusal is
  ``429 rate_limit_exceeded`` with an integer ``Retry-After``.
* Counters live in ``RATELIMIT_STORAGE_URI``: ``memory://`` (per process) by default, Redis to
  share them across gunicorn workers and machines.  If the storage is unreachable requests are
  let through (fail open) and a warning is logged.
* ``SERVICE_RATE_LIMIT_PER_MINUTE`` adds one bucket per service principal for delegated requests.
  A request counts against a bucket only if no bucket refused it: the principal's is looked at
  (without counting) before the subject user's is counted, so a principal over its limit does
  not use up its users' limits with requests it is refused; a request the user's limit refuses
  is not counted against the principal either.
* :func:`limit` adds an endpoint-specific limit (device-code creation, e-mail submission …).

The Limiter is built per app, like the Api, so two apps never share counters or settings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import wraps

from flask import Flask, current_app, request
from flask_limiter import Limiter
from limits import parse
from limits.storage import MemoryStorage

from app.errors import AppError

#: Paths never rate limited (probes, docs, the service-only surface).
EXEMPT_PATHS = frozenset({"/health", "/status", "/v1/info", "/metrics", "/openapi.json", "/docs",
                          "/auth/device", "/v1/auth/verify"})
EXEMPT_PREFIXES = ("/v1/internal/", "/docs/")


class SweepingMemoryStorage(MemoryStorage):
    """``memory://`` counters without a timer thread per burst of requests.

    The stock in-memory storage schedules a 10 ms ``threading.Timer`` to purge expired counters
    whenever the previous one has finished — under steady traffic a new thread every 10 ms per
    process, which measured as 0.2–0.4 ms of CPU per request.  Expired counters are already
    dropped when read, so the purge only bounds memory: here it runs inline, on the request
    that finds it due, at most once per :attr:`SWEEP_SECONDS`.
    """

    STORAGE_SCHEME = ["cueline-memory"]
    SWEEP_SECONDS = 10.0

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._next_sweep = time.monotonic() + self.SWEEP_SECONDS
        self._sweeping = threading.Lock()

    def _MemoryStorage__schedule_expiry(self) -> None:  # replaces the timer of the base class
        now = time.monotonic()
        if now < self._next_sweep or not self._sweeping.acquire(blocking=False):
            return
        try:
            self._next_sweep = now + self.SWEEP_SECONDS
            self._MemoryStorage__expire_events()
        finally:
            self._sweeping.release()


def storage_uri(configured: str) -> str:
    """The limits storage URI for ``RATELIMIT_STORAGE_URI`` (``memory://`` → the sweeping one)."""
    if configured.startswith("memory://"):
        return "cueline-memory://" + configured[len("memory://"):]
    return configured


def retry_message(seconds: int, what: str = "Too many requests") -> str:
    """The wire's wording of a 429 (clients and people look for "Retry after")."""
    unit = "second" if seconds == 1 else "seconds"
    return f"{what}. Retry after {seconds} {unit}."


def global_retry_after() -> int:
    """Seconds until the caller's global window frees a request (60 when unknown)."""
    try:
        current = current_app.extensions["cueline_limiter"].current_limit
    except Exception:  # noqa: BLE001 - storage down or no limit evaluated
        current = None
    if current is None:
        return 60
    return max(1, int(current.reset_at - time.time()))


def client_address() -> str:
    """The client's address as the WSGI server reports it (proxies: see docs/operations.md)."""
    return request.remote_addr or "unknown"


def _subject():
    """The authenticated user for bucketing, or None (never raises)."""
    from app.auth.decorators import try_identity

    identity = try_identity()
    return identity.user if identity is not None else None


def _bucket() -> str:
    user = _subject()
    return f"user:{user.id}" if user is not None else f"addr:{client_address()}"


def _per_minute() -> int:
    user = _subject()
    if user is not None:
        return user.rate_limit_per_minute
    return current_app.config["RATE_LIMIT_ANONYMOUS_PER_MINUTE"]


def _default_limit() -> str:
    return f"{max(_per_minute(), 1)} per minute"


def _exempt_request() -> bool:
    """Probes, docs, the service-only surface and preflights: never counted.

    A request filter, so Flask-Limiter skips these before resolving any limit.
    """
    path = request.path
    return path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES) or request.method == "OPTIONS"


def _unlimited() -> bool:
    return _per_minute() <= 0


def build_limiter(app: Flask) -> Limiter:
    """Create the app's Limiter (its before_request hook runs where this is called)."""
    # Registered before the limiter's own hook: a principal already over its limit is refused
    # before the subject user's bucket counts the request.
    app.before_request(_peek_service_principal_limit)
    limiter = Limiter(
        key_func=_bucket,
        app=app,
        application_limits=[_default_limit],
        application_limits_exempt_when=_unlimited,
        storage_uri=storage_uri(app.config["RATELIMIT_STORAGE_URI"]),
        strategy="sliding-window-counter",
        headers_enabled=True,
        retry_after="delta-seconds",
        swallow_errors=True,
        in_memory_fallback_enabled=False,
        key_prefix="cueline",
    )
    limiter.request_filter(_exempt_request)
    app.extensions["cueline_limiter"] = limiter
    # Runs after the limiter's own hook: the subject user's limit is checked first.
    app.before_request(_check_service_principal_limit)
    return limiter


def _service_principal_bucket():
    """``(limiter, item, bucket)`` of the principal behind a delegated request, else None."""
    per_minute = current_app.config["SERVICE_RATE_LIMIT_PER_MINUTE"]
    limiter: Limiter = current_app.extensions["cueline_limiter"]
    path = request.path
    if (per_minute <= 0 or not limiter.enabled or request.method == "OPTIONS"
            or path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES)):
        return None
    from app.auth.decorators import try_identity

    identity = try_identity()
    if identity is None or identity.principal is None:
        return None
    item = parse(f"{per_minute} per minute")
    return limiter, item, f"principal:{identity.principal.principal_id or identity.principal.name}"


def _refuse_service(limiter: Limiter, item, bucket: str) -> None:
    reset, _remaining = limiter.limiter.get_window_stats(item, "service-principal", bucket)
    retry = max(1, int(reset - time.time()))
    per_minute = current_app.config["SERVICE_RATE_LIMIT_PER_MINUTE"]
    from app.metrics import count_rate_limit_refusal

    count_rate_limit_refusal("service")
    raise AppError("rate_limit_exceeded",
                   retry_message(retry, f"Too many requests from this service principal "
                                        f"({per_minute} per minute)"), 429,
                   headers={"Retry-After": str(retry)}, limit_scope="service")


def _peek_service_principal_limit() -> None:
    """Before the subject user's bucket counts: refuse a principal already over its limit,
    without counting the request anywhere."""
    found = _service_principal_bucket()
    if found is None:
        return
    limiter, item, bucket = found
    try:
        allowed = limiter.limiter.test(item, "service-principal", bucket)
    except Exception:  # noqa: BLE001 - storage down: fail open like the global limiter
        return
    if not allowed:
        _refuse_service(limiter, item, bucket)


def _check_service_principal_limit() -> None:
    """``SERVICE_RATE_LIMIT_PER_MINUTE``: one bucket per service principal, over all its users.

    Counted for delegated requests the subject user's limit let through (``/v1/internal/*``
    stays unlimited, as the wire protocol has it).  A refusal is ``429 rate_limit_exceeded``
    with ``limit_scope: "service"`` so an integrator can tell its own cap from a user's.
    """
    found = _service_principal_bucket()
    if found is None:
        return
    limiter, item, bucket = found
    try:
        allowed = limiter.limiter.hit(item, "service-principal", bucket)
        if not allowed:
            _refuse_service(limiter, item, bucket)
    except AppError:
        raise
    except Exception:  # noqa: BLE001 - storage down: fail open like the global limiter
        current_app.logger.warning("rate limit storage unavailable; service limit not enforced")


def limit(limit_value: str, key: Callable[[], str], scope: str):
    """Decorator: an extra limit on one endpoint.

    Example: ``limit("5/hour", client_address, "device-code")``.

    Counted only for requests that reach the view; refusals answer ``429 rate_limit_exceeded``
    with ``Retry-After``.  Off when ``RATELIMIT_ENABLED=false``.
    """
    item = parse(limit_value)

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            limiter: Limiter = current_app.extensions["cueline_limiter"]
            if not limiter.enabled:
                return view(*args, **kwargs)
            strategy = limiter.limiter
            bucket = key()
            try:
                allowed = strategy.hit(item, scope, bucket)
                if not allowed:
                    reset, _remaining = strategy.get_window_stats(item, scope, bucket)
            except Exception:  # noqa: BLE001 - storage down: fail open like the global limiter
                current_app.logger.warning("rate limit storage unavailable; %s not enforced", scope)
                return view(*args, **kwargs)
            if not allowed:
                from app.metrics import count_rate_limit_refusal

                count_rate_limit_refusal(scope)
                retry = max(1, int(reset - time.time()))
                raise AppError("rate_limit_exceeded",
                               retry_message(retry, f"Too many requests ({limit_value})"), 429,
                               headers={"Retry-After": str(retry)})
            return view(*args, **kwargs)

        return wrapper

    return decorator


def current_usage() -> int:
    """Requests counted in the caller's current window (0 when not limited or unknown)."""
    limiter: Limiter = current_app.extensions["cueline_limiter"]
    try:
        current = limiter.current_limit
    except Exception:  # noqa: BLE001 - storage down
        return 0
    if current is None:
        return 0
    return max(current.limit.amount - current.remaining, 0)
