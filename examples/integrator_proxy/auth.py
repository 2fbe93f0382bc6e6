"""The proxy's own login: e-mail + password accounts and short-lived HS256 JWTs (PyJWT).

Cueline never sees these tokens or passwords; the proxy authenticates its users itself and then
acts for them in Cueline with its service credential (see ``api.py``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import wraps

import jwt
from flask import Blueprint, current_app, g, request
from werkzeug.security import check_password_hash, generate_password_hash

from examples.integrator_proxy.errors import ProxyError
from examples.integrator_proxy.store import EmailTaken

ISSUER = "integrator-proxy"
TOKEN_TTL = timedelta(hours=1)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

bp = Blueprint("auth", __name__, url_prefix="/auth")


def _credentials() -> tuple[str, str]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ProxyError(400, "invalid_json", "Send a JSON object with email and password")
    email, password = body.get("email"), body.get("password")
    if not isinstance(email, str) or not _EMAIL.match(email.strip()):
        raise ProxyError(422, "validation_error", "email must be an e-mail address")
    if not isinstance(password, str) or len(password) < 8:
        raise ProxyError(422, "validation_error", "password must be at least 8 characters")
    return email.strip().lower(), password


@bp.post("/signup")
def signup():
    """Create an account on the proxy (plan ``free``)."""
    email, password = _credentials()
    try:
        user = current_app.extensions["proxy_store"].create_user(
            email, generate_password_hash(password))
    except EmailTaken:
        raise ProxyError(409, "email_taken", "An account with this e-mail exists") from None
    return {"id": user.id, "email": user.email, "plan": user.plan}, 201


@bp.post("/login")
def login():
    """Exchange e-mail and password for a bearer token."""
    email, password = _credentials()
    user = current_app.extensions["proxy_store"].user_by_email(email)
    if user is None or not check_password_hash(user.password_hash, password):
        raise ProxyError(401, "invalid_credentials", "Wrong e-mail or password")
    now = datetime.now(UTC)
    token = jwt.encode({"sub": user.id, "iss": ISSUER, "iat": now, "exp": now + TOKEN_TTL},
                       current_app.config["PROXY_JWT_SECRET"], algorithm="HS256")
    return {"token": token, "expires_in": int(TOKEN_TTL.total_seconds())}


def login_required(view):
    """Authenticate the proxy's bearer JWT and load ``g.user``."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise ProxyError(401, "invalid_token", "Log in and send Authorization: Bearer <token>")
        try:
            claims = jwt.decode(header[7:].strip(), current_app.config["PROXY_JWT_SECRET"],
                                algorithms=["HS256"], issuer=ISSUER,
                                options={"require": ["sub", "exp", "iss"]})
        except jwt.ExpiredSignatureError:
            raise ProxyError(401, "token_expired", "The token has expired; log in again") from None
        except jwt.PyJWTError:
            raise ProxyError(401, "invalid_token", "The token is not valid") from None
        user = current_app.extensions["proxy_store"].user_by_id(str(claims["sub"]))
        if user is None:
            raise ProxyError(401, "invalid_token", "The account no longer exists")
        g.user = user
        return view(*args, **kwargs)

    return wrapper
