"""Reconcile a walk of a drive with the catalog.

The walk writes one staging row per path it sees. Nothing in ``files``
changes until the walk has finished: then one transaction pairs moves by
fingerprint, applies changes, inserts new files and marks missing the files
whose paths were not seen. An interrupted scan therefore changes nothing,
and a later scan redoes the walk.

The first scan of a drive (no files catalogued yet) has nothing to pair or
mark missing, so it writes files directly. If it is interrupted, the files
it wrote stay and the next scan treats them like any catalogued file.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sqlalchemy import Connection, bindparam, delete, select, text, update

from core.db import get_engine, utcnow
from core.logs import get_logger
from services.catalog.models import File, Folder, Scan, ScanEntry, ScanIssue, Source
from workers.media.detect import kind_of
from workers.scan.staging import bulk_insert
from workers.scan.volume import read_volume_id
from workers.scan.walker import (
    Listing,
    WalkProblem,
    display_path,
    fingerprint_entry,
    path_hash,
    walk,
)

log = get_logger(__name__)

FULL_COLUMNS = [
    "scan_id", "is_dir", "path_hash", "status", "file_id", "path", "path_bytes",
    "folder", "folder_hash", "name", "name_lower", "extension", "kind", "size",
    "mtime_ns", "ctime_ns", "inode", "fingerprint", "media_type", "error",
]  # fmt: skip
SHORT_COLUMNS = ["scan_id", "is_dir", "path_hash", "status", "file_id"]
FILE_COLUMNS = [
    "id", "org_id", "source_id", "path", "path_bytes", "path_hash", "folder",
    "folder_hash", "name", "name_lower", "extension", "size", "mtime_ns",
    "ctime_ns", "inode", "fingerprint", "media_type", "kind", "presence",
    "first_seen_at", "updated_at", "content_version", "rendition_state", "error",
]  # fmt: skip
VISUAL_KINDS = ("image", "video", "document")
ROOT_FOLDER_HASH = path_hash(b"")
HEARTBEAT_SECONDS = 2.0
MAX_ISSUES = 10_000


class ScanInterrupted(Exception):
    """The walk could not finish; the catalog was left unchanged."""


@dataclass
class ScanCounts:
    files: int = 0
    folders: int = 0
    bytes: int = 0
    new: int = 0
    unchanged: int = 0
    touched: int = 0
    changed: int = 0
    moved: int = 0
    restored: int = 0
    missing: int = 0
    unverified: int = 0
    errors: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ScanResult:
    counts: ScanCounts
    changed_ids: list = field(default_factory=list)


def _split(path_bytes: bytes) -> tuple[bytes, bytes]:
    folder, _, name = path_bytes.rpartition(b"/")
    return folder, name


def _extension(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > 20:
        return ""
    return ext.lower()


@dataclass
class _Rows:
    full: list = field(default_factory=list)
    short: list = field(default_factory=list)
    files: list = field(default_factory=list)


def folder_signature(files: list) -> str:
    """Digest of a folder's file names and stat fields, in name order."""
    digest = hashlib.blake2b(digest_size=16)
    for entry in sorted(files, key=lambda e: e.path_bytes):
        digest.update(entry.path_bytes)
        digest.update(b"\0%d %d %d %d\n" % (entry.size, entry.mtime_ns, entry.ctime_ns, entry.inode))
    return digest.hexdigest()


