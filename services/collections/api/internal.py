"""Service-to-service endpoints, guarded by the deployment's internal secret."""

from __future__ import annotations

from flask.views import MethodView
from sqlalchemy import select

from core.auth import check_internal_secret
from core.settings import get_settings
from core.web import ServiceBlueprint
from services.collections import schemas
from services.collections.api.common import db
from services.collections.models import Collection, CollectionItem

blp = ServiceBlueprint(
    "internal", __name__, url_prefix="/api/v1/internal", description="Internal"
)


@blp.route("/files/<file_id>/collections")
class FileCollections(MethodView):
    @blp.arguments(schemas.InternalArgsSchema, location="query")
    @blp.response(200, schemas.CollectionRefSchema(many=True))
    @blp.doc(security=[])
    def get(self, args, file_id):
        """List the collections of an organization that hold a file, by name.

        The caller (the catalog) checks that the user may see the file.
        """
        check_internal_secret(get_settings().internal_secret)
        rows = db().execute(
            select(Collection.id, Collection.name)
            .join(CollectionItem, CollectionItem.collection_id == Collection.id)
            .where(CollectionItem.file_id == file_id, Collection.org_id == args["org_id"])
            .order_by(Collection.name, Collection.id)
        ).all()
        return [{"id": row.id, "name": row.name} for row in rows]
