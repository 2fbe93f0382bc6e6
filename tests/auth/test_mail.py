"""E-mail: SMTP delivery of login links, the development log fallback, and SMTP settings."""

from __future__ import annotations

import socket

import pytest

from app.mail import parse_smtp_url
from config import load_config, validate
from tests.auth.conftest import local_path
from tests.auth.flow import poll, start, submit
from tests.helpers import error_of


def test_login_link_over_smtp_is_never_logged(make_app, smtp_server, mail_log):
    app = make_app(SMTP_URL=f"smtp://mailer:p%40ss@127.0.0.1:{smtp_server.port}",
                   MAIL_FROM="Cueline <noreply@example.com>")
    client = app.test_client()
    start(client)
    assert submit(client, "smtp@example.com").status_code == 200
    [message] = smtp_server.messages
    assert message.credentials == ("mailer", "p@ss")
    assert message.recipients == ["<smtp@example.com>"]
    assert message.sender == "<noreply@example.com>"
    assert "Subject: Your Cueline login link" in message.data
    assert mail_log.messages == [] and mail_log.links() == []
    [link] = smtp_server.links()
    assert client.get(local_path(link)).status_code == 200
    assert poll(client)["status"] == "approved"


def test_without_smtp_the_link_is_logged(client, mail_log):
    start(client)
    submit(client, "log@example.com")
    [text] = mail_log.messages
    assert "log@example.com" in text and "/v1/auth/verify?token=" in text


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("failure", ["unreachable", "refused"])
def test_mail_failure_is_503_and_the_code_stays_usable(make_app, smtp_server, failure):
    port = _closed_port() if failure == "unreachable" else smtp_server.port
    smtp_server.refuse_data = True
    app = make_app(SMTP_URL=f"smtp://127.0.0.1:{port}", MAIL_FROM="noreply@example.com")
    client = app.test_client()
    start(client)
    response = submit(client, "fail@example.com")
    assert response.status_code == 503
    assert error_of(response)["code"] == "email_unavailable"
    assert poll(client) == {"status": "pending"}
    smtp_server.refuse_data = False
    if failure == "refused":
        assert submit(client, "fail@example.com").status_code == 200
        assert len(smtp_server.messages) == 1


def test_parse_smtp_url():
    plain = parse_smtp_url("smtp://mail.example.com")
    assert (plain.tls, plain.host, plain.port, plain.username) == (False, "mail.example.com",
                                                                   587, None)
    tls = parse_smtp_url("smtps://u%2Bx:p%3Aw@mail.example.com:2465")
    assert (tls.tls, tls.port, tls.username, tls.password) == (True, 2465, "u+x", "p:w")
    for bad in ("http://mail.example.com", "smtp://", "smtp://host:notaport",
                "smtp://host/path", "mail.example.com"):
        with pytest.raises(ValueError):
            parse_smtp_url(bad)


def test_smtp_settings_are_validated_without_echoing_the_password():
    problems = validate(load_config({"SMTP_URL": "smtpx://u:hunter2@host"}, env_file=None))
    assert any(p.startswith("SMTP_URL") for p in problems)
    assert any(p.startswith("MAIL_FROM") for p in problems)
    assert not any("hunter2" in p for p in problems)
    ok = load_config({"SMTP_URL": "smtps://u:hunter2@host", "MAIL_FROM": "a@example.com"},
                     env_file=None)
    assert validate(ok) == []
