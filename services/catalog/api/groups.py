"""Source groups: who in the organization sees which drives."""

from __future__ import annotations

from flask.views import MethodView
from sqlalchemy import func, select

from core.auth import current_principal
from core.db import utcnow
from core.errors import Conflict, NotFound
from core.web import ServiceBlueprint
from services.catalog import schemas
from services.catalog.access import visible_group_ids
from services.catalog.api.common import db
from services.catalog.events import GROUP_CHANGED, insert_events
from services.catalog.models import GroupMember, Membership, Source, SourceGroup, User

blp = ServiceBlueprint("groups", __name__, url_prefix="/api/v1", description="Source groups")


def serialize_group(session, group: SourceGroup) -> dict:
    members = session.scalars(
        select(User.email)
        .join(GroupMember, GroupMember.user_id == User.id)
        .where(GroupMember.group_id == group.id)
        .order_by(User.email)
    ).all()
    count = session.scalar(select(func.count(Source.id)).where(Source.group_id == group.id))
    return {
        "id": group.id,
        "name": group.name,
        "visibility": group.visibility,
        "members": list(members),
        "source_count": count,
    }


def find_group(session, principal, ref: str) -> SourceGroup:
    """Find a group the caller may see, by id or name."""
    group = session.scalar(
        select(SourceGroup).where(
            SourceGroup.org_id == principal.org_id,
            SourceGroup.id.in_(visible_group_ids(principal.org_id, principal.user_id)),
            (SourceGroup.id == ref) | (SourceGroup.name == ref),
        )
    )
    if group is None:
        raise NotFound(f"group {ref!r} not found")
    return group


def publish_group_change(session, group: SourceGroup) -> None:
    members = session.scalars(
        select(GroupMember.user_id).where(GroupMember.group_id == group.id)
    ).all()
    sources = session.scalars(select(Source.id).where(Source.group_id == group.id)).all()
    insert_events(
        session.connection(),
        GROUP_CHANGED,
        [
            {
                "org_id": group.org_id,
                "group_id": group.id,
                "visibility": group.visibility,
                "members": sorted(members),
                "source_ids": sorted(sources),
                "at": utcnow().isoformat(),
            }
        ],
    )


@blp.route("/groups")
class Groups(MethodView):
    @blp.response(200, schemas.GroupSchema(many=True))
    def get(self):
        """List the groups the caller may see."""
        principal = current_principal()
        session = db()
        groups = session.scalars(
            select(SourceGroup)
            .where(SourceGroup.id.in_(visible_group_ids(principal.org_id, principal.user_id)))
            .order_by(SourceGroup.name)
        )
        return [serialize_group(session, group) for group in groups]

    @blp.arguments(schemas.GroupCreateSchema)
    @blp.response(201, schemas.GroupSchema)
    def post(self, data):
        """Create a group; the creator is listed as a member of it."""
        principal = current_principal()
        principal.require("admin")
        session = db()
        taken = session.scalar(
            select(SourceGroup.id).where(
                SourceGroup.org_id == principal.org_id, SourceGroup.name == data["name"]
            )
        )
        if taken:
            raise Conflict(
                f"a group named {data['name']!r} already exists",
                fields={"name": ["already exists"]},
            )
        group = SourceGroup(org_id=principal.org_id, **data)
        session.add(group)
        session.flush()
        session.add(GroupMember(group_id=group.id, user_id=principal.user_id))
        session.commit()
        return serialize_group(session, group)


@blp.route("/groups/<group_ref>")
class Group(MethodView):
    @blp.response(200, schemas.GroupSchema)
    def get(self, group_ref):
        """Show one group."""
        principal = current_principal()
        session = db()
        return serialize_group(session, find_group(session, principal, group_ref))

    @blp.arguments(schemas.GroupUpdateSchema)
    @blp.response(200, schemas.GroupSchema)
    def patch(self, data, group_ref):
        """Rename a group or change its visibility."""
        principal = current_principal()
        principal.require("admin")
        session = db()
        group = find_group(session, principal, group_ref)
        if "name" in data and data["name"] != group.name:
            taken = session.scalar(
                select(SourceGroup.id).where(
                    SourceGroup.org_id == principal.org_id, SourceGroup.name == data["name"]
                )
            )
            if taken:
                raise Conflict(
                    f"a group named {data['name']!r} already exists",
                    fields={"name": ["already exists"]},
                )
        for key, value in data.items():
            setattr(group, key, value)
        publish_group_change(session, group)
        session.commit()
        return serialize_group(session, group)


@blp.route("/groups/<group_ref>/members")
class GroupMembers(MethodView):
    @blp.arguments(schemas.GroupMemberSchema)
    @blp.response(200, schemas.GroupSchema)
    def post(self, data, group_ref):
        """Grant a member access to a restricted group."""
        principal = current_principal()
        principal.require("admin")
        session = db()
        group = find_group(session, principal, group_ref)
        user = session.scalar(
            select(User)
            .join(Membership, Membership.user_id == User.id)
            .where(
                Membership.org_id == principal.org_id,
                User.email == data["email"].strip().lower(),
            )
        )
        if user is None:
            raise NotFound(
                f"{data['email']} is not a member of this organization",
                fields={"email": ["not a member"]},
            )
        if session.get(GroupMember, (group.id, user.id)) is None:
            session.add(GroupMember(group_id=group.id, user_id=user.id))
            session.flush()
            publish_group_change(session, group)
        session.commit()
        return serialize_group(session, group)


@blp.route("/groups/<group_ref>/members/<email>")
class GroupMemberItem(MethodView):
    @blp.response(200, schemas.GroupSchema)
    def delete(self, group_ref, email):
        """Revoke a member's access to a group."""
        principal = current_principal()
        principal.require("admin")
        session = db()
        group = find_group(session, principal, group_ref)
        user = session.scalar(select(User).where(User.email == email.strip().lower()))
        link = session.get(GroupMember, (group.id, user.id)) if user else None
        if link is None:
            raise NotFound(f"{email} is not listed in group {group.name!r}")
        session.delete(link)
        session.flush()
        publish_group_change(session, group)
        session.commit()
        return serialize_group(session, group)
