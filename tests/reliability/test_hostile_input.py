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
    "not-a-uuid", "", " ", "0" * 10_000, "\u202e867efcc8-8d45-42b1-94fa-9da3d6c2d2ac",
    "661ee48c-b9b1-4151-a50b-3e3973fbd3bdx",
    "79ec0c16-8b53-4f21-9737-28e44b4c7ec0, a86c9b40-f504-4c7c-9fc3-f8ba81d8ab8c",
    "../../etc/passwd",
    "'; DROP TABLE users; --",
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


# ---------------------------------------------------------------------------------------------
# Numbers a client can send: integers past what a column holds, non-finite literals.

#: Past PostgreSQL's integer (2**31), bigint (2**63) and any 64-bit type (10**30), both signs.
HUGE_INTEGERS = [2**31, 2**63, 10**30, -(2**31) - 1, -(2**63) - 1]
USER_LIMITS = ["active_cue_limit", "monthly_execution_limit", "monthly_message_limit",
               "rate_limit_per_minute"]


def _validation_field(response) -> str:
    error = error_of(response)
    assert response.status_code == 422 and error["code"] == "validation_error", error
    return error["details"][0]["field"]


@pytest.mark.parametrize("field", USER_LIMITS)
def test_user_limits_past_the_column_are_422(hostile, field):
    client, _headers = hostile
    service = service_headers()
    for value in HUGE_INTEGERS:
        user_id = str(uuid.uuid4())
        body = {"email": f"{user_id[:8]}@example.com", "slug": f"n-{user_id[:8]}", field: value}
        single = client.put(f"/v1/internal/users/{user_id}", json=body, headers=service)
        assert _validation_field(single) == f"body.{field}", value
        bulk = client.put("/v1/internal/users", json={"users": [{"id": user_id, **body}]},
                          headers=service)
        assert bulk.status_code == 200, bulk.get_json()
        result = bulk.get_json()["results"][0]
        assert result["status"] == "error" and result["error"]["code"] == "validation_error"
        assert result["error"]["details"][0]["field"] == f"users[0].{field}"
        assert client.get(f"/v1/internal/users/{user_id}", headers=service).status_code == 404
    # The largest value the column holds is accepted.
    user_id = str(uuid.uuid4())
    largest = client.put(f"/v1/internal/users/{user_id}", headers=service, json={
        "email": f"{user_id[:8]}@example.com", "slug": f"n-{user_id[:8]}", field: 2**31 - 1})
    assert largest.status_code == 200 and largest.get_json()[field] == 2**31 - 1


@pytest.mark.parametrize("query", [f"offset={2**63}", f"offset={2**31}", f"offset={10**30}",
                                   f"limit={2**63}", "offset=-1"])
def test_audit_paging_past_the_column_is_422(hostile, query):
    client, _headers = hostile
    response = client.get(f"/v1/internal/audit?{query}", headers=service_headers())
    assert _validation_field(response) == f"query.{query.split('=')[0]}"


def test_invite_max_uses_past_the_column_is_422(hostile):
    client, _headers = hostile
    for value in (2**31, 2**63, 10**30):
        response = client.post("/v1/internal/invites", json={"max_uses": value},
                               headers=service_headers())
        assert _validation_field(response) == "body.max_uses"


NON_FINITE = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"]


