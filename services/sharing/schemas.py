"""Request and response schemas of the links API."""

from __future__ import annotations

import re
from datetime import timedelta

from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from services.sharing.passwords import password_problem

DURATION = re.compile(r"^(\d{1,5})([mhdw])$")
DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_EXPIRY = timedelta(days=3650)
LABEL = validate.Length(min=1, max=200)


def parse_duration(value: str) -> timedelta:
    """Parse "30m", "12h", "7d" or "2w"; raise ValidationError otherwise."""
    match = DURATION.match(value.strip())
    if not match:
        raise ValidationError(
            f"invalid duration {value!r}: use a number and a unit, such as 30m, 12h, 7d or 2w"
        )
    amount = int(match.group(1))
    duration = timedelta(**{DURATION_UNITS[match.group(2)]: amount})
    if amount == 0:
        raise ValidationError("the duration must be greater than zero")
    if duration > MAX_EXPIRY:
        raise ValidationError("the duration must be at most 3650 days")
    return duration


class _ExpirySchema(Schema):
    expires_at = fields.AwareDateTime(
        allow_none=True, metadata={"description": "ISO 8601 time with a zone; null = never."}
    )
    expires_in = fields.String(metadata={"description": "Duration from now: 30m, 12h, 7d, 2w."})

    @validates("expires_in")
    def check_expires_in(self, value, **_kwargs):
        parse_duration(value)

    @validates_schema
    def check_one_expiry(self, data, **_kwargs):
        if "expires_at" in data and "expires_in" in data:
            raise ValidationError(
                "send either expires_at or expires_in, not both", field_name="expires_in"
            )


def _check_password(value):
    if value is None:
        return
    problem = password_problem(value)
    if problem:
        raise ValidationError(problem)


class LinkCreateSchema(_ExpirySchema):
    collection_id = fields.String(required=True, validate=validate.Length(min=1, max=32))
    label = fields.String(
        required=True, validate=LABEL, metadata={"description": "Who the link is for."}
    )
    password = fields.String(validate=_check_password, load_only=True)
    allow_download = fields.Boolean(load_default=False)
    show_metadata = fields.Boolean(load_default=False)


class LinkUpdateSchema(_ExpirySchema):
    label = fields.String(validate=LABEL)
    password = fields.String(
        allow_none=True,
        validate=_check_password,
        load_only=True,
        metadata={"description": "A new password, or null to remove the password."},
    )
    allow_download = fields.Boolean()
    show_metadata = fields.Boolean()


class LinkListArgsSchema(Schema):
    collection_id = fields.String(required=True, validate=validate.Length(min=1, max=32))


class OwnerSchema(Schema):
    user_id = fields.String(required=True, validate=validate.Length(min=1, max=32))


class StatsSchema(Schema):
    views = fields.Integer()
    downloads = fields.Integer()
    last_access_at = fields.DateTime(allow_none=True)


class LinkSchema(Schema):
    id = fields.String()
    collection_id = fields.String()
    label = fields.String()
    url = fields.String(allow_none=True)
    state = fields.String(metadata={"description": "active, revoked or expired"})
    has_password = fields.Boolean()
    allow_download = fields.Boolean()
    show_metadata = fields.Boolean()
    expires_at = fields.DateTime(allow_none=True)
    created_by = fields.String()
    creator_left = fields.Boolean()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    revoked_at = fields.DateTime(allow_none=True)
    revoked_reason = fields.String(allow_none=True)
    stats = fields.Nested(StatsSchema)
    warnings = fields.List(fields.String())


class LinkListSchema(Schema):
    items = fields.List(fields.Nested(LinkSchema))
