"""Collections: create, list, show, rename, describe and delete."""

from __future__ import annotations

from flask.views import MethodView
from sqlalchemy import select, tuple_

from core.auth import current_principal
from core.db import utcnow
from core.pagination import decode_cursor, encode_cursor
from core.web import ServiceBlueprint
from services.collections import schemas
from services.collections.api.common import (
    cover_url,
    db,
    get_collection,
    hidden_counts,
    serialize_collection,
)
from services.collections.events import publish_collection_changed, publish_collection_deleted
from services.collections.models import Collection
from services.collections.readmodel import hidden_source_ids

blp = ServiceBlueprint(
    "collections", __name__, url_prefix="/api/v1", description="Collections"
)


def _show(session, principal, collection: Collection) -> dict:
    hidden = hidden_source_ids(session, principal)
    counts = hidden_counts(session, [collection.id], hidden)
    return serialize_collection(
        collection, counts.get(collection.id, 0), cover_url(session, collection.id, hidden)
    )


@blp.route("/collections")
class Collections(MethodView):
    @blp.arguments(schemas.CollectionListArgsSchema, location="query")
    @blp.response(200, schemas.CollectionPageSchema)
    def get(self, args):
        """List the organization's collections by name, with counts and covers.

        Counts leave out items from groups the caller may not see;
        ``hidden_count`` is how many were left out.
        """
        principal = current_principal()
        session = db()
        query = (
            select(Collection)
            .where(Collection.org_id == principal.org_id)
            .order_by(Collection.name, Collection.id)
        )
        if args.get("name"):
            query = query.where(Collection.name == args["name"])
        after = decode_cursor(args["cursor"], 2)
        if after:
            query = query.where(
                tuple_(Collection.name, Collection.id) > tuple_(str(after[0]), str(after[1]))
            )
        rows = session.scalars(query.limit(args["limit"] + 1)).all()
        page = rows[: args["limit"]]
        hidden = hidden_source_ids(session, principal)
        counts = hidden_counts(session, [c.id for c in page], hidden)
        items = [
            serialize_collection(c, counts.get(c.id, 0), cover_url(session, c.id, hidden))
            for c in page
        ]
        cursor = None
        if len(rows) > args["limit"]:
            cursor = encode_cursor([page[-1].name, page[-1].id])
        return {"items": items, "next_cursor": cursor}

    @blp.arguments(schemas.CollectionCreateSchema)
    @blp.response(201, schemas.CollectionSchema)
    def post(self, data):
        """Create a collection; editors and above."""
        principal = current_principal()
        principal.require("editor")
        session = db()
        now = utcnow()
        collection = Collection(
            org_id=principal.org_id,
            name=data["name"].strip(),
            description=data["description"],
            item_count=0,
            created_by=principal.user_id,
            created_at=now,
            updated_at=now,
        )
        session.add(collection)
        session.flush()
        publish_collection_changed(session, collection)
        session.commit()
        return serialize_collection(collection, 0, None)


@blp.route("/collections/<collection_id>")
class CollectionItemView(MethodView):
    @blp.response(200, schemas.CollectionSchema)
    def get(self, collection_id):
        """Show a collection with its counts and cover."""
        principal = current_principal()
        session = db()
        return _show(session, principal, get_collection(session, principal, collection_id))

    @blp.arguments(schemas.CollectionUpdateSchema)
    @blp.response(200, schemas.CollectionSchema)
    def patch(self, data, collection_id):
        """Rename a collection or change its description; editors and above."""
        principal = current_principal()
        principal.require("editor")
        session = db()
        collection = get_collection(session, principal, collection_id, lock=True)
        if "name" in data:
            collection.name = data["name"].strip()
        if "description" in data:
            collection.description = data["description"]
        collection.updated_at = utcnow()
        publish_collection_changed(session, collection)
        session.commit()
        return _show(session, principal, collection)

    @blp.response(204)
    def delete(self, collection_id):
        """Delete a collection and its items; editors and above.

        The catalog files stay. Publishes ``collections.collection_deleted``.
        """
        principal = current_principal()
        principal.require("editor")
        session = db()
        collection = get_collection(session, principal, collection_id, lock=True)
        session.delete(collection)
        publish_collection_deleted(session, collection.id, collection.org_id)
        session.commit()
