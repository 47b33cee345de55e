"""Consumers of catalog and collections events that keep the sharing read model current.

Each consumer applies one event inside one transaction of the sharing
database and records the event id in ``consumed_events`` first, so a
redelivered event has no second effect. Ordering by timestamps in
``services.sharing.readmodel`` keeps a late event from overwriting newer
facts.
"""

from __future__ import annotations

from core.celery_app import CONSUMER_OPTIONS, celery_app
from core.db import session_scope
from core.logs import get_logger
from core.outbox import claim_event, subscribe
from services.sharing import readmodel
from services.sharing.models import ConsumedEvent

log = get_logger(__name__)

APPLIERS = {
    "catalog.files_updated": readmodel.apply_files_updated,
    "catalog.source_state": readmodel.apply_source_state,
    "catalog.group_changed": readmodel.apply_group_changed,
    "catalog.member_changed": readmodel.apply_member_changed,
    "collections.collection_changed": readmodel.apply_collection_changed,
    "collections.items_changed": readmodel.apply_items_changed,
    "collections.collection_deleted": readmodel.apply_collection_deleted,
}


def consume(event: dict) -> bool:
    """Apply one event to the sharing read model; return False for a repeat."""
    apply = APPLIERS[event["topic"]]
    with session_scope("sharing") as session:
        if not claim_event(session, ConsumedEvent, event["id"]):
            log.info("event_skipped", event_id=event["id"], topic=event["topic"], reason="repeat")
            return False
        result = apply(session, event["payload"])
    if event["topic"] == "collections.collection_deleted":
        log.info(
            "links_revoked",
            collection_id=event["payload"]["collection_id"],
            links=result,
            reason="collection deleted",
        )
    return True


def _register(topic: str):
    name = "sharing." + topic.split(".", 1)[1]
    task = celery_app.task(name=name, **CONSUMER_OPTIONS)(consume)
    subscribe(topic, task.name)
    return task


on_files_updated = _register("catalog.files_updated")
on_source_state = _register("catalog.source_state")
on_group_changed = _register("catalog.group_changed")
on_member_changed = _register("catalog.member_changed")
on_collection_changed = _register("collections.collection_changed")
on_items_changed = _register("collections.items_changed")
on_collection_deleted = _register("collections.collection_deleted")


@celery_app.task(name="sharing.flush_stats", ignore_result=True)
def flush_stats() -> int:
    """Move the links' view and download counts from Redis to the database."""
    from services.sharing import stats

    return stats.flush_all()
