"""Opaque keyset cursors for paginated listings."""

from __future__ import annotations

import base64
import json

from core.errors import ValidationError


def encode_cursor(values: list) -> str:
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, size: int) -> list | None:
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != size:
        raise ValidationError(
            "cursor is invalid: pass the next_cursor of a previous page",
            fields={"cursor": ["invalid cursor"]},
        )
    return values
