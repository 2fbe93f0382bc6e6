"""Cross-user message authorization (wire §10.7): who may message whom.

Every send asks the active backend whether the sender's agent may reach the recipient agent
(``message_kind="message"``) and, when the sender names a ``reply_to_agent``, whether replies
may be routed there (``"reply_chain"``).  A ``False`` answer for another user's agent is the
``404 agent_not_found`` a missing agent gets (so agents cannot be probed); for two of the
caller's own agents it is ``403 cross_tenant_messaging_forbidden``.

Backends:

* :class:`SameTenantAuthorizationBackend` (default): same user only.
* :class:`EveryoneAuthorizationBackend`: always allow (a single-tenant deployment).
* :class:`AllowlistAuthorizationBackend`: same user, or a directed pair listed in
  ``AUTHZ_ALLOWLIST`` (``"senderUUID:recipientUUID,…"``).
* :class:`WebhookAuthorizationBackend`: asks ``AUTHZ_HOOK_URL`` with a signed POST; anything but
  a clear ``allow`` (error, timeout, bad JSON) denies.  Decisions are cached in-process for the
  ``cache_ttl`` the hook returns.

Selection: ``AUTHORIZATION_BACKEND`` (``module.path:ClassName`` of an
:class:`AuthorizationBackend` subclass) wins; else ``AUTHZ_HOOK_URL`` selects the webhook
backend; else same-tenant.  A bad selection refuses start-up (:func:`configuration_problems`
runs inside ``config.validate``) instead of silently falling back as upstream does.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import current_app

from app.outbound.http import send
from app.outbound.signing import canonical_json, signature_headers

log = logging.getLogger(__name__)

MESSAGE = "message"
REPLY_CHAIN = "reply_chain"
DEFAULT_CACHE_TTL = 60
#: The decision cache never grows past this many entries (expired ones are dropped first).
MAX_CACHED_DECISIONS = 10_000


@dataclass(frozen=True)
class AuthorizationRequest:
    """One question to a backend: may ``sender_agent_id`` message ``recipient_agent_id``?"""

    sender_user_id: uuid.UUID
    recipient_user_id: uuid.UUID
    sender_agent_id: str
    recipient_agent_id: str
    message_kind: str = MESSAGE
    idempotency_key: str | None = None

    @property
    def same_user(self) -> bool:
        return self.sender_user_id == self.recipient_user_id


class AuthorizationBackend(ABC):
    """Base class of every backend.  Subclasses implement :meth:`authorize`.

    A backend is built once per app by :meth:`from_config` (default: no arguments) and shared
    by all requests, so ``authorize`` must be thread-safe.
    """

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AuthorizationBackend:
        """Build the backend from the app's settings."""
        return cls()

    @classmethod
    def config_problems(cls, config: Mapping[str, Any]) -> list[str]:
        """Problems with the settings this backend needs (checked at start-up)."""
        return []

    @abstractmethod
    def authorize(self, request: AuthorizationRequest) -> bool:
        """True when the send may proceed."""


class SameTenantAuthorizationBackend(AuthorizationBackend):
    """Allow only messages between agents of the same user (the default)."""

    def authorize(self, request: AuthorizationRequest) -> bool:
        return request.same_user


class EveryoneAuthorizationBackend(AuthorizationBackend):
    """Allow every send (for deployments whose users all trust each other)."""

    def authorize(self, request: AuthorizationRequest) -> bool:
        return True


def parse_allowlist(text: str) -> tuple[set[tuple[uuid.UUID, uuid.UUID]], list[str]]:
    """Parse ``"senderUUID:recipientUUID,…"`` into directed pairs; also return bad entries."""
    pairs: set[tuple[uuid.UUID, uuid.UUID]] = set()
    bad: list[str] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        sender, sep, recipient = entry.partition(":")
        try:
            if not sep:
                raise ValueError(entry)
            pairs.add((uuid.UUID(sender.strip()), uuid.UUID(recipient.strip())))
        except ValueError:
            bad.append(entry)
    return pairs, bad


