"""Signing, SSRF validation and the classifying HTTP sender of ``app.outbound``."""

from __future__ import annotations

import ipaddress
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cueapi import verify_webhook

from app.errors import BadRequest
from app.outbound import http as outbound_http
from app.outbound import ssrf
from app.outbound.signing import canonical_json, signature_headers, verify_signature

SECRET = "whsec_" + "ab" * 32


def test_canonical_json_matches_python_default_dumps():
    obj = {"b": 1, "a": {"z": "é", "y": [1, 2]}, "when": ipaddress.ip_address("10.0.0.1")}
    text = canonical_json(obj)
    assert text == json.dumps(obj, sort_keys=True, default=str)
    assert text.startswith('{"a": {"y": [1, 2], "z": "\\u00e9"}, "b": 1')


def test_signature_accepted_by_sdk_and_rejected_when_tampered():
    body = canonical_json({"payload": {"msg": "héllo"}, "attempt": 1})
    import time

    now = int(time.time())
    headers = signature_headers(SECRET, body, now)
    assert headers["X-CueAPI-Timestamp"] == str(now)
    assert headers["X-CueAPI-Signature"].startswith("v1=")
    assert verify_webhook(body, headers["X-CueAPI-Signature"], SECRET,
                          headers["X-CueAPI-Timestamp"])
    assert verify_webhook(body.encode(), headers["X-CueAPI-Signature"], SECRET,
                          headers["X-CueAPI-Timestamp"])
    assert not verify_webhook(body.replace("1", "2"), headers["X-CueAPI-Signature"], SECRET,
                              headers["X-CueAPI-Timestamp"])
    assert verify_signature(SECRET, body, now, headers["X-CueAPI-Signature"])
    assert not verify_signature("whsec_other", body, now, headers["X-CueAPI-Signature"])


@pytest.fixture
def fake_dns(monkeypatch):
    table = {"public.example": ["93.184.216.34"], "rebind.example": ["10.1.2.3"],
             "localhost": ["127.0.0.1"],
             "mapped.example": ["::ffff:127.0.0.1"], "mixed.example": ["93.184.216.34",
                                                                       "192.168.1.5"]}

    def resolve(host):
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        if host not in table:
            raise ssrf.BlockedDestination(f"hostname {host!r} does not resolve")
        return [ipaddress.ip_address(a) for a in table[host]]

    monkeypatch.setattr(ssrf, "resolve_addresses", resolve)
    return table


@pytest.mark.parametrize("url,reason", [
    ("http://public.example/x", "scheme must be https"),
    ("ftp://public.example/x", "scheme"),
    ("https://user:pw@public.example/", "credentials"),
    ("https:///nohost", "hostname is required"),
    ("https://localhost/x", "not allowed"),
    ("https://[::]/", "blocked address"),
    ("https://[::]:22/", "blocked address"),
    ("https://METADATA.google.internal/", "not allowed"),
    ("https://127.0.0.1/", "blocked address"),
    ("https://169.254.169.254/latest", "blocked address"),
    ("https://rebind.example/", "blocked address"),
    ("https://mapped.example/", "blocked address"),
    ("https://mixed.example/", "blocked address"),
    ("https://[::1]/", "blocked address"),
    ("https://nowhere.example/", "does not resolve"),
    ("https://public.example:99999/", "not a valid URL"),
    ("", "required"),
])
def test_validate_url_rejections(fake_dns, url, reason):
    with pytest.raises(BadRequest) as info:
        ssrf.validate_url(url, field="callback.url", env="production", allow_private=False)
    assert info.value.code == "invalid_callback_url"
    assert info.value.message.startswith("callback.url: ")
    assert reason in info.value.message


def test_validate_url_normalises(fake_dns):
    assert ssrf.validate_url("https://PUBLIC.example", env="test",
                             allow_private=False) == "https://public.example/"
    assert ssrf.validate_url("https://public.example:8443/a?b=1", env="test",
                             allow_private=False) == "https://public.example:8443/a?b=1"


