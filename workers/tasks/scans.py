"""Scan and verify tasks. They run on the queue of the drive's host."""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta

from sqlalchemy import or_, select, update

from core.celery_app import celery_app, drive_queue
from core.db import get_engine, session_scope, utcnow
from core.logs import get_logger
from core.settings import get_settings
from services.catalog.counts import recount_source
from services.catalog.models import File, Scan, ScanIssue, Source
from workers.scan.scanner import DriveAbsent, Scanner, ScanInterrupted, discard_staging
from workers.scan.walker import open_relative

log = get_logger(__name__)


def stale_after() -> timedelta:
    """A running job whose heartbeat is older than this is taken to be dead."""
    return timedelta(seconds=get_settings().stale_after_seconds)

FINISHED = ("succeeded", "interrupted", "failed")


def enqueue_scan(scan_id: str, host: str, kind: str = "scan") -> None:
    task = run_scan if kind == "scan" else run_verify
    task.apply_async(args=[scan_id], queue=drive_queue(host))


def _claim(scan_id: str) -> bool:
    """Take the lease on a scan; False if it is finished or alive elsewhere."""
    now = utcnow()
    with get_engine("catalog").begin() as conn:
        result = conn.execute(
            update(Scan)
            .where(
                Scan.id == scan_id,
                or_(
                    Scan.status == "queued",
                    Scan.heartbeat_at.is_(None),
                    Scan.heartbeat_at < now - stale_after(),
                ),
                Scan.status.not_in(FINISHED),
            )
            .values(
                status="running",
                heartbeat_at=now,
                started_at=now,
                attempt=Scan.attempt + 1,
            )
        )
    return result.rowcount == 1


def _mark_offline(source_id: str, mount_path: str) -> None:
    """Mark a drive offline that its scan found absent, unless it was connected again elsewhere."""
    from services.catalog.events import set_source_offline

    with session_scope("catalog") as session:
        source = session.get(Source, source_id, with_for_update=True)
        if source.state != "online" or source.mount_path != mount_path:
            return
        set_source_offline(session, source)
    log.warning("drive_marked_offline", source_id=source_id, mount_path=mount_path)


def _finish(scan_id: str, status: str, message: str | None, counts: dict | None = None) -> None:
    with session_scope("catalog") as session:
        scan = session.get(Scan, scan_id)
        scan.status = status
        scan.message = message
        scan.finished_at = utcnow()
        if counts is not None:
            scan.counts = counts


@celery_app.task(name="scans.run", acks_late=True, ignore_result=True)
def run_scan(scan_id: str, on_batch=None) -> None:
    """Run a queued scan. ``on_batch`` is called after each staged batch."""
    if not _claim(scan_id):
        log.info("scan_skipped", scan_id=scan_id, reason="finished or running")
        return
    with session_scope("catalog") as session:
        scan = session.get(Scan, scan_id)
        source = session.get(Source, scan.source_id)
        session.expunge(source)
    log.info("scan_started", scan_id=scan_id, source_id=source.id, root=source.mount_path)
    if source.state != "online" or not source.mount_path:
        _finish(scan_id, "interrupted", "the drive is not connected")
        return
    settings = get_settings()
    scanner = Scanner(
        scan_id,
        source,
        source.mount_path,
        settings.scan_batch_size,
        on_batch=on_batch,
        commit_seconds=settings.scan_commit_seconds,
    )
    try:
        counts = scanner.run()
    except ScanInterrupted as error:
        log.warning("scan_interrupted", scan_id=scan_id, reason=str(error))
        discard_staging(scan_id)
        _count_kept_files(scanner, source.id)
        _finish(scan_id, "interrupted", str(error), scanner.counts.as_dict())
        if isinstance(error, DriveAbsent):
            _mark_offline(source.id, source.mount_path)
        return
    except Exception as error:
        log.exception("scan_failed", scan_id=scan_id)
        discard_staging(scan_id)
        _count_kept_files(scanner, source.id)
        _finish(
            scan_id,
            "failed",
            f"scan failed: {type(error).__name__}: {error}",
            scanner.counts.as_dict(),
        )
        return
    discard_staging(scan_id)
    log.info("scan_succeeded", scan_id=scan_id, **counts.as_dict())
    queue_follow_up(source)


def _count_kept_files(scanner: Scanner, source_id: str) -> None:
    """Recount a drive whose interrupted first scan kept files it had committed."""
    if scanner.new_files.committed:
        with get_engine("catalog").begin() as conn:
            recount_source(conn, source_id)