class AllowlistAuthorizationBackend(AuthorizationBackend):
    """Same user, or a directed (sender user → recipient user) pair from ``AUTHZ_ALLOWLIST``."""

    def __init__(self, pairs: set[tuple[uuid.UUID, uuid.UUID]] | None = None):
        self.pairs = frozenset(pairs or ())

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AllowlistAuthorizationBackend:
        return cls(parse_allowlist(config.get("AUTHZ_ALLOWLIST", ""))[0])

    @classmethod
    def config_problems(cls, config: Mapping[str, Any]) -> list[str]:
        _pairs, bad = parse_allowlist(config.get("AUTHZ_ALLOWLIST", ""))
        if bad:
            entries = ", ".join(repr(b) for b in bad[:5])
            return [(f"AUTHZ_ALLOWLIST: malformed entries {entries}; use "
                     "senderUserUUID:recipientUserUUID pairs separated by commas")]
        return []

    def authorize(self, request: AuthorizationRequest) -> bool:
        return request.same_user or (request.sender_user_id, request.recipient_user_id) in \
            self.pairs


class WebhookAuthorizationBackend(AuthorizationBackend):
    """Ask an external hook; fail closed.  Decisions are cached per
    (sender user, recipient user, kind) for the ``cache_ttl`` the hook returns."""

    def __init__(self, url: str, secret: str, timeout: float = 5.0):
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self._cache: dict[tuple[str, str, str], tuple[bool, float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> WebhookAuthorizationBackend:
        return cls(config["AUTHZ_HOOK_URL"], config["AUTHZ_HOOK_SECRET"],
                   float(config["AUTHZ_HOOK_TIMEOUT_SECONDS"]))

    @classmethod
    def config_problems(cls, config: Mapping[str, Any]) -> list[str]:
        problems = []
        url = config.get("AUTHZ_HOOK_URL", "")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(f"AUTHZ_HOOK_URL: {url!r} is not an http(s) URL with a host")
        if not config.get("AUTHZ_HOOK_SECRET"):
            problems.append("AUTHZ_HOOK_SECRET is empty but AUTHZ_HOOK_URL is set: the hook "
                            "could not tell Cueline's requests from forged ones; generate a "
                            "secret (python -c 'import secrets; print(secrets.token_hex(32))')")
        return problems

    def _cached(self, key: tuple[str, str, str]) -> bool | None:
        with self._lock:
            hit = self._cache.get(key)
            if hit is None:
                return None
            if hit[1] <= time.monotonic():
                del self._cache[key]
                return None
            return hit[0]

    def _remember(self, key: tuple[str, str, str], decision: bool, ttl: float) -> None:
        if ttl <= 0:
            return
        with self._lock:
            if len(self._cache) >= MAX_CACHED_DECISIONS:
                now = time.monotonic()
                for stale in [k for k, (_d, exp) in self._cache.items() if exp <= now]:
                    del self._cache[stale]
                if len(self._cache) >= MAX_CACHED_DECISIONS:
                    self._cache.clear()
            self._cache[key] = (decision, time.monotonic() + ttl)

    def authorize(self, request: AuthorizationRequest) -> bool:
        key = (str(request.sender_user_id), str(request.recipient_user_id), request.message_kind)
        cached = self._cached(key)
        if cached is not None:
            return cached
        payload = {
            "sender_user_id": str(request.sender_user_id),
            "recipient_user_id": str(request.recipient_user_id),
            "sender_agent_id": request.sender_agent_id,
            "recipient_agent_id": request.recipient_agent_id,
            "message_kind": request.message_kind,
            "idempotency_key": request.idempotency_key,
        }
        body = canonical_json(payload)
        headers = {"Content-Type": "application/json",
                   **signature_headers(self.secret, body, time.time())}
        # The hook is the operator's own service, often on a private network: only the
        # always-blocked link-local ranges apply.
        result = send("POST", self.url, body=body, headers=headers, timeout=self.timeout,
                      allow_private=True)
        decision, ttl = self._interpret(result)
        self._remember(key, decision, ttl)
        return decision

    def _interpret(self, result) -> tuple[bool, float]:
        """(allowed, cache seconds) from the hook's answer; anything unexpected denies."""
        if result.status_code != 200:
            log.warning("authorization hook denied by failure: %s", result.error or
                        f"status {result.status_code}")
            return False, 0
        try:
            answer = json.loads(result.response_text or "")
        except ValueError:
            log.warning("authorization hook answered with invalid JSON; denying")
            return False, 0
        if not isinstance(answer, dict) or answer.get("decision") not in ("allow", "deny"):
            log.warning("authorization hook answered without a valid decision; denying")
            return False, 0
        ttl = answer.get("cache_ttl", DEFAULT_CACHE_TTL)
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
            ttl = DEFAULT_CACHE_TTL
        return answer["decision"] == "allow", float(ttl)


def load_backend_class(path: str) -> type[AuthorizationBackend]:
    """Import ``module.path:ClassName`` and check it is a backend; raise ``ValueError`` with a
    message fit for an operator otherwise."""
    module_name, sep, class_name = path.partition(":")
    if not sep or not module_name or not class_name:
        raise ValueError(f"AUTHORIZATION_BACKEND: {path!r} must look like module.path:ClassName")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is a configuration error
        raise ValueError(f"AUTHORIZATION_BACKEND: cannot import module {module_name!r} "
                         f"({type(exc).__name__}: {exc})") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"AUTHORIZATION_BACKEND: module {module_name!r} has no {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, AuthorizationBackend)):
        # ValueError, not TypeError: every selection problem is reported the same way.
        raise ValueError(f"AUTHORIZATION_BACKEND: {path!r} is not a subclass of "  # noqa: TRY004
                         "app.messaging.authorization.AuthorizationBackend")
    if getattr(cls, "__abstractmethods__", None):
        raise ValueError(f"AUTHORIZATION_BACKEND: {path!r} does not implement authorize()")
    return cls


def backend_class(config: Mapping[str, Any]) -> type[AuthorizationBackend]:
    """The backend class the settings select (see module docstring)."""
    if config.get("AUTHORIZATION_BACKEND"):
        return load_backend_class(config["AUTHORIZATION_BACKEND"])
    if config.get("AUTHZ_HOOK_URL"):
        return WebhookAuthorizationBackend
    return SameTenantAuthorizationBackend


def configuration_problems(config: Mapping[str, Any]) -> list[str]:
    """Every problem with the authorization settings (used by ``config.validate``)."""
    try:
        cls = backend_class(config)
    except ValueError as exc:
        return [str(exc)]
    problems = cls.config_problems(config)
    if config.get("AUTHZ_ALLOWLIST") and not issubclass(cls, AllowlistAuthorizationBackend):
        problems.extend(AllowlistAuthorizationBackend.config_problems(config))
    return problems


_build_lock = threading.Lock()


def get_backend() -> AuthorizationBackend:
    """The current app's backend, built once and cached for the app's lifetime."""
    extensions = current_app.extensions
    backend = extensions.get("cueline_authorization")
    if backend is None:
        with _build_lock:
            backend = extensions.get("cueline_authorization")
            if backend is None:
                backend = backend_class(current_app.config).from_config(current_app.config)
                extensions["cueline_authorization"] = backend
    return backend


def is_allowed(request: AuthorizationRequest) -> bool:
    """Ask the active backend; a backend that raises denies (fail closed)."""
    try:
        return bool(get_backend().authorize(request))
    except Exception:  # an authorization failure must never allow a send
        log.exception("authorization backend failed; denying")
        return False
