"""The sharing service's read model of catalog and collection facts.

Written from the catalog and collections APIs when a link is created or
handed over, and from their events afterwards. File, drive, member and
item changes are ordered by the timestamps the events carry, so a late or
replayed event never overwrites newer facts. Group events carry no
timestamp and are applied in arrival order.

Every write also increments the organization's ``OrgState.version``, which
expires the cached public listings of its links.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from core.db import utcnow
from core.outbox import EPOCH, parse_time
from services.sharing import freshness
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

# Gap between the positions of consecutive items, so a later insert can go
# between two items without renumbering.
POSITION_STEP = 1024

FILE_COLUMNS = (
    "org_id",
    "source_id",
    "name",
    "media_type",
    "kind",
    "size",
    "presence",
    "thumbnail_key",
    "preview_key",
    "width",
    "height",
    "captured_at",
)


def bump_org(session: Session, org_id: str) -> None:
    """Increment the organization's version, creating its row on first use.

    Public requests re-read the state of every link of the organization
    after the transaction commits.
    """
    insert_missing(session, OrgState, [{"org_id": org_id, "version": 0}])
    version = session.execute(
        update(OrgState)
        .where(OrgState.org_id == org_id)
        .values(version=OrgState.version + 1)
        .returning(OrgState.version)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    freshness.announce_change(session, org_id, version)


def _file_values(facts: dict) -> dict:
    values = {column: facts.get(column) for column in FILE_COLUMNS}
    values["captured_at"] = str(values["captured_at"]) if values["captured_at"] else None
    for column, default in (
        ("name", ""),
        ("media_type", "application/octet-stream"),
        ("kind", "other"),
        ("size", 0),
        ("presence", "present"),
    ):
        if values[column] is None:
            values[column] = default
    values["updated_at"] = parse_time(facts.get("updated_at"))
    return values


def insert_missing(session: Session, model, rows: list[dict]) -> None:
    """Insert rows whose primary key is not taken; leave existing rows alone.

    Event consumers and link creation write the same read-model rows at the
    same time, so a plain insert after a read could fail on the key.
    """
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    session.execute(insert(model).values(rows).on_conflict_do_nothing())


def _apply_source_from_file(session: Session, facts: dict, at: datetime) -> None:
    source_id = facts.get("source_id")
    if not source_id:
        return
    values = {
        "name": facts.get("source_name") or "",
        "state": facts.get("source_state") or "offline",
        "group_id": facts.get("group_id"),
    }
    insert_missing(
        session,
        SourceFacts,
        [{"id": source_id, "org_id": facts["org_id"], "state_at": at, **values}],
    )
    source = session.get(SourceFacts, source_id, populate_existing=True)
    if at > source.state_at:
        source.name = values["name"] or source.name
        source.state = facts.get("source_state") or source.state
        source.group_id = values["group_id"]
        source.state_at = at


def upsert_files(session: Session, facts_list: list[dict]) -> None:
    """Store file facts newer than the ones held, and their drives' facts."""
    if not facts_list:
        return
    newest: dict[str, dict] = {}
    for facts in facts_list:
        values = _file_values(facts)
        held = newest.get(facts["id"])
        if held is None or values["updated_at"] > held[1]["updated_at"]:
            newest[facts["id"]] = (facts, values)
    insert_missing(
        session, FileFacts, [{"id": file_id, **values} for file_id, (_, values) in newest.items()]
    )
    held = {
        row.id: row
        for row in session.scalars(
            select(FileFacts)
            .where(FileFacts.id.in_(list(newest)))
            .execution_options(populate_existing=True)
        )
    }
    orgs = set()
    for file_id, (facts, values) in newest.items():
        row = held[file_id]
        if values["updated_at"] > row.updated_at:
            for column, value in values.items():
                setattr(row, column, value)
        _apply_source_from_file(session, facts, values["updated_at"])
        orgs.add(values["org_id"])
    for org_id in orgs:
        bump_org(session, org_id)


def apply_files_updated(session: Session, payload: dict) -> None:
    upsert_files(session, payload.get("files") or [])


def apply_source_state(session: Session, payload: dict) -> None:
    at = parse_time(payload.get("at"))
    source = session.get(SourceFacts, payload["source_id"])
    if source is None:
        session.add(
            SourceFacts(
                id=payload["source_id"],
                org_id=payload["org_id"],
                name=payload.get("source_name") or "",
                state=payload.get("state") or "offline",
                group_id=payload.get("group_id"),
                state_at=at,
            )
        )
    elif at > source.state_at:
        source.name = payload.get("source_name") or source.name
        source.state = payload.get("state") or source.state
        source.group_id = payload.get("group_id")
        source.state_at = at
    bump_org(session, payload["org_id"])


def set_group(
    session: Session, org_id: str, group_id: str, visibility: str, members: list[str]
) -> None:
    """Replace a group's visibility and member list."""
    insert_missing(
        session, GroupFacts, [{"id": group_id, "org_id": org_id, "visibility": visibility}]
    )
    session.get(GroupFacts, group_id, populate_existing=True).visibility = visibility
    wanted = set(members)
    session.execute(
        delete(GroupMember)
        .where(GroupMember.group_id == group_id, GroupMember.user_id.not_in(wanted))
        .execution_options(synchronize_session=False)
    )
    insert_missing(
        session, GroupMember, [{"group_id": group_id, "user_id": u} for u in sorted(wanted)]
    )
    session.flush()


