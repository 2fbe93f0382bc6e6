"""Reversible encryption of stored API keys (so ``GET /v1/auth/key`` can reveal a key).

Keys are encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under a key derived from
``SESSION_SECRET``.  Without ``SESSION_SECRET`` nothing is encrypted and nothing can be
revealed; changing the secret makes old copies undecryptable (reported, never a 500).
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken


def _fernet(secret: str) -> Fernet | None:
    if not secret:
        return None
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(secret.encode("utf-8")).digest()))


def encrypt_secret(value: str, secret: str) -> str | None:
    """Ciphertext of ``value``, or None when no ``SESSION_SECRET`` is configured."""
    fernet = _fernet(secret)
    return fernet.encrypt(value.encode("utf-8")).decode("ascii") if fernet else None


def decrypt_secret(ciphertext: str | None, secret: str) -> str | None:
    """Plaintext of ``ciphertext``, or None when it is absent or cannot be decrypted."""
    fernet = _fernet(secret)
    if not ciphertext or fernet is None:
        return None
    try:
        return fernet.decrypt(ciphertext.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError):
        return None
