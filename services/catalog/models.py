"""Catalog tables. Only the catalog service and its workers touch them."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core.db import UTCDateTime, new_id, utcnow
from core.outbox import outbox_models

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def id_column(**kwargs):
    return mapped_column(String(32), primary_key=True, default=new_id, **kwargs)


def org_fk():
    return mapped_column(
        String(32), ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = id_column()
    name: Mapped[str] = mapped_column(String(200))
    created_at = mapped_column(UTCDateTime, default=utcnow)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = id_column()
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at = mapped_column(UTCDateTime, default=utcnow)


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("org_id", "user_id"),)

    id: Mapped[str] = id_column()
    org_id: Mapped[str] = org_fk()
    user_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(20))
    created_at = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = id_column()
    org_id: Mapped[str] = org_fk()
    user_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at = mapped_column(UTCDateTime, default=utcnow)
    last_used_at = mapped_column(UTCDateTime, nullable=True)
    revoked_at = mapped_column(UTCDateTime, nullable=True)


class SourceGroup(Base):
    __tablename__ = "source_groups"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[str] = id_column()
    org_id: Mapped[str] = org_fk()
    name: Mapped[str] = mapped_column(String(200))
    # "everyone" or "restricted"
    visibility: Mapped[str] = mapped_column(String(20), default="everyone")
    created_at = mapped_column(UTCDateTime, default=utcnow)


class GroupMember(Base):
    __tablename__ = "group_members"

    group_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("source_groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )


class Source(Base):
    """The catalog's mirror of one drive, recognised by its volume identity."""

    __tablename__ = "sources"
    __table_args__ = (
        UniqueConstraint("org_id", "volume_id"),
        UniqueConstraint("org_id", "name"),
    )

    id: Mapped[str] = id_column()
    org_id: Mapped[str] = org_fk()
    group_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("source_groups.id", ondelete="SET NULL"), nullable=True
    )
    name: Mapped[str] = mapped_column(String(200))
    volume_id: Mapped[str] = mapped_column(String(200))
    # "online" or "offline"
    state: Mapped[str] = mapped_column(String(20), default="offline")
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    mount_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    connected_at = mapped_column(UTCDateTime, nullable=True)
    disconnected_at = mapped_column(UTCDateTime, nullable=True)
    last_complete_scan_at = mapped_column(UTCDateTime, nullable=True)
    # What the drive holds, as last counted (services/catalog/counts.py).
    file_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    missing_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    renditions_pending: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    checksums_pending: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    counted_at = mapped_column(UTCDateTime, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at = mapped_column(UTCDateTime, default=utcnow)


class Folder(Base):
    """A folder seen by the last complete scan of a source."""

    __tablename__ = "folders"
    __table_args__ = (
        UniqueConstraint("source_id", "path_hash"),
        Index("ix_folders_parent", "source_id", "parent_hash"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    source_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("sources.id", ondelete="CASCADE")
    )
    path: Mapped[str] = mapped_column(Text)
    path_hash: Mapped[str] = mapped_column(String(32))
    parent_hash: Mapped[str | None] = mapped_column(String(32), nullable=True)
    name: Mapped[str] = mapped_column(Text)
    # Digest of the folder's file names and stat fields at the last scan.
    signature: Mapped[str | None] = mapped_column(String(32), nullable=True)


class File(Base):
    """One file on one drive, with an id that survives moves and remounts."""

    __tablename__ = "files"
    __table_args__ = (
        UniqueConstraint("source_id", "path_hash"),
        Index("ix_files_folder", "source_id", "folder_hash"),
        Index("ix_files_org_name", "org_id", "name_lower"),
        # Only files with a checksum are looked up by it (duplicates), and
        # every file a scan writes would otherwise update this index too.
        Index(
            "ix_files_checksum",
            "org_id",
            "checksum",
            postgresql_where=text("checksum IS NOT NULL"),
            sqlite_where=text("checksum IS NOT NULL"),
        ),
    )

    id: Mapped[str] = id_column()
    org_id: Mapped[str] = mapped_column(String(32), index=False)
    source_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("sources.id", ondelete="CASCADE")
    )
    # Display path relative to the drive root; undecodable bytes become U+FFFD.
    path: Mapped[str] = mapped_column(Text)
    # The exact bytes of the relative path, for reopening the file.
    path_bytes: Mapped[bytes] = mapped_column(LargeBinary)
    path_hash: Mapped[str] = mapped_column(String(32))
    folder: Mapped[str] = mapped_column(Text)
    folder_hash: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(Text)
    name_lower: Mapped[str] = mapped_column(Text)
    extension: Mapped[str] = mapped_column(String(50), default="")
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    ctime_ns: Mapped[int] = mapped_column(BigInteger, default=0)
    inode: Mapped[int] = mapped_column(BigInteger, default=0)
    fingerprint: Mapped[str] = mapped_column(String(40))
    checksum: Mapped[str | None] = mapped_column(String(64), nullable=True)
    media_type: Mapped[str] = mapped_column(String(100), default="application/octet-stream")
    kind: Mapped[str] = mapped_column(String(20), default="other")
    # "present" or "missing"; online/offline comes from the source.
    presence: Mapped[str] = mapped_column(String(20), default="present")
    missing_since = mapped_column(UTCDateTime, nullable=True)
    first_seen_at = mapped_column(UTCDateTime, default=utcnow)
    updated_at = mapped_column(UTCDateTime, default=utcnow)
    content_version: Mapped[int] = mapped_column(Integer, default=1)
    # Metadata and rendition work: "pending", "done", "failed" or "none"
    # (a kind that is not analyzed).
    rendition_state: Mapped[str] = mapped_column(String(20), default="pending")
    media_info: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    thumbnail_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    preview_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class Scan(Base):
    __tablename__ = "scans"

    id: Mapped[str] = id_column()
    org_id: Mapped[str] = org_fk()
    source_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("sources.id", ondelete="CASCADE"), index=True
    )
    # "scan" or "verify"
    kind: Mapped[str] = mapped_column(String(20), default="scan")
    # queued, running, finalizing, succeeded, interrupted, failed
    status: Mapped[str] = mapped_column(String(20), default="queued")
    requested_at = mapped_column(UTCDateTime, default=utcnow)
    started_at = mapped_column(UTCDateTime, nullable=True)
    finished_at = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at = mapped_column(UTCDateTime, nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    complete: Mapped[bool] = mapped_column(Boolean, default=False)
    counts: Mapped[dict] = mapped_column(JSON, default=dict)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)


