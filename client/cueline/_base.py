"""What the sync and async clients share: settings, headers, retry policy, response handling.

Resources describe each API call as a :class:`Call` (method, path, query, body, extra headers,
which credential it needs, an optional result transform).  ``Client`` and ``AsyncClient`` differ
only in how they send it and sleep between attempts; everything decided about a call — its
headers, whether it may be retried, how long to wait, what error to raise — is decided here, once.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from cueline._version import __version__
from cueline.errors import (
    APIConnectionError,
    ConfigurationError,
    error_from_response,
    parse_retry_after,
)

DEFAULT_BASE_URL = "http://localhost:8000"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_RETRY_STATUSES = (429, 503)
#: Longest single wait the client accepts; a longer ``Retry-After`` is raised to the caller.
DEFAULT_MAX_RETRY_WAIT = 60.0
DEFAULT_BACKOFF = 0.5

SERVICE_HEADER_STYLES = ("bearer", "x-service-key")
ON_BEHALF_OF = "X-On-Behalf-Of"
SERVICE_KEY = "X-Service-Key"
#: Headers the client owns; callers may not smuggle them in through ``headers=``.
_CREDENTIAL_HEADERS = {"authorization", SERVICE_KEY.lower(), ON_BEHALF_OF.lower()}
#: Methods that may be repeated without changing the result (RFC 9110 §9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

_NO_BODY = object()

# Credential a call needs.
USER = "user"          # the user's key/session, or service credential + X-On-Behalf-Of
SERVICE = "service"    # the service credential alone (internal endpoints)
NONE = "none"          # no credential (register, health, info)


@dataclass
class Call:
    """One API call as a resource describes it."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = _NO_BODY
    headers: dict[str, str] = field(default_factory=dict)
    auth: str = USER
    #: ``transform(response, data)`` → the value returned to the caller.
    transform: Callable[[httpx.Response, Any], Any] | None = None
    #: Extra 2xx/3xx statuses handed to ``transform`` instead of raising (e.g. 304).
    accept: tuple[int, ...] = ()

    def retryable(self) -> bool:
        """Whether repeating this call cannot do the work twice."""
        if self.method in IDEMPOTENT_METHODS:
            return True
        # POST/PATCH only with an idempotency key the server deduplicates on.
        return any(k.lower() == "idempotency-key" and v for k, v in self.headers.items())


def validate_user_id(value: Any, what: str = "user id") -> str:
    """Canonical string form of a user UUID, or :class:`ConfigurationError` at once."""
    if isinstance(value, uuid.UUID):
        return str(value)
    try:
        return str(uuid.UUID(str(value).strip()))
    except (ValueError, AttributeError, TypeError):
        raise ConfigurationError(f"{what} must be a UUID, got {value!r}") from None


