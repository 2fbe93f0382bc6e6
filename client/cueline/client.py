"""``Client`` (synchronous) and ``AsyncClient`` (asyncio), both built on httpx.

    from cueline import Client

    client = Client("cue_sk_...", base_url="https://cueline.example.com")
    client.auth.me()

Delegation (an integrator backend acting for its users): pass the service credential as
``api_key`` and the user's UUID as ``act_as_user_id``; every request then carries the service
credential (``Authorization: Bearer`` by default, or ``X-Service-Key`` with
``service_header="x-service-key"``) plus ``X-On-Behalf-Of``, and never a user credential.
``client.as_user(user_id)`` returns such a view of a service client that shares its connection
pool, so one process can serve many users over one pool.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any, Self

import httpx

from cueline._base import (
    DEFAULT_BACKOFF,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_WAIT,
    DEFAULT_RETRY_STATUSES,
    DEFAULT_TIMEOUT,
    BaseClient,
    Call,
    validate_user_id,
)
from cueline.errors import ConfigurationError
from cueline.resources import attach_resources


class _ClientMixin(BaseClient):
    def _as_user_view(self, user_id: Any):
        if not self._settings.service:
            raise ConfigurationError(
                "as_user() needs a service client (service=True or act_as_user_id=...); a "
                "user's own key cannot act for other users")
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view._act_as = validate_user_id(user_id)
        view._owns_http = False  # the parent owns (and closes) the shared pool
        attach_resources(view)
        return view


class Client(_ClientMixin):
    """Synchronous client.  Use as a context manager or call :meth:`close`."""

    _sleep = staticmethod(time.sleep)

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        act_as_user_id: Any | None = None,
        service: bool = False,
        service_header: str = "bearer",
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_statuses: Iterable[int] = DEFAULT_RETRY_STATUSES,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        retry_backoff: float = DEFAULT_BACKOFF,
        headers: Mapping[str, str] | None = None,
        user_agent: str | None = None,
        http_client: httpx.Client | None = None,
    ):
        """Build a client.

        ``api_key`` is the user's ``cue_sk_`` key (or session token); with ``service=True`` or
        ``act_as_user_id`` it is the service credential.  ``act_as_user_id`` must be a UUID
        (checked here).  429/503 answers are retried up to ``max_retries`` times, waiting
        ``Retry-After`` (or an exponential backoff from ``retry_backoff`` seconds), but never
        longer than ``max_retry_wait`` and never for POST/PATCH without an ``Idempotency-Key``.
        ``http_client`` lets you supply a configured ``httpx.Client`` (proxies, event hooks);
        the caller then owns and closes it.
        """
        self._init_settings(api_key, base_url, timeout, act_as_user_id, service,
                            service_header, max_retries, retry_statuses, max_retry_wait,
                            retry_backoff, headers, user_agent)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client(
            timeout=timeout, follow_redirects=False)
        attach_resources(self)

    def as_user(self, user_id: Any) -> Client:
        """A view acting for ``user_id`` that shares this client's connection pool."""
        return self._as_user_view(user_id)

    def _request(self, call: Call) -> Any:
        attempt = 0
        while True:
            request = self._build_request(self._http, call)
            try:
                response = self._http.send(request)
            except httpx.HTTPError as exc:
                raise self._connection_error(exc) from None
            delay = self._retry_delay(call, response, attempt)
            if delay is None:
                response.read()
                return self._finish(call, response)
            response.close()
            attempt += 1
            self._sleep(delay)

    def close(self) -> None:
        """Close the connection pool (a no-op on ``as_user`` views and supplied clients)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_ClientMixin):
    """asyncio client with the same resources; every resource method returns an awaitable."""

    _sleep = staticmethod(asyncio.sleep)

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        act_as_user_id: Any | None = None,
        service: bool = False,
        service_header: str = "bearer",
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_statuses: Iterable[int] = DEFAULT_RETRY_STATUSES,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        retry_backoff: float = DEFAULT_BACKOFF,
        headers: Mapping[str, str] | None = None,
        user_agent: str | None = None,
        http_client: httpx.AsyncClient | None = None,
    ):
        """Same arguments as :class:`Client`; ``http_client`` is an ``httpx.AsyncClient``."""
        self._init_settings(api_key, base_url, timeout, act_as_user_id, service,
                            service_header, max_retries, retry_statuses, max_retry_wait,
                            retry_backoff, headers, user_agent)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient(
            timeout=timeout, follow_redirects=False)
        attach_resources(self)

    def as_user(self, user_id: Any) -> AsyncClient:
        """A view acting for ``user_id`` that shares this client's connection pool."""
        return self._as_user_view(user_id)

    async def _request(self, call: Call) -> Any:
        attempt = 0
        while True:
            request = self._build_request(self._http, call)
            try:
                response = await self._http.send(request)
            except httpx.HTTPError as exc:
                raise self._connection_error(exc) from None
            delay = self._retry_delay(call, response, attempt)
            if delay is None:
                await response.aread()
                return self._finish(call, response)
            await response.aclose()
            attempt += 1
            await self._sleep(delay)

    async def aclose(self) -> None:
        """Close the connection pool (a no-op on ``as_user`` views and supplied clients)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def register(email: str, base_url: str = DEFAULT_BASE_URL,
             timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Self-service sign-up (``POST /v1/auth/register``); returns ``{api_key, email}`` once."""
    with httpx.Client(timeout=timeout, follow_redirects=False) as http:
        try:
            response = http.post(base_url.rstrip("/") + "/v1/auth/register",
                                 json={"email": email},
                                 headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise BaseClient._connection_error(exc) from None
        return BaseClient._finish(Call("POST", "/v1/auth/register"), response)
