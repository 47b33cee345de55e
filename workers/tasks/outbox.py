"""Relay of every service's outbox to the consumers of its events."""

from __future__ import annotations

from core import outbox
from core.celery_app import QUEUE_EVENTS, celery_app
from core.db import session_scope
from core.logs import get_logger

log = get_logger(__name__)


def _outbox_models():
    from services.catalog.models import OutboxEvent as CatalogOutbox

    models = {"catalog": CatalogOutbox}
    try:
        from services.collections.models import OutboxEvent as CollectionsOutbox

        models["collections"] = CollectionsOutbox
    except ImportError:
        pass
    try:
        from services.sharing.models import OutboxEvent as SharingOutbox

        models["sharing"] = SharingOutbox
    except ImportError:
        pass
    return models


def send_event(task_name: str, event: dict) -> None:
    # No result: the result backend would retry its own connection for
    # seconds when the broker is down, where the relay should fail fast.
    celery_app.send_task(task_name, args=[event], queue=QUEUE_EVENTS, ignore_result=True)


@celery_app.task(name="outbox.relay", ignore_result=True)
def relay(service: str) -> int:
    model = _outbox_models()[service]
    with session_scope(service) as session:
        sent = outbox.relay(session, model, send_event)
    if sent:
        log.info("outbox_relayed", service=service, events=sent)
    return sent


@celery_app.task(name="outbox.relay_all", ignore_result=True)
def relay_all() -> int:
    total = 0
    for service in _outbox_models():
        total += relay(service)
    return total
