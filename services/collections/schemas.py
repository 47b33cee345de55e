"""Request and response schemas of the collections API."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from services.collections.catalog_client import MAX_FILES_PER_REQUEST

NAME = validate.Length(min=1, max=200)
DESCRIPTION = validate.Length(max=10_000)
FILE_ID = validate.Length(min=1, max=32)


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("must not be blank")


class CollectionCreateSchema(Schema):
    name = fields.String(required=True, validate=[NAME, _not_blank])
    description = fields.String(load_default="", validate=DESCRIPTION)


class CollectionUpdateSchema(Schema):
    name = fields.String(validate=[NAME, _not_blank])
    description = fields.String(validate=DESCRIPTION)

    @validates_schema
    def require_a_field(self, data, **kwargs):
        if not data:
            raise ValidationError("send name, description or both", field_name="name")


class CollectionSchema(Schema):
    id = fields.String()
    name = fields.String()
    description = fields.String()
    item_count = fields.Integer(metadata={"description": "Items the caller may see."})
    hidden_count = fields.Integer(
        metadata={"description": "Items hidden from the caller by group visibility."}
    )
    cover_url = fields.String(allow_none=True)
    created_by = fields.String()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class PageArgsSchema(Schema):
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    cursor = fields.String(load_default=None)


class CollectionListArgsSchema(PageArgsSchema):
    name = fields.String(validate=NAME, metadata={"description": "Exact name to match."})


class PageSchema(Schema):
    next_cursor = fields.String(allow_none=True)


class CollectionPageSchema(PageSchema):
    items = fields.List(fields.Nested(CollectionSchema))


class SearchQuerySchema(Schema):
    """The catalog's file search parameters, without paging."""

    q = fields.String(load_default="", validate=validate.Length(max=500))
    type = fields.String(
        validate=validate.OneOf(["image", "video", "audio", "document", "other"])
    )
    media_type = fields.String(validate=validate.Length(max=100))
    ext = fields.String(validate=validate.Length(max=50))
    drive = fields.String(validate=validate.Length(max=200))
    state = fields.String(validate=validate.OneOf(["online", "offline", "missing"]))
    min_size = fields.Integer(validate=validate.Range(min=0))
    max_size = fields.Integer(validate=validate.Range(min=0))
    modified_after = fields.String(validate=validate.Length(max=64))
    modified_before = fields.String(validate=validate.Length(max=64))


class FolderRefSchema(Schema):
    drive = fields.String(required=True, validate=NAME)
    path = fields.String(load_default="", validate=validate.Length(max=8192))


class ItemsAddSchema(Schema):
    file_ids = fields.List(
        fields.String(validate=FILE_ID),
        validate=validate.Length(min=1, max=MAX_FILES_PER_REQUEST),
    )
    query = fields.Nested(SearchQuerySchema)
    folder = fields.Nested(FolderRefSchema)

    @validates_schema
    def require_one_source(self, data, **kwargs):
        given = [key for key in ("file_ids", "query", "folder") if key in data]
        if len(given) != 1:
            raise ValidationError(
                "send exactly one of file_ids, query or folder", field_name="file_ids"
            )


class ItemsAddedSchema(Schema):
    added = fields.List(fields.String(), metadata={"description": "Ids of new items."})
    already_present = fields.Integer()
    not_found = fields.List(
        fields.String(),
        metadata={"description": "Matched by a query or folder but gone by lookup time."},
    )
    item_count = fields.Integer()


class MoveSchema(Schema):
    position = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=0),
        metadata={
            "description": "0-based index in the caller's view of the collection; "
            "an index past the end moves the item to the end."
        },
    )


class ItemSchema(Schema):
    file_id = fields.String()
    name = fields.String(allow_none=True)
    path = fields.String(allow_none=True)
    media_type = fields.String(allow_none=True)
    kind = fields.String(allow_none=True)
    size = fields.Integer(allow_none=True)
    width = fields.Integer(allow_none=True)
    height = fields.Integer(allow_none=True)
    captured_at = fields.String(allow_none=True)
    thumbnail_url = fields.String(allow_none=True)
    preview_url = fields.String(allow_none=True)
    drive = fields.String(allow_none=True)
    source_id = fields.String()
    state = fields.String(metadata={"description": "online, offline or missing"})
    added_by = fields.String()
    added_at = fields.DateTime()


class ItemPageSchema(PageSchema):
    items = fields.List(fields.Nested(ItemSchema))
    item_count = fields.Integer()
    hidden_count = fields.Integer()


class CollectionRefSchema(Schema):
    id = fields.String()
    name = fields.String()


class InternalArgsSchema(Schema):
    org_id = fields.String(required=True, validate=validate.Length(min=1, max=32))
