"""The receiver-side verifier: server-signed bodies, the reference SDK's form, and rejections."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from cueline.webhooks import (
    WebhookVerificationError,
    canonical_json,
    construct_event,
    sign_payload,
    verify_webhook,
)

from app.auth.tokens import generate_webhook_secret
from app.outbound.signing import canonical_json as server_canonical_json
from app.outbound.signing import signature_headers

BODY = {"execution_id": "0b7e…", "cue_id": "cue_abc123def456", "attempt": 1,
        "payload": {"task": "résumé", "n": [1, 2.5, None, True]}, "name": "nightly"}


@pytest.fixture
def secret():
    return generate_webhook_secret()


def _server_signed(secret, now=None):
    body = server_canonical_json(BODY)
    headers = signature_headers(secret, body, now if now is not None else time.time())
    return body, headers["X-CueAPI-Signature"], headers["X-CueAPI-Timestamp"]


def test_accepts_what_the_server_signs_as_bytes_str_and_dict(secret):
    body, signature, timestamp = _server_signed(secret)
    assert verify_webhook(body.encode(), signature, secret, timestamp)
    assert verify_webhook(body, signature, secret, timestamp)
    assert verify_webhook(json.loads(body), signature, secret, timestamp)
    assert construct_event(body.encode(), signature, secret, timestamp) == BODY


def test_canonical_form_is_byte_identical_to_the_servers():
    assert canonical_json(BODY) == server_canonical_json(BODY)
    assert '"payload": {"n": [1, 2.5, null, true], "task": "r\\u00e9sum\\u00e9"}' in \
        canonical_json(BODY)


def test_accepts_a_body_serialised_without_ascii_escaping(secret):
    # Event-subscription style: the signature is over the canonical form, the bytes differ.
    _, signature, timestamp = _server_signed(secret)
    raw = json.dumps(BODY, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    assert verify_webhook(raw, signature, secret, timestamp)


def test_matches_an_independent_hmac_and_the_reference_sdk(secret):
    from cueapi import verify_webhook as reference_verify

    headers = sign_payload(BODY, secret)
    timestamp, signature = headers["X-CueAPI-Timestamp"], headers["X-CueAPI-Signature"]
    digest = hmac.new(secret.encode(), f"{timestamp}.{canonical_json(BODY)}".encode(),
                      hashlib.sha256).hexdigest()
    assert signature == f"v1={digest}"
    assert reference_verify(canonical_json(BODY), signature, secret, timestamp)


@pytest.mark.parametrize("tamper", ["body", "secret", "signature", "scheme"])
def test_rejects_tampering(secret, tamper):
    body, signature, timestamp = _server_signed(secret)
    if tamper == "body":
        body = body.replace("nightly", "nightlY")
    elif tamper == "secret":
        secret = generate_webhook_secret()
    elif tamper == "signature":
        signature = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    else:
        signature = "v0=" + signature[3:]
    assert not verify_webhook(body, signature, secret, timestamp)


def test_rejects_stale_and_future_timestamps_but_tolerance_is_configurable(secret):
    now = time.time()
    body, signature, timestamp = _server_signed(secret, now=now - 301)
    assert not verify_webhook(body, signature, secret, timestamp, now=now)
    assert verify_webhook(body, signature, secret, timestamp, tolerance=400, now=now)
    body, signature, timestamp = _server_signed(secret, now=now + 301)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        construct_event(body, signature, secret, timestamp, now=now)


@pytest.mark.parametrize("signature,timestamp,reason", [
    (None, "1", "missing X-CueAPI-Signature"),
    ("v1=00", None, "missing X-CueAPI-Timestamp"),
    ("v1=00", "soon", "not an integer"),
    ("sha256=00", "now", "no v1= signature"),
])
def test_reports_why_a_request_is_rejected(secret, signature, timestamp, reason):
    if timestamp == "now":  # resolved here, not at collection: ids must not depend on the clock
        timestamp = str(int(time.time()))
    with pytest.raises(WebhookVerificationError, match=reason):
        construct_event(b"{}", signature, secret, timestamp)


def test_accepts_any_of_several_signatures(secret):
    body, signature, timestamp = _server_signed(secret)
    header = f"v1={'0' * 64}, {signature}"
    assert verify_webhook(body, header, secret, timestamp)
