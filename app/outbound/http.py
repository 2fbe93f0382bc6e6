"""Send one outbound request to a user-supplied URL and classify the result.

API:

``send(method, url, *, body=None, headers=None, timeout=None, env=None, allow_private=None)
-> SendResult``
    Re-checks the destination (:func:`app.outbound.ssrf.check_destination`) on every call, and
    again for every new connection (:class:`GuardedBackend`: the socket goes to an address that
    was just checked), sends
    one request with ``timeout`` seconds (default ``WEBHOOK_TIMEOUT_SECONDS``), never follows
    redirects, never raises for network problems.  Requests go through one client per process
    (:func:`client`), so connections to a receiver are kept alive and reused between deliveries
    instead of being opened (and TLS-negotiated) for every request.  ``body`` is a ``str`` sent
    as UTF-8 bytes exactly (pass :func:`app.outbound.signing.canonical_json` output so
    signatures hold); ``None`` sends no body (``GET``).

``SendResult``
    ``outcome``: ``"success"`` (2xx), ``"retryable"`` (408, 429, 5xx, timeout, connection /
    DNS / TLS / other transport errors) or ``"terminal"`` (other 4xx, 1xx/3xx, destination
    blocked).  ``status_code`` (``None`` when no response), ``error`` (short text safe to store
    and show the owner, ``None`` on success), ``response_text`` (first 2,000 characters),
    ``retry_after`` (seconds from a ``Retry-After`` header, else ``None``), ``elapsed`` seconds.

Callers decide what a classification means for them: cue webhooks retry every failure until
``retry.max_attempts`` (wire §13.2); message push stops on ``terminal`` (§13.3).
"""

from __future__ import annotations

import math
import os
import ssl
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpcore
import httpx
from flask import current_app

from app.outbound.ssrf import BlockedDestination, check_destination, connect_policy, guard_connect

USER_AGENT = "CueAPI/1.0"
RESPONSE_TEXT_LIMIT = 2000
MAX_RETRY_AFTER_SECONDS = 24 * 3600

SUCCESS = "success"
RETRYABLE = "retryable"
TERMINAL = "terminal"


@dataclass(frozen=True)
class SendResult:
    """What happened to one outbound request (see module docstring)."""

    outcome: str
    status_code: int | None = None
    error: str | None = None
    response_text: str | None = None
    retry_after: float | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == SUCCESS


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), capped at a day."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def classify_status(status: int) -> str:
    """Classification of an HTTP status (see module docstring)."""
    if 200 <= status < 300:
        return SUCCESS
    if status in (408, 429) or status >= 500:
        return RETRYABLE
    return TERMINAL


_tls_lock = threading.Lock()
_tls_context: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every outbound request.

    Building a context loads the CA bundle (~40 ms of CPU); it is built once.  SSLContext is
    safe to share between threads.
    """
    global _tls_context
    if _tls_context is None:
        with _tls_lock:
            if _tls_context is None:
                _tls_context = httpx.create_ssl_context(trust_env=False)
    return _tls_context


class GuardedBackend(httpcore.SyncBackend):
    """The network backend of the outbound client: every new connection is checked.

    ``connect_tcp`` resolves the host itself (:func:`app.outbound.ssrf.guard_connect`), refuses
    it when any address is blocked, and opens the socket to a checked address, so what the
    socket reaches is exactly what was checked (DNS rebinding cannot slip between the check
    and the connection).  TLS still verifies and sends SNI for the URL's host name.
    """

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        last_error: Exception | None = None
        for address in guard_connect(host):
            try:
                return super().connect_tcp(address, port, timeout=timeout,
                                           local_address=local_address,
                                           socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None  # guard_connect returns at least one address
        raise last_error


class GuardedTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` whose connection pool uses :class:`GuardedBackend`."""

    def __init__(self, *, verify: ssl.SSLContext, limits: httpx.Limits):
        super().__init__(verify=verify, trust_env=False, limits=limits)
        # httpx offers no public way to pass a network backend; the pool is rebuilt with the
        # same settings.  tests/scheduling/test_outbound.py fails if the guard is bypassed.
        self._pool = httpcore.ConnectionPool(
            ssl_context=verify, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, network_backend=GuardedBackend())


_client_lock = threading.Lock()
_client: httpx.Client | None = None
_client_pid: int | None = None
#: Idle connections kept per process (per receiver host they are reused, then closed after
#: ``KEEPALIVE_EXPIRY_SECONDS`` unused).
MAX_KEEPALIVE_CONNECTIONS = 64
KEEPALIVE_EXPIRY_SECONDS = 5.0


def client() -> httpx.Client:
    """The process's outbound client: thread-safe, keep-alive connection pool, no redirects,
    no proxy or other settings from the environment.  A forked child makes its own."""
    global _client, _client_pid
    pid = os.getpid()
    if _client is None or _client_pid != pid:
        with _client_lock:
            if _client is None or _client_pid != pid:
                limits = httpx.Limits(max_connections=None,
                                      max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS,
                                      keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS)
                _client = httpx.Client(
                    follow_redirects=False, trust_env=False,
                    transport=GuardedTransport(verify=tls_context(), limits=limits))
                _client_pid = pid
    return _client


def send(method: str, url: str, *, body: str | None = None,
         headers: dict[str, str] | None = None, timeout: float | None = None,
         env: str | None = None, allow_private: bool | None = None) -> SendResult:
    """Send one request and classify it; never raises for network or destination problems."""
    if timeout is None:
        timeout = float(current_app.config["WEBHOOK_TIMEOUT_SECONDS"])
    started = time.monotonic()
    try:
        check_destination(url, env=env, allow_private=allow_private)
    except BlockedDestination as exc:
        return SendResult(TERMINAL, error=f"Destination blocked: {exc}")
    content = body.encode("utf-8") if body is not None else None
    request_headers = {"User-Agent": USER_AGENT, **(headers or {})}
    try:
        with connect_policy(env, allow_private):
            response = client().request(method.upper(), url, content=content,
                                        headers=request_headers, timeout=timeout)
    except BlockedDestination as exc:  # refused again at connect time (e.g. DNS rebinding)
        return SendResult(TERMINAL, error=f"Destination blocked: {exc}",
                          elapsed=time.monotonic() - started)
    except httpx.TimeoutException:
        return SendResult(RETRYABLE, error=f"Timed out after {timeout:g}s",
                          elapsed=time.monotonic() - started)
    except httpx.ConnectError as exc:
        return SendResult(RETRYABLE, error=f"Connection failed: {_short(exc)}",
                          elapsed=time.monotonic() - started)
    except (httpx.HTTPError, OSError, ValueError) as exc:
        return SendResult(RETRYABLE, error=f"Request failed: {_short(exc)}",
                          elapsed=time.monotonic() - started)
    elapsed = time.monotonic() - started
    status = response.status_code
    outcome = classify_status(status)
    text = response.text[:RESPONSE_TEXT_LIMIT] if response.content else ""
    error = None
    if outcome != SUCCESS:
        kind = "rejected request" if 400 <= status < 500 else "returned an error"
        if status < 200 or 300 <= status < 400:
            kind = "answered with a redirect or informational status (not followed)"
        error = f"Webhook endpoint {kind} ({status})"
    return SendResult(outcome, status_code=status, error=error, response_text=text,
                      retry_after=_retry_after(response.headers.get("Retry-After")),
                      elapsed=elapsed)


def _short(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]
