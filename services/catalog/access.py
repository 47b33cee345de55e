"""Who may see what inside an organization.

A source belongs to a group. Everyone in the organization sees groups with
"everyone" visibility; a "restricted" group is seen only by its listed
members. Every query for sources or files goes through these helpers.
"""

from __future__ import annotations

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from core.auth import Principal
from core.errors import NotFound
from services.catalog.models import File, GroupMember, Source, SourceGroup


def visible_group_ids(org_id: str, user_id: str):
    """A subquery of the ids of groups the user may see in the organization."""
    member_of = select(GroupMember.group_id).where(GroupMember.user_id == user_id)
    return select(SourceGroup.id).where(
        SourceGroup.org_id == org_id,
        or_(SourceGroup.visibility == "everyone", SourceGroup.id.in_(member_of)),
    )


def visible_source_ids(org_id: str, user_id: str):
    return select(Source.id).where(
        Source.org_id == org_id,
        Source.group_id.in_(visible_group_ids(org_id, user_id)),
    )


def visible_sources(principal: Principal) -> Select:
    return select(Source).where(
        Source.id.in_(visible_source_ids(principal.org_id, principal.user_id))
    )


def visible_files(principal: Principal) -> Select:
    return select(File, Source.name, Source.state).join(
        Source, Source.id == File.source_id
    ).where(
        File.org_id == principal.org_id,
        File.source_id.in_(visible_source_ids(principal.org_id, principal.user_id)),
    )


def get_source(session: Session, principal: Principal, source_id: str) -> Source:
    source = session.scalar(visible_sources(principal).where(Source.id == source_id))
    if source is None:
        raise NotFound(f"drive {source_id!r} not found")
    return source


def find_source(session: Session, principal: Principal, ref: str) -> Source:
    """Find a visible source by id or by name."""
    query = visible_sources(principal).where(or_(Source.id == ref, Source.name == ref))
    source = session.scalar(query)
    if source is None:
        raise NotFound(f"drive {ref!r} not found")
    return source


def get_file(session: Session, principal: Principal, file_id: str):
    row = session.execute(visible_files(principal).where(File.id == file_id)).first()
    if row is None:
        raise NotFound(f"file {file_id!r} not found")
    return row


def file_state(presence: str, source_state: str) -> str:
    if presence == "missing":
        return "missing"
    return "online" if source_state == "online" else "offline"
