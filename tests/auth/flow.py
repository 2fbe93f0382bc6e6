"""Steps of the device-code login, driven through the test client."""

from __future__ import annotations

from tests.auth.conftest import local_path

CODE = "ABCD-EFGH"


def start(client, code: str = CODE) -> dict:
    response = client.post("/v1/auth/device-code", json={"device_code": code})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def submit(client, email: str, code: str = CODE):
    return client.post("/v1/auth/device-code/submit-email",
                       json={"device_code": code, "email": email})


def poll(client, code: str = CODE) -> dict:
    response = client.post("/v1/auth/device-code/poll", json={"device_code": code})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def approve(client, mail_log, email: str, code: str = CODE) -> dict:
    """Create, submit, open the magic link and poll once: the approved poll body."""
    start(client, code)
    assert submit(client, email, code).status_code == 200
    link = mail_log.links()[-1]
    page = client.get(local_path(link))
    assert page.status_code == 200, page.data
    body = poll(client, code)
    assert body["status"] == "approved", body
    return body