def apply_group_changed(session: Session, payload: dict) -> None:
    org_id = payload["org_id"]
    group_id = payload["group_id"]
    set_group(session, org_id, group_id, payload["visibility"], payload.get("members") or [])
    for source_id in payload.get("source_ids") or []:
        source = session.get(SourceFacts, source_id)
        if source is None:
            session.add(
                SourceFacts(
                    id=source_id, org_id=org_id, state="offline", group_id=group_id,
                    state_at=EPOCH,
                )  # fmt: skip
            )
        else:
            source.group_id = group_id
    # A drive moved out of this group is listed in its new group's event,
    # which the catalog publishes in the same transaction.
    bump_org(session, org_id)


def set_member(session: Session, org_id: str, user_id: str, role: str | None, at) -> None:
    at = parse_time(at)
    insert_missing(
        session, MemberFacts, [{"org_id": org_id, "user_id": user_id, "role": role, "at": at}]
    )
    member = session.get(MemberFacts, (org_id, user_id), populate_existing=True)
    if at >= member.at:
        member.role = role
        member.at = at
        if role is None:
            # A member who left loses their grants; one who rejoins starts
            # with none, whatever group event arrives late.
            org_groups = select(GroupFacts.id).where(GroupFacts.org_id == org_id)
            session.execute(
                delete(GroupMember).where(
                    GroupMember.user_id == user_id, GroupMember.group_id.in_(org_groups)
                )
            )
    session.flush()


def apply_member_changed(session: Session, payload: dict) -> None:
    set_member(
        session, payload["org_id"], payload["user_id"], payload.get("role"), payload.get("at")
    )
    bump_org(session, payload["org_id"])


def _collection(session: Session, collection_id: str, org_id: str) -> CollectionFacts:
    insert_missing(
        session,
        CollectionFacts,
        [{"id": collection_id, "org_id": org_id, "name": "", "description": "",
          "updated_at": EPOCH}],
    )  # fmt: skip
    return session.get(
        CollectionFacts, collection_id, with_for_update=True, populate_existing=True
    )


def set_collection(session: Session, data: dict, org_id: str) -> CollectionFacts:
    """Store a collection's name and description if newer than those held."""
    collection = _collection(session, data["id"], org_id)
    updated_at = parse_time(data.get("updated_at"))
    if updated_at >= collection.updated_at:
        collection.name = data.get("name") or ""
        collection.description = data.get("description") or ""
        collection.updated_at = updated_at
    return collection


def apply_collection_changed(session: Session, payload: dict) -> None:
    set_collection(
        session,
        {
            "id": payload["collection_id"],
            "name": payload.get("name"),
            "description": payload.get("description"),
            "updated_at": payload.get("updated_at"),
        },
        payload["org_id"],
    )
    bump_org(session, payload["org_id"])


def _next_position(session: Session, collection_id: str) -> int:
    highest = session.scalar(
        select(func.max(CollectionItem.position)).where(
            CollectionItem.collection_id == collection_id
        )
    )
    return (highest or 0) + POSITION_STEP


def apply_items_changed(session: Session, payload: dict) -> None:
    """Add or remove items; a change older than the item's last change is ignored.

    NOTE: "moved" ids are ignored because the event does not carry the new
    positions, so a link keeps the order read when the items were read
    from the collections API, plus additions at the end.
    """
    collection = _collection(session, payload["collection_id"], payload["org_id"])
    changed_at = parse_time(payload.get("updated_at"))
    if collection.items_read_at is not None and changed_at <= collection.items_read_at:
        return
    position = _next_position(session, collection.id)
    for present, ids in ((True, payload.get("added") or []), (False, payload.get("removed") or [])):
        for file_id in ids:
            item = session.get(CollectionItem, (collection.id, file_id))
            if item is None:
                session.add(
                    CollectionItem(
                        collection_id=collection.id,
                        file_id=file_id,
                        position=position,
                        present=present,
                        changed_at=changed_at,
                    )
                )
                position += POSITION_STEP
            elif changed_at >= item.changed_at:
                if present and not item.present:
                    item.position = position
                    position += POSITION_STEP
                item.present = present
                item.changed_at = changed_at
    session.flush()
    bump_org(session, payload["org_id"])


def replace_items(
    session: Session, collection: CollectionFacts, file_ids: list[str], read_at: datetime
) -> None:
    """Store the item order read from the collections API at ``read_at``.

    Items the reader could not see are not in ``file_ids``. They keep the
    state that events gave them and sort after the items read.
    """
    held = {
        item.file_id: item
        for item in session.scalars(
            select(CollectionItem).where(CollectionItem.collection_id == collection.id)
        )
    }
    for index, file_id in enumerate(file_ids, start=1):
        item = held.get(file_id)
        position = index * POSITION_STEP
        if item is None:
            session.add(
                CollectionItem(
                    collection_id=collection.id,
                    file_id=file_id,
                    position=position,
                    present=True,
                    changed_at=read_at,
                )
            )
        elif read_at >= item.changed_at:
            item.position = position
            item.present = True
            item.changed_at = read_at
    listed = set(file_ids)
    after = (len(file_ids) + 1) * POSITION_STEP
    for file_id, item in held.items():
        if file_id not in listed:
            item.position = after
            after += POSITION_STEP
    if collection.items_read_at is None or read_at > collection.items_read_at:
        collection.items_read_at = read_at
    session.flush()


def apply_collection_deleted(session: Session, payload: dict) -> int:
    """Revoke every link of the deleted collection; return how many."""
    collection = _collection(session, payload["collection_id"], payload["org_id"])
    collection.deleted = True
    now = utcnow()
    result = session.execute(
        update(Link)
        .where(Link.collection_id == collection.id, Link.revoked_at.is_(None))
        .values(
            revoked_at=now,
            revoked_reason="collection deleted",
            updated_at=now,
            version=Link.version + 1,
        )
    )
    bump_org(session, payload["org_id"])
    return result.rowcount
