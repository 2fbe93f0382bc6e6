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
    The resolver all checks use (``socket.getaddrinfo``); tests may monkeypatch it.

``connect_policy(env=None, allow_private=None)`` / ``guard_connect(host) -> list[str]``
    The connect-time check :mod:`app.outbound.http` runs inside its connection step.

Rules (the same at write time and at delivery time, except where noted):

* Scheme: ``ENV=development`` (or ``ALLOW_PRIVATE_CALLBACK_URLS``) allows ``http`` and
  ``https``; otherwise ``https`` only.
* No ``user:pass@`` credentials; a hostname is required.
* Hostnames ``metadata.google.internal`` and ``metadata.internal`` are always refused;
  ``localhost`` is refused unless loopback is allowed (below).
* Every address the host resolves to must be a *global* destination (an unresolvable host is
  refused).  Addresses that embed an IPv4 address — IPv4-mapped ``::ffff:a.b.c.d``,
  IPv4-compatible ``::a.b.c.d``, 6to4 ``2002::/16``, NAT64 ``64:ff9b::/96`` and Teredo
  ``2001::/32`` — are judged by the IPv4 address(es) they carry.  "Global" is ``ipaddress``'s
  ``is_global`` plus :data:`NEVER`, because Python's tables call some special-purpose ranges
  global (multicast, ``192.0.0.0/24``, ``fec0::/10``).
* :data:`NEVER` is refused in every mode: unspecified (``0.0.0.0/8``, ``::``), link-local (cloud
  metadata lives at 169.254.169.254), multicast, ``240.0.0.0/4`` (with 255.255.255.255),
  ``192.0.0.0/24``, the old 6to4 relay ``192.88.99.0/24``, discard ``100::/64``, local-use NAT64
  ``64:ff9b:1::/48``, site-local ``fec0::/10``.
* Loopback (``127.0.0.0/8``, ``::1``, the name ``localhost``) is allowed in ``ENV=development``
  (write and delivery time) and at delivery time in ``ENV=test``, so a developer's local
  receiver works; never in production unless ``ALLOW_PRIVATE_CALLBACK_URLS``.
* ``ENV=test`` also accepts the documentation ranges (192.0.2.0/24, 198.51.100.0/24,
  203.0.113.0/24, 2001:db8::/32), which are never routed, so the suite can name a "public"
  receiver without DNS.

At delivery the check runs twice: :func:`check_destination` before the request, and
:func:`guard_connect` inside the HTTP client's connection step, which resolves the host, checks
every address and connects to a checked address — so a name that re-resolves to a blocked
address between the check and the connection (DNS rebinding) is still refused.

``ALLOW_PRIVATE_CALLBACK_URLS=true`` (self-hosters whose agents live on a private network)
allows ``http`` and the :data:`PRIVATE` and loopback ranges (and the ``localhost`` name) at
write and delivery time.  :data:`NEVER` and the metadata hostnames stay blocked.  The risk:
every user of the deployment can make the server send requests to any host on that private
network.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from flask import current_app

from app.errors import BadRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SETTING = "ALLOW_PRIVATE_CALLBACK_URLS"
METADATA_HOSTNAMES = frozenset({"metadata.google.internal", "metadata.internal"})


def _nets(*names: str) -> tuple:
    return tuple(ipaddress.ip_network(n) for n in names)


#: Refused in every mode, whatever ``is_global`` says.
NEVER = _nets("0.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "192.0.0.0/24",
              "192.88.99.0/24", "100::/64", "64:ff9b:1::/48",
              "::/128", "fe80::/10", "fec0::/10", "ff00::/8")
LOOPBACK = _nets("127.0.0.0/8", "::1/128")
#: Opened (with loopback) by ALLOW_PRIVATE_CALLBACK_URLS.
PRIVATE = _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                "198.18.0.0/15", "fc00::/7")
#: Never routed on the internet; accepted in ENV=test only (see module docstring).
DOCUMENTATION = _nets("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class BlockedDestination(Exception):
    """A URL Cueline must not call; ``str(exc)`` is a short reason safe to show the owner."""


@dataclass(frozen=True)
class Policy:
    """Which non-global ranges one check accepts (see module docstring)."""

    loopback: bool = False
    private: bool = False
    documentation: bool = False


def _settings(env: str | None, allow_private: bool | None) -> tuple[str, bool]:
    if env is None:
        env = current_app.config["ENV"]
    if allow_private is None:
        allow_private = bool(current_app.config["ALLOW_PRIVATE_CALLBACK_URLS"])
    return env, allow_private


def policy_for(env: str, allow_private: bool, *, delivery: bool) -> Policy:
    """The policy of ``env`` / ``ALLOW_PRIVATE_CALLBACK_URLS`` at write or delivery time."""
    loopback = allow_private or env == "development" or (delivery and env == "test")
    return Policy(loopback=loopback, private=allow_private, documentation=env == "test")


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


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, compatible, 6to4, NAT64, Teredo)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    value = int(address)
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if value >> 32 == 0 and value > 1:  # IPv4-compatible ::a.b.c.d (not :: or ::1)
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address in NAT64:
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if address.teredo is not None:
        return list(address.teredo)  # (server, client)
    return []


