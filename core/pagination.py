"""Opaque keyset cursors for paginated listings."""

from __future__ import annotations

import base64
import json

from core.errors import ValidationError


def encode_cursor(values: list) -> str:
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


MAX_OFFSET = 10**9


def decode_cursor(cursor: str | None, size: int, types: tuple | None = None) -> list | None:
    """Decode a cursor of ``size`` values of ``types`` (strings by default).

    Raises ValidationError, naming the cursor, for anything else.
    """
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError):
        values = None
    types = types or (str,) * size
    if (
        not isinstance(values, list)
        or len(values) != size
        or not all(_matches(v, t) for v, t in zip(values, types))
    ):
        raise ValidationError(
            "cursor is invalid: pass the next_cursor of a previous page",
            fields={"cursor": ["invalid cursor"]},
        )
    return values


def _matches(value, expected: type) -> bool:
    if expected is int:
        # bool is an int subclass; 64-bit range keeps SQL parameters valid.
        return type(value) is int and -(2**63) <= value < 2**63
    if expected is str:
        return isinstance(value, str) and len(value) <= 10_000
    return isinstance(value, expected)


def decode_offset(cursor: str | None) -> int:
    """Decode an offset cursor (one decimal string), bounded to ``MAX_OFFSET``."""
    values = decode_cursor(cursor, 1)
    if values is None:
        return 0
    if not values[0].isdigit() or int(values[0]) > MAX_OFFSET:
        raise ValidationError(
            "cursor is invalid: pass the next_cursor of a previous page",
            fields={"cursor": ["invalid cursor"]},
        )
    return int(values[0])
