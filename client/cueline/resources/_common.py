"""Helpers shared by the resource modules."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from cueline.errors import ConfigurationError

#: Marks a keyword argument that was not given (so ``None`` can mean "clear this field").
UNSET: Any = type("Unset", (), {"__repr__": lambda self: "UNSET", "__bool__": lambda self: False})()


def seg(value: Any) -> str:
    """One path segment, percent-encoded (``@`` kept: agent addresses are ``slug@user``)."""
    text = str(value)
    if not text or text in (".", ".."):
        raise ConfigurationError(f"Invalid identifier {value!r}")
    return quote(text, safe="@")


def given(**fields: Any) -> dict:
    """The fields whose value is not :data:`UNSET` (``None`` is kept and sent as null)."""
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v)
            for k, v in fields.items() if v is not UNSET}


class Resource:
    """Base: holds the client the calls go through."""

    def __init__(self, client: Any):
        self._client = client

    def _call(self, call) -> Any:
        return self._client._request(call)
