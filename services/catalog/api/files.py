"""File search, details, renditions and duplicates."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flask import Response, stream_with_context
from flask.views import MethodView
from sqlalchemy import and_, func, or_, select

from core.auth import current_principal
from core.errors import NotFound
from core.pagination import decode_cursor, encode_cursor
from core.storage import ObjectNotFound, get_store
from core.web import ServiceBlueprint
from services.catalog import schemas
from services.catalog.access import get_file, visible_files
from services.catalog.api.common import db, serialize_file
from services.catalog.models import File, Source

blp = ServiceBlueprint("files", __name__, url_prefix="/api/v1", description="Files")


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _to_ns(value) -> int:
    """Nanoseconds since the epoch; a naive datetime is taken as UTC.

    Dates outside the range of 64-bit nanosecond timestamps are clamped.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    try:
        seconds = (value - EPOCH).total_seconds()
    except OverflowError:
        return BIGINT_MIN if value.year < 1970 else BIGINT_MAX
    return max(BIGINT_MIN, min(BIGINT_MAX, int(seconds * 1e9)))


def search_query(principal, args: dict):
    """Build the file search for ``args``; shared with the internal API."""
    query = visible_files(principal)
    for term in (args.get("q") or "").lower().split():
        query = query.where(File.name_lower.like(f"%{_escape_like(term)}%", escape="\\"))
    if args.get("type"):
        query = query.where(File.kind == args["type"])
    if args.get("media_type"):
        query = query.where(File.media_type == args["media_type"])
    if args.get("ext"):
        query = query.where(File.extension == args["ext"].lower().lstrip("."))
    if args.get("drive"):
        query = query.where(or_(Source.name == args["drive"], Source.id == args["drive"]))
    state = args.get("state")
    if state == "missing":
        query = query.where(File.presence == "missing")
    elif state in ("online", "offline"):
        query = query.where(File.presence == "present", Source.state == state)
    if args.get("min_size") is not None:
        query = query.where(File.size >= args["min_size"])
    if args.get("max_size") is not None:
        query = query.where(File.size <= args["max_size"])
    if args.get("modified_after") is not None:
        query = query.where(File.mtime_ns >= _to_ns(args["modified_after"]))
    if args.get("modified_before") is not None:
        query = query.where(File.mtime_ns < _to_ns(args["modified_before"]))
    return query


def paginate_files(session, query, args: dict) -> dict:
    query = query.order_by(File.name_lower, File.id)
    after = decode_cursor(args.get("cursor"), 2)
    if after:
        query = query.where(
            or_(
                File.name_lower > after[0],
                and_(File.name_lower == after[0], File.id > after[1]),
            )
        )
    limit = args.get("limit", 100)
    rows = session.execute(query.limit(limit + 1)).all()
    page = rows[:limit]
    cursor = None
    if len(rows) > limit:
        cursor = encode_cursor([page[-1][0].name_lower, page[-1][0].id])
    return {
        "items": [serialize_file(f, name, state) for f, name, state in page],
        "next_cursor": cursor,
    }


@blp.route("/files")
class Files(MethodView):
    @blp.arguments(schemas.FileSearchArgsSchema, location="query")
    @blp.response(200, schemas.FilePageSchema)
    def get(self, args):
        """Search files by name, type, extension, size, date, drive and state.

        An empty query matches every file the caller may see.
        """
        principal = current_principal()
        return paginate_files(db(), search_query(principal, args), args)


@blp.route("/files/lookup")
class FileLookup(MethodView):
    @blp.arguments(schemas.FileIdsSchema)
    @blp.response(200)
    def post(self, data):
        """Return the facts of the given files that the caller may see.

        ``not_found`` lists ids that do not exist or are hidden from the
        caller; the two cases are not told apart.
        """
        from services.catalog.events import facts_for

        principal = current_principal()
        session = db()
        wanted = list(dict.fromkeys(data["ids"]))
        visible = set(
            session.scalars(
                visible_files(principal)
                .with_only_columns(File.id)
                .where(File.id.in_(wanted))
            ).all()
        )
        facts = facts_for(session.connection(), [i for i in wanted if i in visible])
        by_id = {fact["id"]: fact for fact in facts}
        return {
            "items": [by_id[i] for i in wanted if i in by_id],
            "not_found": [i for i in wanted if i not in by_id],
        }


