"""Reconcile a walk of a drive with the catalog.

The walk writes staging rows: one per folder, and one per file that is new,
changed or gone. A folder whose signature (its file names and stat fields)
matches the one stored by the previous scan is unchanged, and its files get
no rows and are not read. Nothing in ``files`` changes until the walk has
finished: then one transaction pairs moves by fingerprint, applies changes,
inserts new files and marks missing the files whose paths were not seen. An
interrupted scan therefore changes nothing, and a later scan redoes the walk.
A rescan that finds every folder unchanged and none added or gone writes no
staging rows, and only marks itself done.

The first scan of a drive (no files catalogued yet) has nothing to pair or
mark missing, so it writes files directly and commits them every
``commit_seconds``. If it is interrupted, the files it committed stay and
the next scan treats them like any catalogued file.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import math
import operator
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from sqlalchemy import Connection, bindparam, delete, func, select, text, update

from core.db import get_engine, new_id, utcnow
from core.logs import get_logger
from services.catalog.models import File, Folder, Scan, ScanEntry, ScanIssue, Source
from workers.scan.staging import RowFormat, bulk_insert, copy_line, copy_rows, needs_escape
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
# Columns of the catalogued files a rescan compares with the walk, in the
# order of the tuples ``_existing`` returns. The first five are compared
# with a walked file's stat fields and with "present".
KNOWN_COLUMNS = (
    "size", "mtime_ns", "ctime_ns", "inode", "presence", "path_bytes",
    "path_hash", "id", "fingerprint", "folder_hash",
)  # fmt: skip
(
    KNOWN_PRESENCE, KNOWN_PATH_BYTES, KNOWN_PATH_HASH, KNOWN_ID, KNOWN_FINGERPRINT,
    KNOWN_FOLDER_HASH,
) = range(4, 10)
# Kinds of file whose metadata the rendition task reads. Audio files get no
# renditions, but their duration and codec are read.
ANALYZED_KINDS = ("image", "video", "document", "audio")
# The rendition state of a new or changed file, from its staging row ``e``.
_RENDITION_STATE_SQL = "CASE WHEN e.kind IN ({}) THEN 'pending' ELSE 'none' END".format(
    ", ".join(f"'{kind}'" for kind in ANALYZED_KINDS)
)
ROOT_FOLDER_HASH = path_hash(b"")
HEARTBEAT_SECONDS = 2.0
MAX_ISSUES = 10_000
# Listings held before their folders are looked up in the catalog.
MAX_PENDING_LISTINGS = 200
# Above this many catalogued folders the stored signatures are looked up per
# batch instead of held in memory (about 200 bytes a folder, an estimate).
MAX_CACHED_SIGNATURES = 200_000
# Seconds a first scan sends files through one COPY before it commits them
# (the default of SCAN_COMMIT_SECONDS): about the most work an interrupted
# first scan loses.
FIRST_SCAN_COMMIT_SECONDS = 10.0
# Staging rows of unchanged folders held back before they are written.
MAX_UNCHANGED_ROWS = 50_000
# Unreadable folders whose files are protected by one statement.
PREFIXES_PER_STATEMENT = 50


class ScanInterrupted(Exception):
    """The walk could not finish; the catalog was left unchanged."""


class DriveAbsent(ScanInterrupted):
    """The drive is not at its mount path: the folder is gone, empty or another drive's."""


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


_size = operator.itemgetter(1)


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
    """Staging rows waiting to be written.

    ``unchanged`` has the rows of folders whose signature matched. They
    are written only once the scan finds a change (or there are more than
    MAX_UNCHANGED_ROWS of them): a rescan that finds nothing changed needs
    none of them.
    """

    full: list = field(default_factory=list)
    short: list = field(default_factory=list)
    unchanged: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.full) + len(self.short)


