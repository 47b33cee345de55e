"""Transactional outbox: events commit with the change that caused them.

A service adds an ``OutboxEvent`` row in the same transaction as its change.
The relay task sends unsent rows to the consumers registered for the topic
and marks them sent, so an event committed while the broker was down is
delivered once it is back. Consumers record each event id they applied in
``consumed_events`` inside their own transaction, so a redelivered event has
no second effect.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, Integer, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.db import UTCDateTime, new_id, utcnow
from core.logs import get_logger

log = get_logger(__name__)

# Timestamp given to facts whose event carries none, so any real one is newer.
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Topic -> names of the tasks that consume it.
SUBSCRIBERS: dict[str, list[str]] = {}


def subscribe(topic: str, task_name: str) -> None:
    SUBSCRIBERS.setdefault(topic, [])
    if task_name not in SUBSCRIBERS[topic]:
        SUBSCRIBERS[topic].append(task_name)


def outbox_models(base):
    """Create the outbox and consumed-event tables on a service's base."""

    class OutboxEvent(base):
        __tablename__ = "outbox_events"

        seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
        id: Mapped[str] = mapped_column(String(32), unique=True, default=new_id)
        topic: Mapped[str] = mapped_column(String(100))
        payload: Mapped[dict] = mapped_column(JSON)
        created_at = mapped_column(UTCDateTime, default=utcnow)
        sent_at = mapped_column(UTCDateTime, nullable=True, index=True)

    class ConsumedEvent(base):
        __tablename__ = "consumed_events"

        event_id: Mapped[str] = mapped_column(String(32), primary_key=True)
        consumed_at = mapped_column(UTCDateTime, default=utcnow)

    return OutboxEvent, ConsumedEvent


def publish(session: Session, model, topic: str, payload: dict) -> None:
    """Add an event to the session; it is sent only if the session commits."""
    session.add(model(id=new_id(), topic=topic, payload=payload))
    session.info["outbox_dirty"] = True


def relay(session: Session, model, send, limit: int = 500) -> int:
    """Send up to ``limit`` unsent events in commit order; return how many.

    ``send(task_name, event)`` must raise when the broker is unreachable, so
    the row stays unsent and the next relay run tries again.
    """
    rows = session.scalars(
        select(model).where(model.sent_at.is_(None)).order_by(model.seq).limit(limit)
    ).all()
    sent = 0
    for row in rows:
        event = {"id": row.id, "topic": row.topic, "payload": row.payload}
        for task_name in SUBSCRIBERS.get(row.topic, []):
            send(task_name, event)
        row.sent_at = utcnow()
        session.commit()
        sent += 1
    return sent


def claim_event(session: Session, consumed_model, event_id: str) -> bool:
    """Record that ``event_id`` is being applied; False if it already was.

    Call inside the consumer's transaction, before applying the effect.
    """
    if session.get(consumed_model, event_id) is not None:
        return False
    session.add(consumed_model(event_id=event_id))
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        return False
    return True


def parse_time(value) -> datetime:
    """Parse an ISO 8601 timestamp from an event; a missing one sorts first."""
    if isinstance(value, datetime):
        parsed = value
    elif not value:
        return EPOCH
    else:
        parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed
