"""API tokens, roles and the per-request principal.

A token is shown once when it is created; only its SHA-256 is stored. Each
token belongs to one membership, so every authenticated request is scoped to
exactly one organization.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from flask import Flask, g, request

from core.errors import Forbidden, Unauthorized

ROLES = ("viewer", "editor", "admin", "owner")
TOKEN_PREFIX = "arc_"


def generate_token() -> str:
    # 32 random bytes: 256 bits of entropy.
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def role_at_least(role: str, minimum: str) -> bool:
    return ROLES.index(role) >= ROLES.index(minimum)


@dataclass(frozen=True)
class Principal:
    user_id: str
    org_id: str
    role: str
    email: str = ""
    group_ids: frozenset = field(default_factory=frozenset)

    def require(self, minimum: str) -> None:
        if not role_at_least(self.role, minimum):
            raise Forbidden(
                f"this action requires the {minimum} role; your role is {self.role}"
            )

    def as_dict(self) -> dict:
        return {
            "user_id": self.user_id,
            "org_id": self.org_id,
            "role": self.role,
            "email": self.email,
            "group_ids": sorted(self.group_ids),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Principal":
        return cls(
            user_id=data["user_id"],
            org_id=data["org_id"],
            role=data["role"],
            email=data.get("email", ""),
            group_ids=frozenset(data.get("group_ids", ())),
        )


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def current_principal() -> Principal:
    principal = getattr(g, "principal", None)
    if principal is None:
        raise Unauthorized("missing or invalid API token")
    return principal


def check_internal_secret(expected: str | None) -> None:
    """Reject a service-to-service call that lacks the shared secret."""
    given = request.headers.get("X-Internal-Secret", "")
    if not expected or not hmac.compare_digest(given, expected):
        raise Unauthorized("internal endpoint: missing or wrong X-Internal-Secret")


def install_auth(app: Flask, resolve, public=frozenset()) -> None:
    """Authenticate every request under ``/api/`` with ``resolve(token)``.

    ``resolve`` returns a ``Principal`` or None for an unknown token.
    ``public`` contains the ``(method, path)`` pairs that need no token.
    """

    @app.before_request
    def authenticate():
        path = request.path
        if not path.startswith("/api/") or (request.method, path) in public:
            return None
        if path.startswith(("/api/v1/openapi", "/api/v1/internal/")):
            return None
        token = bearer_token()
        if token is None:
            raise Unauthorized("missing API token: send 'Authorization: Bearer TOKEN'")
        principal = resolve(token)
        if principal is None:
            raise Unauthorized("invalid or revoked API token")
        g.principal = principal
        return None
