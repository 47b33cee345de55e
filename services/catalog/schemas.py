"""Request and response schemas of the catalog API."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from core.auth import ROLES

NAME = validate.Length(min=1, max=200)
# Drives and groups are addressed by name in URL paths, where a "/" would
# split the name in two.
URL_NAME = [
    NAME,
    validate.Regexp(r"^[^/]*$", error="must not contain '/': drives and groups are addressed by name"),
]


class OrgCreateSchema(Schema):
    name = fields.String(required=True, validate=NAME)
    email = fields.Email(required=True)
    user_name = fields.String(load_default="", validate=validate.Length(max=200))


class TokenCreatedSchema(Schema):
    org_id = fields.String()
    user_id = fields.String()
    token = fields.String()


class MemberCreateSchema(Schema):
    email = fields.Email(required=True)
    name = fields.String(load_default="", validate=validate.Length(max=200))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))


class MemberUpdateSchema(Schema):
    role = fields.String(required=True, validate=validate.OneOf(ROLES))


class MemberSchema(Schema):
    user_id = fields.String()
    email = fields.String()
    name = fields.String()
    role = fields.String()


class GroupCreateSchema(Schema):
    name = fields.String(required=True, validate=URL_NAME)
    visibility = fields.String(
        load_default="everyone", validate=validate.OneOf(["everyone", "restricted"])
    )


class GroupUpdateSchema(Schema):
    name = fields.String(validate=URL_NAME)
    visibility = fields.String(validate=validate.OneOf(["everyone", "restricted"]))


class GroupMemberSchema(Schema):
    email = fields.Email(required=True)


class GroupSchema(Schema):
    id = fields.String()
    name = fields.String()
    visibility = fields.String()
    members = fields.List(fields.String())
    source_count = fields.Integer()


class ConnectSchema(Schema):
    volume_id = fields.String(required=True, validate=validate.Length(min=1, max=200))
    mount_path = fields.String(required=True, validate=validate.Length(min=1, max=4096))
    host = fields.String(required=True, validate=validate.Length(min=1, max=255))
    name = fields.String(validate=URL_NAME)
    group = fields.String(validate=NAME)


class SourceUpdateSchema(Schema):
    name = fields.String(validate=URL_NAME)
    group = fields.String(validate=NAME)


class SourceSchema(Schema):
    id = fields.String()
    name = fields.String()
    volume_id = fields.String()
    state = fields.String()
    host = fields.String(allow_none=True)
    mount_path = fields.String(allow_none=True)
    group = fields.String(allow_none=True)
    connected_at = fields.DateTime(allow_none=True)
    disconnected_at = fields.DateTime(allow_none=True)
    last_complete_scan_at = fields.DateTime(allow_none=True)
    file_count = fields.Integer(metadata={"description": "Files present, as of the last scan"})
    missing_count = fields.Integer(metadata={"description": "Files marked missing"})
    total_bytes = fields.Integer(metadata={"description": "Bytes of the files present"})
    renditions_pending = fields.Integer(
        metadata={"description": "Files waiting for metadata and renditions; "
                  "recounted when that work ends and about every 30 s while it runs"}
    )
    checksums_pending = fields.Integer(
        metadata={"description": "Files waiting for their checksum; "
                  "recounted when that work ends and about every 30 s while it runs"}
    )
    active_scan = fields.Dict(allow_none=True)


class ScanSchema(Schema):
    id = fields.String()
    source_id = fields.String()
    kind = fields.String()
    status = fields.String()
    complete = fields.Boolean()
    requested_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    attempt = fields.Integer()
    counts = fields.Dict()
    message = fields.String(allow_none=True)
    issues = fields.List(fields.Dict())


class FileSchema(Schema):
    id = fields.String()
    drive = fields.String()
    source_id = fields.String()
    path = fields.String()
    folder = fields.String()
    name = fields.String()
    extension = fields.String()
    size = fields.Integer()
    modified_at = fields.DateTime()
    media_type = fields.String()
    kind = fields.String()
    state = fields.String()
    fingerprint = fields.String()
    checksum = fields.String(allow_none=True)
    rendition_state = fields.String()
    metadata = fields.Dict(allow_none=True)
    thumbnail_url = fields.String(allow_none=True)
    preview_url = fields.String(allow_none=True)
    error = fields.String(allow_none=True)
    first_seen_at = fields.DateTime()
    missing_since = fields.DateTime(allow_none=True)
    collections = fields.List(fields.Dict())


class PageSchema(Schema):
    next_cursor = fields.String(allow_none=True)


class FilePageSchema(PageSchema):
    items = fields.List(fields.Nested(FileSchema))


class SourcePageSchema(PageSchema):
    items = fields.List(fields.Nested(SourceSchema))


class ScanPageSchema(PageSchema):
    items = fields.List(fields.Nested(ScanSchema))


class FolderListingSchema(PageSchema):
    drive = fields.String()
    folder = fields.String()
    folders = fields.List(fields.Dict())
    items = fields.List(fields.Nested(FileSchema))


class PageArgsSchema(Schema):
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    cursor = fields.String(load_default=None)


class FileSearchArgsSchema(PageArgsSchema):
    q = fields.String(load_default="", validate=validate.Length(max=500))
    type = fields.String(
        validate=validate.OneOf(["image", "video", "audio", "document", "other"])
    )
    media_type = fields.String(validate=validate.Length(max=100))
    ext = fields.String(validate=validate.Length(max=50))
    drive = fields.String(validate=validate.Length(max=200))
    state = fields.String(validate=validate.OneOf(["online", "offline", "missing"]))
    min_size = fields.Integer(validate=validate.Range(min=0, max=2**63 - 1))
    max_size = fields.Integer(validate=validate.Range(min=0, max=2**63 - 1))
    modified_after = fields.DateTime()
    modified_before = fields.DateTime()


class FolderArgsSchema(PageArgsSchema):
    path = fields.String(load_default="", validate=validate.Length(max=8192))


class FileIdsSchema(Schema):
    ids = fields.List(
        fields.String(validate=validate.Length(max=32)),
        required=True,
        validate=validate.Length(min=1, max=10000),
    )