def test_development_allows_http_and_loopback_at_save_time(fake_dns):
    assert ssrf.validate_url("http://public.example/", env="development", allow_private=False)
    for url in ("http://127.0.0.1:9/", "http://[::1]:9/h", "http://localhost:8080/"):
        assert ssrf.validate_url(url, env="development", allow_private=False)
    # Still refused in production (and in test at save time) without the setting.
    for env in ("production", "test"):
        with pytest.raises(BadRequest) as info:
            ssrf.validate_url("https://127.0.0.1:9/", env=env, allow_private=False)
        assert "ALLOW_PRIVATE_CALLBACK_URLS" in info.value.message
    # Development opens loopback only, not the private ranges.
    with pytest.raises(BadRequest) as info:
        ssrf.validate_url("http://10.0.0.1/", env="development", allow_private=False)
    assert "ALLOW_PRIVATE_CALLBACK_URLS=true to allow" in info.value.message


#: Every non-global destination the outside probe got through, plus their neighbours.
NON_GLOBAL = [
    "[::]", "[::]:22", "0.0.0.0", "0.1.2.3", "192.0.0.8", "192.0.0.9", "224.0.0.1", "239.1.1.1",
    "240.0.0.1", "255.255.255.255", "[2002:7f00:1::1]", "[2002:a9fe:a9fe::1]",
    "[64:ff9b::a9fe:a9fe]", "[64:ff9b::7f00:1]", "[::127.0.0.1]", "[::169.254.169.254]",
    "[::ffff:127.0.0.1]", "[::ffff:169.254.169.254]", "[fec0::1]", "[ff02::1]", "[ff0e::1]",
    "[fe80::1]", "169.254.169.254", "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
    "[2001:0:7f00:1:0:0:0:1]", "127.0.0.1", "[::1]", "10.0.0.1", "172.16.0.1",
    "192.168.1.1", "100.64.0.1", "198.18.0.1", "[fc00::1]", "[fd12::1]", "192.88.99.1",
    "[100::1]", "[64:ff9b:1::1]", "198.51.100.7", "[2001:db8::1]",
]


@pytest.mark.parametrize("host", NON_GLOBAL)
@pytest.mark.parametrize("when", ["save", "delivery"])
def test_non_global_destinations_are_refused_in_production(host, when):
    url = f"https://{host}/hook"
    if when == "save":
        with pytest.raises(BadRequest) as info:
            ssrf.validate_url(url, field="webhook_url", env="production", allow_private=False)
        assert info.value.code == "invalid_callback_url"
        assert info.value.message.startswith("webhook_url: ")
        assert "blocked address" in info.value.message
        assert "ALLOW_PRIVATE_CALLBACK_URLS" in info.value.message
    else:
        with pytest.raises(ssrf.BlockedDestination):
            ssrf.check_destination(url, env="production", allow_private=False)


#: Refused even with ALLOW_PRIVATE_CALLBACK_URLS=true (and in development).
NEVER = ["[::]", "[::]:22", "0.0.0.0", "192.0.0.8", "224.0.0.1", "240.0.0.1",
         "255.255.255.255", "[64:ff9b::a9fe:a9fe]", "[::169.254.169.254]", "[fec0::1]",
         "[ff02::1]", "169.254.169.254", "[fe80::1]", "[2002:a9fe:a9fe::1]"]


@pytest.mark.parametrize("host", NEVER)
@pytest.mark.parametrize("env", ["production", "development", "test"])
def test_never_allowed_destinations_stay_refused_with_the_setting(host, env):
    with pytest.raises(BadRequest) as info:
        ssrf.validate_url(f"https://{host}/", env=env, allow_private=True)
    assert "not even with ALLOW_PRIVATE_CALLBACK_URLS=true" in info.value.message
    with pytest.raises(ssrf.BlockedDestination):
        ssrf.check_destination(f"https://{host}/", env=env, allow_private=True)


