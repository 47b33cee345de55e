"""Checks on command-line input that run before any request is sent."""

from __future__ import annotations

import click
import pytest
from marshmallow import ValidationError

from cli.client import ApiClient, q
from cli.commands.links import MAX_DURATION_DIGITS, MAX_EXPIRY_DAYS, parse_expires
from cli.config import ClientConfig
from services.sharing import schemas as sharing_schemas

# Nothing listens here: a path that passed the check would fail to connect.
UNREACHABLE = "http://127.0.0.1:9"


def unreachable_client() -> ApiClient:
    return ApiClient(
        ClientConfig(
            catalog_url=UNREACHABLE,
            collections_url=UNREACHABLE,
            sharing_url=UNREACHABLE,
            token=None,
        )
    )


def test_q_keeps_dot_segments():
    assert q("..") == ".."
    assert q(".") == "."
    assert q("../../abc") == "..%2F..%2Fabc"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/files/..",
        "/api/v1/files/.",
        "/api/v1/files/../members",
        "/api/v1/collections/c/items/../../other",
        "/api/v1/files/",
        "/api/v1/sources//folder",
        "/api/v1/files/%2e%2e",
        "/api/v1/files/%2E",
        "/api/v1/collections/c/items/..%2F..%2Fother",
        "/api/v1/files/..?x=1",
        "api/v1/files",
    ],
)
def test_api_client_rejects_path(path):
    with pytest.raises(click.UsageError) as raised:
        unreachable_client().get(path)
    assert "invalid" in raised.value.message


def test_api_client_sends_plain_path():
    # The check passes, so the request goes out and fails to connect.
    with pytest.raises(click.ClickException) as raised:
        unreachable_client().get(f"/api/v1/sources/{q('Tape #7')}/folder", path="a/../b")
    assert not isinstance(raised.value, click.UsageError)
    assert "cannot reach the catalog service" in raised.value.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [("7d", "7d"), (" 007d ", "7d"), ("30m", "30m"), ("3650d", "3650d"), ("521w", "521w")],
)
def test_expires_accepted(value, expected):
    assert parse_expires(None, None, value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("99999999d", "maximum lifetime of 3650 days"),
        ("3651d", "maximum lifetime of 3650 days"),
        ("522w", "maximum lifetime of 3650 days"),
        ("99999999999999999999w", "maximum lifetime of 3650 days"),
        ("100000m", "more than 5 digits"),
        ("0d", "greater than zero"),
        ("7", "use a number and a unit"),
        ("d", "use a number and a unit"),
        ("7D", "use a number and a unit"),
        ("", "use a number and a unit"),
    ],
)
def test_expires_rejected(value, message):
    with pytest.raises(click.BadParameter) as raised:
        parse_expires(None, None, value)
    assert message in raised.value.message


def test_expires_limits_match_sharing_service():
    assert sharing_schemas.MAX_EXPIRY.days == MAX_EXPIRY_DAYS
    longest = "9" * MAX_DURATION_DIGITS
    assert sharing_schemas.DURATION.match(longest + "m")
    assert not sharing_schemas.DURATION.match(longest + "9m")
    for value in ("3650d", "521w", "87600h", "99999m", "1m"):
        sharing_schemas.parse_duration(parse_expires(None, None, value))
    for value in ("3651d", "522w", "87601h", "100000m"):
        with pytest.raises(ValidationError):
            sharing_schemas.parse_duration(value)
        with pytest.raises(click.BadParameter):
            parse_expires(None, None, value)


@pytest.mark.parametrize(
    ("sent", "saved"),
    [
        ("photo.jpg", "photo.jpg"),
        ("../../etc/passwd", "passwd"),
        ("..", "download"),
        ("back\\slash.jpg", "back\\slash.jpg"),
        ("", "download"),
    ],
)
def test_downloads_saved_under_local_name(sent, saved):
    from cli.commands.exports import local_name

    assert local_name(sent) == saved
