"""What a link shows: the state of a link, and its assembled, cached listing.

A link shows the items of its collection that its creator may see at the
time of the request: files of groups visible to everyone, plus files of
groups that list the creator. Once the creator has left the organization,
only groups visible to everyone count. A file whose drive or group is not
in the read model yet is hidden.

The link's state and its assembled listing are cached in the process. The
listing is keyed by the link's version and its organization's version,
which every change of the link and every applied event increments. A
request uses the cached state while Redis confirms that the organization's
version is still the one the state was read at (see
``services.sharing.freshness``), and reads the database otherwise.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import bindparam, create_engine, select

from core.db import database_url, get_engine, utcnow
from core.pagination import decode_cursor, encode_cursor
from services.sharing import freshness
from services.sharing.keys import token_digest
from services.sharing.models import (
    CollectionFacts,
    CollectionItem,
    FileFacts,
    GroupFacts,
    GroupMember,
    Link,
    MemberFacts,
    OrgState,
    SourceFacts,
)

# Links whose listings stay cached in one process.
CACHE_LINKS = 256

LINK_COLUMNS = (
    Link.id,
    Link.org_id,
    Link.collection_id,
    Link.created_by,
    Link.expires_at,
    Link.revoked_at,
    Link.password_hash,
    Link.password_version,
    Link.allow_download,
    Link.show_metadata,
    Link.version,
)


@dataclass(frozen=True)
class LinkState:
    """The columns of a link that every public request checks."""

    id: str
    org_id: str
    collection_id: str
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    password_hash: str | None
    password_version: int
    allow_download: bool
    show_metadata: bool
    version: int
    org_version: int

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= utcnow()


_public_engine = None
_public_engine_lock = threading.Lock()


def public_engine():
    """Return the engine of public reads: the service's URL without pool pre-ping.

    Pre-ping costs a round trip per request. A connection that the server
    closed fails its query once, which returns 503, and the pool drops it.
    """
    global _public_engine
    with _public_engine_lock:
        if _public_engine is None:
            url = database_url("sharing")
            if url.startswith("sqlite"):
                _public_engine = get_engine("sharing")
            else:
                # Public reads are single statements: autocommit saves the
                # BEGIN and ROLLBACK round trips of each checkout.
                _public_engine = create_engine(
                    url,
                    pool_pre_ping=False,
                    pool_size=10,
                    max_overflow=20,
                    pool_recycle=1800,
                    isolation_level="AUTOCOMMIT",
                )
        return _public_engine


def reset_public_engine() -> None:
    global _public_engine
    with _public_engine_lock:
        if _public_engine is not None and _public_engine is not get_engine("sharing"):
            _public_engine.dispose()
        _public_engine = None


# Built once: constructing the statement costs more than running it.
_LINK_QUERY = (
    select(*LINK_COLUMNS, OrgState.version)
    .outerjoin(OrgState, OrgState.org_id == Link.org_id)
    .where(Link.token_digest == bindparam("digest"))
)


# Link states by token digest, trusted while their organization's version
# in Redis equals the one they were read at (see services.sharing.freshness).
_states: OrderedDict[str, LinkState] = OrderedDict()
_states_lock = threading.Lock()
CACHE_STATES = 4096


def load_link(token: str) -> LinkState | None:
    """Read the link of ``token`` and its organization's version in one query.

    The state read is kept for ``cached_link``, and the organization's
    version is filled in Redis when no key exists there.
    """
    digest = token_digest(token)
    with public_engine().connect() as conn:
        row = conn.execute(_LINK_QUERY, {"digest": digest}).first()
    if row is None:
        return None
    values = list(row)
    values[-1] = values[-1] or 0
    link = LinkState(*values)
    freshness.fill_in(link.org_id, link.org_version)
    with _states_lock:
        _states[digest] = link
        _states.move_to_end(digest)
        while len(_states) > CACHE_STATES:
            _states.popitem(last=False)
    return link


def cached_link(token: str) -> LinkState | None:
    """Return the state of ``token``'s link read by an earlier request, if any."""
    digest = token_digest(token)
    with _states_lock:
        return _states.get(digest)


@dataclass
class FileEntry:
    """One visible item, with the private facts the public routes need."""

    id: str
    name: str
    state: str
    drive: str
    thumbnail_key: str | None
    preview_key: str | None
    media_type: str
    public: dict


@dataclass
class Listing:
    key: tuple
    name: str
    description: str
    creator_left: bool
    entries: list[FileEntry]
    sort_keys: list[tuple]
    by_id: dict[str, FileEntry]
    pages: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def file_state(presence: str | None, source_state: str | None) -> str:
    if presence == "missing":
        return "missing"
    return "online" if source_state == "online" else "offline"


