"""Items of a collection: list, add, remove and move."""

from __future__ import annotations

from flask import request
from flask.views import MethodView
from sqlalchemy import delete, select, tuple_

from core.auth import Principal, current_principal
from core.db import utcnow
from core.errors import NotFound, ValidationError
from core.pagination import decode_cursor, encode_cursor
from core.web import ServiceBlueprint
from services.collections import schemas
from services.collections.api.common import db, file_url, get_collection, hidden_counts
from services.collections.bulk import insert_rows
from services.collections.catalog_client import CatalogClient
from services.collections.events import publish_items_changed
from services.collections.models import CollectionItem, FileFacts, SourceFacts
from services.collections.ordering import append_positions, position_for_move
from services.collections.readmodel import (
    file_state,
    hidden_source_ids,
    upsert_files,
    upsert_groups,
)

blp = ServiceBlueprint("items", __name__, url_prefix="/api/v1", description="Collection items")

# Not-found ids quoted in an error message; the full list is in ``not_found``.
QUOTED_IDS = 20


def serialize_item(item: CollectionItem, facts: FileFacts | None, drive, drive_state) -> dict:
    data = {
        "file_id": item.file_id,
        "source_id": item.source_id,
        "drive": drive,
        "added_by": item.added_by,
        "added_at": item.added_at,
        "name": None,
        "path": None,
        "media_type": None,
        "kind": None,
        "size": None,
        "width": None,
        "height": None,
        "captured_at": None,
        "thumbnail_url": None,
        "preview_url": None,
        "state": file_state(None, drive_state),
    }
    if facts is not None:
        data.update(
            name=facts.name,
            path=facts.path,
            media_type=facts.media_type,
            kind=facts.kind,
            size=facts.size,
            width=facts.width,
            height=facts.height,
            captured_at=facts.captured_at,
            thumbnail_url=file_url(facts.id, "thumbnail") if facts.thumbnail_key else None,
            preview_url=file_url(facts.id, "preview") if facts.preview_key else None,
            state=file_state(facts.presence, drive_state),
        )
    return data


def _decode_position_cursor(cursor: str | None):
    return decode_cursor(cursor, 2, (int, str))


def list_items(session, collection, principal: Principal, limit: int, cursor: str | None) -> dict:
    hidden = hidden_source_ids(session, principal)
    # The page is read from the items index alone, and only its rows are
    # joined with the facts, so a page costs the same at any depth.
    query = (
        select(CollectionItem)
        .where(CollectionItem.collection_id == collection.id)
        .order_by(CollectionItem.position, CollectionItem.file_id)
    )
    if hidden:
        query = query.where(CollectionItem.source_id.not_in(hidden))
    after = _decode_position_cursor(cursor)
    if after:
        query = query.where(
            tuple_(CollectionItem.position, CollectionItem.file_id) > tuple_(after[0], after[1])
        )
    rows = session.scalars(query.limit(limit + 1)).all()
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = encode_cursor([page[-1].position, page[-1].file_id])

    facts = {
        f.id: f
        for f in session.scalars(
            select(FileFacts).where(FileFacts.id.in_([item.file_id for item in page]))
        )
    }
    drives = {
        row.id: row
        for row in session.execute(
            select(SourceFacts.id, SourceFacts.name, SourceFacts.state).where(
                SourceFacts.id.in_({item.source_id for item in page})
            )
        )
    }

    items = []
    for item in page:
        drive = drives.get(item.source_id)
        items.append(
            serialize_item(
                item,
                facts.get(item.file_id),
                drive.name if drive else None,
                drive.state if drive else None,
            )
        )

    hidden_count = hidden_counts(session, [collection.id], hidden).get(collection.id, 0)
    return {
        "items": items,
        "next_cursor": next_cursor,
        "item_count": collection.item_count - hidden_count,
        "hidden_count": hidden_count,
    }


def _requested_ids(client: CatalogClient, data: dict) -> list[str]:
    if "file_ids" in data:
        return list(dict.fromkeys(data["file_ids"]))
    if "query" in data:
        return list(dict.fromkeys(client.search_ids(data["query"])))
    folder = data["folder"]
    return list(dict.fromkeys(client.folder_ids(folder["drive"], folder["path"])))


