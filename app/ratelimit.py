"""Request rate limiting: per user, per client address, per service principal, per endpoint.

* Every request except the exempt paths counts against one bucket: the authenticated user's
  (``rate_limit_per_minute``, read fresh each request, so an upsert changes it at once) — the
  same bucket whether the user called with their key, a session, or through delegation — or,
  for anonymous traffic and failed credentials, the client address
  (``RATE_LIMIT_ANONYMOUS_PER_MINUTE``).
  A limit of 0 means unlimited.
* Allowed responses carry ``X-RateLimit-Limit/Remaining/Reset`` (and ``Retry-After``, the
  seconds until the window frees a request); a refusal is ``429 rate_limit_exceeded`` with an
  integer ``Retry-After``.
* Counters live in ``RATELIMIT_STORAGE_URI``: ``memory://`` (per process) by default, Redis to
  share them across gunicorn workers and machines.  If the storage is unreachable requests are
  let through (fail open) and a warning is logged.
* ``SERVICE_RATE_LIMIT_PER_MINUTE`` adds one bucket per service principal for delegated requests.
  A request counts against its buckets only if none of them refuses it: a principal over its
  limit does not use up its users' limits with requests it is refused, and a request the user's
  limit refuses is not counted against the principal either.
* :func:`limit` adds an endpoint-specific limit (device-code creation, e-mail submission …).

**One storage call per request.**  :class:`RequestLimiter` checks and counts all of a request's
buckets (user or address, and the principal) in one call: on Redis one ``EVALSHA`` of
:data:`ACQUIRE_SCRIPT`, which also returns the window figures the headers need.  Flask-Limiter,
used before, made one Redis round trip to count, another to read the figures for the headers,
and two more (look, then count) for a principal's bucket — and resolved its limits through
several layers of Python per request.  Both backends use the sliding-window counter of the
``limits`` package (the same counts, windows and header values as before).

Each app has its own limiter (``app.extensions["cueline_limiter"]``), so two apps never share
counters or settings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from math import floor, inf

from flask import Flask, Response, current_app, g, request
from limits import parse
from limits.storage import MemoryStorage, RedisStorage, storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from app.errors import AppError

#: Paths never counted in the API's buckets (probes, docs, the service-only surface, and the
#: operator console, whose sign-in forms carry their own limits: app/console/routes.py).
EXEMPT_PATHS = frozenset({"/health", "/status", "/v1/info", "/metrics", "/openapi.json", "/docs",
                          "/auth/device", "/v1/auth/verify", "/console"})
EXEMPT_PREFIXES = ("/v1/internal/", "/docs/", "/console/")


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


#: Every request limit is "N per minute".
WINDOW_SECONDS = 60

#: Checks and counts every bucket of one request in one Redis call (see the module docstring).
#: KEYS: per bucket its previous and current window keys; ARGV: the window in seconds, then each
#: bucket's limit.  A window is the ``limits`` package's sliding-window counter (a current
#: counter living two windows, shifted to "previous" once a window has passed), so the counts
#: are exactly those of its ``acquire_sliding_window.lua``.  Nothing is counted unless every
#: bucket has room.  Returns ``{refused, then per bucket: previous count, previous TTL ms,
#: current count, current TTL ms}``, ``refused`` being the 1-based index of the first full
#: bucket or 0.
ACQUIRE_SCRIPT = """
local expiry = tonumber(ARGV[1]) * 1000
local buckets = #KEYS / 2
local state = {}
local refused = 0
for i = 1, buckets do
  local previous, current = KEYS[2 * i - 1], KEYS[2 * i]
  local current_ttl = tonumber(redis.call('pttl', current))
  if current_ttl > 0 and current_ttl < expiry then
    redis.call('rename', current, previous)
    redis.call('set', current, 0, 'PX', current_ttl + expiry)
  end
  local previous_count = tonumber(redis.call('get', previous)) or 0
  local previous_ttl = math.max(tonumber(redis.call('pttl', previous)) or 0, 0)
  local current_count = tonumber(redis.call('get', current)) or 0
  current_ttl = math.max(tonumber(redis.call('pttl', current)) or 0, 0)
  state[i] = {previous_count, previous_ttl, current_count, current_ttl}
  local weighted = math.floor(previous_count * previous_ttl / expiry) + current_count
  if refused == 0 and weighted + 1 > tonumber(ARGV[i + 1]) then
    refused = i
  end
