"""The caller's account and credentials (``/v1/auth``) and the public system endpoints."""

from __future__ import annotations

from typing import Any

from cueline._base import NONE, Call, compact
from cueline.resources._common import Resource

CONFIRM = {"X-Confirm-Destructive": "true"}


class Auth(Resource):
    """``client.auth``: who am I, keys, sessions and the webhook signing secret."""

    def me(self) -> Any:
        """``GET /v1/auth/me``: account, limits and this month's usage."""
        return self._call(Call("GET", "/v1/auth/me"))

    def update_me(self, *, email: str | None = None,
                  alert_webhook_url: str | None = None) -> Any:
        """``PATCH /v1/auth/me`` (``alert_webhook_url=""`` clears it)."""
        return self._call(Call("PATCH", "/v1/auth/me",
                               json=compact(email=email, alert_webhook_url=alert_webhook_url)))

    def regenerate_key(self) -> Any:
        """``POST /v1/auth/key/regenerate``: a new API key; the old one stops working."""
        return self._call(Call("POST", "/v1/auth/key/regenerate", headers=dict(CONFIRM)))

    def get_key(self) -> Any:
        """``GET /v1/auth/key``: the stored key if the server keeps an encrypted copy."""
        return self._call(Call("GET", "/v1/auth/key"))

    def refresh_session(self) -> Any:
        """``POST /v1/auth/session/refresh``: a fresh 24 h session token."""
        return self._call(Call("POST", "/v1/auth/session/refresh"))

    def get_webhook_secret(self) -> Any:
        """``GET /v1/auth/webhook-secret``: the secret cue webhooks are signed with."""
        return self._call(Call("GET", "/v1/auth/webhook-secret"))

    def regenerate_webhook_secret(self) -> Any:
        """``POST /v1/auth/webhook-secret/regenerate`` (the old secret stops at once)."""
        return self._call(Call("POST", "/v1/auth/webhook-secret/regenerate",
                               headers=dict(CONFIRM)))


class System(Resource):
    """``client.system``: unauthenticated deployment endpoints."""

    def health(self) -> Any:
        """``GET /health``."""
        return self._call(Call("GET", "/health", auth=NONE))

    def info(self) -> Any:
        """``GET /v1/info``: version, enabled credential paths, disabled primitives."""
        return self._call(Call("GET", "/v1/info", auth=NONE))