def file_row_format(now) -> RowFormat:
    """Return a COPY text formatter for rows of FILE_COLUMNS stamped with ``now``.

    A row with no error, stamped ``now`` and whose display path needs no
    escaping takes one string format. Any other row goes through
    ``copy_line``. The name, folder and extension are parts of the path, so
    only the path is checked.
    """
    constant = "\tpresent\t%s\t%s\t1\t" % (now.isoformat(), now.isoformat())

    def file_line(row: tuple) -> str:
        if (
            row[23] is not None
            or row[19] is not now
            or row[20] is not now
            or row[18] != "present"
            or row[21] != 1
            or needs_escape(row[3])
        ):
            return copy_line(row)
        return "%s\t%s\t%s\t%s\t\\\\x%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s%s%s\t\\N\n" % (
            row[0], row[1], row[2], row[3], row[4].hex(), row[5], row[6], row[7], row[8], row[9],
            row[10], row[11], row[12], row[13], row[14], row[15], row[16], row[17], constant, row[22],
        )  # fmt: skip

    return file_line


@contextlib.contextmanager
def _collector_skips_older_objects():
    """Keep the cyclic garbage collector off the objects that predate the scan.

    A scan makes hundreds of thousands of short-lived containers, and every
    full collection they trigger otherwise walks each object of the process
    as well: the loaded modules, the ORM's mappers and the web app. That was
    a third of an unchanged rescan. Objects made during the scan are still
    collected as usual.
    """
    if gc.get_freeze_count():
        # Frozen already, by the process or by a scan on another thread, so
        # unfreezing here would undo that.
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class _NewFiles:
    """The rows of a first scan's files, sent through one COPY across batches.

    Ending the COPY makes the walk wait until PostgreSQL has stored the last
    row and checked every row's foreign key, which it does at the end of the
    statement. So one COPY stays open for the scanner's ``commit_seconds``
    (``due()``). ``commit()`` ends it, writes the staging rows that wait with
    it, and commits, so an interrupted first scan keeps the files of every
    commit before it.
    """

    def __init__(self, scanner: "Scanner"):
        self.scanner = scanner
        # Rows sent since the last commit, and rows committed.
        self.count = 0
        self.committed = 0
        self._stack: contextlib.ExitStack | None = None
        self._copy = None
        self._write_row = None
        self._opened_at = 0.0

    def due(self) -> bool:
        """Return True when the open COPY has run for the scanner's ``commit_seconds``."""
        return (
            self._stack is not None
            and time.monotonic() - self._opened_at >= self.scanner.commit_seconds
        )

    def write(self, row: tuple) -> None:
        if self._stack is None:
            self._open()
        self._write_row(row)
        self.count += 1

    def _open(self) -> None:
        stack = contextlib.ExitStack()
        try:
            self._conn = stack.enter_context(self.scanner.engine.connect())
            stack.enter_context(self._conn.begin())
            self._copy = copy_rows(
                self._conn, File.__table__, FILE_COLUMNS, file_row_format(self.scanner.now)
            )
            self._write_row = self._copy.__enter__()
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        self._opened_at = time.monotonic()

    def _take(self):
        """Return the open COPY's stack and context, and forget them."""
        stack, copy = self._stack, self._copy
        self._stack = self._copy = self._write_row = None
        self.count = 0
        return stack, copy

    def commit(self) -> None:
        """Store the rows sent so far, with the staging rows that wait."""
        if self._stack is None:
            return
        sent = self.count
        stack, copy = self._take()
        with stack:
            copy.__exit__(None, None, None)
            self.scanner._write_rows(self._conn)
        self.committed += sent
        # An interrupted first scan keeps these files, so its counts include them.
        self.scanner.counts.new = self.committed

    def abort(self) -> None:
        """Drop the rows sent since the last commit."""
        if self._stack is None:
            return
        stack, copy = self._take()
        error = ScanInterrupted("the scan stopped")
        try:
            copy.__exit__(ScanInterrupted, error, None)
        finally:
            stack.__exit__(ScanInterrupted, error, None)


