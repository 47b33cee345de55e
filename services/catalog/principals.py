"""Resolution of API tokens to principals."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.auth import Principal, hash_token
from services.catalog.models import ApiToken, GroupMember, Membership, SourceGroup, User


def resolve_token(session: Session, token: str) -> Principal | None:
    row = session.execute(
        select(ApiToken, Membership.role, User.email)
        .join(
            Membership,
            (Membership.org_id == ApiToken.org_id)
            & (Membership.user_id == ApiToken.user_id),
        )
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    api_token, role, email = row
    groups = session.scalars(
        select(GroupMember.group_id)
        .join(SourceGroup, SourceGroup.id == GroupMember.group_id)
        .where(
            GroupMember.user_id == api_token.user_id,
            SourceGroup.org_id == api_token.org_id,
        )
    ).all()
    return Principal(
        user_id=api_token.user_id,
        org_id=api_token.org_id,
        role=role,
        email=email,
        group_ids=frozenset(groups),
    )
