"""Argument types for values that commands put into request paths.

The types reject a value that would make a path segment empty, ``.`` or
``..`` with a usage error that names the argument, before any request is
sent. ``ApiClient.request`` checks every path again.
"""

from __future__ import annotations

import click

from cli.client import DOT_SEGMENTS


def _is_blank(value: str) -> bool:
    return not value.strip()


def explain_invalid_id(value: str) -> str | None:
    """Return why ``value`` cannot be an id, or None when it can."""
    if _is_blank(value):
        return "the id must not be empty"
    if value in DOT_SEGMENTS or "/" in value:
        return f"{value!r} is not a valid id: ids contain no '/' and are never '.' or '..'"
    return None


class IdType(click.ParamType):
    """A server-made id, such as a file, link, export or member id."""

    name = "id"

    def convert(self, value, param, ctx):
        problem = explain_invalid_id(value)
        if problem:
            self.fail(problem, param, ctx)
        return value


class TextType(click.ParamType):
    """Text that must not be empty or only whitespace.

    ``label`` names the value in error messages, such as "drive name".
    """

    name = "text"

    def __init__(self, label: str):
        self.label = label

    def convert(self, value, param, ctx):
        if _is_blank(value):
            self.fail(f"the {self.label} must not be empty", param, ctx)
        return value


class SegmentType(TextType):
    """A name, or a name or id, that a command puts into one path segment."""

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        if value in DOT_SEGMENTS:
            self.fail(f"{value!r} is not a valid {self.label}", param, ctx)
        return value


class LocationType(click.ParamType):
    """``DRIVE`` or ``DRIVE:FOLDER``, converted to a ``(drive, folder)`` pair."""

    name = "location"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        drive, _, folder = value.partition(":")
        if _is_blank(drive):
            self.fail(
                f"{value!r} has no drive name: use DRIVE or DRIVE:FOLDER, such as SHOOT-01:DCIM",
                param,
                ctx,
            )
        return DRIVE.convert(drive, param, ctx), folder


ID = IdType()
DRIVE = SegmentType("drive name")
GROUP = SegmentType("group name")
EMAIL = SegmentType("email")
# Collections are looked up by name first, so a name may be any non-blank
# text. ``find_collection`` checks the value again before it uses it as an id.
COLLECTION = TextType("collection name or id")


def reject_blank_path(ctx, param, value):
    """Reject an empty or whitespace-only PATH argument with click.BadParameter.

    ``Path("")`` resolves to the current directory, which is never what an
    empty argument means.
    """
    if value is not None and _is_blank(value):
        raise click.BadParameter("the path must not be empty", ctx=ctx, param=param)
    return value
