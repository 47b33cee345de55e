"""The links API for members: create, list, show, change, revoke, hand over."""

from __future__ import annotations

from datetime import datetime, timezone

from flask import g, request
from flask.views import MethodView
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.auth import Principal, current_principal, role_at_least
from core.db import session_factory, utcnow
from core.errors import Conflict, NotFound, ValidationError
from core.settings import get_settings
from core.web import ServiceBlueprint
from services.sharing import freshness, readmodel, schemas, stats
from services.sharing.clients import MemberClient
from services.sharing.keys import decrypt_token, encrypt_token, new_token, token_digest
from services.sharing.listing import visible_group_ids
from services.sharing.models import (
    CollectionItem,
    FileFacts,
    Link,
    MemberFacts,
    SourceFacts,
)
from services.sharing.passwords import hash_password

blp = ServiceBlueprint("links", __name__, url_prefix="/api/v1", description="Share links")

CREATOR_LEFT_WARNING = (
    "the member who created this link has left the organization, so the link "
    "shows only files from groups visible to everyone; an admin can hand it to "
    "another member with POST /api/v1/links/{id}/owner"
)


def db() -> Session:
    """Return the request's sharing session; closed at teardown."""
    if "db_session" not in g:
        g.db_session = session_factory("sharing")()
    return g.db_session