@pytest.mark.parametrize("host", ["93.184.216.34", "[2606:4700::1111]",
                                  "[2002:5db8:d822::1]", "[64:ff9b::5db8:d822]",
                                  "[::ffff:93.184.216.34]"])
def test_global_destinations_and_their_wrapped_forms_are_accepted(host):
    url = f"https://{host}/hook"
    assert ssrf.validate_url(url, env="production", allow_private=False) == url
    ssrf.check_destination(url, env="production", allow_private=False)


def test_embedded_ipv4_unwrapping():
    addr = ipaddress.ip_address
    assert ssrf.embedded_ipv4(addr("::ffff:10.0.0.1")) == [addr("10.0.0.1")]
    assert ssrf.embedded_ipv4(addr("::127.0.0.1")) == [addr("127.0.0.1")]
    assert ssrf.embedded_ipv4(addr("2002:7f00:1::1")) == [addr("127.0.0.1")]
    assert ssrf.embedded_ipv4(addr("64:ff9b::a9fe:a9fe")) == [addr("169.254.169.254")]
    assert addr("127.0.0.1") in ssrf.embedded_ipv4(addr("2001:0:7f00:1:0:0:0:1"))
    assert ssrf.embedded_ipv4(addr("::")) == ssrf.embedded_ipv4(addr("::1")) == []
    assert ssrf.embedded_ipv4(addr("10.0.0.1")) == []


def test_wrapped_private_addresses_follow_the_setting():
    # ::ffff:10.0.0.1 is 10.0.0.1: allowed exactly when 10.0.0.1 is.
    assert ssrf.validate_url("https://[::ffff:10.0.0.1]/", env="production", allow_private=True)
    with pytest.raises(BadRequest):
        ssrf.validate_url("https://[::ffff:10.0.0.1]/", env="production", allow_private=False)


def test_a_name_resolving_to_a_non_global_address_is_refused(monkeypatch):
    monkeypatch.setattr(ssrf, "resolve_addresses",
                        lambda host: [ipaddress.ip_address("93.184.216.34"),
                                      ipaddress.ip_address("::")])
    with pytest.raises(BadRequest) as info:
        ssrf.validate_url("https://hooks.example/", env="production", allow_private=False)
    assert "hooks.example resolves to a blocked address (::" in info.value.message


def test_connect_time_check_defeats_dns_rebinding(monkeypatch, receiver):
    """The name is public when checked, loopback when connected: the socket is never opened."""
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    calls = []

    def resolve(host):
        calls.append(host)
        return [ipaddress.ip_address(a) for a in next(answers)]

    monkeypatch.setattr(ssrf, "resolve_addresses", resolve)
    result = outbound_http.send("POST", f"https://rebinding.invalid:{receiver.server_port}/",
                                body="{}", timeout=2, env="production", allow_private=False)
    assert calls == ["rebinding.invalid", "rebinding.invalid"]
    assert result.outcome == "terminal"
    assert "blocked address (127.0.0.1" in result.error
    assert receiver.seen == []


def test_connect_time_check_connects_to_the_checked_address(monkeypatch, receiver):
    """A name is resolved by the guard and the socket goes to the address it returned."""
    monkeypatch.setattr(ssrf, "resolve_addresses",
                        lambda host: [ipaddress.ip_address("127.0.0.1")])
    result = outbound_http.send("POST", f"http://receiver.invalid:{receiver.server_port}/h",
                                body="{}", timeout=5, env="development", allow_private=False)
    assert result.outcome == "success", result.error
    assert receiver.seen[0][1]["Host"] == f"receiver.invalid:{receiver.server_port}"


def test_connect_guard_defaults_to_the_strictest_policy(monkeypatch):
    monkeypatch.setattr(ssrf, "resolve_addresses",
                        lambda host: [ipaddress.ip_address("127.0.0.1")])
    with pytest.raises(ssrf.BlockedDestination):
        ssrf.guard_connect("anything.invalid")
    with ssrf.connect_policy(env="test", allow_private=False):
        assert ssrf.guard_connect("anything.invalid") == ["127.0.0.1"]


