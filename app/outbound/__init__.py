"""Outbound HTTP shared by every domain that calls user-supplied URLs.

* :mod:`app.outbound.signing` — ``canonical_json`` and ``signature_headers`` (wire §13.1).
* :mod:`app.outbound.ssrf` — ``validate_url`` (write time) and ``check_destination``
  (delivery time), governed by ``ENV`` and ``ALLOW_PRIVATE_CALLBACK_URLS``.
* :mod:`app.outbound.http` — ``send``: one request, timeout, no redirects, destination
  re-checked, result classified as success / retryable / terminal.
"""
