"""Property-based API fuzzing with schemathesis against Cueline's own ``/openapi.json``.

Every operation is called with generated (valid and invalid) input and real credentials: no
answer may be a 5xx, and every answer must match what the document says (status codes, content
type, response schema).  Each generated case is sent a second time with a hostile number (past
any integer column, or NaN / ±Infinity) in place of every number it carries, which must be
refused with the envelope (400 ``invalid_json`` or 422), never a 5xx.  ``make test`` runs a
bounded number of cases (``CUELINE_FUZZ_EXAMPLES``, default 3 per operation); ``make soak``
runs thousands.
"""

import json
import os
import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers import SERVICE_TOKEN

EXAMPLES = int(os.environ.get("CUELINE_FUZZ_EXAMPLES", "3"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
#: Past PostgreSQL's integer and bigint, past any 64-bit type, and the non-finite literals
#: Python's json module would otherwise accept.
HOSTILE_NUMBERS = [2**31, 2**63, 10**30, -(2**63) - 1, float("nan"), float("inf"),
                   float("-inf")]


def _with_number(value, number):
    """``value`` with every number in it (not booleans) replaced by ``number``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return number
    if isinstance(value, dict):
        return {key: _with_number(item, number) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_number(item, number) for item in value]
    return value


def _send_hostile_variant(app, case, number, headers) -> None:
    """Send ``case`` again with ``number`` in place of its numbers (body and query).

    The body is serialised here: HTTP clients refuse to write NaN or Infinity, but nothing
    stops a hostile client from sending them, and Python's json module would read them.  A
    body without numbers gets one in its first field.  Nothing to replace: nothing is sent.
    """
    body = case.body
    changed = False
    if isinstance(body, dict | list):
        body = _with_number(body, number)
        if isinstance(body, dict) and body and json.dumps(body) == json.dumps(case.body):
            body[next(iter(body))] = number
        changed = json.dumps(body) != json.dumps(case.body)
    query = dict(case.query or {})
    if isinstance(number, int):
        for key, value in query.items():
            if isinstance(value, int) and not isinstance(value, bool) or (
                    isinstance(value, str) and value.lstrip("-").isdigit()):
                query[key] = str(number)
                changed = True
    if not changed:
        return
    data = json.dumps(body) if isinstance(body, dict | list) else None
    response = app.test_client().open(
        case.formatted_path, method=case.method.upper(), query_string=query,
        headers={**(case.headers or {}), **headers}, data=data,
        content_type="application/json" if data is not None else None)
    where = (case.method, case.formatted_path, query, data)
    assert response.status_code < 500, (where, response.get_data(as_text=True)[:500])
    if response.status_code < 400:
        # A huge integer may be fine where free-form JSON is stored (a payload); a non-finite
        # number never is.
        assert isinstance(number, int) or data is None, where
        return
    error = response.get_json()["error"]
    assert error["status"] == response.status_code and error["code"], (where, error)
    if data is not None and not isinstance(number, int) and response.status_code == 400:
        # (a NUL in the generated path or query is refused before the body is read)
        assert error["code"] in ("invalid_json", "invalid_query"), (where, error)


@pytest.fixture
def fuzzed(make_app):
    """An app with every module mounted, a user with a key, an agent, and their headers."""
    app = make_app(EXTERNAL_AUTH_BACKEND=True, INTERNAL_AUTH_TOKEN=SERVICE_TOKEN,
                   ALLOW_PRIVATE_CALLBACK_URLS=False)
    client = app.test_client()
    user_id = str(uuid.uuid4())
    client.put(f"/v1/internal/users/{user_id}", json={"email": "fuzz@example.com",
                                                      "slug": "fuzz"},
               headers={"Authorization": f"Bearer {SERVICE_TOKEN}"})
    key = client.post("/v1/auth/key/regenerate", headers={
        "Authorization": f"Bearer {SERVICE_TOKEN}", "X-On-Behalf-Of": user_id,
        "X-Confirm-Destructive": "true"}).get_json()["api_key"]
    client.post("/v1/agents", json={"display_name": "Fuzz", "slug": "fuzz"},
                headers={"Authorization": f"Bearer {key}"})
    app.config["FUZZ_KEY"] = key
    return app


def _headers(app, path: str) -> dict[str, str]:
    if path.startswith("/v1/internal"):
        return {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    return {"Authorization": f"Bearer {app.config['FUZZ_KEY']}"}


def test_no_server_errors_and_documented_answers(fuzzed):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", fuzzed)

    def _exercise(operation, headers):
        @given(case=operation.as_strategy(), number=st.sampled_from(HOSTILE_NUMBERS))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def exercise(case, number):
            case.call_and_validate(headers=headers, checks=CHECKS)
            _send_hostile_variant(fuzzed, case, number, headers)

        return exercise

    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        try:
            _exercise(operation, _headers(fuzzed, operation.path))()
        except Exception as exc:  # collect every failing operation, then report them all
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:3000])
    assert operations > 20
    assert not failures, "\n\n".join(failures)