def test_allow_private_opens_private_ranges_but_not_link_local(fake_dns):
    assert ssrf.validate_url("http://127.0.0.1:8080/h", env="production", allow_private=True)
    assert ssrf.validate_url("http://rebind.example/", env="production", allow_private=True)
    assert ssrf.validate_url("http://localhost:1/", env="production", allow_private=True)
    for url in ("http://169.254.169.254/", "http://metadata.internal/"):
        with pytest.raises(BadRequest):
            ssrf.validate_url(url, env="production", allow_private=True)


def test_delivery_check_loopback_rules(fake_dns):
    # development/test may deliver to loopback; production may not; link-local never.
    ssrf.check_destination("https://127.0.0.1/", env="test", allow_private=False)
    with pytest.raises(ssrf.BlockedDestination):
        ssrf.check_destination("https://127.0.0.1/", env="production", allow_private=False)
    with pytest.raises(ssrf.BlockedDestination):
        ssrf.check_destination("https://169.254.1.1/", env="test", allow_private=False)
    with pytest.raises(ssrf.BlockedDestination):
        ssrf.check_destination("https://rebind.example/", env="production", allow_private=False)


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.server.seen.append((self.command, dict(self.headers), self.rfile.read(length)))
        self.send_response(self.server.status)
        for name, value in self.server.extra_headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.seen, server.status, server.extra_headers = [], 200, {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server, path="/hook"):
    return f"http://127.0.0.1:{server.server_port}{path}"


@pytest.mark.parametrize("status,outcome", [(200, "success"), (204, "success"),
                                            (302, "terminal"), (404, "terminal"),
                                            (429, "retryable"), (503, "retryable"),
                                            (408, "retryable")])
def test_send_classifies_status(receiver, status, outcome):
    receiver.status = status
    result = outbound_http.send("POST", _url(receiver), body='{"a": 1}', timeout=5,
                                env="test", allow_private=True)
    assert result.outcome == outcome
    assert result.status_code == status
    assert (result.error is None) == (outcome == "success")


def test_send_sends_exact_bytes_and_does_not_follow_redirects(receiver):
    receiver.status = 307
    receiver.extra_headers = {"Location": _url(receiver, "/elsewhere"), "Retry-After": "7"}
    result = outbound_http.send("POST", _url(receiver), body='{"x": "\\u00e9"}',
                                headers={"X-Test": "1"}, timeout=5, env="test",
                                allow_private=True)
    assert result.outcome == "terminal"
    assert result.retry_after == 7
    assert len(receiver.seen) == 1  # the redirect target was never requested
    _method, headers, body = receiver.seen[0]
    assert body == b'{"x": "\\u00e9"}'
    assert headers["User-Agent"] == "CueAPI/1.0" and headers["X-Test"] == "1"


def test_send_connection_refused_is_retryable():
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    result = outbound_http.send("POST", f"http://127.0.0.1:{port}/", body="{}", timeout=2,
                                env="test", allow_private=True)
    assert result.outcome == "retryable" and result.status_code is None


def test_send_blocked_destination_is_terminal_without_request(receiver):
    result = outbound_http.send("POST", _url(receiver), body="{}", timeout=2,
                                env="production", allow_private=False)
    assert result.outcome == "terminal"
    assert "blocked" in result.error.lower()
    assert receiver.seen == []


def test_send_timeout_is_retryable(receiver):
    import time

    class Slow(_Receiver):
        def do_POST(self):
            time.sleep(1.5)
            super().do_POST()

    receiver.RequestHandlerClass = Slow
    result = outbound_http.send("POST", _url(receiver), body="{}", timeout=0.3,
                                env="test", allow_private=True)
    assert result.outcome == "retryable"
    assert "Timed out" in result.error
