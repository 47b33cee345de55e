"""The collections service's read model of catalog files, drives and groups.

The catalog owns files, drives and groups. This service keeps the facts it
needs to list collections without calling the catalog: they are written
from the catalog's lookup response when items are added, and from the
catalog's events afterwards. Every write is ordered by a timestamp, so a
replayed or late event never overwrites newer facts.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.auth import Principal
from core.outbox import parse_time
from services.collections.bulk import upsert_newer_rows
from services.collections.models import FileFacts, GroupFacts, SourceFacts


FILE_COLUMNS = (
    "org_id",
    "source_id",
    "path",
    "name",
    "media_type",
    "kind",
    "size",
    "fingerprint",
    "checksum",
    "presence",
    "content_version",
    "rendition_state",
    "thumbnail_key",
    "preview_key",
    "width",
    "height",
    "captured_at",
    "updated_at",
)


def _insert(session: Session, model):
    """Return an INSERT for ``model`` that supports ON CONFLICT on this dialect."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


def _file_row(facts: dict) -> dict:
    row = {"id": facts["id"]}
    for column in FILE_COLUMNS:
        row[column] = facts.get(column)
    row["updated_at"] = parse_time(facts.get("updated_at"))
    row["captured_at"] = str(row["captured_at"]) if row["captured_at"] else None
    for column, default in (
        ("path", ""),
        ("name", ""),
        ("media_type", "application/octet-stream"),
        ("kind", "other"),
        ("size", 0),
        ("presence", "present"),
        ("content_version", 1),
        ("rendition_state", "pending"),
    ):
        if row[column] is None:
            row[column] = default
    return row


def upsert_files(session: Session, facts_list: list[dict], seen_at: datetime | None = None) -> None:
    """Store file facts, keeping the stored ones where they are newer.

    The drive's name, state and group in the facts update the ``sources``
    table too. They are ordered by ``seen_at`` when given (facts fresh from a
    catalog lookup), otherwise by the facts' own ``updated_at``, which the
    catalog sets in the transaction that publishes them.

    NOTE: ``seen_at`` comes from this service's clock and event times from
    the catalog's, so clock skew between the two hosts can reorder them.
    """
    if not facts_list:
        return
    latest: dict[str, dict] = {}
    for facts in facts_list:
        row = _file_row(facts)
        kept = latest.get(row["id"])
        if kept is None or kept["updated_at"] <= row["updated_at"]:
            latest[row["id"]] = row
    if not upsert_newer_rows(session, FileFacts.__table__, list(latest.values()), "updated_at"):
        statement = _insert(session, FileFacts)
        statement = statement.on_conflict_do_update(
            index_elements=[FileFacts.id],
            set_={column: statement.excluded[column] for column in FILE_COLUMNS},
            where=FileFacts.updated_at < statement.excluded.updated_at,
        )
        session.execute(statement, list(latest.values()))

    sources: dict[str, dict] = {}
    for facts in facts_list:
        if not facts.get("source_id") or facts.get("source_state") is None:
            continue
        at = seen_at or parse_time(facts.get("updated_at"))
        kept = sources.get(facts["source_id"])
        if kept is None or kept["state_at"] <= at:
            sources[facts["source_id"]] = {
                "id": facts["source_id"],
                "org_id": facts["org_id"],
                "name": facts.get("source_name") or "",
                "state": facts["source_state"],
                "group_id": facts.get("group_id"),
                "state_at": at,
            }
    upsert_sources(session, list(sources.values()))


def upsert_sources(session: Session, rows: list[dict]) -> None:
    """Store drive facts, keeping the stored ones where ``state_at`` is newer."""
    if not rows:
        return
    statement = _insert(session, SourceFacts)
    statement = statement.on_conflict_do_update(
        index_elements=[SourceFacts.id],
        set_={
            column: statement.excluded[column]
            for column in ("org_id", "name", "state", "group_id", "state_at")
        },
        where=SourceFacts.state_at < statement.excluded.state_at,
    )
    session.execute(statement, rows)


def apply_source_state(session: Session, payload: dict) -> None:
    """Apply a ``catalog.source_state`` event unless newer drive facts are stored."""
    upsert_sources(
        session,
        [
            {
                "id": payload["source_id"],
                "org_id": payload["org_id"],
                "name": payload.get("source_name") or "",
                "state": payload["state"],
                "group_id": payload.get("group_id"),
                "state_at": parse_time(payload.get("at")),
            }
        ],
    )


def upsert_groups(
    session: Session, org_id: str, visibilities: dict[str, str], seen_at: datetime
) -> None:
    """Store the visibility of groups as of ``seen_at``, keeping stored values that are newer.

    NOTE: as in ``upsert_files``, a ``seen_at`` from this service's clock is
    compared with event times from the catalog's clock.
    """
    if not visibilities:
        return
    statement = _insert(session, GroupFacts)
    statement = statement.on_conflict_do_update(
        index_elements=[GroupFacts.group_id],
        set_={
            "visibility": statement.excluded.visibility,
            "updated_at": statement.excluded.updated_at,
        },
        where=GroupFacts.updated_at < statement.excluded.updated_at,
    )
    rows = [
        {
            "group_id": group_id,
            "org_id": org_id,
            "visibility": visibility,
            "updated_at": seen_at,
        }
        for group_id, visibility in visibilities.items()
    ]
    session.execute(statement, rows)


def apply_group_changed(session: Session, payload: dict) -> None:
    """Apply a ``catalog.group_changed`` event unless a newer visibility is stored.

    The event's list of drives is not applied. The catalog publishes a
    ``catalog.source_state`` event, with the drive's group, for every change
    of a drive's group, and those events are ordered per drive.
    """
    upsert_groups(
        session,
        payload["org_id"],
        {payload["group_id"]: payload["visibility"]},
        parse_time(payload.get("at")),
    )


def is_group_visible(group_id: str | None, visibility: str | None, principal: Principal) -> bool:
    """Decide whether ``principal`` may see files of a group.

    NOTE: a group with no stored visibility (no lookup by a member who can
    see it and no group event yet) counts as restricted, so its files show
    only to the group's listed members until its visibility is known.
    """
    if group_id is None:
        return False
    if group_id in principal.group_ids:
        return True
    return visibility == "everyone"


def hidden_source_ids(session: Session, principal: Principal) -> list[str]:
    """Return the ids of the organization's drives whose files ``principal`` may not see."""
    rows = session.execute(
        select(SourceFacts.id, SourceFacts.group_id, GroupFacts.visibility)
        .outerjoin(GroupFacts, GroupFacts.group_id == SourceFacts.group_id)
        .where(SourceFacts.org_id == principal.org_id)
    ).all()
    return sorted(
        source_id
        for source_id, group_id, visibility in rows
        if not is_group_visible(group_id, visibility, principal)
    )


def file_state(presence: str | None, source_state: str | None) -> str:
    """Return "missing", "online" or "offline" for a file and its drive."""
    if presence == "missing":
        return "missing"
    return "online" if source_state == "online" else "offline"