def clean_params(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Drop ``None`` values and render booleans/datetimes the way the server parses them."""
    if not params:
        return None
    out: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        elif isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        out[key] = value
    return out or None


def compact(**fields: Any) -> dict[str, Any]:
    """A JSON body of the fields that were given (``None`` means "not sent")."""
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v)
            for k, v in fields.items() if v is not None}


class _Settings:
    """Immutable-by-convention settings shared by a client and its ``as_user`` views."""

    def __init__(self, *, api_key: str, base_url: str, timeout: float, service: bool,
                 service_header: str, max_retries: int, retry_statuses: Iterable[int],
                 max_retry_wait: float, backoff: float, headers: Mapping[str, str] | None,
                 user_agent: str | None):
        if not isinstance(api_key, str) or not api_key.strip():
            raise ConfigurationError("api_key must be a non-empty string")
        if any(c in api_key for c in "\r\n"):
            raise ConfigurationError("api_key must not contain line breaks")
        style = service_header.lower()
        if style not in SERVICE_HEADER_STYLES:
            raise ConfigurationError(
                f"service_header must be one of {', '.join(SERVICE_HEADER_STYLES)}")
        if max_retries < 0:
            raise ConfigurationError("max_retries must not be negative")
        for name in (headers or {}):
            if name.lower() in _CREDENTIAL_HEADERS:
                raise ConfigurationError(
                    f"Do not pass {name} in headers=; the client sets credentials itself")
        self.api_key = api_key.strip()
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.service = service
        self.service_header = style
        self.max_retries = max_retries
        self.retry_statuses = frozenset(retry_statuses)
        self.max_retry_wait = max_retry_wait
        self.backoff = backoff
        self.headers = dict(headers or {})
        self.user_agent = user_agent or f"cueline-python/{__version__}"


class BaseClient:
    """State and request preparation common to :class:`Client` and :class:`AsyncClient`."""

    _settings: _Settings
    _act_as: str | None

    def _init_settings(self, api_key, base_url, timeout, act_as_user_id, service,
                       service_header, max_retries, retry_statuses, max_retry_wait, backoff,
                       headers, user_agent) -> None:
        self._settings = _Settings(
            api_key=api_key, base_url=base_url, timeout=timeout,
            service=bool(service or act_as_user_id is not None),
            service_header=service_header, max_retries=max_retries,
            retry_statuses=retry_statuses, max_retry_wait=max_retry_wait, backoff=backoff,
            headers=headers, user_agent=user_agent)
        self._act_as = (validate_user_id(act_as_user_id, "act_as_user_id")
                        if act_as_user_id is not None else None)

    # -- public read-only facts ---------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return self._settings.base_url

    @property
    def act_as_user_id(self) -> str | None:
        """The user this client acts for (delegation), or None."""
        return self._act_as

    @property
    def is_service(self) -> bool:
        """True when ``api_key`` is a service credential."""
        return self._settings.service

    # -- request preparation ------------------------------------------------------------------
    def _credential_headers(self, auth: str) -> dict[str, str]:
        s = self._settings
        if auth == NONE:
            return {}
        if not s.service:
            if auth == SERVICE:
                raise ConfigurationError(
                    "This endpoint needs a service credential: build the client with "
                    "service=True (and the service token as api_key)")
            return {"Authorization": f"Bearer {s.api_key}"}
        if s.service_header == "bearer":
            headers = {"Authorization": f"Bearer {s.api_key}"}
        else:
            headers = {SERVICE_KEY: s.api_key}
        if auth == USER:
            if self._act_as is None:
                raise ConfigurationError(
                    "A service client must act for a user here: pass act_as_user_id=... or "
                    "use client.as_user(user_id)")
            headers[ON_BEHALF_OF] = self._act_as
        return headers

    def _build_request(self, http: Any, call: Call) -> httpx.Request:
        s = self._settings
        headers = {"Accept": "application/json", "User-Agent": s.user_agent, **s.headers,
                   **call.headers, **self._credential_headers(call.auth)}
        content = None
        if call.json is not _NO_BODY:
            headers["Content-Type"] = "application/json"
            content = json.dumps(call.json, separators=(",", ":"), ensure_ascii=False,
                                 default=_json_default).encode("utf-8")
        return http.build_request(call.method, s.base_url + call.path,
                                  params=clean_params(call.params), headers=headers,
                                  content=content, timeout=s.timeout)

    def _retry_delay(self, call: Call, response: httpx.Response | None,
                     attempt: int) -> float | None:
        """Seconds to wait before retrying, or None when the call must not be retried."""
        s = self._settings
        if attempt >= s.max_retries or not call.retryable():
            return None
        if response is None or response.status_code not in s.retry_statuses:
            return None
        delay = parse_retry_after(response.headers.get("Retry-After"))
        if delay is None:
            delay = s.backoff * (2 ** attempt) * (0.5 + random.random() / 2)
        if delay > s.max_retry_wait:
            return None  # the caller decides whether to wait that long
        return delay

    @staticmethod
    def _connection_error(exc: httpx.HTTPError) -> APIConnectionError:
        if isinstance(exc, httpx.TimeoutException):
            return APIConnectionError("The request timed out", timeout=True)
        return APIConnectionError(f"Could not reach the server ({type(exc).__name__})")

    @staticmethod
    def _finish(call: Call, response: httpx.Response) -> Any:
        """Turn a final response into the caller's result or raise the typed error."""
        status = response.status_code
        if status in call.accept:
            return call.transform(response, None) if call.transform else None
        if status >= 400 or status < 200 or 300 <= status < 400:
            raise error_from_response(response)
        data: Any = None
        if status != 204 and response.content:
            try:
                data = response.json()
            except ValueError:
                data = response.text
        return call.transform(response, data) if call.transform else data


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
