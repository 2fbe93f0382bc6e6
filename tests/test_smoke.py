"""Quick end-to-end smoke: register, me."""

from tests.helpers import key_headers, register


def test_register_and_me(client):
    key, body = register(client, "Alice.Smith@Example.COM")
    assert body["email"] == "Alice.Smith@example.com"
    me = client.get("/v1/auth/me", headers=key_headers(key))
    assert me.status_code == 200, me.get_json()
    assert me.get_json()["slug"] == "alice-smith"