class Scanner:
    """One run of one scan. Use ``run()``; it raises ``ScanInterrupted``."""

    def __init__(
        self,
        scan_id: str,
        source: Source,
        root: str,
        batch_size: int = 2000,
        on_batch: Callable[[ScanCounts], None] | None = None,
    ):
        self.scan_id = scan_id
        self.source = source
        self.root = root
        self.batch_size = batch_size
        self.on_batch = on_batch
        self.engine = get_engine("catalog")
        self.counts = ScanCounts()
        self.problems: list[WalkProblem] = []
        self.first_scan_new = 0
        # Unreadable files of a first scan, which writes no staging rows.
        self.file_errors: list[tuple[str, bytes, str]] = []
        self._last_heartbeat = -math.inf

    # -- walk -----------------------------------------------------------------

    def run(self) -> ScanCounts:
        self._check_identity()
        with self.engine.begin() as conn:
            conn.execute(delete(ScanEntry).where(ScanEntry.scan_id == self.scan_id))
            self.first_scan = (
                conn.scalar(select(File.id).where(File.source_id == self.source.id).limit(1))
                is None
            )
        self.now = utcnow()
        pending: list[Listing] = []
        pending_files = 0
        try:
            for listing in walk(self.root, self.problems, self.batch_size):
                pending.append(listing)
                pending_files += len(listing.files) + len(listing.dirs)
                if pending_files >= self.batch_size or len(pending) >= 200:
                    self._stage(pending)
                    pending, pending_files = [], 0
            self._stage(pending)
            pending = []
        except OSError as error:
            raise ScanInterrupted(f"the drive could not be read: {error}") from error
        finally:
            for listing in pending:
                listing.close()
        # A drive pulled during the walk leaves folders that failed to list;
        # only a drive that still carries its identity counts as walked.
        self._check_identity()
        self._check_still_online()
        self._finalize()
        return self.counts

    def _check_identity(self) -> None:
        if not os.path.isdir(self.root):
            raise ScanInterrupted(f"the drive is not mounted at {self.root}")
        found = read_volume_id(self.root)
        if found is None:
            raise ScanInterrupted(
                f"{self.root} does not hold the drive's volume marker; "
                "the drive is not mounted there (an empty mount point?)"
            )
        if found != self.source.volume_id:
            raise ScanInterrupted(
                f"{self.root} now holds a different drive (volume {found})"
            )

    def _check_still_online(self) -> None:
        with self.engine.begin() as conn:
            state = conn.scalar(select(Source.state).where(Source.id == self.source.id))
            conn.execute(
                update(Scan)
                .where(Scan.id == self.scan_id)
                .values(heartbeat_at=utcnow(), counts=self.counts.as_dict())
            )
        if state != "online":
            raise ScanInterrupted("the drive was disconnected during the scan")

    def _stage(self, listings: list[Listing]) -> None:
        try:
            with self.engine.begin() as conn:
                rows = self._classify(conn, listings)
                bulk_insert(conn, ScanEntry.__table__, FULL_COLUMNS, rows.full)
                bulk_insert(conn, ScanEntry.__table__, SHORT_COLUMNS, rows.short)
                bulk_insert(conn, File.__table__, FILE_COLUMNS, rows.files)
        finally:
            for listing in listings:
                listing.close()
        now = time.monotonic()
        if now - self._last_heartbeat >= HEARTBEAT_SECONDS:
            self._last_heartbeat = now
            self._check_still_online()
        if self.on_batch is not None:
            self.on_batch(self.counts)

    def _stored_signatures(self, conn: Connection, folder_hashes: list) -> dict:
        if self.first_scan or not folder_hashes:
            return {}
        rows = conn.execute(
            select(Folder.path_hash, Folder.signature).where(
                Folder.source_id == self.source.id, Folder.path_hash.in_(folder_hashes)
            )
        )
        return {row.path_hash: row.signature for row in rows}

    def _existing(self, conn: Connection, folder_hashes: list, path_hashes: list) -> dict:
        """Catalogued files of whole folders, plus single paths of chunked ones."""
        if self.first_scan or not (folder_hashes or path_hashes):
            return {}
        columns = (
            File.path_hash, File.id, File.size, File.mtime_ns, File.ctime_ns,
            File.inode, File.fingerprint, File.presence, File.folder_hash,
        )  # fmt: skip
        found = {}
        if folder_hashes:
            query = select(*columns).where(
                File.source_id == self.source.id, File.folder_hash.in_(folder_hashes)
            )
            found.update((row.path_hash, row) for row in conn.execute(query))
        if path_hashes:
            query = select(*columns).where(
                File.source_id == self.source.id, File.path_hash.in_(path_hashes)
            )
            found.update((row.path_hash, row) for row in conn.execute(query))
        return found

    def _classify(self, conn: Connection, listings: list[Listing]) -> "_Rows":
        rows = _Rows()
        scan_id = self.scan_id
        counts = self.counts

        # A folder listed whole whose signature matches the stored one has
        # not changed: none of its files is looked up or read.
        signatures = {}
        for listing in listings:
            if listing.complete:
                signatures[id(listing)] = folder_signature(listing.files)
        whole_hashes = [
            path_hash(l.prefix.rstrip(b"/")) for l in listings if l.complete
        ]
        stored = self._stored_signatures(conn, whole_hashes)
        changed_whole, chunked_paths = [], []
        for listing in listings:
            folder_hash = path_hash(listing.prefix.rstrip(b"/"))
            if not listing.complete:
                chunked_paths.extend(path_hash(e.path_bytes) for e in listing.files)
            elif stored.get(folder_hash) != signatures[id(listing)]:
                changed_whole.append(folder_hash)
        existing = self._existing(conn, changed_whole, chunked_paths)
        changed_set = set(changed_whole)
        by_folder: dict[str, list] = {}
        for known in existing.values():
            by_folder.setdefault(known.folder_hash, []).append(known)

        for listing in listings:
            folder_bytes = listing.prefix.rstrip(b"/")
            folder = display_path(folder_bytes)
            folder_hash = path_hash(folder_bytes)
            for entry in listing.dirs:
                counts.folders += 1
                name = display_path(_split(entry.path_bytes)[1])
                rows.full.append((
                    scan_id, True, path_hash(entry.path_bytes), "dir", None,
                    display_path(entry.path_bytes), entry.path_bytes, folder,
                    folder_hash, name, name.lower(), "", None, 0, entry.mtime_ns,
                    0, 0, None, None, None,
                ))  # fmt: skip
            counts.files += len(listing.files)
            counts.bytes += sum(e.size for e in listing.files)
            if listing.complete and folder_hash not in changed_set and not self.first_scan:
                counts.unchanged += len(listing.files)
                rows.full.append(self._folder_row(
                    "folder_unchanged", folder_bytes, signatures[id(listing)]
                ))  # fmt: skip
                continue
            errors_before = counts.errors
            seen = set()
            for entry in listing.files:
                phash = path_hash(entry.path_bytes)
                seen.add(phash)
                self._classify_file(rows, entry, listing, phash, folder, folder_hash,
                                    existing.get(phash))  # fmt: skip
            if listing.complete:
                # Catalogued files of this folder that the walk did not see.
                for known in by_folder.get(folder_hash, ()):
                    if known.path_hash not in seen:
                        rows.short.append(
                            (scan_id, False, known.path_hash, "vanished", known.id)
                        )
                signature = signatures[id(listing)]
                if counts.errors != errors_before:
                    signature = None  # look again next time
                rows.full.append(self._folder_row("folder_seen", folder_bytes, signature))
        return rows

    def _folder_row(self, status: str, folder_bytes: bytes, signature: str | None):
        # The folder's signature travels in the fingerprint column.
        return (
            self.scan_id, True, path_hash(folder_bytes), status, None, None, None,
            None, None, None, None, None, None, None, None, None, None, signature,
            None, None,
        )  # fmt: skip

    def _classify_file(self, rows, entry, listing, phash, folder, folder_hash, known):
        scan_id = self.scan_id
        counts = self.counts
        if (
            known is not None
            and known.presence == "present"
            and known.size == entry.size
            and known.mtime_ns == entry.mtime_ns
            and known.ctime_ns == entry.ctime_ns
            and known.inode == entry.inode
        ):
            counts.unchanged += 1
            if not listing.complete:
                rows.short.append((scan_id, False, phash, "unchanged", known.id))
            return
        error = None
        try:
            fingerprint, media_type = fingerprint_entry(entry, listing.dir_fd)
        except OSError as exc:
            counts.errors += 1
            fingerprint, media_type = "", "application/octet-stream"
            error = f"cannot read the file: {exc.strerror or exc}"
        if known is None:
            status, file_id = "new", uuid.uuid4().hex
        elif error is not None:
            status, file_id = "unreadable", known.id
        elif known.fingerprint != fingerprint:
            status, file_id = "changed", known.id
        elif known.presence == "missing":
            status, file_id = "restored", known.id
        else:
            status, file_id = "touched", known.id
        name = display_path(_split(entry.path_bytes)[1])
        kind = kind_of(media_type)
        if self.first_scan:
            now = self.now
            rows.files.append((
                file_id, self.source.org_id, self.source.id,
                display_path(entry.path_bytes), entry.path_bytes, phash, folder,
                folder_hash, name, name.lower(), _extension(name), entry.size,
                entry.mtime_ns, entry.ctime_ns, entry.inode, fingerprint, media_type,
                kind, "present", now, now, 1,
                "pending" if kind in VISUAL_KINDS else "none", error,
            ))  # fmt: skip
            self.first_scan_new += 1
            if not listing.complete:
                rows.short.append((scan_id, False, phash, "inserted", file_id))
            if error is not None and len(self.file_errors) < MAX_ISSUES:
                self.file_errors.append((file_id, entry.path_bytes, error))
            return
        rows.full.append((
            scan_id, False, phash, status, file_id,
            display_path(entry.path_bytes), entry.path_bytes, folder,
            folder_hash, name, name.lower(), _extension(name),
            kind, entry.size, entry.mtime_ns, entry.ctime_ns,
            entry.inode, fingerprint, media_type, error,
        ))  # fmt: skip

    # -- finalize -------------------------------------------------------------

    def _finalize(self) -> None:
        params = {
            "scan": self.scan_id,
            "source": self.source.id,
            "org": self.source.org_id,
            "now": utcnow(),
        }
        with self.engine.begin() as conn:
            conn.execute(update(Scan).where(Scan.id == self.scan_id).values(status="finalizing"))
            self._protect_unreadable(conn)
            self._record_problems(conn)
            self._pair_moves(conn, params)
            self._apply_updates(conn, params)
            if not self.first_scan:
                self._insert_new(conn, params)
            self._mark_missing(conn, params)
            self._rebuild_folders(conn, params)
            self._count(conn, params)
            conn.execute(
                update(Scan)
                .where(Scan.id == self.scan_id)
                .values(
                    status="succeeded",
                    complete=True,
                    finished_at=params["now"],
                    heartbeat_at=params["now"],
                    counts=self.counts.as_dict(),
                    message=None,
                )
            )
            conn.execute(
                update(Source)
                .where(Source.id == self.source.id)
                .values(last_complete_scan_at=params["now"])
            )
            from services.catalog.events import publish_file_changes

            publish_file_changes(conn, self.scan_id, self.source)

    def _protect_unreadable(self, conn: Connection) -> None:
        """Keep files under folders the walk could not read from going missing."""
        prefixes = tuple(
            problem.path_bytes + b"/" if problem.path_bytes else b""
            for problem in self.problems
            if problem.kind == "unreadable_folder"
        )
        if not prefixes:
            return
        rows = conn.execute(
            select(File.id, File.path_hash, File.path_bytes).where(
                File.source_id == self.source.id
            )
        )
        protected = []
        for row in rows:
            if row.path_bytes.startswith(prefixes):
                protected.append((self.scan_id, False, row.path_hash, "unverified", row.id))
        self.counts.unverified += len(protected)
        bulk_insert(conn, ScanEntry.__table__, SHORT_COLUMNS, protected)

    def _record_problems(self, conn: Connection) -> None:
        issues = [
            {
                "scan_id": self.scan_id,
                "file_id": None,
                "path": display_path(problem.path_bytes) or "/",
                "kind": problem.kind,
                "message": problem.message,
            }
            for problem in self.problems
        ]
        rows = conn.execute(
            select(ScanEntry.file_id, ScanEntry.path, ScanEntry.error).where(
                ScanEntry.scan_id == self.scan_id, ScanEntry.error.is_not(None)
            )
        )
        errors = [(row.file_id, row.path, row.error) for row in rows]
        errors += [(fid, display_path(p), e) for fid, p, e in self.file_errors]
        for file_id, path, message in errors[:MAX_ISSUES]:
            issues.append(
                {
                    "scan_id": self.scan_id,
                    "file_id": file_id,
                    "path": path,
                    "kind": "unreadable_file",
                    "message": message,
                }
            )
        if issues:
            conn.execute(ScanIssue.__table__.insert(), issues)

    def _pair_moves(self, conn: Connection, params: dict) -> None:
        # Vanished files (including ones already missing) and new paths with
        # the same fingerprint are paired in path order, so duplicates moved
        # together always pair the same way.
        conn.execute(
            text(
                """
                UPDATE scan_entries SET status = 'moved', file_id = pairs.file_id
                FROM (
                    SELECT arrived.entry_id, vanished.file_id
                    FROM (
                        SELECT e.id AS entry_id, e.fingerprint,
                               row_number() OVER (
                                   PARTITION BY e.fingerprint ORDER BY e.path_bytes
                               ) AS rn
                        FROM scan_entries e
                        WHERE e.scan_id = :scan AND e.status = 'new'
                          AND e.fingerprint <> ''
                    ) AS arrived
                    JOIN (
                        SELECT f.id AS file_id, f.fingerprint,
                               row_number() OVER (
                                   PARTITION BY f.fingerprint
                                   ORDER BY CASE WHEN f.presence = 'present'
                                            THEN 0 ELSE 1 END, f.path_bytes
                               ) AS rn
                        FROM files f
                        WHERE f.source_id = :source AND f.fingerprint <> ''
                          AND """ + vanished_condition("f") + """
                    ) AS vanished
                    ON vanished.fingerprint = arrived.fingerprint
                       AND vanished.rn = arrived.rn
                ) AS pairs
                WHERE scan_entries.id = pairs.entry_id
                """
            ),
            params,
        )

    def _apply_updates(self, conn: Connection, params: dict) -> None:
        moved = "SELECT file_id FROM scan_entries WHERE scan_id = :scan AND status = 'moved'"
        # Free the moved files' path hashes first: a rotation of paths would
        # otherwise break the (source, path_hash) unique constraint.
        conn.execute(
            text(
                f"UPDATE files SET path_hash = '~' || substr(id, 1, 31) "
                f"WHERE id IN ({moved})"
            ),
            params,
        )
        stat_columns = (
            "size = e.size, mtime_ns = e.mtime_ns, ctime_ns = e.ctime_ns, "
            "inode = e.inode, presence = 'present', missing_since = NULL, "
            "updated_at = :now"
        )
        path_columns = (
            "path = e.path, path_bytes = e.path_bytes, path_hash = e.path_hash, "
            "folder = e.folder, folder_hash = e.folder_hash, name = e.name, "
            "name_lower = e.name_lower, extension = e.extension"
        )
        content_columns = (
            "fingerprint = e.fingerprint, media_type = e.media_type, kind = e.kind, "
            "checksum = NULL, content_version = files.content_version + 1, "
            "rendition_state = CASE WHEN e.kind IN ('image', 'video', 'document') "
            "THEN 'pending' ELSE 'none' END, media_info = NULL, "
            "thumbnail_key = NULL, preview_key = NULL, error = e.error"
        )
        statements = [
            ("moved", f"{stat_columns}, {path_columns}"),
            ("touched", stat_columns),
            ("restored", stat_columns),
            ("changed", f"{stat_columns}, {content_columns}"),
            ("unreadable", "error = e.error, updated_at = :now"),
        ]
        for status, assignments in statements:
            conn.execute(
                text(
                    f"UPDATE files SET {assignments} FROM scan_entries e "
                    f"WHERE e.scan_id = :scan AND e.status = '{status}' "
                    "AND files.id = e.file_id"
                ),
                params,
            )

    def _insert_new(self, conn: Connection, params: dict) -> None:
        conn.execute(
            text(
                """
                INSERT INTO files (
                    id, org_id, source_id, path, path_bytes, path_hash, folder,
                    folder_hash, name, name_lower, extension, size, mtime_ns,
                    ctime_ns, inode, fingerprint, media_type, kind, presence,
                    first_seen_at, updated_at, content_version, rendition_state,
                    error
                )
                SELECT e.file_id, :org, :source, e.path, e.path_bytes, e.path_hash,
                       e.folder, e.folder_hash, e.name, e.name_lower, e.extension,
                       e.size, e.mtime_ns, e.ctime_ns, e.inode, e.fingerprint,
                       e.media_type, e.kind, 'present', :now, :now, 1,
                       CASE WHEN e.kind IN ('image', 'video', 'document')
                            THEN 'pending' ELSE 'none' END,
                       e.error
                FROM scan_entries e
                WHERE e.scan_id = :scan AND e.status = 'new'
                """
            ),
            params,
        )

    def _mark_missing(self, conn: Connection, params: dict) -> None:
        vanished = (
            "files.source_id = :source AND files.presence = 'present' AND "
            + vanished_condition("files")
        )
        # Record which files go missing, for the change events.
        conn.execute(
            text(
                "INSERT INTO scan_entries (scan_id, is_dir, path_hash, status, file_id) "
                f"SELECT CAST(:scan AS VARCHAR(32)), false, files.path_hash, 'missing', files.id "
                f"FROM files WHERE {vanished}"
            ),
            params,
        )
        conn.execute(
            text(
                "UPDATE files SET presence = 'missing', missing_since = :now, "
                "updated_at = :now WHERE files.source_id = :source AND id IN ("
                "SELECT file_id FROM scan_entries WHERE scan_id = :scan "
                "AND status = 'missing')"
            ),
            params,
        )

    def _rebuild_folders(self, conn: Connection, params: dict) -> None:
        conn.execute(text("DELETE FROM folders WHERE source_id = :source"), params)
        conn.execute(
            text(
                "INSERT INTO folders (source_id, path, path_hash, parent_hash, name) "
                "SELECT :source, e.path, e.path_hash, e.folder_hash, e.name "
                "FROM scan_entries e WHERE e.scan_id = :scan AND e.status = 'dir'"
            ),
            params,
        )
        conn.execute(
            text(
                "INSERT INTO folders (source_id, path, path_hash, parent_hash, name) "
                "VALUES (:source, '', :root, NULL, '')"
            ),
            {**params, "root": ROOT_FOLDER_HASH},
        )
        # Signatures of the folders listed whole; the next scan skips any
        # folder whose signature is unchanged.
        conn.execute(
            text(
                "UPDATE folders SET signature = e.fingerprint FROM scan_entries e "
                "WHERE e.scan_id = :scan AND e.status IN ('folder_seen', "
                "'folder_unchanged') AND folders.source_id = :source "
                "AND folders.path_hash = e.path_hash"
            ),
            params,
        )

    def _count(self, conn: Connection, params: dict) -> None:
        rows = conn.execute(
            text(
                "SELECT status, count(*) AS n FROM scan_entries "
                "WHERE scan_id = :scan GROUP BY status"
            ),
            params,
        )
        by_status = {row.status: row.n for row in rows}
        self.counts.new = by_status.get("new", 0) + self.first_scan_new
        self.counts.moved = by_status.get("moved", 0)
        self.counts.touched = by_status.get("touched", 0)
        self.counts.changed = by_status.get("changed", 0)
        self.counts.restored = by_status.get("restored", 0)
        self.counts.missing = by_status.get("missing", 0)


def vanished_condition(alias: str) -> str:
    """SQL condition: the walk did not see the file ``alias`` at its path.

    A file is gone when its folder was listed whole and the file was not in
    it (a 'vanished' row), or when its folder was not listed whole and no
    staging row names its path (the folder is gone, was listed in chunks, or
    could not be read, in which case 'unverified' rows protect its files).
    """
    return f"""(
        EXISTS (SELECT 1 FROM scan_entries v WHERE v.scan_id = :scan
                AND v.status = 'vanished' AND v.path_hash = {alias}.path_hash)
        OR (NOT EXISTS (SELECT 1 FROM scan_entries d WHERE d.scan_id = :scan
                        AND d.status IN ('folder_seen', 'folder_unchanged')
                        AND d.path_hash = {alias}.folder_hash)
            AND NOT EXISTS (SELECT 1 FROM scan_entries s WHERE s.scan_id = :scan
                            AND s.is_dir = false
                            AND s.path_hash = {alias}.path_hash))
    )"""


def discard_staging(scan_id: str) -> None:
    with get_engine("catalog").begin() as conn:
        conn.execute(delete(ScanEntry).where(ScanEntry.scan_id == scan_id))
