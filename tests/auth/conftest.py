"""Fixtures for the device-code and session tests: captured mail (log or fake SMTP), a clock."""

from __future__ import annotations

import base64
import email
import email.policy
import logging
import re
import socketserver
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest

import app.db

LINK = re.compile(r"https?://\S+/v1/auth/verify\?\S+")


class MailLog(logging.Handler):
    """Collects what :func:`app.mail.send_mail` writes to the log when SMTP is not configured."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def links(self) -> list[str]:
        return [m.group(0) for text in self.messages for m in LINK.finditer(text)]


@pytest.fixture
def mail_log():
    handler = MailLog()
    logger = logging.getLogger("cueline.mail")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def local_path(url: str) -> str:
    """``http://host/path?query`` → ``/path?query`` for the test client."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: str
    credentials: tuple[str, str] | None


@dataclass
class FakeSmtp:
    """A minimal SMTP server on 127.0.0.1 (EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT)."""

    host: str = "127.0.0.1"
    port: int = 0
    messages: list[Received] = field(default_factory=list)
    refuse_data: bool = False

    def links(self) -> list[str]:
        """Links in the decoded bodies (the transfer encoding may wrap long lines)."""
        bodies = [email.message_from_string(msg.data, policy=email.policy.default).get_content()
                  for msg in self.messages]
        return [m.group(0) for body in bodies for m in LINK.finditer(body)]


def _smtp_handler(state: FakeSmtp):
    class Handler(socketserver.StreamRequestHandler):
        def send(self, line: str) -> None:
            self.wfile.write((line + "\r\n").encode())

        def handle(self):
            sender, recipients, credentials = "", [], None
            self.send("220 fake ESMTP ready")
            while True:
                raw = self.rfile.readline()
                if not raw:
                    return
                line = raw.decode().rstrip("\r\n")
                verb = line.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    self.send("250-fake greets you")
                    self.send("250 AUTH PLAIN")
                elif verb == "HELO":
                    self.send("250 fake")
                elif verb == "AUTH":
                    encoded = line.split(" ")[2]
                    _, user, password = base64.b64decode(encoded).decode().split("\0")
                    credentials = (user, password)
                    self.send("235 authenticated")
                elif verb == "MAIL":
                    sender = line.split(":", 1)[1].strip()
                    self.send("250 ok")
                elif verb == "RCPT":
                    recipients.append(line.split(":", 1)[1].strip())
                    self.send("250 ok")
                elif verb == "DATA":
                    if state.refuse_data:
                        self.send("554 refused")
                        continue
                    self.send("354 go ahead")
                    lines = []
                    while (chunk := self.rfile.readline().decode()) not in (".\r\n", ".\n", ""):
                        lines.append(chunk)
                    state.messages.append(Received(sender, recipients, "".join(lines),
                                                   credentials))
                    self.send("250 queued")
                elif verb == "QUIT":
                    self.send("221 bye")
                    return
                else:
                    self.send("250 ok")

    return Handler


@pytest.fixture
def smtp_server():
    state = FakeSmtp()
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _smtp_handler(state))
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


class Clock:
    """A controllable replacement for :data:`app.db.clock`."""

    def __init__(self):
        # Start at the real time: session JWTs minted "now" are checked against the real clock.
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        from datetime import timedelta

        self.now += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(app.db, "clock", fake)
    return fake
