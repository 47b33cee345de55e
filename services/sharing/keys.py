"""Keys derived from ``LINK_SECRET``, and the token operations that use them.

The database stores two things per link token: an HMAC-SHA256 for look-up
and a Fernet ciphertext that members can have decrypted to see the URL
again. Neither reveals the token without ``LINK_SECRET``. Each use gets its
own key, derived with HKDF-SHA256 under a distinct label, so a key leaked
from one use does not open the others.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import secrets

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from core.settings import SettingsError

# Minimum length of LINK_SECRET, in characters.
MIN_SECRET_LENGTH = 16


def link_secret() -> bytes:
    """Return LINK_SECRET, or raise SettingsError when it is unset or short."""
    value = os.environ.get("LINK_SECRET", "")
    if not value:
        raise SettingsError(
            "LINK_SECRET is not set: the sharing service needs a server secret to "
            "protect link tokens; set LINK_SECRET to a random string of at least "
            f"{MIN_SECRET_LENGTH} characters (for example `openssl rand -hex 32`)"
        )
    if len(value) < MIN_SECRET_LENGTH:
        raise SettingsError(
            f"LINK_SECRET is too short ({len(value)} characters): use at least "
            f"{MIN_SECRET_LENGTH} random characters"
        )
    return value.encode("utf-8")


@functools.lru_cache(maxsize=16)
def _derive(secret: bytes, label: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=label.encode()
    ).derive(secret)


def derived_key(label: str) -> bytes:
    return _derive(link_secret(), label)


def new_token() -> str:
    # 32 random bytes: 256 bits.
    return secrets.token_urlsafe(32)


@functools.lru_cache(maxsize=4)
def _lookup_mac(secret: bytes):
    # Keyed once; every public request copies it.
    return hmac.new(_derive(secret, "link-token-lookup"), digestmod=hashlib.sha256)


def token_digest(token: str) -> str:
    """Return the hex HMAC-SHA256 of a token, the value links are looked up by."""
    mac = _lookup_mac(link_secret()).copy()
    mac.update(token.encode("utf-8"))
    return mac.hexdigest()


def _fernet() -> Fernet:
    return Fernet(base64.urlsafe_b64encode(derived_key("link-token-display")))


def encrypt_token(token: str) -> str:
    return _fernet().encrypt(token.encode("utf-8")).decode("ascii")


def decrypt_token(ciphertext: str) -> str | None:
    """Return the token, or None when LINK_SECRET changed since it was stored."""
    try:
        return _fernet().decrypt(ciphertext.encode("ascii")).decode("utf-8")
    except InvalidToken:
        return None


def cookie_secret() -> bytes:
    return derived_key("link-unlock-cookie")