class ScanEntry(Base):
    """Staging row for one walked path; applied to ``files`` when a walk ends.

    Rows for unchanged files carry only the path hash and the file id.
    """

    __tablename__ = "scan_entries"
    __table_args__ = (
        Index("ix_scan_entries_scan_path", "scan_id", "path_hash"),
        Index("ix_scan_entries_scan_status", "scan_id", "status"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    scan_id: Mapped[str] = mapped_column(String(32))
    is_dir: Mapped[bool] = mapped_column(Boolean, default=False)
    path_hash: Mapped[str] = mapped_column(String(32))
    # unchanged, touched (same content, new stat), changed, new, moved,
    # unverified (under a folder the walk could not read), dir
    status: Mapped[str] = mapped_column(String(20))
    file_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    path: Mapped[str | None] = mapped_column(Text, nullable=True)
    path_bytes: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    folder: Mapped[str | None] = mapped_column(Text, nullable=True)
    folder_hash: Mapped[str | None] = mapped_column(String(32), nullable=True)
    name: Mapped[str | None] = mapped_column(Text, nullable=True)
    name_lower: Mapped[str | None] = mapped_column(Text, nullable=True)
    extension: Mapped[str | None] = mapped_column(String(50), nullable=True)
    kind: Mapped[str | None] = mapped_column(String(20), nullable=True)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    ctime_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    inode: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    fingerprint: Mapped[str | None] = mapped_column(String(40), nullable=True)
    media_type: Mapped[str | None] = mapped_column(String(100), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class ScanIssue(Base):
    """A per-file problem found by a scan or a verify run."""

    __tablename__ = "scan_issues"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    scan_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("scans.id", ondelete="CASCADE"), index=True
    )
    file_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    path: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text)


class Export(Base):
    """A zip archive of chosen files, assembled on a drive's host."""

    __tablename__ = "exports"

    id: Mapped[str] = id_column()
    org_id: Mapped[str] = org_fk()
    # Whose visibility applies: the requester, or a share link's creator.
    user_id: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    file_ids: Mapped[list] = mapped_column(JSON)
    skip_offline: Mapped[bool] = mapped_column(Boolean, default=False)
    keep_structure: Mapped[bool] = mapped_column(Boolean, default=False)
    # queued, waiting, running, succeeded, failed, cancelled, expired
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Fingerprints of the files when the export was requested, by file id.
    fingerprints: Mapped[dict] = mapped_column(JSON, default=dict)
    waiting_for: Mapped[list] = mapped_column(JSON, default=list)
    files_total: Mapped[int] = mapped_column(Integer, default=0)
    files_done: Mapped[int] = mapped_column(Integer, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    manifest: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    archive_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    archive_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    created_at = mapped_column(UTCDateTime, default=utcnow)
    started_at = mapped_column(UTCDateTime, nullable=True)
    finished_at = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at = mapped_column(UTCDateTime, nullable=True)
    expires_at = mapped_column(UTCDateTime, nullable=True)


OutboxEvent, ConsumedEvent = outbox_models(Base)