def visible_group_ids(conn, org_id: str, user_id: str) -> tuple[set[str], bool]:
    """Return the groups the user may see and whether the user left the organization."""
    role_row = conn.execute(
        select(MemberFacts.role).where(
            MemberFacts.org_id == org_id, MemberFacts.user_id == user_id
        )
    ).first()
    left = role_row is not None and role_row[0] is None
    groups = conn.execute(
        select(GroupFacts.id, GroupFacts.visibility).where(GroupFacts.org_id == org_id)
    ).all()
    visible = {group_id for group_id, visibility in groups if visibility == "everyone"}
    if not left:
        listed = conn.execute(
            select(GroupMember.group_id).where(GroupMember.user_id == user_id)
        ).scalars()
        known = {group_id for group_id, _visibility in groups}
        visible.update(group_id for group_id in listed if group_id in known)
    return visible, left


def _public_item(token: str, link: LinkState, row, state: str) -> dict:
    base = f"/s/{token}"
    item = {
        "id": row.id,
        "name": row.name,
        "kind": row.kind,
        "state": state,
        "thumbnail_url": f"{base}/thumb/{row.id}" if row.thumbnail_key else None,
        "preview_url": f"{base}/preview/{row.id}" if row.preview_key else None,
        "download_url": None,
        "offline_drive": row.drive if state == "offline" else None,
    }
    if link.allow_download and state == "online":
        item["download_url"] = f"{base}/download/{row.id}"
    if link.show_metadata:
        item["metadata"] = {
            "media_type": row.media_type,
            "size": row.size,
            "width": row.width,
            "height": row.height,
            "captured_at": row.captured_at,
        }
    return item


ITEM_COLUMNS = (
    CollectionItem.position,
    FileFacts.id,
    FileFacts.name,
    FileFacts.kind,
    FileFacts.media_type,
    FileFacts.size,
    FileFacts.width,
    FileFacts.height,
    FileFacts.captured_at,
    FileFacts.presence,
    FileFacts.thumbnail_key,
    FileFacts.preview_key,
    SourceFacts.name.label("drive"),
    SourceFacts.state.label("drive_state"),
    SourceFacts.group_id,
)


def build_listing(token: str, link: LinkState) -> Listing:
    with get_engine("sharing").connect() as conn:
        collection = conn.execute(
            select(CollectionFacts.name, CollectionFacts.description).where(
                CollectionFacts.id == link.collection_id
            )
        ).first()
        visible, left = visible_group_ids(conn, link.org_id, link.created_by)
        rows = conn.execute(
            select(*ITEM_COLUMNS)
            .join(FileFacts, FileFacts.id == CollectionItem.file_id)
            .join(SourceFacts, SourceFacts.id == FileFacts.source_id)
            .where(
                CollectionItem.collection_id == link.collection_id,
                CollectionItem.present.is_(True),
                FileFacts.org_id == link.org_id,
            )
            .order_by(CollectionItem.position, CollectionItem.file_id)
        ).all()
    entries, sort_keys = [], []
    for row in rows:
        if row.group_id not in visible:
            continue
        state = file_state(row.presence, row.drive_state)
        entries.append(
            FileEntry(
                id=row.id,
                name=row.name,
                state=state,
                drive=row.drive,
                thumbnail_key=row.thumbnail_key,
                preview_key=row.preview_key,
                media_type=row.media_type,
                public=_public_item(token, link, row, state),
            )
        )
        sort_keys.append((row.position, row.id))
    return Listing(
        key=(link.version, link.org_version),
        name=collection.name if collection else "",
        description=collection.description if collection else "",
        creator_left=left,
        entries=entries,
        sort_keys=sort_keys,
        by_id={entry.id: entry for entry in entries},
    )


_cache: OrderedDict[str, Listing] = OrderedDict()
_cache_lock = threading.Lock()


def get_listing(token: str, link: LinkState) -> Listing:
    """Return the link's listing from the cache, building it when stale."""
    key = (link.version, link.org_version)
    with _cache_lock:
        listing = _cache.get(link.id)
        if listing is not None and listing.key == key:
            _cache.move_to_end(link.id)
            return listing
    listing = build_listing(token, link)
    with _cache_lock:
        _cache[link.id] = listing
        _cache.move_to_end(link.id)
        while len(_cache) > CACHE_LINKS:
            _cache.popitem(last=False)
    return listing


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()
    with _states_lock:
        _states.clear()
    freshness.forget_confirmed()


def page(listing: Listing, cursor: str | None, limit: int) -> tuple[list[FileEntry], str | None]:
    """Return one page of entries after ``cursor`` and the next page's cursor."""
    after = decode_cursor(cursor, 2, (int, str))
    start = bisect.bisect_right(listing.sort_keys, (after[0], after[1])) if after else 0
    entries = listing.entries[start : start + limit]
    next_cursor = None
    if start + limit < len(listing.entries):
        next_cursor = encode_cursor(list(listing.sort_keys[start + limit - 1]))
    return entries, next_cursor
