"""Export tasks: plan, stage on remote hosts, assemble the zip, expire.

An export is planned on any worker. Files on hosts other than the chosen
assembling host are first copied into the object store by a task on their
own host's queue; the archive is then written in one pass on the
assembling host, which reads its own drives directly. Every step can run
twice or be killed: the archive object appears only when complete, and a
stalled or interrupted export is planned again from the start.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from datetime import timedelta
from typing import BinaryIO, Iterator

from sqlalchemy import or_, select, update

from core.auth import Principal
from core.celery_app import QUEUE_EXPORTS, celery_app, drive_queue
from core.db import get_engine, session_scope, utcnow
from core.logs import get_logger
from core.settings import get_settings
from core.storage import ObjectNotFound, get_store
from services.catalog.access import visible_files
from services.catalog.models import Export, File, GroupMember, Membership, Source
from workers.exports.archive import CHUNK, ArchiveEntry, Cancelled, EntryChanged, write_zip
from workers.exports.names import NameAllocator
from workers.scan.walker import fingerprint_fd, open_relative
from workers.tasks.scans import stale_after

log = get_logger(__name__)

FINISHED = ("succeeded", "failed", "cancelled", "expired")


class DriveGone(Exception):
    """A drive needed by the export went offline while it was being read."""

    def __init__(self, drive: str):
        super().__init__(drive)
        self.drive = drive


def principal_for(session, org_id: str, user_id: str) -> Principal:
    """The principal whose visibility an export uses.

    A user who left the organization sees what every member sees: groups
    with "everyone" visibility only.
    """
    role = session.scalar(
        select(Membership.role).where(Membership.org_id == org_id, Membership.user_id == user_id)
    )
    if role is None:
        return Principal(user_id="", org_id=org_id, role="viewer")
    groups = session.scalars(select(GroupMember.group_id).where(GroupMember.user_id == user_id))
    return Principal(user_id=user_id, org_id=org_id, role=role, group_ids=frozenset(groups))


def staged_key(export_id: str, file_id: str) -> str:
    return f"exports/{export_id}/staged/{file_id}"


def _update(export_id: str, **values) -> None:
    with get_engine("catalog").begin() as conn:
        conn.execute(update(Export).where(Export.id == export_id).values(**values))


# -- planning -------------------------------------------------------------------


def build_plan(session, export: Export) -> dict:
    """Decide, for each requested file, where its bytes come from.

    Returns a plan with ``entries`` (files to write, in request order),
    ``skipped``, ``substituted`` and ``waiting_for`` (offline drives).
    """
    principal = principal_for(session, export.org_id, export.user_id)
    rows = session.execute(
        visible_files(principal).where(File.id.in_(export.file_ids))
    ).all()
    by_id = {f.id: (f, name, state) for f, name, state in rows}
    sources = {s.id: s for s in session.scalars(select(Source).where(Source.org_id == export.org_id))}
    names = NameAllocator()
    plan = {"entries": [], "skipped": [], "substituted": [], "waiting_for": []}
    waiting = set()
    for file_id in export.file_ids:
        found = by_id.get(file_id)
        if found is None:
            plan["skipped"].append({"file_id": file_id, "reason": "not found or not visible"})
            continue
        file, drive, state = found
        described = {"file_id": file.id, "drive": drive, "path": file.path}
        if file.presence == "missing":
            plan["skipped"].append({**described, "reason": "missing from its drive"})
            continue
        reader = file
        if state != "online":
            reader = _online_copy(session, principal, file)
            if reader is None:
                if export.skip_offline:
                    plan["skipped"].append({**described, "reason": f"drive {drive} is offline"})
                else:
                    waiting.add(drive)
                continue
            plan["substituted"].append({
                **described,
                "copy_file_id": reader.id,
                "copy_drive": sources[reader.source_id].name,
                "copy_path": reader.path,
            })  # fmt: skip
        wanted = f"{drive}/{file.path}" if export.keep_structure else file.name
        source = sources[reader.source_id]
        plan["entries"].append({
            "file_id": file.id,
            "read_file_id": reader.id,
            "name": names.allocate(wanted),
            "host": source.host,
            "drive": source.name,
            "size": reader.size,
            "mtime_ns": reader.mtime_ns,
            "media_type": reader.media_type,
            "fingerprint": export.fingerprints.get(file.id, reader.fingerprint)
            if reader.id == file.id else reader.fingerprint,
        })  # fmt: skip
    plan["waiting_for"] = sorted(waiting)
    return plan


def _online_copy(session, principal: Principal, file: File) -> File | None:
    """An identical file (equal checksum) on an online drive the user may see."""
    if not file.checksum:
        return None
    row = session.execute(
        visible_files(principal)
        .where(
            File.checksum == file.checksum,
            File.id != file.id,
            File.presence == "present",
            Source.state == "online",
        )
        .order_by(File.id)
        .limit(1)
    ).first()
    return row[0] if row else None


@celery_app.task(name="exports.plan", acks_late=True, ignore_result=True)
def plan_export(export_id: str) -> None:
    with session_scope("catalog") as session:
        # Locked, so a plan running beside an assembly that just finished
        # sees the finished status instead of writing "running" over it.
        export = session.get(Export, export_id, with_for_update=True)
        if export is None or export.status in FINISHED:
            return
        if export.cancel_requested:
            export.status = "cancelled"
            export.finished_at = utcnow()
            return
        if export.status == "running":
            # Another plan (queued twice, or redelivered) already dispatched
            # it, and its assembly reports progress. resume_exports sets a
            # stalled one back to "queued" before it plans again.
            log.info("export_already_planned", export_id=export_id)
            return
        plan = build_plan(session, export)
        export.manifest = plan
        export.files_total = len(plan["entries"])
        export.bytes_total = sum(e["size"] for e in plan["entries"])
        export.files_done = export.bytes_done = 0
        if plan["waiting_for"]:
            export.status = "waiting"
            export.waiting_for = plan["waiting_for"]
            log.info("export_waiting", export_id=export_id, drives=plan["waiting_for"])
            return
        export.status = "running"
        export.waiting_for = []
        export.heartbeat_at = utcnow()
        export.started_at = export.started_at or utcnow()
    _dispatch(export_id, plan)


def _dispatch(export_id: str, plan: dict) -> None:
    by_host: dict[str, int] = defaultdict(int)
    for entry in plan["entries"]:
        by_host[entry["host"]] += entry["size"] + 1
    if not by_host:
        assemble_export.apply_async(args=[export_id, None], queue=QUEUE_EXPORTS)
        return
    assembler = max(sorted(by_host), key=lambda host: by_host[host])
    remote = sorted(host for host in by_host if host != assembler)
    for host in remote:
        stage_export.apply_async(args=[export_id, host, assembler], queue=drive_queue(host))
    if not remote:
        assemble_export.apply_async(args=[export_id, assembler], queue=drive_queue(assembler))


# -- reading originals --------------------------------------------------------------


def open_drive_file(file_id: str, expected_fingerprint: str, size: int) -> DriveFileReader:
    """Open a file on its drive and check it is still the planned one.

    Raises DriveGone when the drive is offline or unreadable, and
    EntryChanged when the file's size or fingerprint differ. Returns a
    reader of its bytes that raises EntryChanged if the file changes while
    it is read.
    """
    with session_scope("catalog") as session:
        file = session.get(File, file_id)
        source = session.get(Source, file.source_id)
        root, path_bytes, drive, state = source.mount_path, file.path_bytes, source.name, source.state
    if state != "online":
        raise DriveGone(drive)
    try:
        fd = open_relative(root, path_bytes)
    except FileNotFoundError:
        raise EntryChanged("the file is no longer on the drive at its catalogued path") from None
    except OSError as error:
        raise DriveGone(drive) from error
    try:
        st = os.fstat(fd)
        fingerprint, _ = fingerprint_fd(fd, st.st_size)
    except OSError as error:
        os.close(fd)
        raise DriveGone(drive) from error
    if st.st_size != size or fingerprint != expected_fingerprint:
        os.close(fd)
        raise EntryChanged("its bytes changed on the drive since the export was requested")
    return DriveFileReader(fd, st, size, drive)


class DriveFileReader:
    """The first ``size`` bytes of an open drive file, read once in order.

    ``readinto`` fills buffers owned by the caller, and iterating yields new
    ``bytes`` chunks for callers that keep each one. Use one or the other.
    Both raise DriveGone when a read fails, and EntryChanged at the end when
    the file's size or modification time differ from ``st``. The file
    descriptor is closed at the end, on any error, or by ``close``.
    """

    def __init__(self, fd: int, st: os.stat_result, size: int, drive: str):
        self._fd: int | None = fd
        self._st = st
        self._size = size
        self._drive = drive
        self._offset = 0

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Read the next bytes into ``buffer`` and return their count, 0 at the end."""
        if self._fd is None:
            return 0
        wanted = min(len(buffer), self._size - self._offset)
        count = 0
        if wanted > 0:
            try:
                count = os.preadv(self._fd, [memoryview(buffer)[:wanted]], self._offset)
            except OSError as error:
                self.close()
                raise DriveGone(self._drive) from error
        if count == 0:
            self._finish()
        self._offset += count
        return count

    def __iter__(self) -> Iterator[bytes]:
        try:
            while self._fd is not None and self._offset < self._size:
                try:
                    chunk = os.pread(self._fd, min(CHUNK, self._size - self._offset), self._offset)
                except OSError as error:
                    raise DriveGone(self._drive) from error
                if not chunk:
                    break
                self._offset += len(chunk)
                yield chunk
            if self._fd is not None:
                self._finish()
        finally:
            self.close()

    def _finish(self) -> None:
        """Close the file, raising EntryChanged if it changed since it was opened."""
        try:
            after = os.fstat(self._fd)
        except OSError as error:
            raise DriveGone(self._drive) from error
        finally:
            self.close()
        if after.st_size != self._st.st_size or after.st_mtime_ns != self._st.st_mtime_ns:
            raise EntryChanged("the file changed while it was being read")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def copy_to_store(reader: DriveFileReader, out: BinaryIO) -> None:
    """Copy all of ``reader`` into ``out`` through one reused buffer."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    try:
        while count := reader.readinto(buffer):
            out.write(view[:count])
    finally:
        reader.close()


@celery_app.task(name="exports.stage", acks_late=True, ignore_result=True)
def stage_export(export_id: str, host: str, assembler: str) -> None:
    """Copy this host's files of an export into the object store."""
    with session_scope("catalog") as session:
        export = session.get(Export, export_id)
        if export is None or export.status != "running":
            return
        entries = [e for e in export.manifest["entries"] if e["host"] == host]
    store = get_store()
    for entry in entries:
        key = staged_key(export_id, entry["read_file_id"])
        if store.exists(key):
            continue
        try:
            reader = open_drive_file(entry["read_file_id"], entry["fingerprint"], entry["size"])
            with store.writer(key, "application/octet-stream") as out:
                copy_to_store(reader, out)
        except DriveGone as gone:
            _back_to_waiting(export_id, gone.drive)
            return
        except EntryChanged as error:
            # Recorded by the assembler, which finds no staged copy.
            log.warning("export_file_changed", export_id=export_id, file_id=entry["file_id"], reason=str(error))
    assemble_export.apply_async(args=[export_id, assembler], queue=drive_queue(assembler))


