"""Organizations, members and API tokens."""

from __future__ import annotations

from flask.views import MethodView
from sqlalchemy import func, select, text

from core.auth import current_principal, generate_token, hash_token
from core.errors import Conflict, Forbidden, NotFound
from core.settings import get_settings
from core.web import ServiceBlueprint
from services.catalog import schemas
from services.catalog.api.common import db
from services.catalog.api.groups import publish_group_change
from services.catalog.events import publish_member
from services.catalog.models import (
    ApiToken,
    GroupMember,
    Membership,
    Organization,
    SourceGroup,
    User,
)

# Advisory lock key held while an organization is created (any constant).
FIRST_ORG_LOCK = 7_314_001

blp = ServiceBlueprint("orgs", __name__, url_prefix="/api/v1", description="Organizations and members")


def issue_token(session, org_id: str, user_id: str, label: str) -> str:
    token = generate_token()
    session.add(
        ApiToken(org_id=org_id, user_id=user_id, token_hash=hash_token(token), label=label)
    )
    return token


def get_or_create_user(session, email: str, name: str = "") -> User:
    email = email.strip().lower()
    user = session.scalar(select(User).where(User.email == email))
    if user is None:
        user = User(email=email, name=name)
        session.add(user)
        session.flush()
    return user


@blp.route("/orgs")
class Orgs(MethodView):
    @blp.arguments(schemas.OrgCreateSchema)
    @blp.response(201, schemas.TokenCreatedSchema)
    @blp.doc(security=[])
    def post(self, data):
        """Create an organization with its owner and the owner's first token.

        Allowed without a token for the first organization; later ones need
        the deployment's internal secret in ``X-Internal-Secret``.
        """
        from flask import request
        import hmac

        session = db()
        if session.get_bind().dialect.name == "postgresql":
            # Two first requests at once must not both find no organization.
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FIRST_ORG_LOCK})
        has_orgs = session.scalar(select(func.count(Organization.id))) > 0
        secret = get_settings().internal_secret
        given = request.headers.get("X-Internal-Secret", "")
        if has_orgs and not (secret and hmac.compare_digest(given, secret)):
            raise Forbidden(
                "an organization already exists; creating another needs the "
                "deployment's internal secret (X-Internal-Secret)"
            )
        org = Organization(name=data["name"])
        session.add(org)
        session.flush()
        user = get_or_create_user(session, data["email"], data["user_name"])
        session.add(Membership(org_id=org.id, user_id=user.id, role="owner"))
        session.add(SourceGroup(org_id=org.id, name="Everyone", visibility="everyone"))
        token = issue_token(session, org.id, user.id, "init")
        session.commit()
        return {"org_id": org.id, "user_id": user.id, "token": token}


@blp.route("/me")
class Me(MethodView):
    @blp.response(200)
    def get(self):
        """Describe the caller: user, organization and role."""
        principal = current_principal()
        org = db().get(Organization, principal.org_id)
        return {**principal.as_dict(), "org_name": org.name}


@blp.route("/members")
class Members(MethodView):
    @blp.response(200, schemas.MemberSchema(many=True))
    def get(self):
        """List the organization's members."""
        principal = current_principal()
        rows = db().execute(
            select(User, Membership.role)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.org_id == principal.org_id)
            .order_by(User.email)
        )
        return [
            {"user_id": u.id, "email": u.email, "name": u.name, "role": role}
            for u, role in rows
        ]

    @blp.arguments(schemas.MemberCreateSchema)
    @blp.response(201, schemas.TokenCreatedSchema)
    def post(self, data):
        """Add a member and return a first API token to hand to them."""
        principal = current_principal()
        principal.require("admin")
        if data["role"] == "owner" and principal.role != "owner":
            raise Forbidden("only an owner can add another owner")
        session = db()
        user = get_or_create_user(session, data["email"], data["name"])
        exists = session.scalar(
            select(Membership).where(
                Membership.org_id == principal.org_id, Membership.user_id == user.id
            )
        )
        if exists:
            raise Conflict(
                f"{user.email} is already a member",
                fields={"email": ["already a member"]},
            )
        session.add(Membership(org_id=principal.org_id, user_id=user.id, role=data["role"]))
        publish_member(session.connection(), principal.org_id, user.id, data["role"])
        token = issue_token(session, principal.org_id, user.id, "invite")
        session.commit()
        return {"org_id": principal.org_id, "user_id": user.id, "token": token}


def _membership(session, org_id: str, user_id: str) -> Membership:
    membership = session.scalar(
        select(Membership).where(Membership.org_id == org_id, Membership.user_id == user_id)
    )
    if membership is None:
        raise NotFound(f"member {user_id!r} not found")
    return membership


@blp.route("/members/<user_id>")
class Member(MethodView):
    @blp.arguments(schemas.MemberUpdateSchema)
    @blp.response(200, schemas.MemberSchema)
    def patch(self, data, user_id):
        """Change a member's role."""
        principal = current_principal()
        principal.require("admin")
        session = db()
        membership = _membership(session, principal.org_id, user_id)
        if "owner" in (membership.role, data["role"]) and principal.role != "owner":
            raise Forbidden("only an owner can grant or remove the owner role")
        if membership.role == "owner" and data["role"] != "owner":
            owners = session.scalar(
                select(func.count(Membership.id)).where(
                    Membership.org_id == principal.org_id, Membership.role == "owner"
                )
            )
            if owners <= 1:
                raise Forbidden(
                    "the last owner cannot give up the owner role; make another "
                    "member owner first",
                    fields={"role": ["the organization needs an owner"]},
                )
        membership.role = data["role"]
        publish_member(session.connection(), principal.org_id, user_id, data["role"])
        session.commit()
        user = session.get(User, user_id)
        return {"user_id": user.id, "email": user.email, "name": user.name, "role": membership.role}

    @blp.response(204)
    def delete(self, user_id):
        """Remove a member; what they created stays with the organization."""
        principal = current_principal()
        principal.require("admin")
        session = db()
        membership = _membership(session, principal.org_id, user_id)
        if membership.role == "owner":
            owners = session.scalar(
                select(func.count(Membership.id)).where(
                    Membership.org_id == principal.org_id, Membership.role == "owner"
                )
            )
            if principal.role != "owner" or owners <= 1:
                raise Forbidden("the last owner cannot be removed, and only owners remove owners")
        session.delete(membership)
        tokens = session.scalars(
            select(ApiToken).where(
                ApiToken.org_id == principal.org_id, ApiToken.user_id == user_id
            )
        )
        for token in tokens:
            session.delete(token)
        # Grants end with the membership: re-adding the member grants nothing.
        org_groups = select(SourceGroup.id).where(SourceGroup.org_id == principal.org_id)
        granted_groups = []
        for grant in session.scalars(
            select(GroupMember).where(
                GroupMember.user_id == user_id, GroupMember.group_id.in_(org_groups)
            )
        ):
            granted_groups.append(grant.group_id)
            session.delete(grant)
        session.flush()
        # Other services keep each group's member list from these events, so
        # a rejoining member must not find the old grants there either.
        for group_id in sorted(granted_groups):
            publish_group_change(session, session.get(SourceGroup, group_id))
        publish_member(session.connection(), principal.org_id, user_id, None)
        session.commit()


@blp.route("/tokens")
class Tokens(MethodView):
    @blp.response(201, schemas.TokenCreatedSchema)
    def post(self):
        """Issue another API token for the caller."""
        principal = current_principal()
        session = db()
        token = issue_token(session, principal.org_id, principal.user_id, "api")
        session.commit()
        return {"org_id": principal.org_id, "user_id": principal.user_id, "token": token}