def close_db(_exc=None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


def link_state(link: Link, now: datetime | None = None) -> str:
    now = now or utcnow()
    if link.revoked_at is not None:
        return "revoked"
    if link.expires_at is not None and link.expires_at <= now:
        return "expired"
    return "active"


def link_url(link: Link) -> str | None:
    token = decrypt_token(link.token_ciphertext)
    if token is None:
        return None
    return f"{get_settings().public_url}/s/{token}"


def _left_creators(session: Session, links: list[Link]) -> set[str]:
    if not links:
        return set()
    rows = session.execute(
        select(MemberFacts.user_id).where(
            MemberFacts.org_id == links[0].org_id,
            MemberFacts.user_id.in_({link.created_by for link in links}),
            MemberFacts.role.is_(None),
        )
    ).scalars()
    return set(rows)


def _links_showing_hidden_files(
    session: Session, principal: Principal, links: list[Link]
) -> set[str]:
    """Return the ids of links that show files of groups ``principal`` cannot see.

    A link shows what its creator may see. Its URL is a key to those files,
    so it is shown only to members who may see all of them.
    """
    if not links:
        return set()
    org_id = links[0].org_id
    own_groups, _left = visible_group_ids(session, org_id, principal.user_id)
    creator_groups: dict[str, set[str]] = {}
    hiding = set()
    for link in links:
        if link.created_by not in creator_groups:
            creator_groups[link.created_by] = visible_group_ids(
                session, org_id, link.created_by
            )[0]
        extra = creator_groups[link.created_by] - own_groups
        if not extra:
            continue
        found = session.scalar(
            select(CollectionItem.file_id)
            .join(FileFacts, FileFacts.id == CollectionItem.file_id)
            .join(SourceFacts, SourceFacts.id == FileFacts.source_id)
            .where(
                CollectionItem.collection_id == link.collection_id,
                SourceFacts.group_id.in_(extra),
            )
            .limit(1)
        )
        if found is not None:
            hiding.add(link.id)
    return hiding


def serialize_links(session: Session, principal: Principal, links: list[Link]) -> list[dict]:
    left = _left_creators(session, links)
    hiding = _links_showing_hidden_files(session, principal, links)
    pending = stats.pending_counts([link.id for link in links])
    now = utcnow()
    result = []
    for link in links:
        extra = pending.get(link.id, {})
        last_access = link.last_access_at
        if extra.get("last_access") and (last_access is None or extra["last_access"] > last_access):
            last_access = extra["last_access"]
        creator_left = link.created_by in left
        url = None if link.id in hiding else link_url(link)
        warnings = []
        if creator_left:
            warnings.append(CREATOR_LEFT_WARNING.format(id=link.id))
        if link.id in hiding:
            warnings.append(
                "the URL is hidden because this link shows files of groups you "
                "cannot see; ask its creator or an admin for it"
            )
        elif url is None:
            warnings.append(
                "the URL cannot be shown because LINK_SECRET changed since the link "
                "was created; create a new link"
            )
        result.append(
            {
                "id": link.id,
                "collection_id": link.collection_id,
                "label": link.label,
                "url": url,
                "state": link_state(link, now),
                "has_password": link.password_hash is not None,
                "allow_download": link.allow_download,
                "show_metadata": link.show_metadata,
                "expires_at": link.expires_at,
                "created_by": link.created_by,
                "creator_left": creator_left,
                "created_at": link.created_at,
                "updated_at": link.updated_at,
                "revoked_at": link.revoked_at,
                "revoked_reason": link.revoked_reason,
                "stats": {
                    "views": link.views + extra.get("views", 0),
                    "downloads": link.downloads + extra.get("downloads", 0),
                    "last_access_at": last_access,
                },
                "warnings": warnings,
            }
        )
    return result


def expiry_from(data: dict) -> tuple[bool, datetime | None]:
    """Return whether the request sets an expiry, and the expiry it sets."""
    if "expires_in" in data:
        return True, utcnow() + schemas.parse_duration(data["expires_in"])
    if "expires_at" in data:
        expires_at = data["expires_at"]
        if expires_at is not None:
            expires_at = expires_at.astimezone(timezone.utc)
            if expires_at <= utcnow():
                raise ValidationError(
                    "expires_at is in the past: give a future time, or null for no expiry",
                    fields={"expires_at": ["must be in the future"]},
                )
        return True, expires_at
    return False, None


def revoke_link(session: Session, link: Link, user_id: str | None, reason: str) -> None:
    """Revoke ``link`` in ``session``; public requests see it once the session commits."""
    now = utcnow()
    link.revoked_at = now
    link.revoked_by = user_id
    link.revoked_reason = reason
    link.updated_at = now
    link.version += 1
    readmodel.bump_org(session, link.org_id)


def get_link(session: Session, principal: Principal, link_id: str, lock: bool = False) -> Link:
    query = select(Link).where(Link.id == link_id, Link.org_id == principal.org_id)
    if lock:
        query = query.with_for_update()
    link = session.scalar(query)
    if link is None:
        raise NotFound(f"link {link_id!r} not found")
    return link


def store_members_and_groups(session: Session, org_id: str, client: MemberClient) -> dict:
    """Store the members, and the groups visible to the client's member; return members by id."""
    members = client.members()
    now = utcnow()
    for member in members:
        readmodel.set_member(session, org_id, member["user_id"], member["role"], now)
    user_ids = {member["email"]: member["user_id"] for member in members}
    for group in client.groups():
        listed = [user_ids[email] for email in group.get("members", []) if email in user_ids]
        readmodel.set_group(session, org_id, group["id"], group["visibility"], listed)
    return {member["user_id"]: member for member in members}


def create_link(session: Session, principal: Principal, data: dict) -> Link:
    """Read the collection, its items and their facts as the member, then create the link.

    The read happens before the write transaction, so no transaction stays
    open during the calls to the other services.
    """
    client = MemberClient(request.headers.get("Authorization", ""))
    collection = client.collection(data["collection_id"])
    item_ids = client.collection_item_ids(collection["id"])
    facts = client.file_facts(item_ids)
    _has_expiry, expires_at = expiry_from(data)

    read_at = readmodel.parse_time(collection.get("updated_at"))
    # An event consumer may insert the same read-model rows at the same
    # moment; the loser of that race rolls back and writes again.
    for attempt in range(3):
        try:
            facts_of_collection = readmodel.set_collection(session, collection, principal.org_id)
            readmodel.replace_items(session, facts_of_collection, item_ids, read_at)
            readmodel.upsert_files(
                session, [f for f in facts if f.get("org_id") == principal.org_id]
            )
            store_members_and_groups(session, principal.org_id, client)
            readmodel.bump_org(session, principal.org_id)
            session.flush()
            break
        except IntegrityError:
            session.rollback()
            if attempt == 2:
                raise

    token = new_token()
    now = utcnow()
    link = Link(
        org_id=principal.org_id,
        collection_id=collection["id"],
        token_digest=token_digest(token),
        token_ciphertext=encrypt_token(token),
        label=data["label"],
        created_by=principal.user_id,
        created_at=now,
        updated_at=now,
        expires_at=expires_at,
        password_hash=hash_password(data["password"]) if data.get("password") else None,
        password_version=1 if data.get("password") else 0,
        allow_download=data["allow_download"],
        show_metadata=data["show_metadata"],
        version=1,
    )
    session.add(link)
    session.commit()
    return link


@blp.route("/links")
class Links(MethodView):
    @blp.arguments(schemas.LinkListArgsSchema, location="query")
    @blp.response(200, schemas.LinkListSchema)
    def get(self, args):
        """List a collection's links, newest first, with state and statistics."""
        principal = current_principal()
        session = db()
        links = session.scalars(
            select(Link)
            .where(Link.org_id == principal.org_id, Link.collection_id == args["collection_id"])
            .order_by(Link.created_at.desc(), Link.id)
        ).all()
        return {"items": serialize_links(session, principal, links)}

    @blp.arguments(schemas.LinkCreateSchema)
    @blp.response(201, schemas.LinkSchema)
    def post(self, data):
        """Create a public link to a collection; editors and above.

        The link shows what its creator may see at the time of each request.
        Without ``expires_at`` or ``expires_in`` it stays valid until revoked.
        """
        principal = current_principal()
        principal.require("editor")
        session = db()
        link = create_link(session, principal, data)
        return serialize_links(session, principal, [link])[0]


@blp.route("/links/<link_id>")
class LinkItem(MethodView):
    @blp.response(200, schemas.LinkSchema)
    def get(self, link_id):
        """Show a link with its URL, state and statistics.

        The URL is null for a member who may not see every file the link shows.
        """
        principal = current_principal()
        session = db()
        return serialize_links(session, principal, [get_link(session, principal, link_id)])[0]

    @blp.arguments(schemas.LinkUpdateSchema)
    @blp.response(200, schemas.LinkSchema)
    def patch(self, data, link_id):
        """Change a link's label, expiry, password, downloads or metadata; editors and above.

        ``password: null`` removes the password. A new or removed password
        signs out every visitor who unlocked the link before.
        """
        principal = current_principal()
        principal.require("editor")
        session = db()
        link = get_link(session, principal, link_id, lock=True)
        if link.revoked_at is not None:
            raise Conflict(f"link {link_id!r} is revoked and cannot be changed")
        has_expiry, expires_at = expiry_from(data)
        if has_expiry:
            link.expires_at = expires_at
        for key in ("label", "allow_download", "show_metadata"):
            if key in data:
                setattr(link, key, data[key])
        if "password" in data:
            link.password_hash = hash_password(data["password"]) if data["password"] else None
            link.password_version += 1
        link.version += 1
        link.updated_at = utcnow()
        readmodel.bump_org(session, principal.org_id)
        session.commit()
        freshness.wait_for_trust_to_end()
        return serialize_links(session, principal, [link])[0]


@blp.route("/links/<link_id>/revoke")
class RevokeLink(MethodView):
    @blp.response(200, schemas.LinkSchema)
    def post(self, link_id):
        """Revoke a link; every request made with it after this call returns is rejected.

        Other links of the collection stay as they are. Revoking a revoked
        link changes nothing.
        """
        principal = current_principal()
        principal.require("editor")
        session = db()
        link = get_link(session, principal, link_id, lock=True)
        if link.revoked_at is None:
            revoke_link(session, link, principal.user_id, "revoked by a member")
            session.commit()
            freshness.wait_for_trust_to_end()
        return serialize_links(session, principal, [link])[0]


@blp.route("/links/<link_id>/owner")
class LinkOwner(MethodView):
    @blp.arguments(schemas.OwnerSchema)
    @blp.response(200, schemas.LinkSchema)
    def post(self, data, link_id):
        """Hand a link to another member, whose visibility it shows from now on; admins only.

        The new owner must be an editor or above.
        """
        principal = current_principal()
        principal.require("admin")
        session = db()
        get_link(session, principal, link_id)
        session.rollback()
        client = MemberClient(request.headers.get("Authorization", ""))
        members = store_members_and_groups(session, principal.org_id, client)
        target = members.get(data["user_id"])
        if target is None:
            session.rollback()
            raise ValidationError(
                f"user_id {data['user_id']!r} is not a member of this organization",
                fields={"user_id": ["not a member"]},
            )
        if not role_at_least(target["role"], "editor"):
            session.rollback()
            raise ValidationError(
                f"user_id {data['user_id']!r} has the {target['role']} role; a link "
                "can only be handed to an editor or above",
                fields={"user_id": ["must be an editor or above"]},
            )
        link = get_link(session, principal, link_id, lock=True)
        link.created_by = target["user_id"]
        link.version += 1
        link.updated_at = utcnow()
        readmodel.bump_org(session, principal.org_id)
        session.commit()
        freshness.wait_for_trust_to_end()
        return serialize_links(session, principal, [link])[0]