@pytest.mark.parametrize("literal", NON_FINITE)
def test_non_finite_numbers_are_invalid_json(hostile, literal):
    client, headers = hostile
    agent = client.post("/v1/agents", json={"display_name": "Numbers"}, headers=headers)
    assert agent.status_code == 201, agent.get_json()
    agent_id = agent.get_json()["id"]
    sends = [
        ("post", "/v1/agents", b'{"display_name": "x", "metadata": {"n": %s}}'),
        ("patch", f"/v1/agents/{agent_id}", b'{"metadata": {"n": %s}}'),
        ("post", "/v1/messages", b'{"to": "%s", "body": "b", "metadata": {"n": LITERAL}}'
                                 % agent_id.encode()),
        ("post", "/v1/cues", b'{"name": "n", "schedule": {"type": "recurring", "cron": '
                             b'"0 0 1 1 *"}, "transport": "worker", "payload": {"n": LITERAL}}'),
        ("post", "/v1/auth/register", b'{"email": "n@example.com", "x": LITERAL}'),
    ]
    for method, path, template in sends:
        body = template.replace(b"LITERAL", literal) if b"LITERAL" in template else (
            template % literal)
        response = getattr(client, method)(path, data=body, headers=headers,
                                           content_type="application/json")
        assert response.status_code == 400, (path, response.get_data(as_text=True))
        error = error_of(response)
        assert error["code"] == "invalid_json", (path, error)
        assert literal.decode().lstrip("-") in error["message"]
    for path in ("/v1/internal/users/" + str(uuid.uuid4()), "/v1/internal/users"):
        response = client.put(path, data=b'{"users": [{"n": %s}], "email": "a@example.com", '
                                         b'"slug": "a", "rate_limit_per_minute": %s}'
                                         % (literal, literal), headers=service_headers(),
                              content_type="application/json")
        assert response.status_code == 400 and error_of(response)["code"] == "invalid_json"


#: Request integers naming a BIGINT column (event ids: ``since``, ``acked_event_id``).
BIGINT = {"since", "acked_event_id"}


def test_every_request_integer_is_bounded(hostile):
    """Each integer a request carries (body, query, path) has bounds a column can hold, so a
    new field cannot reopen the overflow class: the OpenAPI document publishes them."""
    client, _headers = hostile
    spec = client.get("/openapi.json").get_json()
    components = spec.get("components", {}).get("schemas", {})
    unbounded: list[str] = []

    def walk(schema, where, seen=()):
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            if name not in seen:
                walk(components[name], f"{where}<{name}>", (*seen, name))
            return
        if schema.get("type") == "integer":
            low, high = schema.get("minimum"), schema.get("maximum")
            # Event ids are BIGINT (the one 64-bit key a client sends back): 0 … 2**63 - 1.
            top = 2**63 - 1 if where.rsplit(" ", 1)[-1].rsplit(".", 1)[-1] in BIGINT else 2**31 - 1
            if low is None or high is None or low < -(2**31) or high > top:
                unbounded.append(f"{where}: minimum={low} maximum={high}")
        for name, sub in schema.get("properties", {}).items():
            walk(sub, f"{where}.{name}", seen)
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), dict):
                walk(schema[key], f"{where}[]", seen)
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in schema.get(key, []):
                walk(sub, where, seen)

    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                walk(parameter.get("schema", {}), f"{method.upper()} {path} {parameter['name']}")
            for media in operation.get("requestBody", {}).get("content", {}).values():
                walk(media.get("schema", {}), f"{method.upper()} {path} body")
    assert not unbounded, "\n".join(unbounded)


# ---------------------------------------------------------------------------------------------
# Patterns match the whole value: ``$`` in a Python regex also matches before a final newline.

def test_trailing_newline_is_refused_everywhere_a_pattern_applies(hostile):
    client, headers = hostile
    user_id = str(uuid.uuid4())
    response = client.put(f"/v1/internal/users/{user_id}", headers=service_headers(),
                          json={"email": "nl@example.com", "slug": "nl0b67df\n"})
    assert _validation_field(response) == "body.slug"
    bulk = client.put("/v1/internal/users", headers=service_headers(), json={"users": [
        {"id": user_id, "email": "nl@example.com", "slug": "nl0b67df\n"}]})
    assert bulk.get_json()["results"][0]["error"]["code"] == "validation_error"
    agent = client.post("/v1/agents", headers=headers,
                        json={"display_name": "x", "slug": "nl0b67df\n"})
    assert _validation_field(agent) == "body.slug"
    good = client.post("/v1/agents", headers=headers, json={"display_name": "y"}).get_json()
    reply = client.post("/v1/messages", headers={**headers, "X-Cueapi-From-Agent": good["id"]},
                        json={"to": good["id"], "body": "b", "reply_to": "msg_aaaaaaaaaaaa\n"})
    assert _validation_field(reply) == "body.reply_to"
    for name, value in (("X-Name\n", "v"), ("X-Name", "value\n")):
        cue = client.post("/v1/cues", headers=headers, json={
            "name": f"nl-{len(name)}", "schedule": {"type": "recurring", "cron": "0 0 1 1 *"},
            "callback": {"url": "https://93.184.216.34/h", "headers": {name: value}}})
        assert cue.status_code == 422, cue.get_json()
        assert error_of(cue)["details"][0]["field"].startswith("body.callback.headers")


