"""Echo storage (wire §12.5): ``store_echo`` keeps the last request for a token for
:data:`TTL`; ``read_echo`` returns it while it lives.

An expired echo is invisible the moment it expires (reads filter on ``expires_at``) and is
deleted by the next store, whichever token that is for, so the table never holds more than the
echoes of the last five minutes plus those written since the last store.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select

from app.db import upsert, utcnow
from app.echo.models import Echo
from app.errors import AppError, BadRequest
from app.extensions import db

TTL = timedelta(seconds=300)
MIN_TOKEN = 16
MAX_TOKEN = 256
MAX_PAYLOAD_BYTES = 1_000_000
#: Request headers stored as ``[redacted]``: an echo is readable by any authenticated caller
#: who knows its token, so credentials a sender attached must not be handed back.
REDACTED_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie",
                              "x-service-key"})


def check_token(token: str) -> None:
    """``400 invalid_token`` unless the token has 16 to 256 characters."""
    if len(token) < MIN_TOKEN:
        raise BadRequest("invalid_token", f"Token must be at least {MIN_TOKEN} characters")
    if len(token) > MAX_TOKEN:
        raise BadRequest("invalid_token", f"Token must be at most {MAX_TOKEN} characters")


def check_size(size: int) -> None:
    """``413 payload_too_large`` over :data:`MAX_PAYLOAD_BYTES`."""
    if size > MAX_PAYLOAD_BYTES:
        raise AppError("payload_too_large",
                       f"Echo payload must be at most {MAX_PAYLOAD_BYTES} bytes", 413)


def stored_headers(headers) -> dict[str, str]:
    """The request headers as stored: lower-case names, credentials redacted."""
    return {name.lower(): "[redacted]" if name.lower() in REDACTED_HEADERS else value
            for name, value in headers.items()}


def store_echo(token: str, payload: Any, headers: dict[str, str],
               now: datetime | None = None) -> None:
    """Store (or replace) the echo for ``token``; drop every expired echo in passing."""
    now = now or utcnow()
    check_token(token)
    db.session.execute(delete(Echo).where(Echo.expires_at <= now)
                       .execution_options(synchronize_session=False))
    upsert(Echo, {"token": token, "payload": payload, "headers": headers, "received_at": now,
                  "expires_at": now + TTL}, keys=("token",))
    db.session.commit()


def read_echo(token: str, now: datetime | None = None) -> dict[str, Any]:
    """``{"status": "waiting"}`` or ``{"status": "delivered", payload, headers, received_at}``."""
    now = now or utcnow()
    check_token(token)
    echo = db.session.scalar(select(Echo).where(Echo.token == token, Echo.expires_at > now))
    if echo is None:
        return {"status": "waiting"}
    return {"status": "delivered", "payload": echo.payload, "headers": echo.headers,
            "received_at": echo.received_at}
