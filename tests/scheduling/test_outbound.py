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


def test_development_allows_http_but_never_loopback(fake_dns):
    assert ssrf.validate_url("http://public.example/", env="development", allow_private=False)
    with pytest.raises(BadRequest):
        ssrf.validate_url("http://127.0.0.1:9/", env="development", allow_private=False)


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