def queue_follow_up(source: Source) -> None:
    """Queue rendition and checksum work for files the scans left pending."""
    from workers.tasks.checksums import checksum_source
    from workers.tasks.renditions import render_source

    queue = drive_queue(source.host)
    with session_scope("catalog") as session:
        base = select(File.id).where(
            File.source_id == source.id, File.presence == "present"
        )
        renditions_pending = session.scalar(
            base.where(File.rendition_state == "pending").limit(1)
        )
        checksums_pending = session.scalar(
            base.where(File.checksum.is_(None), File.fingerprint != "").limit(1)
        )
    # An unchanged rescan leaves nothing pending and so queues nothing.
    try:
        if renditions_pending:
            render_source.apply_async(args=[source.id], queue=queue)
        if checksums_pending:
            checksum_source.apply_async(args=[source.id], queue=queue)
    except Exception as error:  # broker down: renditions.sweep queues it later
        log.warning("follow_up_enqueue_failed", source_id=source.id, error=str(error))


def release_host_scans(host: str) -> list:
    """Queue again the scans of ``host`` that a stopped stack left running.

    Call only while no worker for ``host`` runs: every such scan is then
    dead, and waiting for its heartbeat to go stale would keep the drive's
    scan shown as running for minutes. Returns ``(id, kind)`` rows to send.
    """
    with session_scope("catalog") as session:
        rows = session.execute(
            select(Scan.id, Scan.kind)
            .join(Source, Source.id == Scan.source_id)
            .where(Source.host == host, Scan.status.in_(("running", "finalizing")))
        ).all()
        if rows:
            session.execute(
                update(Scan)
                .where(Scan.id.in_([row.id for row in rows]))
                .values(status="queued", heartbeat_at=None)
            )
    for row in rows:
        log.warning("scan_released", scan_id=row.id, host=host)
    return rows


@celery_app.task(name="scans.recover_stalled", ignore_result=True)
def recover_stalled() -> int:
    """Re-send scans whose worker died or whose message was lost."""
    cutoff = utcnow() - stale_after()
    with session_scope("catalog") as session:
        rows = session.execute(
            select(Scan.id, Scan.kind, Source.host)
            .join(Source, Source.id == Scan.source_id)
            .where(
                Scan.status.in_(("queued", "running", "finalizing")),
                or_(Scan.heartbeat_at < cutoff, Scan.heartbeat_at.is_(None)),
                Scan.requested_at < cutoff,
            )
        ).all()
    for row in rows:
        log.warning("scan_resent", scan_id=row.id, host=row.host)
        enqueue_scan(row.id, row.host, row.kind)
    return len(rows)


def sha256_of(root: str, path_bytes: bytes) -> str:
    digest = hashlib.sha256()
    fd = open_relative(root, path_bytes)
    try:
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


@celery_app.task(name="scans.verify", acks_late=True, ignore_result=True)
def run_verify(scan_id: str) -> None:
    """Re-read every file with a checksum and report bytes that changed silently."""
    if not _claim(scan_id):
        return
    with session_scope("catalog") as session:
        scan = session.get(Scan, scan_id)
        source = session.get(Source, scan.source_id)
        session.expunge(source)
    counts = {"verified": 0, "mismatched": 0, "skipped": 0, "unreadable": 0}
    last_id = ""
    while True:
        with session_scope("catalog") as session:
            state = session.scalar(select(Source.state).where(Source.id == source.id))
            if state != "online":
                _finish(scan_id, "interrupted", "the drive was disconnected")
                return
            files = session.execute(
                select(File.id, File.path, File.path_bytes, File.size, File.mtime_ns, File.checksum)
                .where(
                    File.source_id == source.id,
                    File.presence == "present",
                    File.id > last_id,
                )
                .order_by(File.id)
                .limit(200)
            ).all()
            session.execute(
                update(Scan).where(Scan.id == scan_id).values(heartbeat_at=utcnow(), counts=counts)
            )
        if not files:
            break
        issues = []
        for row in files:
            last_id = row.id
            try:
                st = _stat_relative(source.mount_path, row.path_bytes)
                if row.checksum is None or st.st_size != row.size or st.st_mtime_ns != row.mtime_ns:
                    counts["skipped"] += 1
                    continue
                actual = sha256_of(source.mount_path, row.path_bytes)
            except OSError as error:
                counts["unreadable"] += 1
                issues.append((row, "unreadable_file", f"cannot read the file: {error.strerror or error}"))
                continue
            counts["verified"] += 1
            if actual != row.checksum:
                counts["mismatched"] += 1
                issues.append((
                    row,
                    "content_changed",
                    "the file's bytes changed while its size and modification time did not",
                ))
        if issues:
            with session_scope("catalog") as session:
                for row, kind, message in issues:
                    session.add(ScanIssue(scan_id=scan_id, file_id=row.id, path=row.path, kind=kind, message=message))
    with session_scope("catalog") as session:
        scan = session.get(Scan, scan_id)
        scan.status = "succeeded"
        scan.complete = True
        scan.counts = counts
        scan.finished_at = utcnow()


def _stat_relative(root: str, path_bytes: bytes) -> os.stat_result:
    fd = open_relative(root, path_bytes)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)
