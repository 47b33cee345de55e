"""Metadata and renditions for files of a connected drive."""

from __future__ import annotations

import os

from sqlalchemy import select, update

from core.celery_app import celery_app, drive_queue
from core.db import get_engine, session_scope, utcnow
from core.logs import get_logger
from core.storage import content_key, get_store
from services.catalog.counts import recount_due, recount_source
from services.catalog.events import publish_files
from services.catalog.models import File, Source

log = get_logger(__name__)

BATCH = 25
RENDITION_TIMEOUT_S = 120
RENDITION_MEMORY_MB = 1536


def _store_rendition(prefix: str, data: bytes | None, fmt: str) -> str | None:
    if not data:
        return None
    suffix = ".webp" if fmt == "webp" else ".jpg"
    key = content_key(prefix, data, suffix)
    store = get_store()
    if not store.exists(key):
        store.put_bytes(key, data, "image/webp" if fmt == "webp" else "image/jpeg")
    return key


@celery_app.task(name="renditions.source", acks_late=True, ignore_result=True)
def render_source(source_id: str, after: str = "") -> int:
    """Make metadata and renditions for a batch of pending files of a drive.

    Takes the pending files with ids above ``after``, and queues itself
    again with the last id of the batch while work remains, so each batch
    reads on from where the previous one stopped. A file is updated only if
    its content version is still the one that was read, so a file changed
    meanwhile is left pending for the next run.
    """
    from workers.media.sandbox import analyze_isolated, failure_result

    with session_scope("catalog") as session:
        source = session.get(Source, source_id)
        if source is None or source.state != "online":
            return 0
        root, host, source_name = source.mount_path, source.host, source.name
        counted_at = source.counted_at
        rows = session.execute(
            select(File.id, File.path_bytes, File.content_version, File.size, File.mtime_ns)
            .where(
                File.source_id == source_id,
                File.presence == "present",
                File.rendition_state == "pending",
                File.id > after,
            )
            .order_by(File.id)
            .limit(BATCH)
        ).all()
    done_ids = []
    for row in rows:
        path = os.path.join(os.fsencode(root), row.path_bytes)
        try:
            result = analyze_isolated(
                path, timeout_s=RENDITION_TIMEOUT_S, memory_mb=RENDITION_MEMORY_MB
            )
        except Exception as error:
            # A fault in the analysis code fails this file alone. Raised, it
            # would end the task, and every later pass would stop at this
            # file again, so no later file of the drive would get renditions.
            log.error(
                "rendition_analysis_failed", file_id=row.id, source_id=source_id, error=str(error)
            )
            result = failure_result(path, f"analysis failed: {error}")
        try:
            thumb_key = _store_rendition("thumbnails", result.thumbnail, result.rendition_format)
            preview_key = _store_rendition("previews", result.preview, result.rendition_format)
        except Exception as error:  # storage backends raise StorageError
            log.warning("rendition_store_failed", file_id=row.id, error=str(error))
            continue
        has_visual = bool(thumb_key)
        state = "done" if has_visual or not result.error else "failed"
        with get_engine("catalog").begin() as conn:
            changed = conn.execute(
                update(File)
                .where(File.id == row.id, File.content_version == row.content_version)
                .values(
                    media_type=result.media_type,
                    kind=result.kind,
                    media_info=result.info,
                    thumbnail_key=thumb_key,
                    preview_key=preview_key,
                    rendition_state=state,
                    error=result.error,
                    updated_at=utcnow(),
                )
            ).rowcount
            if changed:
                publish_files(conn, [row.id], source_name)
        if changed:
            done_ids.append(row.id)
    # Requeue only after progress, so a failing object store cannot spin.
    more = len(rows) == BATCH and bool(done_ids)
    if not more or recount_due(counted_at):
        with get_engine("catalog").begin() as conn:
            recount_source(conn, source_id)
    if more:
        render_source.apply_async(args=[source_id, rows[-1].id], queue=drive_queue(host))
    log.info("renditions_made", source_id=source_id, files=len(done_ids))
    return len(done_ids)


@celery_app.task(name="renditions.sweep", ignore_result=True)
def sweep_pending() -> int:
    """Queue rendition and checksum work for online drives that still have some.

    Covers work whose worker was killed: the per-drive tasks are safe to
    run twice, so an extra one costs only a query.
    """
    from workers.tasks.checksums import checksum_source

    with session_scope("catalog") as session:
        pending = session.execute(
            select(Source.id, Source.host)
            .where(
                Source.state == "online",
                Source.id.in_(
                    select(File.source_id).where(
                        File.presence == "present",
                        (File.rendition_state == "pending")
                        | (File.checksum.is_(None) & (File.fingerprint != "")),
                    )
                ),
            )
        ).all()
    for source_id, host in pending:
        render_source.apply_async(args=[source_id], queue=drive_queue(host))
        checksum_source.apply_async(args=[source_id], queue=drive_queue(host))
    return len(pending)