def _back_to_waiting(export_id: str, drive: str) -> None:
    log.warning("export_drive_gone", export_id=export_id, drive=drive)
    _update(export_id, status="waiting", waiting_for=[drive], heartbeat_at=utcnow())


# -- assembling ---------------------------------------------------------------------


@celery_app.task(name="exports.assemble", acks_late=True, ignore_result=True)
def assemble_export(export_id: str, host: str | None) -> None:
    with session_scope("catalog") as session:
        export = session.get(Export, export_id)
        if export is None or export.status != "running":
            return
        plan = export.manifest
        name = export.name
    store = get_store()
    changed: list[dict] = []

    def open_entry(entry):
        def start() -> Iterator[bytes]:
            if entry["host"] != host:
                try:
                    return store.iter_chunks(staged_key(export_id, entry["read_file_id"]))
                except ObjectNotFound:
                    raise EntryChanged(
                        "its bytes changed on the drive since the export was requested"
                    ) from None
            return open_drive_file(entry["read_file_id"], entry["fingerprint"], entry["size"])

        return start

    planned = {}
    entries = []
    for entry in plan["entries"]:
        archive_entry = ArchiveEntry(
            entry["name"], entry["size"], entry["mtime_ns"], entry["media_type"],
            open_entry(entry),
        )  # fmt: skip
        planned[id(archive_entry)] = entry
        entries.append(archive_entry)

    def skip(archive_entry, reason):
        entry = planned[id(archive_entry)]
        changed.append(
            {"file_id": entry["file_id"], "drive": entry["drive"], "name": entry["name"],
             "reason": reason}
        )  # fmt: skip

    def progress(files_done, bytes_done):
        _update(export_id, files_done=files_done, bytes_done=bytes_done, heartbeat_at=utcnow())

    def cancelled():
        with session_scope("catalog") as session:
            return bool(session.scalar(select(Export.cancel_requested).where(Export.id == export_id)))

    def manifest_files():
        report = {
            "skipped": plan["skipped"] + changed,
            "substituted": plan["substituted"],
        }
        if not report["skipped"] and not report["substituted"]:
            return {}
        return {"MANIFEST.json": json.dumps(report, indent=2, ensure_ascii=False).encode()}

    key = f"exports/{export_id}/{name}.zip"
    # A killed earlier attempt may have left its unfinished upload; a writer
    # still alive keeps its file fresh, so only stale ones are removed.
    store.discard_partial_uploads(f"exports/{export_id}", stale_after())
    try:
        with store.writer(key, "application/zip") as out:
            written = write_zip(out, entries, manifest_files, progress, cancelled, skip)
    except DriveGone as gone:
        _back_to_waiting(export_id, gone.drive)
        return
    except Cancelled:
        _update(export_id, status="cancelled", finished_at=utcnow())
        _cleanup_staged(export_id, plan)
        return
    except EntryChanged as error:
        # A file changed while being read. Plan again from the start: the
        # next pass finds the file unlike the requested one and skips it.
        log.warning("export_restarted", export_id=export_id, reason=str(error))
        _update(export_id, status="queued")
        plan_export.apply_async(args=[export_id], queue=QUEUE_EXPORTS)
        return
    size = store.size(key)
    manifest = {**plan, "skipped": plan["skipped"] + changed}
    _update(
        export_id,
        status="succeeded",
        archive_key=key,
        archive_size=size,
        manifest=manifest,
        finished_at=utcnow(),
        expires_at=utcnow() + timedelta(hours=get_settings().export_retention_hours),
        files_done=written,
    )
    _cleanup_staged(export_id, plan)
    # The archive is published. Any other unfinished upload under the export
    # belongs to an attempt that died after its last write, which may have
    # been too recent for the check before the write to count it as stale.
    store.discard_partial_uploads(f"exports/{export_id}", timedelta(0))
    log.info("export_succeeded", export_id=export_id, files=len(entries), bytes=size)