end
if refused == 0 then
  for i = 1, buckets do
    local current = KEYS[2 * i]
    if redis.call('exists', current) == 1 then
      redis.call('incrby', current, 1)
    else
      redis.call('set', current, 1, 'PX', expiry * 2)
      state[i][4] = expiry * 2
    end
    state[i][3] = state[i][3] + 1
  end
end
local reply = {refused}
for i = 1, buckets do
  for j = 1, 4 do
    reply[#reply + 1] = state[i][j]
  end
end
return reply
"""


@dataclass(frozen=True)
class Bucket:
    """One counter a request is checked against: ``scope`` is ``user``, ``address`` or
    ``service`` (the refusal metric's label)."""

    key: str
    per_minute: int
    scope: str


@dataclass(frozen=True)
class Window:
    """A bucket's figures after a request: what the ``X-RateLimit-*`` headers say."""

    per_minute: int
    remaining: int
    reset_at: int  # epoch seconds, as ``X-RateLimit-Reset`` carries it


def _window(per_minute: int, previous_count: int, previous_expires_in: float,
            current_count: int, current_expires_in: float) -> Window:
    """The figures of a sliding-window counter, computed as ``limits`` computes them."""
    weighted = previous_count * previous_expires_in / WINDOW_SECONDS + current_count
    remaining = max(0, per_minute - floor(weighted))
    now = time.time()
    if not (previous_count or current_count):
        return Window(per_minute, remaining, int(now + 1))
    previous_reset = (previous_expires_in % (WINDOW_SECONDS / previous_count)
                      if previous_count else inf)
    current_reset = current_expires_in % WINDOW_SECONDS if current_count else inf
    return Window(per_minute, remaining, int(now + min(previous_reset, current_reset) + 1))


class RequestLimiter:
    """The app's request limits: every bucket of a request checked and counted in one call.

    ``storage`` is the ``limits`` storage of ``RATELIMIT_STORAGE_URI``; ``strategy`` the
    sliding-window counter over it, which :func:`limit` uses for endpoint limits.
    """

    def __init__(self, app: Flask):
        self.enabled: bool = app.config["RATELIMIT_ENABLED"]
        self.storage = storage_from_string(storage_uri(app.config["RATELIMIT_STORAGE_URI"]))
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)
        self._script = None
        if isinstance(self.storage, RedisStorage):
            # register_script sends nothing: the first call loads the script (EVALSHA, then
            # EVAL once if the server does not know it yet).
            self._script = self.storage.get_connection().register_script(ACQUIRE_SCRIPT)
        self._lock = threading.Lock()

    def acquire(self, buckets: list[Bucket]) -> tuple[int | None, list[Window]]:
        """Count one request in every bucket if none is full.

        Returns the index of the first full bucket (None when the request was counted) and
        every bucket's figures.  Raises when the storage is unreachable.
        """
        if self._script is not None:
            keys = []
            for bucket in buckets:
                current = f"cueline:rl:{{{bucket.key}}}"  # braces: both keys in one slot
                keys += [current + "/-1", current]
            reply = self._script(keys=keys, args=[WINDOW_SECONDS] +
                                 [bucket.per_minute for bucket in buckets])
            refused = int(reply[0]) - 1
            windows = [_window(bucket.per_minute, int(reply[1 + 4 * i]),
                               int(reply[2 + 4 * i]) / 1000, int(reply[3 + 4 * i]),
                               int(reply[4 + 4 * i]) / 1000)
                       for i, bucket in enumerate(buckets)]
            return (refused if refused >= 0 else None), windows
        # In memory (one process): the same check-then-count under a lock.
        with self._lock:
            states = [self.storage.get_sliding_window(f"cueline/{b.key}", WINDOW_SECONDS)
                      for b in buckets]
            refused = next((i for i, (bucket, (p_count, p_expires, c_count, _c))
                            in enumerate(zip(buckets, states, strict=True))
                            if floor(p_count * p_expires / WINDOW_SECONDS + c_count) + 1
                            > bucket.per_minute), None)
            if refused is None:
                for bucket in buckets:
                    self.storage.acquire_sliding_window_entry(
                        f"cueline/{bucket.key}", bucket.per_minute, WINDOW_SECONDS)
                states = [self.storage.get_sliding_window(f"cueline/{b.key}", WINDOW_SECONDS)
                          for b in buckets]
        return refused, [_window(bucket.per_minute, *state)
                         for bucket, state in zip(buckets, states, strict=True)]


def global_retry_after() -> int:
    """Seconds until the caller's user or address window frees a request (60 when unknown)."""
    window = g.get("rate_limit_window")
    if window is None:
        return 60
    return max(1, int(window.reset_at - time.time()))


def client_address() -> str:
    """The client's address as the WSGI server reports it (proxies: see docs/operations.md)."""
    return request.remote_addr or "unknown"


def _exempt_request() -> bool:
    """Probes, docs, the service-only surface, preflights and unrouted paths: never counted."""
    path = request.path
    return (request.endpoint is None or path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES)
            or request.method == "OPTIONS")


