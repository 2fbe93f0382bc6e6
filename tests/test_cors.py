"""CORS: any origin with credentials, preflights answered, our headers exposed."""

from tests.helpers import key_headers, register


def test_simple_request_echoes_origin_and_exposes_headers(client):
    key, _ = register(client)
    response = client.get("/v1/auth/me", headers={**key_headers(key),
                                                  "Origin": "https://app.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    exposed = {h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"]
               .split(",")}
    assert {"x-request-id", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset",
            "retry-after", "x-cueapi-usage-warning"} <= exposed


def test_preflight(client):
    response = client.options("/v1/auth/me", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "authorization, x-on-behalf-of"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "PATCH" in response.headers["Access-Control-Allow-Methods"]
    assert "x-on-behalf-of" in response.headers["Access-Control-Allow-Headers"].lower()


def test_errors_carry_cors_headers(client):
    response = client.get("/v1/auth/me", headers={"Origin": "https://app.example"})
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
