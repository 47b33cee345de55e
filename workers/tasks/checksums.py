"""Full-content checksums, computed in the background after scans."""

from __future__ import annotations

import os

from sqlalchemy import select, update

from core.celery_app import celery_app, drive_queue
from core.db import get_engine, session_scope
from core.logs import get_logger
from services.catalog.counts import recount_due, recount_source
from services.catalog.models import File, Source
from workers.tasks.scans import sha256_of

log = get_logger(__name__)

BATCH = 100


@celery_app.task(name="checksums.source", acks_late=True, ignore_result=True)
def checksum_source(source_id: str, after: str = "") -> int:
    """Checksum up to ``BATCH`` files with ids above ``after``, then queue the next batch.

    The next batch starts after this batch's last id, so a drive whose
    files are mostly done is not read from its first file again for every
    batch. A file whose size or mtime changed since the scan is left for
    the next scan. The update only applies while the file's content version
    is the one that was read, so running twice or concurrently is harmless.
    """
    with session_scope("catalog") as session:
        source = session.get(Source, source_id)
        if source is None or source.state != "online":
            return 0
        root, host, counted_at = source.mount_path, source.host, source.counted_at
        rows = session.execute(
            select(
                File.id, File.path_bytes, File.size, File.mtime_ns, File.content_version
            )
            .where(
                File.source_id == source_id,
                File.presence == "present",
                File.checksum.is_(None),
                File.fingerprint != "",
                File.id > after,
            )
            .order_by(File.id)
            .limit(BATCH)
        ).all()
    done = 0
    gone = []
    for row in rows:
        try:
            before = _stat(root, row.path_bytes)
            if before.st_size != row.size or before.st_mtime_ns != row.mtime_ns:
                continue
            checksum = sha256_of(root, row.path_bytes)
        except FileNotFoundError:
            # Moved or deleted since the scan: the next scan finds it again.
            gone.append(row.id)
            continue
        except OSError as error:
            log.warning(
                "checksum_failed",
                file_id=row.id,
                path=os.fsdecode(row.path_bytes),
                error=error.strerror or str(error),
            )
            continue
        with session_scope("catalog") as session:
            session.execute(
                update(File)
                .where(File.id == row.id, File.content_version == row.content_version)
                .values(checksum=checksum)
            )
        done += 1
    if gone:
        log.info("checksum_files_gone", source_id=source_id, files=len(gone), first_id=gone[0])
    # The next batch starts after this one, so a batch of files that were
    # all gone or unreadable still moves the work on.
    more = len(rows) == BATCH
    if not more or recount_due(counted_at):
        with get_engine("catalog").begin() as conn:
            recount_source(conn, source_id)
    if more:
        checksum_source.apply_async(args=[source_id, rows[-1].id], queue=drive_queue(host))
    return done


def _stat(root: str, path_bytes: bytes) -> os.stat_result:
    from workers.scan.walker import open_relative

    fd = open_relative(root, path_bytes)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)
