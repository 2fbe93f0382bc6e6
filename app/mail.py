"""Outgoing e-mail: one function, :func:`send_mail`, over SMTP or (without SMTP) to the log.

``SMTP_URL`` selects the transport: ``smtp://user:pass@host:port`` (upgraded with STARTTLS when
the server offers it; port 587 by default) or ``smtps://user:pass@host:port`` (TLS from the first
byte; port 465 by default).  User and password are optional and URL-decoded.  Without
``SMTP_URL`` the message is written to the ``cueline.mail`` log instead, so a development server
needs no mail setup; with SMTP configured a message is never logged (it may hold a login link).
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import unquote, urlsplit

from flask import current_app

log = logging.getLogger("cueline.mail")

SMTP_SCHEMES = {"smtp": 587, "smtps": 465}
SMTP_TIMEOUT_SECONDS = 10


class MailError(Exception):
    """The message could not be handed to the SMTP server (the text never holds secrets)."""


@dataclass(frozen=True)
class SmtpTarget:
    """A parsed ``SMTP_URL``."""

    tls: bool
    host: str
    port: int
    username: str | None
    password: str | None


def parse_smtp_url(url: str) -> SmtpTarget:
    """Parse ``SMTP_URL``; raise ``ValueError`` (never echoing the password) when malformed."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SMTP_SCHEMES:
        raise ValueError("must start with smtp:// or smtps://")
    try:
        port = parts.port or SMTP_SCHEMES[scheme]
    except ValueError:
        raise ValueError("has an invalid port") from None
    if not parts.hostname:
        raise ValueError("has no host name")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be smtp[s]://[user:password@]host[:port] with nothing after it")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return SmtpTarget(tls=scheme == "smtps", host=parts.hostname, port=port,
                      username=username, password=password)


def send_mail(to: str, subject: str, text: str) -> None:
    """Send a plain-text message to ``to``; raise :class:`MailError` if SMTP refuses it.

    Without ``SMTP_URL`` the message is logged (development); see the module docstring.
    """
    config = current_app.config
    if not config["SMTP_URL"]:
        log.warning("SMTP_URL is not set; e-mail to %s logged instead of sent.\n"
                    "Subject: %s\n\n%s", to, subject, text)
        return
    target = parse_smtp_url(config["SMTP_URL"])
    message = EmailMessage()
    message["From"] = config["MAIL_FROM"]
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=target.host)
    message.set_content(text)
    try:
        _deliver(target, message)
    except (smtplib.SMTPException, OSError) as exc:
        # The exception text can carry the server's reply but never our credentials or body.
        log.error("could not send e-mail via %s:%s: %s", target.host, target.port,
                  type(exc).__name__)
        raise MailError(f"The mail server at {target.host} did not accept the message") from None


def _deliver(target: SmtpTarget, message: EmailMessage) -> None:
    context = ssl.create_default_context()
    if target.tls:
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(target.host, target.port,
                                              timeout=SMTP_TIMEOUT_SECONDS, context=context)
    else:
        smtp = smtplib.SMTP(target.host, target.port, timeout=SMTP_TIMEOUT_SECONDS)
    with smtp:
        smtp.ehlo()
        if not target.tls and smtp.has_extn("starttls"):
            smtp.starttls(context=context)
            smtp.ehlo()
        if target.username:
            smtp.login(target.username, target.password or "")
        smtp.send_message(message)
