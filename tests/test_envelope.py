"""Every error is the wire envelope; bodies are parsed the way CueAPI clients send them."""

import pytest

from tests.helpers import error_of, key_headers, register


def test_unknown_route_is_json_404(client):
    response = client.get("/v1/nope")
    assert response.status_code == 404
    assert error_of(response) == {"code": "http_error", "message": "Not Found", "status": 404}


def test_wrong_method_is_json_405_with_allow(client):
    response = client.delete("/v1/auth/register")
    assert response.status_code == 405
    assert error_of(response)["code"] == "http_error"
    assert error_of(response)["message"] == "Method Not Allowed"
    assert "POST" in response.headers["Allow"]


def test_malformed_json_is_400_invalid_json(client):
    response = client.post("/v1/auth/register", data="{not json",
                           content_type="application/json")
    assert response.status_code == 400
    assert error_of(response) == {"code": "invalid_json",
                                  "message": "Request body is not valid JSON", "status": 400}


def test_invalid_utf8_is_400_invalid_json(client):
    response = client.post("/v1/auth/register", data=b'{"email": "\xff\xfe"}',
                           content_type="application/json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"


def test_deep_nesting_is_400(client):
    body = "[" * 5000 + "]" * 5000
    response = client.post("/v1/auth/register", data=body, content_type="application/json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"


def test_nul_characters_are_refused(client):
    response = client.post("/v1/auth/register", json={"email": "a\u0000@example.com"})
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"
    response = client.get("/v1/auth/me?x=%00")
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_query"


def test_schema_failure_is_422_with_details(client):
    response = client.post("/v1/auth/register", json={"email": "not-an-email"})
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert error["details"][0]["field"] == "body.email"
    assert error["message"].startswith("body.email: ")


def test_missing_field_is_422(client):
    response = client.post("/v1/auth/register", json={})
    assert response.status_code == 422
    assert error_of(response)["details"] == [
        {"field": "body.email", "message": "Missing data for required field."}]


def test_empty_body_is_422_not_500(client):
    response = client.post("/v1/auth/register")
    assert response.status_code == 422


def test_body_without_content_type_is_parsed_as_json(client):
    response = client.post("/v1/auth/register", data='{"email": "ct@example.com"}',
                           headers={"Content-Type": ""})
    assert response.status_code == 201, response.get_json()


def test_json_content_type_on_bodiless_get_is_fine(client):
    key, _ = register(client)
    response = client.get("/v1/auth/me", headers={**key_headers(key),
                                                  "Content-Type": "application/json"})
    assert response.status_code == 200


def test_no_trailing_slash_redirect(client):
    key, _ = register(client)
    response = client.get("/v1/auth/me/", headers=key_headers(key))
    assert response.status_code == 200
    assert "Location" not in response.headers


def test_oversized_body_is_413(client):
    response = client.post("/v1/auth/register", data="x" * (1024 * 1024 + 1),
                           content_type="application/json")
    assert response.status_code == 413
    assert error_of(response) == {"code": "request_too_large",
                                  "message": "Request body exceeds 1048576 bytes",
                                  "status": 413}


def test_unhandled_exception_is_500_without_internals(make_app, caplog):
    app = make_app()

    def boom():
        raise RuntimeError("secret internals /etc/passwd")

    app.add_url_rule("/boom", view_func=boom)
    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert error_of(response) == {"code": "internal_error",
                                  "message": "An internal error occurred", "status": 500}
    assert b"internals" not in response.data
    assert response.headers["X-Request-Id"]
    assert "secret internals" in caplog.text  # logged server-side with the traceback


@pytest.mark.parametrize("path,method", [("/v1/nope", "get"), ("/health", "get"),
                                         ("/v1/auth/me", "get")])
def test_request_id_on_every_response(client, path, method):
    response = getattr(client, method)(path)
    request_id = response.headers["X-Request-Id"]
    assert len(request_id) == 36
    assert getattr(client, method)(path).headers["X-Request-Id"] != request_id


def test_inbound_request_id_is_not_echoed(client):
    response = client.get("/health", headers={"X-Request-Id": "attacker-chosen"})
    assert response.headers["X-Request-Id"] != "attacker-chosen"


def test_json_sent_as_a_form_by_curl_is_parsed(client):
    response = client.post("/v1/auth/register", data='{"email": "curl@example.com"}',
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 201, response.get_json()


def test_a_real_form_body_is_not_json(client):
    response = client.post("/v1/auth/register", data="email=form%40example.com",
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 422