def _cleanup_staged(export_id: str, plan: dict) -> None:
    store = get_store()
    for entry in plan["entries"]:
        store.delete(staged_key(export_id, entry["read_file_id"]))


# -- upkeep -------------------------------------------------------------------------


@celery_app.task(name="exports.resume", ignore_result=True)
def resume_exports() -> int:
    """Plan again exports waiting for drives, and running ones that stalled."""
    cutoff = utcnow() - stale_after()
    with session_scope("catalog") as session:
        ids = session.scalars(
            select(Export.id).where(
                or_(
                    Export.status.in_(("waiting", "queued")),
                    (Export.status == "running") & (Export.heartbeat_at < cutoff),
                )
            )
        ).all()
        for export_id in ids:
            session.execute(
                update(Export).where(Export.id == export_id, Export.status == "running")
                .values(status="queued")
            )  # fmt: skip
    for export_id in ids:
        plan_export.apply_async(args=[export_id], queue=QUEUE_EXPORTS)
    return len(ids)


@celery_app.task(name="exports.expire", ignore_result=True)
def expire_exports() -> int:
    """Delete archives past their retention period."""
    now = utcnow()
    with session_scope("catalog") as session:
        rows = session.scalars(
            select(Export).where(Export.status == "succeeded", Export.expires_at < now)
        ).all()
        for export in rows:
            if export.archive_key:
                get_store().delete(export.archive_key)
            get_store().discard_partial_uploads(f"exports/{export.id}", timedelta(0))
            export.status = "expired"
    return len(rows)


def original_key(file_id: str, fingerprint: str) -> str:
    return f"originals/{file_id}/{fingerprint}"


@celery_app.task(name="exports.stage_original", acks_late=True, ignore_result=True)
def stage_original(file_id: str, fingerprint: str, size: int) -> None:
    """Copy one original into the object store for a service on another host."""
    store = get_store()
    key = original_key(file_id, fingerprint)
    if store.exists(key):
        return
    try:
        reader = open_drive_file(file_id, fingerprint, size)
        with store.writer(key, "application/octet-stream") as out:
            copy_to_store(reader, out)
    except (DriveGone, EntryChanged) as error:
        log.warning("original_not_staged", file_id=file_id, reason=str(error))
