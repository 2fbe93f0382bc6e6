"""Every route that saves a URL Cueline will call refuses non-global destinations (issue
probe addresses), names ``ALLOW_PRIVATE_CALLBACK_URLS`` in the message, and — in
``ENV=development`` only — accepts a loopback receiver."""

from __future__ import annotations

import pytest

from tests.helpers import error_of, key_headers, register
from tests.scheduling.conftest import PUBLIC_URL, cue_body

#: The addresses the outside probe got accepted, verbatim.
PROBE_HOSTS = ["[::]", "[::]:22", "192.0.0.8", "224.0.0.1", "240.0.0.1", "255.255.255.255",
               "[2002:7f00:1::1]", "[64:ff9b::a9fe:a9fe]", "[::127.0.0.1]", "[fec0::1]",
               "0.0.0.0"]


def _save(client, headers, where, url, base=PUBLIC_URL):
    """Save ``url`` through one of the URL-taking routes (other URLs: ``base``)."""
    if where == "cue.callback":
        return client.post("/v1/cues", json=cue_body(callback={"url": url}), headers=headers)
    if where == "cue.on_failure":
        return client.post("/v1/cues", json=cue_body(callback={"url": base},
                                                     on_failure={"webhook": url}),
                           headers=headers)
    if where == "cue.patch":
        cue = client.post("/v1/cues", json=cue_body(callback={"url": base}), headers=headers)
        assert cue.status_code == 201, cue.get_json()
        return client.patch(f"/v1/cues/{cue.get_json()['id']}",
                            json={"callback": {"url": url}}, headers=headers)
    if where == "agent.create":
        return client.post("/v1/agents", json={"display_name": "a", "webhook_url": url},
                           headers=headers)
    agent = client.post("/v1/agents", json={"display_name": "b"}, headers=headers)
    assert agent.status_code == 201, agent.get_json()
    return client.patch(f"/v1/agents/{agent.get_json()['id']}", json={"webhook_url": url},
                        headers=headers)


ROUTES = ["cue.callback", "cue.on_failure", "cue.patch", "agent.create", "agent.patch"]


@pytest.fixture
def client(make_app):
    return make_app().test_client()


@pytest.mark.parametrize("where", ROUTES)
@pytest.mark.parametrize("host", PROBE_HOSTS)
def test_probe_addresses_are_refused_everywhere(client, where, host):
    headers = key_headers(register(client)[0])
    response = _save(client, headers, where, f"https://{host}/hook")
    assert response.status_code == 400, response.get_json()
    error = error_of(response)
    assert error["code"] == "invalid_callback_url"
    assert "blocked address" in error["message"]
    assert "ALLOW_PRIVATE_CALLBACK_URLS" in error["message"]


@pytest.mark.parametrize("where", ROUTES)
def test_public_literal_is_accepted_everywhere(client, where):
    headers = key_headers(register(client)[0])
    response = _save(client, headers, where, PUBLIC_URL)
    assert response.status_code in (200, 201), response.get_json()


@pytest.mark.parametrize("where", ROUTES)
@pytest.mark.parametrize("env,allowed", [("development", True), ("production", False),
                                         ("test", False)])
def test_loopback_receivers_at_save_time(make_app, monkeypatch, where, env, allowed):
    import ipaddress

    from app.outbound import ssrf

    # Outside ENV=test the documentation literal is refused: use a name mapped to a global
    # address (nothing is delivered in this test).
    monkeypatch.setattr(ssrf, "resolve_addresses", lambda host: [
        ipaddress.ip_address("127.0.0.1" if host == "127.0.0.1" else "93.184.216.34")])
    extra = {"SESSION_SECRET": "s" * 40, "BASE_URL": "https://cueline.invalid"} \
        if env == "production" else {}
    client = make_app(ENV=env, ALLOW_REGISTER=True, **extra).test_client()
    headers = key_headers(register(client)[0])
    scheme = "http" if env == "development" else "https"
    response = _save(client, headers, where, f"{scheme}://127.0.0.1:8080/hook",
                     base="https://hooks.invalid/in")
    if allowed:
        assert response.status_code in (200, 201), response.get_json()
    else:
        assert response.status_code == 400
        message = error_of(response)["message"]
        assert "set ALLOW_PRIVATE_CALLBACK_URLS=true" in message
        assert "ENV=development" in message
