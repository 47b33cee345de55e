"""Helpers shared by the collections service's API modules."""

from __future__ import annotations

from flask import g
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.auth import Principal
from core.db import close_session, session_factory
from core.errors import NotFound
from core.settings import get_settings
from services.collections.models import Collection, CollectionItem, FileFacts

# Items scanned, in order, for one that has a thumbnail to use as the cover.
COVER_SCAN_LIMIT = 1000


def db() -> Session:
    """Return the request's collections session; closed at teardown."""
    if "db_session" not in g:
        g.db_session = session_factory("collections")()
    return g.db_session


def close_db(_exc=None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        close_session(session)


def file_url(file_id: str, rendition: str) -> str:
    return f"{get_settings().catalog_url}/api/v1/files/{file_id}/{rendition}"


def get_collection(
    session: Session, principal: Principal, collection_id: str, lock: bool = False
) -> Collection:
    """Return a collection of the principal's organization, or raise NotFound.

    ``lock`` takes a row lock, which serializes item changes to one collection.
    """
    query = select(Collection).where(
        Collection.id == collection_id, Collection.org_id == principal.org_id
    )
    if lock:
        query = query.with_for_update()
    collection = session.scalar(query)
    if collection is None:
        raise NotFound(f"collection {collection_id!r} not found")
    return collection


def hidden_counts(
    session: Session, collection_ids: list[str], hidden_source_ids: list[str]
) -> dict[str, int]:
    """Count the items of each collection that come from hidden drives."""
    if not collection_ids or not hidden_source_ids:
        return {}
    rows = session.execute(
        select(CollectionItem.collection_id, func.count())
        .where(
            CollectionItem.collection_id.in_(collection_ids),
            CollectionItem.source_id.in_(hidden_source_ids),
        )
        .group_by(CollectionItem.collection_id)
    ).all()
    return dict(rows)


def cover_url(session: Session, collection_id: str, hidden_source_ids: list[str]) -> str | None:
    """Return the thumbnail URL of the first visible item that has a thumbnail.

    Only the first COVER_SCAN_LIMIT visible items are searched, so a large
    collection of files without thumbnails has no cover.
    """
    first_items = select(CollectionItem.file_id, CollectionItem.position).where(
        CollectionItem.collection_id == collection_id
    )
    if hidden_source_ids:
        first_items = first_items.where(CollectionItem.source_id.not_in(hidden_source_ids))
    first_items = (
        first_items.order_by(CollectionItem.position, CollectionItem.file_id)
        .limit(COVER_SCAN_LIMIT)
        .subquery()
    )
    file_id = session.scalar(
        select(first_items.c.file_id)
        .join(FileFacts, FileFacts.id == first_items.c.file_id)
        .where(FileFacts.thumbnail_key.is_not(None))
        .order_by(first_items.c.position, first_items.c.file_id)
        .limit(1)
    )
    return file_url(file_id, "thumbnail") if file_id else None


def serialize_collection(
    collection: Collection, hidden_count: int, cover: str | None
) -> dict:
    return {
        "id": collection.id,
        "name": collection.name,
        "description": collection.description,
        "item_count": collection.item_count - hidden_count,
        "hidden_count": hidden_count,
        "cover_url": cover,
        "created_by": collection.created_by,
        "created_at": collection.created_at,
        "updated_at": collection.updated_at,
    }