def add_items(session, principal: Principal, collection_id: str, data: dict) -> dict:
    """Add files to a collection in one transaction, after validating them all.

    Files named by id that the caller may not see reject the whole request.
    Files matched by a query or folder that are gone by lookup time are
    skipped and returned in ``not_found``.
    """
    get_collection(session, principal, collection_id)
    # End the read transaction, so no transaction stays open during the
    # calls to the catalog.
    session.rollback()
    client = CatalogClient(request.headers.get("Authorization", ""))
    file_ids = _requested_ids(client, data)
    facts, not_found = client.lookup(file_ids) if file_ids else ([], [])
    foreign = {f["id"] for f in facts if f.get("org_id") != principal.org_id}
    if foreign:
        facts = [f for f in facts if f["id"] not in foreign]
        not_found = not_found + sorted(foreign)
    if not_found and "file_ids" in data:
        quoted = ", ".join(not_found[:QUOTED_IDS])
        more = f" and {len(not_found) - QUOTED_IDS} more" if len(not_found) > QUOTED_IDS else ""
        raise ValidationError(
            f"file_ids contains {len(not_found)} files that were not found or that you "
            f"may not see: {quoted}{more}; nothing was added",
            fields={"file_ids": [f"not found: {file_id}" for file_id in not_found]},
            not_found=not_found,
        )
    visibilities = client.group_visibilities() if facts else {}
    seen_at = utcnow()

    collection = get_collection(session, principal, collection_id, lock=True)
    upsert_files(session, facts, seen_at=seen_at)
    upsert_groups(session, principal.org_id, visibilities, seen_at)
    found_ids = [f["id"] for f in facts]
    present = set()
    for start in range(0, len(found_ids), 5000):
        chunk = found_ids[start : start + 5000]
        present.update(
            session.scalars(
                select(CollectionItem.file_id).where(
                    CollectionItem.collection_id == collection.id,
                    CollectionItem.file_id.in_(chunk),
                )
            )
        )
    source_of = {f["id"]: f["source_id"] for f in facts}
    new_ids = [file_id for file_id in found_ids if file_id not in present]
    if new_ids:
        positions = append_positions(session, collection.id, len(new_ids))
        insert_rows(
            session,
            CollectionItem.__table__,
            [
                {
                    "collection_id": collection.id,
                    "file_id": file_id,
                    "source_id": source_of[file_id],
                    "position": position,
                    "added_by": principal.user_id,
                    "added_at": seen_at,
                }
                for file_id, position in zip(new_ids, positions)
            ],
        )
        collection.item_count += len(new_ids)
        collection.updated_at = seen_at
        publish_items_changed(session, collection, added=new_ids)
    session.commit()
    return {
        "added": new_ids,
        "already_present": len(present),
        "not_found": not_found,
        "item_count": collection.item_count,
    }


def _get_visible_item(session, principal, collection, file_id, hidden) -> CollectionItem:
    item = session.get(CollectionItem, (collection.id, file_id))
    if item is None or item.source_id in hidden:
        raise NotFound(f"file {file_id!r} is not in collection {collection.id!r}")
    return item


@blp.route("/collections/<collection_id>/items")
class Items(MethodView):
    @blp.arguments(schemas.PageArgsSchema, location="query")
    @blp.response(200, schemas.ItemPageSchema)
    def get(self, args, collection_id):
        """List a collection's items in order, from the local read model.

        Items from groups the caller may not see are left out and counted
        in ``hidden_count``.
        """
        principal = current_principal()
        session = db()
        collection = get_collection(session, principal, collection_id)
        return list_items(session, collection, principal, args["limit"], args["cursor"])

    @blp.arguments(schemas.ItemsAddSchema)
    @blp.response(200, schemas.ItemsAddedSchema)
    def post(self, data, collection_id):
        """Add files by ids, by a catalog search or by a drive folder.

        Send exactly one of ``file_ids``, ``query`` (the catalog's search
        parameters) or ``folder`` (``drive`` and ``path``, subfolders
        included). New items go to the end in the order given, or in the
        catalog's order for a query or folder. A file already in the
        collection stays where it is. At most 10,000 files per request.
        """
        principal = current_principal()
        principal.require("editor")
        return add_items(db(), principal, collection_id, data)


@blp.route("/collections/<collection_id>/items/<file_id>")
class Item(MethodView):
    @blp.response(204)
    def delete(self, collection_id, file_id):
        """Remove a file from a collection; the catalog file stays."""
        principal = current_principal()
        principal.require("editor")
        session = db()
        collection = get_collection(session, principal, collection_id, lock=True)
        hidden = hidden_source_ids(session, principal)
        _get_visible_item(session, principal, collection, file_id, hidden)
        session.execute(
            delete(CollectionItem).where(
                CollectionItem.collection_id == collection.id, CollectionItem.file_id == file_id
            )
        )
        collection.item_count -= 1
        collection.updated_at = utcnow()
        publish_items_changed(session, collection, removed=[file_id])
        session.commit()


@blp.route("/collections/<collection_id>/items/<file_id>/move")
class MoveItem(MethodView):
    @blp.arguments(schemas.MoveSchema)
    @blp.response(204)
    def post(self, data, collection_id, file_id):
        """Move an item to a 0-based index in the caller's view of the collection.

        The view leaves out items the caller may not see. An index past the
        end moves the item to the end.
        """
        principal = current_principal()
        principal.require("editor")
        session = db()
        collection = get_collection(session, principal, collection_id, lock=True)
        hidden = hidden_source_ids(session, principal)
        item = _get_visible_item(session, principal, collection, file_id, hidden)
        position = position_for_move(session, collection.id, file_id, data["position"], hidden)
        session.refresh(item)
        item.position = position
        collection.updated_at = utcnow()
        publish_items_changed(session, collection, moved=[file_id])
        session.commit()