class Scanner:
    """One run of one scan. Use ``run()``; it raises ``ScanInterrupted``."""

    def __init__(
        self,
        scan_id: str,
        source: Source,
        root: str,
        batch_size: int = 2000,
        on_batch: Callable[[ScanCounts], None] | None = None,
        commit_seconds: float = FIRST_SCAN_COMMIT_SECONDS,
    ):
        self.scan_id = scan_id
        self.source = source
        # Plain copies: read once per file, and ORM attributes cost more.
        self.org_id = source.org_id
        self.source_id = source.id
        self.root = root
        self.batch_size = batch_size
        self.on_batch = on_batch
        self.commit_seconds = commit_seconds
        self.engine = get_engine("catalog")
        self.counts = ScanCounts()
        self.problems: list[WalkProblem] = []
        # Unreadable files of a first scan, which writes no staging rows.
        self.file_errors: list[tuple[str, bytes, str]] = []
        # Stored folder signatures by folder hash, or None to query per batch.
        self.signatures: dict[str, str] | None = None
        self.rows = _Rows()
        # Folders the walk listed (a folder listed in chunks counts once per
        # chunk), and whether any of them differed from the catalog.
        self.listed_folders = 0
        self.found_changes = False
        self.catalogued_folders = 0
        self.new_files = _NewFiles(self)
        self._last_heartbeat = -math.inf

    # -- walk -----------------------------------------------------------------

    def run(self) -> ScanCounts:
        with _collector_skips_older_objects():
            return self._run()

    def _run(self) -> ScanCounts:
        self._check_identity()
        with self.engine.begin() as conn:
            conn.execute(delete(ScanEntry).where(ScanEntry.scan_id == self.scan_id))
            self.first_scan = (
                conn.scalar(select(File.id).where(File.source_id == self.source.id).limit(1))
                is None
            )
            if not self.first_scan:
                self.catalogued_folders = conn.scalar(
                    select(func.count())
                    .select_from(Folder)
                    .where(Folder.source_id == self.source.id)
                )
            self.signatures = self._load_signatures(conn)
        self.now = utcnow()
        self._walk()
        unchanged = self._nothing_changed()
        if not unchanged:
            with self.engine.begin() as conn:
                self._write_rows(conn)
        # A drive pulled during the walk leaves folders that failed to list;
        # only a drive that still carries its identity counts as walked.
        self._check_identity()
        self._check_still_online()
        self._finalize(unchanged)
        return self.counts

    def _nothing_changed(self) -> bool:
        """Return whether the walk found the drive as the last complete scan left it.

        Every folder was listed whole and matched the signature stored for
        its path, so none of its files changed. Only catalogued folders
        have a signature, and the walk listed as many folders as are
        catalogued: so no folder came or went either.
        """
        return (
            not self.first_scan
            and not self.found_changes
            and not self.problems
            and self.listed_folders == self.catalogued_folders
        )

    def _walk(self) -> None:
        pending: list[Listing] = []
        pending_files = 0
        try:
            for listing in walk(self.root, self.problems, self.batch_size):
                pending.append(listing)
                pending_files += len(listing.stats) + len(listing.dirs)
                if pending_files >= self.batch_size or len(pending) >= MAX_PENDING_LISTINGS:
                    self._stage(pending)
                    pending, pending_files = [], 0
            self._stage(pending)
            pending = []
            self.new_files.commit()
        except OSError as error:
            self._abort_new_files()
            raise ScanInterrupted(f"the drive could not be read: {error}") from error
        except BaseException:
            self._abort_new_files()
            raise
        finally:
            for listing in pending:
                listing.close()

    def _abort_new_files(self) -> None:
        """Drop a first scan's uncommitted files, keeping the error that stopped the walk."""
        try:
            self.new_files.abort()
        except Exception as error:  # the walk's own error is the one to report
            log.warning("first_scan_rollback_failed", scan_id=self.scan_id, error=str(error))

    def _check_identity(self) -> None:
        if not os.path.isdir(self.root):
            raise DriveAbsent(f"the drive is not mounted at {self.root}")
        found = read_volume_id(self.root)
        if found is None:
            raise DriveAbsent(
                f"{self.root} does not hold the drive's volume marker; "
                "the drive is not mounted there (an empty mount point?)"
            )
        if found != self.source.volume_id:
            raise DriveAbsent(
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
            if self.first_scan:
                # Each file's row is sent as soon as it is fingerprinted, so
                # PostgreSQL stores rows while the walk goes on.
                self._classify(None, listings, self.new_files.write)
                if self.new_files.due():
                    self.new_files.commit()
            else:
                with self.engine.connect() as conn:
                    self._classify(conn, listings, None)
                # The few rows of unchanged folders wait for more, so that a
                # rescan does not commit once per folder.
                rows = self.rows
                if len(rows) >= self.batch_size or len(rows.unchanged) >= MAX_UNCHANGED_ROWS:
                    with self.engine.begin() as conn:
                        self._write_rows(conn)
        finally:
            for listing in listings:
                listing.close()
        now = time.monotonic()
        if now - self._last_heartbeat >= HEARTBEAT_SECONDS:
            self._last_heartbeat = now
            self._check_still_online()
        if self.on_batch is not None:
            self.on_batch(self.counts)

    def _write_rows(self, conn: Connection) -> None:
        rows = self.rows
        bulk_insert(conn, ScanEntry.__table__, FULL_COLUMNS, rows.full + rows.unchanged)
        bulk_insert(conn, ScanEntry.__table__, SHORT_COLUMNS, rows.short)
        self.rows = _Rows()

    def _load_signatures(self, conn: Connection) -> dict | None:
        """Read every stored folder signature, unless there are too many."""
        if self.first_scan:
            return {}
        if self.catalogued_folders > MAX_CACHED_SIGNATURES:
            return None
        rows = conn.execute(
            select(Folder.path_hash, Folder.signature).where(
                Folder.source_id == self.source.id, Folder.signature.is_not(None)
            )
        )
        return dict(rows.all())

    def _stored_signatures(self, conn: Connection, folder_hashes: list) -> dict:
        if self.signatures is not None:
            return self.signatures
        if not folder_hashes:
            return {}
        rows = conn.execute(
            select(Folder.path_hash, Folder.signature).where(
                Folder.source_id == self.source.id, Folder.path_hash.in_(folder_hashes)
            )
        )
        return dict(rows.all())

    def _existing(self, conn: Connection, folder_hashes: list, path_hashes: list) -> dict:
        """Catalogued files of whole folders, plus single paths of chunked ones.

        Returns tuples of ``KNOWN_COLUMNS`` by their path bytes, so that
        unchanged files need no path hash.
        """
        found = {}
        for column, values in (("folder_hash", folder_hashes), ("path_hash", path_hashes)):
            if values:
                rows = self._catalogued(conn, column, values)
                found.update((row[KNOWN_PATH_BYTES], row) for row in rows)
        return found

    def _catalogued(self, conn: Connection, column: str, values: list) -> list[tuple]:
        if conn.dialect.name == "postgresql":
            # psycopg's own tuples cost about half of SQLAlchemy rows, which
            # matters when every folder of a large drive changed.
            with conn.connection.driver_connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT {', '.join(KNOWN_COLUMNS)} FROM files "
                    f"WHERE source_id = %s AND {column} = ANY(%s)",
                    (self.source.id, values),
                )
                return cursor.fetchall()
        table = File.__table__
        query = select(*(table.c[name] for name in KNOWN_COLUMNS)).where(
            table.c.source_id == self.source.id, table.c[column].in_(values)
        )
        return [tuple(row) for row in conn.execute(query)]

    def _classify(
        self,
        conn: Connection | None,
        listings: list[Listing],
        write_file: Callable[[tuple], None] | None,
    ) -> None:
        """Add the staging rows for ``listings`` to ``self.rows``.

        ``conn`` reads the catalog. A first scan has nothing to read, passes
        None and gets each file's row through ``write_file`` instead.
        """
        rows = self.rows
        counts = self.counts
        folder_hashes = [path_hash(l.prefix.rstrip(b"/")) for l in listings]
        signatures = [l.signature() if l.complete else None for l in listings]

        # A folder listed whole whose signature matches the stored one has
        # not changed: none of its files is looked up or read.
        changed_whole, chunked_paths = [], []
        if conn is not None:
            stored = self._stored_signatures(
                conn, [h for h, l in zip(folder_hashes, listings) if l.complete]
            )
            for listing, folder_hash, signature in zip(listings, folder_hashes, signatures):
                if not listing.complete:
                    chunked_paths.extend(path_hash(e.path_bytes) for e in listing.files)
                elif stored.get(folder_hash) != signature:
                    changed_whole.append(folder_hash)
            existing = self._existing(conn, changed_whole, chunked_paths)
        else:
            existing = {}
        changed_set = set(changed_whole)
        by_folder: dict[str, list] = {}
        for known in existing.values():
            by_folder.setdefault(known[KNOWN_FOLDER_HASH], []).append(known)

        for listing, folder_hash, signature in zip(listings, folder_hashes, signatures):
            folder_bytes = listing.prefix.rstrip(b"/")
            counts.files += len(listing.stats)
            counts.bytes += sum(map(_size, listing.stats))
            self.listed_folders += 1
            if conn is not None and listing.complete and folder_hash not in changed_set:
                counts.unchanged += len(listing.stats)
                self._add_dirs(listing, display_path(folder_bytes), folder_hash, rows.unchanged)
                rows.unchanged.append(
                    self._folder_row("folder_unchanged", folder_bytes, signature)
                )
                continue
            self.found_changes = True
            self._add_dirs(listing, display_path(folder_bytes), folder_hash, rows.full)
            errors_before = counts.errors
            self._classify_files(listing, folder_hash, existing, write_file)
            if listing.complete:
                # Catalogued files of this folder that the walk did not see.
                seen = {e.path_bytes for e in listing.files}
                for known in by_folder.get(folder_hash, ()):
                    if known[KNOWN_PATH_BYTES] not in seen:
                        rows.short.append((
                            self.scan_id, False, known[KNOWN_PATH_HASH], "vanished",
                            known[KNOWN_ID],
                        ))  # fmt: skip
                if counts.errors != errors_before:
                    signature = None  # look again next time
                rows.full.append(self._folder_row("folder_seen", folder_bytes, signature))

    def _add_dirs(self, listing: Listing, folder: str, folder_hash: str, rows: list) -> None:
        for entry in listing.dirs:
            self.counts.folders += 1
            name = display_path(_split(entry.path_bytes)[1])
            rows.append((
                self.scan_id, True, path_hash(entry.path_bytes), "dir", None,
                display_path(entry.path_bytes), entry.path_bytes, folder,
                folder_hash, name, name.lower(), "", None, 0, entry.mtime_ns,
                0, 0, None, None, None,
            ))  # fmt: skip

    def _folder_row(self, status: str, folder_bytes: bytes, signature: str | None):
        # The folder's signature travels in the fingerprint column.
        return (
            self.scan_id, True, path_hash(folder_bytes), status, None, None, None,
            None, None, None, None, None, None, None, None, None, None, signature,
            None, None,
        )  # fmt: skip

    def _classify_files(self, listing, folder_hash, existing, write_file) -> None:
        scan_id = self.scan_id
        counts = self.counts
        short = self.rows.short
        folder = display_path(listing.prefix.rstrip(b"/"))
        for entry in listing.files:
            known = existing.get(entry.path_bytes)
            # A file with no fingerprint could not be read last time, so it is
            # read again even when its stat fields match.
            if known is not None and known[KNOWN_FINGERPRINT] and known[:5] == (
                entry.size, entry.mtime_ns, entry.ctime_ns, entry.inode, "present"
            ):
                counts.unchanged += 1
                if not listing.complete:
                    short.append(
                        (scan_id, False, known[KNOWN_PATH_HASH], "unchanged", known[KNOWN_ID])
                    )
                continue
            self._classify_file(entry, listing, folder, folder_hash, known, write_file)

    def _classify_file(self, entry, listing, folder, folder_hash, known, write_file):
        """Fingerprint a file that is new or whose stat changed, and stage it."""
        scan_id = self.scan_id
        counts = self.counts
        phash = path_hash(entry.path_bytes)
        error = None
        try:
            fingerprint, media_type, kind = fingerprint_entry(entry, listing.dir_fd)
        except OSError as exc:
            counts.errors += 1
            fingerprint, media_type, kind = "", "application/octet-stream", "other"
            error = f"cannot read the file: {exc.strerror or exc}"
        if known is None:
            status, file_id = "new", new_id()
        elif error is not None:
            status, file_id = "unreadable", known[KNOWN_ID]
        elif known[KNOWN_FINGERPRINT] != fingerprint:
            status, file_id = "changed", known[KNOWN_ID]
        elif known[KNOWN_PRESENCE] == "missing":
            status, file_id = "restored", known[KNOWN_ID]
        else:
            status, file_id = "touched", known[KNOWN_ID]
        # The walk's name contains surrogates where the bytes are not UTF-8;
        # the catalog stores U+FFFD there.
        name = entry.name if entry.name.isascii() else display_path(_split(entry.path_bytes)[1])
        if write_file is not None:
            now = self.now
            write_file((
                file_id, self.org_id, self.source_id,
                display_path(entry.path_bytes), entry.path_bytes, phash, folder,
                folder_hash, name, name.lower(), _extension(name), entry.size,
                entry.mtime_ns, entry.ctime_ns, entry.inode, fingerprint, media_type,
                kind, "present", now, now, 1,
                "pending" if kind in ANALYZED_KINDS else "none", error,
            ))  # fmt: skip
            if not listing.complete:
                self.rows.short.append((scan_id, False, phash, "inserted", file_id))
            if error is not None and len(self.file_errors) < MAX_ISSUES:
                self.file_errors.append((file_id, entry.path_bytes, error))
            return
        self.rows.full.append((
            scan_id, False, phash, status, file_id,
            display_path(entry.path_bytes), entry.path_bytes, folder,
            folder_hash, name, name.lower(), _extension(name),
            kind, entry.size, entry.mtime_ns, entry.ctime_ns,
            entry.inode, fingerprint, media_type, error,
        ))  # fmt: skip

    # -- finalize -------------------------------------------------------------

    def _finalize(self, unchanged: bool = False) -> None:
        """Apply the staged changes in one transaction and mark the scan done.

        When the walk found nothing changed (``unchanged``), only the scan
        and the source are updated.
        """
        params = {
            "scan": self.scan_id,
            "source": self.source.id,
            "org": self.source.org_id,
            "now": utcnow(),
        }
        with self.engine.begin() as conn:
            if not unchanged:
                self._apply_staged(conn, params)
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
            if not unchanged:
                from services.catalog.counts import recount_source
                from services.catalog.events import publish_file_changes

                recount_source(conn, self.source.id)
                publish_file_changes(conn, self.scan_id, self.source)

    def _apply_staged(self, conn: Connection, params: dict) -> None:
        conn.execute(update(Scan).where(Scan.id == self.scan_id).values(status="finalizing"))
        self._protect_unreadable(conn)
        self._record_problems(conn)
        self._stage_unlisted(conn, params)
        self._pair_moves(conn, params)
        self._apply_updates(conn, params)
        if not self.first_scan:
            self._insert_new(conn, params)
        self._mark_missing(conn, params)
        self._rebuild_folders(conn, params)
        self._count(conn, params)

    def _protect_unreadable(self, conn: Connection) -> None:
        """Keep files the walk could not see from going missing.

        Those are the files under folders it could not read, and those whose
        ``stat`` failed: such an entry may be a file or a folder, so both its
        path and the files under it are kept.
        """
        failed_stats = [p.path_bytes for p in self.problems if p.kind == "stat_failed"]
        if failed_stats:
            result = conn.execute(
                text(
                    "INSERT INTO scan_entries (scan_id, is_dir, path_hash, status, file_id) "
                    "SELECT CAST(:scan AS VARCHAR(32)), false, path_hash, 'unverified', id "
                    "FROM files WHERE source_id = :source AND path_hash IN :hashes"
                ).bindparams(bindparam("hashes", expanding=True)),
                {
                    "scan": self.scan_id,
                    "source": self.source.id,
                    "hashes": [path_hash(path) for path in failed_stats],
                },
            )
            self.counts.unverified += result.rowcount
        prefixes = sorted(
            problem.path_bytes + b"/" if problem.path_bytes else b""
            for problem in self.problems
            if problem.kind in ("unreadable_folder", "stat_failed")
        )
        # A folder inside another unreadable one adds no files, and would
        # stage its files twice.
        outermost: list[bytes] = []
        for prefix in prefixes:
            if not outermost or not prefix.startswith(outermost[-1]):
                outermost.append(prefix)
        for start in range(0, len(outermost), PREFIXES_PER_STATEMENT):
            chunk = outermost[start : start + PREFIXES_PER_STATEMENT]
            params = {"scan": self.scan_id, "source": self.source.id}
            conditions = []
            for index, prefix in enumerate(chunk):
                params[f"prefix{index}"] = prefix
                params[f"length{index}"] = len(prefix)
                conditions.append(
                    f"substr(path_bytes, 1, :length{index}) = :prefix{index}"
                )
            result = conn.execute(
                text(
                    "INSERT INTO scan_entries (scan_id, is_dir, path_hash, status, file_id) "
                    "SELECT CAST(:scan AS VARCHAR(32)), false, path_hash, 'unverified', id "
                    f"FROM files WHERE source_id = :source AND ({' OR '.join(conditions)})"
                ),
                params,
            )
            self.counts.unverified += result.rowcount

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

    def _stage_unlisted(self, conn: Connection, params: dict) -> None:
        """Stage as vanished the files of folders that were not listed whole.

        Such a folder is gone, was listed in chunks, or could not be read. A
        file in it is gone when no staging row names its path; 'unverified'
        rows protect the files of unreadable folders. With the 'vanished'
        rows of folders listed whole, this makes every file the walk did not
        see a 'vanished' row, so later steps join on those rows instead of
        testing every catalogued file.
        """
        # The catalogued folders are found with one index probe each (a
        # loose index scan), not by reading every file's row. The folders
        # not listed whole are materialized first: they are few, and the
        # planner, short of statistics on fresh staging rows, would
        # otherwise test each file against every folder row.
        conn.execute(
            text(
                """
                WITH RECURSIVE catalogued (folder_hash) AS (
                    SELECT CAST(min(folder_hash) AS TEXT) FROM files
                    WHERE source_id = :source
                    UNION ALL
                    SELECT (SELECT CAST(min(f.folder_hash) AS TEXT) FROM files f
                            WHERE f.source_id = :source
                              AND f.folder_hash > catalogued.folder_hash)
                    FROM catalogued WHERE catalogued.folder_hash IS NOT NULL
                ),
                unlisted AS MATERIALIZED (
                    SELECT folder_hash FROM catalogued
                    WHERE folder_hash IS NOT NULL AND NOT EXISTS (
                        SELECT 1 FROM scan_entries d WHERE d.scan_id = :scan
                        AND d.status IN ('folder_seen', 'folder_unchanged')
                        AND d.path_hash = catalogued.folder_hash)
                )
                INSERT INTO scan_entries (scan_id, is_dir, path_hash, status, file_id)
                SELECT CAST(:scan AS VARCHAR(32)), false, f.path_hash, 'vanished', f.id
                FROM unlisted
                JOIN files f ON f.source_id = :source
                            AND f.folder_hash = unlisted.folder_hash
                WHERE NOT EXISTS (
                    SELECT 1 FROM scan_entries s WHERE s.scan_id = :scan
                    AND s.is_dir = false AND s.path_hash = f.path_hash)
                """
            ),
            params,
        )

    def _pair_moves(self, conn: Connection, params: dict) -> None:
        # Vanished files (including ones already missing) and new paths with
        # the same fingerprint are paired in path order, so duplicates moved
        # together always pair the same way. The n-th new path and the n-th
        # vanished file of a fingerprint meet in one group. Grouping, unlike
        # a join of the two sides, stays linear when the planner expects a
        # handful of fresh staging rows and meets thousands.
        conn.execute(
            text(
                """
                UPDATE scan_entries SET status = 'moved', file_id = pairs.file_id
                FROM (
                    SELECT max(sides.entry_id) AS entry_id,
                           max(sides.file_id) AS file_id
                    FROM (
                        SELECT e.id AS entry_id, CAST(NULL AS VARCHAR(32)) AS file_id,
                               e.fingerprint,
                               row_number() OVER (
                                   PARTITION BY e.fingerprint ORDER BY e.path_bytes
                               ) AS rn
                        FROM scan_entries e
                        WHERE e.scan_id = :scan AND e.status = 'new'
                          AND e.fingerprint <> ''
                        UNION ALL
                        SELECT CAST(NULL AS BIGINT), f.id, f.fingerprint,
                               row_number() OVER (
                                   PARTITION BY f.fingerprint
                                   ORDER BY CASE WHEN f.presence = 'present'
                                            THEN 0 ELSE 1 END, f.path_bytes
                               )
                        FROM scan_entries v
                        JOIN files f ON f.source_id = :source
                                    AND f.path_hash = v.path_hash
                        WHERE v.scan_id = :scan AND v.status = 'vanished'
                          AND f.fingerprint <> ''
                    ) AS sides
                    GROUP BY sides.fingerprint, sides.rn
                    HAVING count(sides.entry_id) = 1 AND count(sides.file_id) = 1
                ) AS pairs
                WHERE scan_entries.id = pairs.entry_id
                """
            ),
            params,
        )

    def _apply_updates(self, conn: Connection, params: dict) -> None:
        moved = "SELECT {column} FROM scan_entries WHERE scan_id = :scan AND status = 'moved'"
        # A moved file that still has the new path of another moved file
        # (a rotation of paths) frees it first, or the (source, path_hash)
        # unique constraint would break. A new path had no catalogued file
        # when the walk looked it up, so this normally updates no row.
        conn.execute(
            text(
                "UPDATE files SET path_hash = '~' || substr(id, 1, 31) "
                "WHERE source_id = :source "
                f"AND path_hash IN ({moved.format(column='path_hash')}) "
                f"AND id IN ({moved.format(column='file_id')})"
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
            f"rendition_state = {_RENDITION_STATE_SQL}, media_info = NULL, "
            "thumbnail_key = NULL, preview_key = NULL, error = e.error"
        )
        statements = [
            ("moved", f"{stat_columns}, {path_columns}"),
            ("touched", stat_columns),
            ("restored", stat_columns),
            ("changed", f"{stat_columns}, {content_columns}"),
            # Its content is no longer known: the empty fingerprint makes the
            # next scan read it again, and count it changed once it reads.
            ("unreadable", "error = e.error, fingerprint = e.fingerprint, updated_at = :now"),
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
                f"""
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
                       {_RENDITION_STATE_SQL},
                       e.error
                FROM scan_entries e
                WHERE e.scan_id = :scan AND e.status = 'new'
                """
            ),
            params,
        )

    def _mark_missing(self, conn: Connection, params: dict) -> None:
        # A moved file has its new path by now, so its 'vanished' row, which
        # names the old path, no longer matches it.
        conn.execute(
            text(
                "INSERT INTO scan_entries (scan_id, is_dir, path_hash, status, file_id) "
                "SELECT CAST(:scan AS VARCHAR(32)), false, f.path_hash, 'missing', f.id "
                "FROM scan_entries v JOIN files f ON f.source_id = :source "
                "AND f.path_hash = v.path_hash "
                "WHERE v.scan_id = :scan AND v.status = 'vanished' "
                "AND f.presence = 'present'"
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
        self.counts.new = by_status.get("new", 0) + self.new_files.committed
        self.counts.moved = by_status.get("moved", 0)
        self.counts.touched = by_status.get("touched", 0)
        self.counts.changed = by_status.get("changed", 0)
        self.counts.restored = by_status.get("restored", 0)
        self.counts.missing = by_status.get("missing", 0)


def discard_staging(scan_id: str) -> None:
    with get_engine("catalog").begin() as conn:
        conn.execute(delete(ScanEntry).where(ScanEntry.scan_id == scan_id))
