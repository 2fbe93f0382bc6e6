"""Property-based API fuzzing with schemathesis against Cueline's own ``/openapi.json``.

Every operation is called with generated (valid and invalid) input and real credentials: no
answer may be a 5xx, and every answer must match what the document says (status codes, content
type, response schema).  ``make test`` runs a bounded number of cases
(``CUELINE_FUZZ_EXAMPLES``, default 3 per operation); ``make soak`` runs thousands.
"""

import os
import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
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
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def exercise(case):
            case.call_and_validate(headers=headers, checks=CHECKS)

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