def refusal(address: IPAddress, policy: Policy) -> str | None:
    """Why ``address`` must not be called under ``policy``, or None when it may be."""
    inner = embedded_ipv4(address)
    if inner:
        # The embedded IPv4 address is what the packet reaches; judge that.
        for candidate in inner:
            reason = refusal(candidate, policy)
            if reason:
                return reason
        return None
    if any(address in net for net in NEVER if net.version == address.version):
        return "never allowed"
    if any(address in net for net in LOOPBACK if net.version == address.version):
        return None if policy.loopback else "loopback"
    if any(address in net for net in PRIVATE if net.version == address.version):
        return None if policy.private else "private"
    if policy.documentation and any(address in net for net in DOCUMENTATION
                                    if net.version == address.version):
        return None
    return None if address.is_global else "not a global address"


def _explain(host: str, address: IPAddress, reason: str) -> str:
    base = f"{host} resolves to a blocked address ({address}"
    if reason == "never allowed" or reason == "not a global address":
        return f"{base}: {reason}, not even with {SETTING}=true)"
    hint = (" (loopback is also accepted with ENV=development)" if reason == "loopback" else "")
    return f"{base}: {reason}); set {SETTING}=true to allow private-network receivers{hint}"


def checked_addresses(host: str, policy: Policy) -> list[IPAddress]:
    """Resolve ``host`` and return its addresses; :class:`BlockedDestination` if any is refused."""
    addresses = resolve_addresses(host)
    for address in addresses:
        reason = refusal(address, policy)
        if reason:
            raise BlockedDestination(_explain(host, address, reason))
    return addresses


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
    if host in METADATA_HOSTNAMES:
        raise BlockedDestination(f"hostname {host!r} is not allowed")
    return parts, scheme, host, port


def validate_url(url: str, *, field: str = "callback.url", env: str | None = None,
                 allow_private: bool | None = None) -> str:
    """Write-time check; return the normalised URL or raise 400 ``invalid_callback_url``."""
    env, allow_private = _settings(env, allow_private)
    try:
        policy = policy_for(env, allow_private, delivery=False)
        parts, scheme, host, port = _split(url, env, allow_private)
        _check_host(host, policy)
        checked_addresses(host, policy)
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
    policy = policy_for(env, allow_private, delivery=True)
    _parts, _scheme, host, _port = _split(url, env, allow_private)
    _check_host(host, policy)
    checked_addresses(host, policy)


def _check_host(host: str, policy: Policy) -> None:
    if host == "localhost" and not policy.loopback:
        raise BlockedDestination(f"hostname 'localhost' is not allowed (set {SETTING}=true, "
                                 "or use ENV=development, for a local receiver)")


_connect_policy: contextvars.ContextVar[Policy | None] = contextvars.ContextVar(
    "ssrf_connect_policy", default=None)


@contextlib.contextmanager
def connect_policy(env: str | None = None, allow_private: bool | None = None):
    """Within this block, :func:`guard_connect` applies the delivery policy of ``env``."""
    env, allow_private = _settings(env, allow_private)
    token = _connect_policy.set(policy_for(env, allow_private, delivery=True))
    try:
        yield
    finally:
        _connect_policy.reset(token)


def guard_connect(host: str) -> list[str]:
    """Connect-time check: the addresses (as text) a connection to ``host`` may use.

    Resolves ``host`` once more, refuses it if any address is blocked under the policy set by
    :func:`connect_policy` (the strictest policy, production's, when none is set), and returns
    the addresses to connect to, so the socket goes to an address that was just checked.
    """
    policy = _connect_policy.get() or Policy()
    host = host.strip("[]").rstrip(".")
    if host == "localhost" and not policy.loopback:
        raise BlockedDestination("hostname 'localhost' is not allowed")
    return [str(address) for address in checked_addresses(host, policy)]
