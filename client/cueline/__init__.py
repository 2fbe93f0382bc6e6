"""Python client for Cueline (and other servers speaking the CueAPI wire protocol).

    from cueline import Client

    with Client("cue_sk_...", base_url="http://localhost:8000") as client:
        print(client.auth.me()["email"])

See ``Client`` for delegation (``act_as_user_id`` / ``as_user``), ``cueline.errors`` for the
exceptions, and ``cueline.webhooks`` for verifying signed deliveries.
"""

from cueline._version import __version__
from cueline.client import AsyncClient, Client, register
from cueline.errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    BadRequestError,
    BodyVerifyMismatchError,
    ConfigurationError,
    ConflictError,
    CueLimitExceededError,
    CuelineError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from cueline.webhooks import WebhookVerificationError, construct_event, verify_webhook

__all__ = [
    "APIConnectionError", "APIError", "AsyncClient", "AuthenticationError", "BadRequestError",
    "BodyVerifyMismatchError", "Client", "ConfigurationError", "ConflictError",
    "CueLimitExceededError", "CuelineError", "NotFoundError", "PermissionDeniedError",
    "QuotaExceededError", "RateLimitError", "ServerError", "ValidationError",
    "WebhookVerificationError", "__version__", "construct_event", "register", "verify_webhook",
]
