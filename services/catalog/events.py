"""Events the catalog publishes through its outbox.

Payloads carry the facts other services keep in their read models, so a
consumer never has to call the catalog back.
"""

from __future__ import annotations

from sqlalchemy import Connection, select, text

from core.db import new_id, utcnow
from services.catalog.models import File, OutboxEvent, ScanEntry, Source

CHUNK = 200

FILES_UPDATED = "catalog.files_updated"
SOURCE_STATE = "catalog.source_state"
GROUP_CHANGED = "catalog.group_changed"
MEMBER_CHANGED = "catalog.member_changed"


def publish_member(conn: Connection, org_id: str, user_id: str, role: str | None) -> None:
    """Publish a member's role; ``role`` None means they left the organization."""
    insert_events(
        conn,
        MEMBER_CHANGED,
        [{"org_id": org_id, "user_id": user_id, "role": role, "at": utcnow().isoformat()}],
    )


def file_facts(
    file: File | object,
    source_name: str = "",
    source_state: str | None = None,
    group_id: str | None = None,
) -> dict:
    """The facts of a file that other services keep in their read models.

    ``updated_at`` orders facts: a consumer ignores facts older than the ones
    it holds, so a replayed or late event never overwrites newer facts.
    """
    info = file.media_info or {}
    return {
        "id": file.id,
        "org_id": file.org_id,
        "source_id": file.source_id,
        "source_name": source_name,
        "source_state": source_state,
        "group_id": group_id,
        "path": file.path,
        "name": file.name,
        "media_type": file.media_type,
        "kind": file.kind,
        "size": file.size,
        "fingerprint": file.fingerprint,
        "checksum": file.checksum,
        "presence": file.presence,
        "content_version": file.content_version,
        "rendition_state": file.rendition_state,
        "thumbnail_key": file.thumbnail_key,
        "preview_key": file.preview_key,
        "width": info.get("width"),
        "height": info.get("height"),
        "captured_at": info.get("captured_at"),
        "updated_at": file.updated_at.isoformat() if file.updated_at else None,
    }


def _outbox_row(topic: str, payload: dict) -> dict:
    return {
        "id": new_id(),
        "topic": topic,
        "payload": payload,
        "created_at": utcnow(),
        "sent_at": None,
    }


def insert_events(conn: Connection, topic: str, payloads: list[dict]) -> None:
    if payloads:
        conn.execute(
            OutboxEvent.__table__.insert(), [_outbox_row(topic, p) for p in payloads]
        )


# The columns ``file_facts`` reads, selected as plain rows: building ORM
# objects cost more than the query when a scan publishes thousands of files.
FACT_COLUMNS = (
    File.id,
    File.org_id,
    File.source_id,
    File.path,
    File.name,
    File.media_type,
    File.kind,
    File.size,
    File.fingerprint,
    File.checksum,
    File.presence,
    File.content_version,
    File.rendition_state,
    File.thumbnail_key,
    File.preview_key,
    File.media_info,
    File.updated_at,
)


def _facts_query():
    return select(
        *FACT_COLUMNS,
        Source.name.label("source_name"),
        Source.state.label("source_state"),
        Source.group_id.label("group_id"),
    ).join(Source, Source.id == File.source_id)


def _facts(row) -> dict:
    return file_facts(row, row.source_name, row.source_state, row.group_id)


def facts_for(conn: Connection, file_ids: list[str]) -> list[dict]:
    # Read on the caller's connection, so the result includes its uncommitted
    # changes.
    rows = conn.execute(_facts_query().where(File.id.in_(file_ids))).all()
    return [_facts(row) for row in rows]


def publish_files(conn: Connection, file_ids: list[str], source_name: str = "") -> None:
    """Publish the current facts of ``file_ids`` in chunks."""
    for start in range(0, len(file_ids), CHUNK):
        facts = facts_for(conn, file_ids[start : start + CHUNK])
        if facts:
            insert_events(conn, FILES_UPDATED, [{"files": facts}])


