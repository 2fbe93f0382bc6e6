"""``POST /v1/executions/{id}/live-claim`` (§8.11): the first session token to attest wins."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime

import httpx

from app.extensions import db
from app.scheduling.models import Execution
from tests.helpers import error_of, key_headers, register
from tests.scheduling.conftest import cue_body


def _execution(client, headers) -> str:
    cue = client.post("/v1/cues", json=cue_body(transport="worker", callback=None),
                      headers=headers).get_json()
    return client.post(f"/v1/cues/{cue['id']}/fire", headers=headers).get_json()["id"]


def _claim(client, headers, execution_id, token):
    return client.post(f"/v1/executions/{execution_id}/live-claim",
                       json={"session_token": token}, headers=headers)


def test_first_attestation_wins_and_repeats_are_idempotent(app, client, headers):
    execution_id = _execution(client, headers)
    first = _claim(client, headers, execution_id, "01HZX3V9Q8K7M6N5P4R3S2T1AB")
    assert first.status_code == 200
    body = first.get_json()
    assert set(body) == {"attested", "execution_id", "live_claimed_at"}
    assert body["attested"] is True and body["execution_id"] == execution_id
    assert body["live_claimed_at"].endswith("Z")
    again = _claim(client, headers, execution_id, "01HZX3V9Q8K7M6N5P4R3S2T1AB")
    assert again.status_code == 200 and again.get_json() == body  # the original time
    other = _claim(client, headers, execution_id, "01HZX3V9Q8K7M6N5P4R3S2T1ZZ")
    assert other.status_code == 409 and error_of(other)["code"] == "already_attested"
    with app.app_context():
        row = db.session.get(Execution, uuid.UUID(execution_id))
        assert row.live_claim_session_token == "01HZX3V9Q8K7M6N5P4R3S2T1AB"
        stamp = datetime.fromisoformat(body["live_claimed_at"].replace("Z", "+00:00"))
        assert row.live_claimed_at == stamp


def test_live_claim_errors(client, headers):
    execution_id = _execution(client, headers)
    stranger = key_headers(register(client)[0])
    for target, who in ((execution_id, stranger), ("not-a-uuid", headers),
                        (str(uuid.uuid4()), headers)):
        response = _claim(client, who, target, "tok")
        assert response.status_code == 404
        assert error_of(response)["code"] == "execution_not_found"
    for body in ({}, {"session_token": ""}, {"session_token": "x" * 129},
                 {"session_token": 5}):
        response = client.post(f"/v1/executions/{execution_id}/live-claim", json=body,
                               headers=headers)
        assert response.status_code == 422, body
        assert error_of(response)["details"][0]["field"] == "body.session_token"
    assert client.post(f"/v1/executions/{execution_id}/live-claim",
                       json={"session_token": "t"}).status_code == 401
    assert _claim(client, headers, execution_id, "x" * 128).status_code == 200


def test_racing_tokens_record_exactly_one(app, client, headers, live_server):
    server = live_server(app)
    execution_id = _execution(client, headers)
    barrier, results = threading.Barrier(6), []

    def attest(token):
        with httpx.Client(timeout=30) as http:
            barrier.wait()
            response = http.post(f"{server.url}/v1/executions/{execution_id}/live-claim",
                                 json={"session_token": token}, headers=headers)
            results.append((token, response.status_code))

    threads = [threading.Thread(target=attest, args=(f"token-{i % 3}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    winners = {token for token, status in results if status == 200}
    assert len(winners) == 1, results
    assert sorted(status for _, status in results) == [200, 200, 409, 409, 409, 409]
