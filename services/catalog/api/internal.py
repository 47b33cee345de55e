"""Service-to-service endpoints, guarded by the deployment's internal secret."""

from __future__ import annotations

from flask import request
from flask.views import MethodView
from marshmallow import Schema, fields

from core.auth import check_internal_secret
from core.errors import NotFound
from core.settings import get_settings
from core.web import ServiceBlueprint
from services.catalog.api.common import db
from services.catalog.principals import resolve_token

blp = ServiceBlueprint(
    "internal", __name__, url_prefix="/api/v1/internal", description="Internal"
)


class IntrospectSchema(Schema):
    token = fields.String(required=True)


@blp.route("/introspect")
class Introspect(MethodView):
    @blp.arguments(IntrospectSchema)
    @blp.response(200)
    @blp.doc(security=[])
    def post(self, data):
        """Resolve an API token to its principal, for the other services."""
        check_internal_secret(get_settings().internal_secret)
        principal = resolve_token(db(), data["token"])
        if principal is None:
            raise NotFound("unknown or revoked token")
        return principal.as_dict()


def require_internal():
    check_internal_secret(get_settings().internal_secret)
    return request