# The facts of ``file_facts`` as SQL over ``files f`` joined to ``sources s``,
# in the same order and with the same keys. ``updated_at`` is written in UTC
# with six fraction digits, where Python leaves out a zero fraction.
_FACT_SQL = (
    ("id", "f.id"),
    ("org_id", "f.org_id"),
    ("source_id", "f.source_id"),
    ("source_name", "s.name"),
    ("source_state", "s.state"),
    ("group_id", "s.group_id"),
    ("path", "f.path"),
    ("name", "f.name"),
    ("media_type", "f.media_type"),
    ("kind", "f.kind"),
    ("size", "f.size"),
    ("fingerprint", "f.fingerprint"),
    ("checksum", "f.checksum"),
    ("presence", "f.presence"),
    ("content_version", "f.content_version"),
    ("rendition_state", "f.rendition_state"),
    ("thumbnail_key", "f.thumbnail_key"),
    ("preview_key", "f.preview_key"),
    ("width", "f.media_info -> 'width'"),
    ("height", "f.media_info -> 'height'"),
    ("captured_at", "f.media_info -> 'captured_at'"),
    (
        "updated_at",
        "to_char(f.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')",
    ),
)
CHANGE_STATUSES = ("moved", "changed", "restored", "missing")


def _insert_change_events_sql() -> str:
    facts = ", ".join(f"'{key}', {expression}" for key, expression in _FACT_SQL)
    statuses = ", ".join(f"'{status}'" for status in CHANGE_STATUSES)
    return f"""
        INSERT INTO outbox_events (id, topic, payload, created_at)
        SELECT replace(gen_random_uuid()::text, '-', ''), :topic,
               json_build_object('files', json_agg(fact ORDER BY file_id)), :now
        FROM (
            SELECT f.id AS file_id, json_build_object({facts}) AS fact,
                   (row_number() OVER (ORDER BY f.id) - 1) / :chunk AS chunk
            FROM scan_entries e
            JOIN files f ON f.id = e.file_id
            JOIN sources s ON s.id = f.source_id
            WHERE e.scan_id = :scan AND e.status IN ({statuses})
        ) AS changed
        GROUP BY chunk
        ORDER BY chunk
    """


_INSERT_CHANGE_EVENTS = _insert_change_events_sql()


def publish_file_changes(conn: Connection, scan_id: str, source: Source) -> None:
    """Publish every file a finished scan moved, changed, restored or lost.

    On PostgreSQL one statement builds the events, ``CHUNK`` files each. For
    10,000 moved files it takes about 0.27 s, where building them in Python
    took about 0.55 s, half of the scan's finalize. Elsewhere one query joins
    the scan's staging rows to the files and streams them.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(
            text(_INSERT_CHANGE_EVENTS),
            {"topic": FILES_UPDATED, "now": utcnow(), "chunk": CHUNK, "scan": scan_id},
        )
        return
    query = (
        _facts_query()
        .join(ScanEntry, ScanEntry.file_id == File.id)
        .where(
            ScanEntry.scan_id == scan_id,
            ScanEntry.status.in_(CHANGE_STATUSES),
        )
        .order_by(File.id)
        .execution_options(stream_results=True, yield_per=CHUNK)
    )
    rows = conn.execute(query)
    for chunk in rows.partitions(CHUNK):
        insert_events(conn, FILES_UPDATED, [{"files": [_facts(row) for row in chunk]}])


def set_source_offline(session, source: Source) -> None:
    """Mark ``source`` offline and publish its new state, unless it is offline already."""
    if source.state == "offline":
        return
    source.state = "offline"
    source.disconnected_at = utcnow()
    publish_source_state(session.connection(), source)


def publish_source_state(conn: Connection, source: Source) -> None:
    insert_events(
        conn,
        SOURCE_STATE,
        [
            {
                "org_id": source.org_id,
                "source_id": source.id,
                "source_name": source.name,
                "group_id": source.group_id,
                "state": source.state,
                "at": utcnow().isoformat(),
            }
        ],
    )
