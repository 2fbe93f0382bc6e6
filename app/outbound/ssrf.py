"""Server-side request forgery defences for user-supplied URLs (wire protocol §7.6).

API:

``validate_url(url, *, field="callback.url", env=None, allow_private=None) -> str``
    Write-time check of a URL a user wants Cueline to call (cue ``callback.url``,
    ``on_failure.webhook``, agent ``webhook_url`` …).  Returns the normalised URL (host
    lower-cased, a bare host gets a trailing ``/``) or raises
    ``BadRequest("invalid_callback_url", "<field>: <reason>")``.  ``env`` / ``allow_private``
    default to ``ENV`` / ``ALLOW_PRIVATE_CALLBACK_URLS`` of the current app.

``check_destination(url, *, env=None, allow_private=None) -> None``
    Delivery-time re-check (the hostname is resolved again, defeating DNS rebinding between
    registration and delivery).  Raises :class:`BlockedDestination` with a short reason.

``resolve_addresses(host) -> list[ipaddress address]``
    The resolver both use (``socket.getaddrinfo``); tests may monkeypatch it.

Rules:

* Scheme: ``ENV=development`` allows ``http`` and ``https``; every other ENV ``https`` only.
* No ``user:pass@`` credentials; a hostname is required.
* Hostnames ``localhost``, ``metadata.google.internal``, ``metadata.internal`` are refused.
* Every resolved address must be outside the blocked ranges below; an unresolvable host is
  refused.  IPv4-mapped IPv6 addresses are unwrapped and checked as IPv4.
* At delivery, ``development``/``test`` only block link-local (169.254.0.0/16, fe80::/10) so a
  developer can point at a local tunnel; production applies the full list.

``ALLOW_PRIVATE_CALLBACK_URLS=true`` (self-hosters whose agents live on a private network)
allows ``http`` and the private, loopback and shared ranges (and the ``localhost`` name) at write
and delivery time.  Link-local addresses and the metadata hostnames stay blocked because they
reach cloud credential services.  The risk: every user of the deployment can make the server
send requests to any host on that private network.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit, urlunsplit

from flask import current_app

from app.errors import BadRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

BLOCKED_HOSTNAMES = frozenset({"localhost", "metadata.google.internal", "metadata.internal"})
#: Always blocked: link-local, where cloud metadata services live.
LINK_LOCAL = tuple(ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fe80::/10"))
#: Blocked unless ALLOW_PRIVATE_CALLBACK_URLS.
PRIVATE = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "0.0.0.0/8",
    "100.64.0.0/10", "198.18.0.0/15", "::1/128", "fc00::/7", "::ffff:0:0/96"))


class BlockedDestination(Exception):
    """A URL Cueline must not call; ``str(exc)`` is a short reason safe to show the owner."""


def _settings(env: str | None, allow_private: bool | None) -> tuple[str, bool]:
    if env is None:
        env = current_app.config["ENV"]
    if allow_private is None:
        allow_private = bool(current_app.config["ALLOW_PRIVATE_CALLBACK_URLS"])
    return env, allow_private


def resolve_addresses(host: str) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise BlockedDestination(f"hostname {host!r} does not resolve") from exc
    addresses = []
    for info in infos:
        text = info[4][0].split("%", 1)[0]  # drop an IPv6 zone index
        addresses.append(ipaddress.ip_address(text))
    if not addresses:
        raise BlockedDestination(f"hostname {host!r} does not resolve")
    return addresses


def _unwrap(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _blocked_networks(*, loopback_ok: bool, allow_private: bool):
    if allow_private:
        return LINK_LOCAL
    if loopback_ok:
        return LINK_LOCAL
    return LINK_LOCAL + PRIVATE


def _check_addresses(host: str, networks) -> None:
    for address in resolve_addresses(host):
        for candidate in {address, _unwrap(address)}:
            if any(candidate in net for net in networks if net.version == candidate.version):
                raise BlockedDestination(f"{host} resolves to a blocked address ({candidate})")


def _split(url: str, env: str, allow_private: bool):
    """Parse ``url`` and apply the scheme / credentials / hostname rules."""
    if not isinstance(url, str) or not url.strip():
        raise BlockedDestination("a URL is required")
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise BlockedDestination("not a valid URL") from exc
    scheme = parts.scheme.lower()
    allowed = ("http", "https") if env == "development" or allow_private else ("https",)
    if scheme not in allowed:
        raise BlockedDestination(f"scheme must be {' or '.join(allowed)}")
    if parts.username is not None or parts.password is not None:
        raise BlockedDestination("credentials in the URL are not allowed")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise BlockedDestination("a hostname is required")
    if host in BLOCKED_HOSTNAMES and not (allow_private and host == "localhost"):
        raise BlockedDestination(f"hostname {host!r} is not allowed")
    return parts, scheme, host, port


def validate_url(url: str, *, field: str = "callback.url", env: str | None = None,
                 allow_private: bool | None = None) -> str:
    """Write-time check; return the normalised URL or raise 400 ``invalid_callback_url``."""
    env, allow_private = _settings(env, allow_private)
    try:
        parts, scheme, host, port = _split(url, env, allow_private)
        _check_addresses(host, _blocked_networks(loopback_ok=False, allow_private=allow_private))
    except BlockedDestination as exc:
        raise BadRequest("invalid_callback_url", f"{field}: {exc}") from None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, parts.fragment))


def check_destination(url: str, *, env: str | None = None,
                      allow_private: bool | None = None) -> None:
    """Delivery-time check; raise :class:`BlockedDestination` if ``url`` must not be called."""
    env, allow_private = _settings(env, allow_private)
    _parts, _scheme, host, _port = _split(url, env, allow_private)
    loopback_ok = env in ("development", "test")
    _check_addresses(host, _blocked_networks(loopback_ok=loopback_ok,
                                             allow_private=allow_private))
