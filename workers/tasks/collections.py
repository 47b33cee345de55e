"""Consumers of catalog events that keep the collections read model current.

Each consumer applies one event inside one transaction of the collections
database and records the event id in ``consumed_events`` first, so a
redelivered event has no second effect. Ordering by timestamps in
``services.collections.readmodel`` keeps a late event from overwriting
newer facts.
"""

from __future__ import annotations

from core.celery_app import CONSUMER_OPTIONS, celery_app
from core.db import session_scope
from core.logs import get_logger
from core.outbox import claim_event, subscribe
from services.collections import readmodel
from services.collections.models import ConsumedEvent

log = get_logger(__name__)

FILES_UPDATED = "catalog.files_updated"
SOURCE_STATE = "catalog.source_state"
GROUP_CHANGED = "catalog.group_changed"


def _apply_files_updated(session, payload: dict) -> None:
    readmodel.upsert_files(session, payload.get("files") or [])


APPLIERS = {
    FILES_UPDATED: _apply_files_updated,
    SOURCE_STATE: readmodel.apply_source_state,
    GROUP_CHANGED: readmodel.apply_group_changed,
}


def consume(event: dict) -> bool:
    """Apply one catalog event to the read model; return False for a repeat."""
    apply = APPLIERS[event["topic"]]
    with session_scope("collections") as session:
        if not claim_event(session, ConsumedEvent, event["id"]):
            log.info("event_skipped", event_id=event["id"], topic=event["topic"], reason="repeat")
            return False
        apply(session, event["payload"])
    return True


@celery_app.task(name="collections.files_updated", **CONSUMER_OPTIONS)
def on_files_updated(event: dict) -> bool:
    return consume(event)


@celery_app.task(name="collections.source_state", **CONSUMER_OPTIONS)
def on_source_state(event: dict) -> bool:
    return consume(event)


@celery_app.task(name="collections.group_changed", **CONSUMER_OPTIONS)
def on_group_changed(event: dict) -> bool:
    return consume(event)


subscribe(FILES_UPDATED, on_files_updated.name)
subscribe(SOURCE_STATE, on_source_state.name)
subscribe(GROUP_CHANGED, on_group_changed.name)
