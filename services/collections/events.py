"""Events the collections service publishes through its outbox."""

from __future__ import annotations

from sqlalchemy.orm import Session

from core.outbox import publish
from services.collections.models import Collection, OutboxEvent

COLLECTION_CHANGED = "collections.collection_changed"
COLLECTION_DELETED = "collections.collection_deleted"
ITEMS_CHANGED = "collections.items_changed"

# File ids per items_changed event, so one event stays a few tens of KB.
IDS_PER_EVENT = 1000


def publish_collection_changed(session: Session, collection: Collection) -> None:
    publish(
        session,
        OutboxEvent,
        COLLECTION_CHANGED,
        {
            "collection_id": collection.id,
            "org_id": collection.org_id,
            "name": collection.name,
            "description": collection.description,
            "updated_at": collection.updated_at.isoformat(),
        },
    )


def publish_collection_deleted(session: Session, collection_id: str, org_id: str) -> None:
    publish(
        session,
        OutboxEvent,
        COLLECTION_DELETED,
        {"collection_id": collection_id, "org_id": org_id},
    )


def publish_items_changed(
    session: Session,
    collection: Collection,
    added: list[str] = (),
    removed: list[str] = (),
    moved: list[str] = (),
) -> None:
    """Publish the added, removed and moved file ids, split into chunks."""
    changes = [("added", list(added)), ("removed", list(removed)), ("moved", list(moved))]
    for key, ids in changes:
        for start in range(0, len(ids), IDS_PER_EVENT):
            payload = {
                "collection_id": collection.id,
                "org_id": collection.org_id,
                "added": [],
                "removed": [],
                "moved": [],
                "updated_at": collection.updated_at.isoformat(),
            }
            payload[key] = ids[start : start + IDS_PER_EVENT]
            publish(session, OutboxEvent, ITEMS_CHANGED, payload)