def test_principal_names_match_whole_values(hostile):
    from app.auth.principals import create_principal
    from app.errors import BadRequest

    client, _headers = hostile
    with client.application.app_context():
        with pytest.raises(BadRequest) as info:
            create_principal("crm\n")
        assert info.value.code == "invalid_principal_name"


def test_no_pattern_in_the_code_ends_with_a_bare_dollar():
    """A regex used with ``match`` must end in ``\\Z`` or be used with ``fullmatch``; request
    schemas use :class:`app.api.WholeMatch`, never ``validate.Regexp``."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2] / "app"
    offenders = []
    for path in root.rglob("*.py"):
        text = path.read_text()
        if "validate.Regexp(" in text:
            offenders.append(f"{path}: validate.Regexp (use app.api.WholeMatch)")
        for match in re.finditer(r"re\.compile\(r?\"([^\"]*)\"", text):
            if match.group(1).endswith("$"):
                offenders.append(f"{path}: re.compile({match.group(1)!r})")
    assert not offenders, "\n".join(offenders)


# --- header blocks over gunicorn's limits, through a real gunicorn --------------------------


@pytest.fixture(scope="module")
def gunicorn_url(tmp_path_factory):
    """gunicorn from the checkout (so gunicorn.conf.py applies) on a SQLite database."""
    from tests.reliability.test_faults import _env, _gunicorn, _migrate

    db_file = tmp_path_factory.mktemp("headers") / "cueline.db"
    env = _env(f"sqlite:///{db_file}")
    _migrate(env)
    process, url = _gunicorn(env)
    yield url
    process.terminate()
    process.wait(timeout=30)


def _raw(url: str, head: bytes) -> tuple[int, dict, bytes]:
    """Send raw request bytes; return (status, headers, body) of the answer."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    header_block, _, body = data.partition(b"\r\n\r\n")
    lines = header_block.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


@pytest.mark.parametrize("case,status,code", [
    ("header_100kb", 431, "header_field_too_large"),
    ("header_9kb", 431, "header_field_too_large"),
    ("headers_200", 431, "too_many_headers"),
    ("request_line_10kb", 400, "request_line_too_large"),
    ("garbage", 400, "invalid_request"),
])
def test_gunicorn_limits_answer_the_envelope(gunicorn_url, case, status, code):
    import json

    line = b"GET /v1/auth/me HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if case == "header_100kb":
        head = line + b"X-Big: " + b"x" * 100_000 + b"\r\n\r\n"
    elif case == "header_9kb":
        head = line + b"X-Big: " + b"x" * 9_000 + b"\r\n\r\n"
    elif case == "headers_200":
        head = line + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n"
    elif case == "request_line_10kb":
        head = b"GET /v1/cues?q=" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    else:
        head = b"\x16\x03\x01 nonsense\r\n\r\n"
    got_status, headers, body = _raw(gunicorn_url, head)
    assert got_status == status, body[:300]
    assert headers["content-type"] == "application/json"
    payload = json.loads(body)
    assert set(payload) == {"error"}
    assert payload["error"]["code"] == code and payload["error"]["status"] == status
    if code == "header_field_too_large":
        assert "8190 bytes" in payload["error"]["message"]
    if code == "too_many_headers":
        assert "at most 100" in payload["error"]["message"]
    if code == "request_line_too_large":
        assert "at most 4094 bytes" in payload["error"]["message"]


def test_headers_within_gunicorns_limits_reach_the_app(gunicorn_url):
    """Just under the limits, the app answers itself (the envelope from Flask)."""
    import json

    head = (b"GET /v1/auth/me HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Authorization: Bearer cue_sk_" + b"x" * 8000 + b"\r\n"
            + b"".join(b"X-H%d: v\r\n" % i for i in range(90)) + b"\r\n")
    status, headers, body = _raw(gunicorn_url, head)
    assert status == 401
    assert json.loads(body)["error"]["code"] == "invalid_api_key"
