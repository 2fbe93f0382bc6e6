"""Hostile input is answered with the error envelope, never a 5xx."""

import uuid

import pytest

from tests.helpers import SERVICE_TOKEN, error_of, key_headers, register, service_headers

BODY_ROUTES = [("post", "/v1/auth/register"), ("post", "/v1/cues"), ("post", "/v1/messages"),
               ("post", "/v1/agents"), ("patch", "/v1/auth/me"),
               ("post", "/v1/executions/claim")]


@pytest.fixture
def hostile(make_app):
    app = make_app(EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=SERVICE_TOKEN)
    client = app.test_client()
    key, _ = register(client)
    return client, key_headers(key)


def _assert_envelope(response, statuses=None):
    """Never a 5xx; any refusal is the envelope (with one of ``statuses`` when given)."""
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    if response.status_code < 400 and statuses is None:
        return
    error = error_of(response)
    if statuses:
        assert response.status_code in statuses, error


@pytest.mark.parametrize("method,path", BODY_ROUTES)
def test_oversized_body(hostile, method, path):
    client, headers = hostile
    response = getattr(client, method)(path, data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                                       headers=headers, content_type="application/json")
    _assert_envelope(response, {413})
    assert error_of(response)["code"] == "request_too_large"


@pytest.mark.parametrize("method,path", BODY_ROUTES)
@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    b'{"email": "a\\u0000@example.com", "name": "x\\u0000"}',
    b'{"email": "\xc3\x28@example.com"}',
    b"\xff\xfe\xfd",
    b'{"unterminated": ',
    b"null",
    b'"a string"',
    b"[1, 2, 3]",
    b"123456789012345678901234567890",
])
def test_malformed_bodies(hostile, method, path, body):
    client, headers = hostile
    response = getattr(client, method)(path, data=body, headers=headers,
                                       content_type="application/json")
    _assert_envelope(response, {400, 404, 409, 422})


@pytest.mark.parametrize("value", [
    "not-a-uuid", "", " ", "0" * 10_000, "\u202e" + str(uuid.uuid4()), str(uuid.uuid4()) + "x",
    f"{uuid.uuid4()}, {uuid.uuid4()}", "../../etc/passwd", "'; DROP TABLE users; --",
    str(uuid.UUID(int=0)),
])
def test_forged_on_behalf_of(hostile, value):
    client, headers = hostile
    for extra in ({"Authorization": f"Bearer {SERVICE_TOKEN}"}, {"X-Service-Key": SERVICE_TOKEN},
                  headers, {}):
        response = client.get("/v1/auth/me", headers={**extra, "X-On-Behalf-Of": value})
        if extra is headers and not value.strip():
            assert response.status_code == 200  # a blank header beside a key is no request
            continue
        _assert_envelope(response, {400, 401, 404})


def test_huge_headers(hostile):
    client, headers = hostile
    big = "x" * 200_000
    for extra in ({"Authorization": "Bearer cue_sk_" + big}, {"Authorization": "Bearer " + big},
                  {"X-Service-Key": big}, {**headers, "X-Cueapi-From-Agent": big},
                  {**headers, "Idempotency-Key": big}, {**headers, "X-Worker-Id": big}):
        for method, path in (("get", "/v1/auth/me"), ("post", "/v1/messages"),
                             ("get", "/v1/cues")):
            response = getattr(client, method)(path, headers=extra, json={"to": "a", "body": "b"})
            _assert_envelope(response)


@pytest.mark.parametrize("path", [
    "/v1/cues/%00", "/v1/cues/" + "a" * 5000, "/v1/executions/not-a-uuid",
    "/v1/executions/%ff%fe", "/v1/agents/%00", "/v1/messages/msg_%00", "/v1/agents/a@b@c",
    "/v1/internal/users/%00",
])
def test_hostile_paths(hostile, path):
    client, headers = hostile
    for extra in (headers, service_headers()):
        _assert_envelope(client.get(path, headers=extra), {400, 401, 404, 405})


@pytest.mark.parametrize("query", [
    "limit=-1", "limit=abc", "limit=99999999999999999999", "offset=-5", "status=%00",
    "status__in=", "since=not-a-date", "limit=1e3", "cue_id=%ff",
])
def test_hostile_queries(hostile, query):
    client, headers = hostile
    for path in ("/v1/cues", "/v1/executions", "/v1/agents", "/v1/agents/roster"):
        _assert_envelope(client.get(f"{path}?{query}", headers=headers))
