"""Collections tables and the read model of catalog facts they are shown with.

Only the collections service and its event consumers touch them. Nothing
here has a foreign key to another service's database: user, file, drive and
group ids are plain strings.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
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


class Collection(Base):
    __tablename__ = "collections"
    __table_args__ = (Index("ix_collections_org_name", "org_id", "name", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # Every item, hidden or not; kept in step with the items table by the
    # transactions that insert or delete items.
    item_count: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(32))
    created_at = mapped_column(UTCDateTime, default=utcnow)
    updated_at = mapped_column(UTCDateTime, default=utcnow)


class CollectionItem(Base):
    """One catalog file in one collection, ordered by a sparse position."""

    __tablename__ = "collection_items"
    __table_args__ = (
        Index("ix_collection_items_order", "collection_id", "position", "file_id"),
        Index("ix_collection_items_source", "collection_id", "source_id"),
        Index("ix_collection_items_file", "file_id"),
    )

    collection_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True
    )
    file_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # A catalog file never changes drive, so the item keeps its drive id and
    # visibility filters need no join to the files table.
    source_id: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(BigInteger)
    added_by: Mapped[str] = mapped_column(String(32))
    added_at = mapped_column(UTCDateTime, default=utcnow)


class FileFacts(Base):
    """The latest facts the catalog published about a file."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_source", "source_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(32))
    source_id: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(Text, default="")
    name: Mapped[str] = mapped_column(Text, default="")
    media_type: Mapped[str] = mapped_column(String(100), default="application/octet-stream")
    kind: Mapped[str] = mapped_column(String(20), default="other")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    fingerprint: Mapped[str | None] = mapped_column(String(40), nullable=True)
    checksum: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # "present" or "missing"; online/offline comes from the drive.
    presence: Mapped[str] = mapped_column(String(20), default="present")
    content_version: Mapped[int] = mapped_column(Integer, default=1)
    rendition_state: Mapped[str] = mapped_column(String(20), default="pending")
    thumbnail_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    preview_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # ISO 8601 text as the catalog extracted it from the file's metadata.
    captured_at: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The catalog's updated_at: facts older than these are ignored.
    updated_at = mapped_column(UTCDateTime)


class SourceFacts(Base):
    """A drive's name, state and group as the catalog last published them."""

    __tablename__ = "sources"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    # "online" or "offline"
    state: Mapped[str] = mapped_column(String(20), default="offline")
    group_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # When the catalog published these values; older values are ignored.
    state_at = mapped_column(UTCDateTime)


class GroupFacts(Base):
    """A source group's visibility: "everyone" or "restricted"."""

    __tablename__ = "groups"

    group_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(32), index=True)
    visibility: Mapped[str] = mapped_column(String(20))
    updated_at = mapped_column(UTCDateTime, default=utcnow)


OutboxEvent, ConsumedEvent = outbox_models(Base)