@blp.route("/files/<file_id>")
class FileItem(MethodView):
    @blp.response(200, schemas.FileSchema)
    def get(self, file_id):
        """Show a file with its metadata and the collections that hold it.

        ``collections`` is null when the collections service did not answer.
        """
        principal = current_principal()
        file, name, state = get_file(db(), principal, file_id)
        data = serialize_file(file, name, state, detail=True)
        data["collections"] = _collections_holding(principal.org_id, file.id)
        return data


def _collections_holding(org_id: str, file_id: str) -> list | None:
    import requests

    from core.logs import get_logger
    from core.settings import get_settings

    settings = get_settings()
    try:
        response = requests.get(
            f"{settings.collections_url}/api/v1/internal/files/{file_id}/collections",
            params={"org_id": org_id},
            headers={"X-Internal-Secret": settings.internal_secret or ""},
            timeout=2,
        )
        response.raise_for_status()
        return response.json()
    except (requests.RequestException, ValueError) as error:
        get_logger(__name__).warning(
            "collections_lookup_failed", file_id=file_id, error=str(error)
        )
        return None


def _rendition(file_id: str, which: str):
    file, _, _ = get_file(db(), current_principal(), file_id)
    key = file.thumbnail_key if which == "thumbnail" else file.preview_key
    if not key:
        raise NotFound(
            f"file {file_id!r} has no {which} (rendition state: {file.rendition_state})"
        )
    store = get_store()
    try:
        size = store.size(key)
        chunks = store.iter_chunks(key)
    except ObjectNotFound:
        raise NotFound(f"the {which} of file {file_id!r} is not in the object store") from None
    content_type = "image/webp" if key.endswith(".webp") else "image/jpeg"
    response = Response(stream_with_context(chunks), content_type=content_type)
    response.headers["Content-Length"] = str(size)
    # Keys are content addressed, but access is checked on every request.
    response.headers["Cache-Control"] = "private, max-age=60"
    return response


@blp.route("/files/<file_id>/thumbnail")
class Thumbnail(MethodView):
    @blp.response(200, content_type="image/webp")
    def get(self, file_id):
        """The file's thumbnail (fits in 320 px), online or offline."""
        return _rendition(file_id, "thumbnail")


@blp.route("/files/<file_id>/preview")
class Preview(MethodView):
    @blp.response(200, content_type="image/webp")
    def get(self, file_id):
        """The file's preview (fits in 1440 px), online or offline."""
        return _rendition(file_id, "preview")


@blp.route("/duplicates")
class Duplicates(MethodView):
    @blp.arguments(schemas.PageArgsSchema, location="query")
    @blp.response(200)
    def get(self, args):
        """Groups of files with equal full-content checksums, across drives."""
        principal = current_principal()
        session = db()
        visible = visible_files(principal).where(
            File.checksum.is_not(None), File.presence == "present"
        )
        groups_query = (
            select(File.checksum, func.count(File.id).label("copies"))
            .where(File.id.in_(visible.with_only_columns(File.id)))
            .group_by(File.checksum)
            .having(func.count(File.id) > 1)
            .order_by(File.checksum)
        )
        after = decode_cursor(args["cursor"], 1)
        if after:
            groups_query = groups_query.where(File.checksum > after[0])
        groups = session.execute(groups_query.limit(args["limit"] + 1)).all()
        page = groups[: args["limit"]]
        items = []
        for checksum, copies in page:
            rows = session.execute(
                visible.where(File.checksum == checksum).order_by(Source.name, File.path)
            ).all()
            items.append(
                {
                    "checksum": checksum,
                    "copies": copies,
                    "size": rows[0][0].size if rows else 0,
                    "files": [serialize_file(f, n, s) for f, n, s in rows],
                }
            )
        cursor = encode_cursor([page[-1][0]]) if len(groups) > len(page) else None
        return {"items": items, "next_cursor": cursor}
