"""Sharing tables: links, and the read model of catalog and collection facts.

Only the sharing service and its event consumers touch them. User, file,
drive, group and collection ids are plain strings: nothing here has a
foreign key to another service's database.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
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


class Link(Base):
    """A public, read-only link to one collection."""

    __tablename__ = "links"
    __table_args__ = (Index("ix_links_collection", "collection_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(String(32), index=True)
    collection_id: Mapped[str] = mapped_column(String(32))
    # HMAC-SHA256 of the token under a key derived from LINK_SECRET.
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    # The token encrypted with Fernet, so members can see the URL again.
    token_ciphertext: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(200))
    # The member whose visibility of groups the link shows.
    created_by: Mapped[str] = mapped_column(String(32), index=True)
    created_at = mapped_column(UTCDateTime, default=utcnow)
    updated_at = mapped_column(UTCDateTime, default=utcnow)
    expires_at = mapped_column(UTCDateTime, nullable=True)
    revoked_at = mapped_column(UTCDateTime, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    revoked_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Argon2id hash, or None for a link without a password.
    password_hash: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Incremented whenever the password is set or cleared, which invalidates
    # the unlock cookies issued before.
    password_version: Mapped[int] = mapped_column(Integer, default=0)
    allow_download: Mapped[bool] = mapped_column(Boolean, default=False)
    show_metadata: Mapped[bool] = mapped_column(Boolean, default=False)
    # Incremented by every change of the link, so cached listings expire.
    version: Mapped[int] = mapped_column(Integer, default=1)
    views: Mapped[int] = mapped_column(BigInteger, default=0)
    downloads: Mapped[int] = mapped_column(BigInteger, default=0)
    last_access_at = mapped_column(UTCDateTime, nullable=True)


class OrgState(Base):
    """A counter per organization, incremented by every event applied to it.

    Cached public listings are keyed by it, so any change of files, drives,
    groups, members or collections in the organization expires them.
    """

    __tablename__ = "org_state"

    org_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class CollectionFacts(Base):
    __tablename__ = "collections"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    # The collection's updated_at when its name and description were read.
    updated_at = mapped_column(UTCDateTime)
    # The collection's updated_at when its items were last read from the
    # collections API; item events up to this time are already included.
    items_read_at = mapped_column(UTCDateTime, nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class CollectionItem(Base):
    """A file in a collection; removed items stay as tombstones for ordering."""

    __tablename__ = "collection_items"
    __table_args__ = (Index("ix_collection_items_order", "collection_id", "position", "file_id"),)

    collection_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    present: Mapped[bool] = mapped_column(Boolean, default=True)
    # The collection's updated_at of the change that last added or removed it.
    changed_at = mapped_column(UTCDateTime)


class FileFacts(Base):
    """The latest facts the catalog published about a file."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(32), index=True)
    source_id: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(Text, default="")
    media_type: Mapped[str] = mapped_column(String(100), default="application/octet-stream")
    kind: Mapped[str] = mapped_column(String(20), default="other")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    # "present" or "missing"; online/offline comes from the drive.
    presence: Mapped[str] = mapped_column(String(20), default="present")
    thumbnail_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    preview_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    captured_at: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The catalog's updated_at: older facts are ignored.
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
    # When the catalog published the name and state; older values are ignored.
    state_at = mapped_column(UTCDateTime)


class GroupFacts(Base):
    __tablename__ = "groups"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(32), index=True)
    # "everyone" or "restricted"
    visibility: Mapped[str] = mapped_column(String(20), default="restricted")


class GroupMember(Base):
    __tablename__ = "group_members"

    group_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)


class MemberFacts(Base):
    """A member's role; None once they left the organization."""

    __tablename__ = "members"

    org_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    role: Mapped[str | None] = mapped_column(String(20), nullable=True)
    at = mapped_column(UTCDateTime)


OutboxEvent, ConsumedEvent = outbox_models(Base)