def _buckets() -> list[Bucket]:
    """The request's buckets: the user's (or the address's), then the principal's."""
    from app.auth.decorators import try_identity

    config = current_app.config
    identity = try_identity()
    buckets = []
    if identity is not None and identity.user is not None:
        user = identity.user
        if user.rate_limit_per_minute > 0:
            buckets.append(Bucket(f"user:{user.id}", user.rate_limit_per_minute, "user"))
    elif config["RATE_LIMIT_ANONYMOUS_PER_MINUTE"] > 0:
        buckets.append(Bucket(f"addr:{client_address()}",
                              config["RATE_LIMIT_ANONYMOUS_PER_MINUTE"], "address"))
    per_principal = config["SERVICE_RATE_LIMIT_PER_MINUTE"]
    if per_principal > 0 and identity is not None and identity.principal is not None:
        principal = identity.principal
        buckets.append(Bucket(f"principal:{principal.principal_id or principal.name}",
                              per_principal, "service"))
    return buckets


def limit_request() -> None:
    """``before_request``: count the request in its buckets, or refuse it with 429.

    Runs after the body-size check and before body parsing (413 → 429 → 400 → 401 → 422, as
    the wire protocol orders them).  A refusal by the principal's bucket says so with
    ``limit_scope: "service"``, so an integrator can tell its own cap from a user's.
    """
    limiter: RequestLimiter = current_app.extensions["cueline_limiter"]
    if not limiter.enabled or _exempt_request():
        return
    buckets = _buckets()
    if not buckets:
        return
    try:
        refused, windows = limiter.acquire(buckets)
    except Exception:  # noqa: BLE001 - storage down: fail open
        current_app.logger.warning("rate limit storage unavailable; request not limited")
        return
    if buckets[0].scope != "service":
        g.rate_limit_window = windows[0]  # the headers are the user's (or address's) bucket
    if refused is None:
        return
    from app.metrics import count_rate_limit_refusal

    bucket, window = buckets[refused], windows[refused]
    count_rate_limit_refusal(bucket.scope)
    retry = max(1, int(window.reset_at - time.time()))
    if bucket.scope == "service":
        g.pop("rate_limit_window", None)  # nothing was counted: no user figures to report
        raise AppError("rate_limit_exceeded",
                       retry_message(retry, f"Too many requests from this service principal "
                                            f"({bucket.per_minute} per minute)"), 429,
                       headers={"Retry-After": str(retry)}, limit_scope="service")
    raise AppError("rate_limit_exceeded",
                   retry_message(retry, f"Too many requests ({bucket.per_minute} per 1 minute)"),
                   429)


def add_limit_headers(response: Response) -> Response:
    """``after_request``: the caller's window in ``X-RateLimit-*`` and ``Retry-After``.

    ``Retry-After`` is on every limited response, as the wire has always had it; when the
    response already carries one (an endpoint limit's refusal) the later of the two wins.
    """
    window = g.get("rate_limit_window")
    if window is None:
        return response
    headers = response.headers
    headers["X-RateLimit-Limit"] = str(window.per_minute)
    headers["X-RateLimit-Remaining"] = str(window.remaining)
    headers["X-RateLimit-Reset"] = str(window.reset_at)
    reset_at = window.reset_at
    existing = headers.get("Retry-After")
    if existing is not None and existing.isdigit():
        reset_at = max(int(time.time() + int(existing)), reset_at)
    headers["Retry-After"] = str(int(reset_at - time.time()))
    return response


def build_limiter(app: Flask) -> RequestLimiter:
    """Create the app's limiter and install its hooks (its before_request runs in the order of
    the hooks registered where this is called)."""
    limiter = RequestLimiter(app)
    app.extensions["cueline_limiter"] = limiter
    app.before_request(limit_request)
    app.after_request(add_limit_headers)
    return limiter


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
            limiter: RequestLimiter = current_app.extensions["cueline_limiter"]
            if not limiter.enabled:
                return view(*args, **kwargs)
            strategy = limiter.strategy
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
    window = g.get("rate_limit_window")
    if window is None:
        return 0
    return max(window.per_minute - window.remaining, 0)
