"""Exports (zip archives of files) and single originals."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from flask import Response, request, stream_with_context
from flask.views import MethodView
from marshmallow import Schema, fields, validate
from sqlalchemy import func, select

from core.auth import Principal, check_internal_secret, current_principal
from core.celery_app import QUEUE_EXPORTS, drive_queue
from core.errors import Conflict, DriveOffline, Gone, NotFound, ServiceUnavailable, ValidationError
from core.logs import get_logger
from core.pagination import decode_cursor, decode_offset, encode_cursor
from core.settings import get_settings
from core.storage import ObjectNotFound, get_store
from core.web import ServiceBlueprint, attachment_header
from services.catalog.access import get_file, visible_files
from services.catalog.api.common import db
from services.catalog.models import Export, File, Source
from workers.exports.names import safe_name

log = get_logger(__name__)
blp = ServiceBlueprint("exports", __name__, url_prefix="/api/v1", description="Exports and originals")
internal = ServiceBlueprint("internal_exports", __name__, url_prefix="/api/v1/internal", description="Internal exports")

STAGE_WAIT_SECONDS = 60


class ExportCreateSchema(Schema):
    file_ids = fields.List(
        fields.String(validate=validate.Length(min=1, max=32)),
        required=True,
        validate=validate.Length(min=1, max=100_000),
    )
    skip_offline = fields.Boolean(load_default=False)
    keep_structure = fields.Boolean(load_default=False)
    name = fields.String(load_default=None, validate=validate.Length(min=1, max=120))


class InternalExportCreateSchema(ExportCreateSchema):
    org_id = fields.String(required=True, validate=validate.Length(max=32))
    user_id = fields.String(required=True, validate=validate.Length(max=32))


class OrgArgsSchema(Schema):
    org_id = fields.String(required=True, validate=validate.Length(max=32))
    user_id = fields.String(load_default="", validate=validate.Length(max=32))


def serialize_export(export: Export) -> dict:
    manifest = export.manifest or {}
    return {
        "id": export.id,
        "name": export.name,
        "status": export.status,
        "files_total": export.files_total,
        "files_done": export.files_done,
        "bytes_total": export.bytes_total,
        "bytes_done": export.bytes_done,
        "waiting_for": export.waiting_for or [],
        "skipped": manifest.get("skipped", []),
        "substituted": manifest.get("substituted", []),
        "archive_size": export.archive_size,
        "error": export.error,
        "created_at": export.created_at.isoformat() if export.created_at else None,
        "finished_at": export.finished_at.isoformat() if export.finished_at else None,
        "expires_at": export.expires_at.isoformat() if export.expires_at else None,
    }


def create_export(session, principal: Principal, data: dict) -> Export:
    wanted = list(dict.fromkeys(data["file_ids"]))
    rows = session.execute(
        visible_files(principal).where(File.id.in_(wanted))
    ).all()
    fingerprints = {f.id: f.fingerprint for f, _, _ in rows}
    unknown = [i for i in wanted if i not in fingerprints]
    if unknown:
        shown = ", ".join(unknown[:10])
        raise ValidationError(
            f"{len(unknown)} file ids are unknown or not visible: {shown}",
            fields={"file_ids": [f"unknown or not visible: {shown}"]},
        )
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    export = Export(
        org_id=principal.org_id,
        user_id=principal.user_id,
        name=safe_name(data.get("name") or f"export-{stamp}").replace("/", "_"),
        file_ids=wanted,
        skip_offline=data["skip_offline"],
        keep_structure=data["keep_structure"],
        fingerprints=fingerprints,
        status="queued",
    )
    session.add(export)
    session.commit()
    _enqueue_plan(export.id)
    return export


def _enqueue_plan(export_id: str) -> None:
    from workers.tasks.exports import plan_export

    try:
        plan_export.apply_async(args=[export_id], queue=QUEUE_EXPORTS)
    except Exception as error:  # broker down: the resume sweep plans it later
        log.warning("export_enqueue_failed", export_id=export_id, error=str(error))


def _get_export(session, org_id: str, export_id: str) -> Export:
    export = session.scalar(select(Export).where(Export.id == export_id, Export.org_id == org_id))
    if export is None:
        raise NotFound(f"export {export_id!r} not found")
    return export


def _member_export(session, principal: Principal, export_id: str) -> Export:
    """An export the member made, or one of only files the member may see."""
    export = _get_export(session, principal.org_id, export_id)
    if export.user_id == principal.user_id:
        return export
    ids = export.file_ids
    visible = session.scalar(
        select(func.count()).select_from(
            visible_files(principal).with_only_columns(File.id).where(File.id.in_(ids)).subquery()
        )
    )
    if visible != len(set(ids)):
        raise NotFound(f"export {export_id!r} not found")
    return export


def archive_response(export: Export) -> Response:
    if export.status == "expired":
        raise Gone(f"export {export.id!r} expired and its archive was deleted")
    if export.status != "succeeded" or not export.archive_key:
        raise Conflict(f"export {export.id!r} is {export.status}; its archive is not ready")
    store = get_store()
    try:
        chunks = store.iter_chunks(export.archive_key)
    except ObjectNotFound:
        raise Gone(f"the archive of export {export.id!r} is no longer stored") from None
    response = Response(stream_with_context(chunks), content_type="application/zip")
    response.headers["Content-Length"] = str(export.archive_size)
    response.headers["Content-Disposition"] = attachment_header(f"{export.name}.zip")
    response.headers["Cache-Control"] = "no-store"
    return response


def original_response(session, principal: Principal, file_id: str) -> Response:
    """Stream one original, read on its drive's host; refuse if offline."""
    from workers.exports.archive import EntryChanged
    from workers.tasks.exports import DriveGone, open_drive_file, original_key, stage_original

    file, drive, state = get_file(session, principal, file_id)
    if file.presence == "missing":
        raise Gone(f"{file.path} is missing from drive {drive!r} since its last scan")
    if state != "online":
        raise DriveOffline(
            f"the original of {file.name} is on drive {drive!r}, which is offline; "
            f"connect drive {drive!r} to open it",
            drive=drive,
        )
    source = session.get(Source, file.source_id)
    try:
        if source.host == get_settings().drive_host:
            chunks = open_drive_file(file.id, file.fingerprint, file.size)
        else:
            store = get_store()
            key = original_key(file.id, file.fingerprint)
            if not store.exists(key):
                stage_original.apply_async(
                    args=[file.id, file.fingerprint, file.size], queue=drive_queue(source.host)
                )
                deadline = time.monotonic() + STAGE_WAIT_SECONDS
                while not store.exists(key):
                    if time.monotonic() > deadline:
                        raise ServiceUnavailable(
                            f"the host of drive {drive!r} ({source.host}) did not send the "
                            "file in time; retry shortly"
                        )
                    time.sleep(0.25)
            chunks = store.iter_chunks(key)
    except DriveGone:
        raise DriveOffline(
            f"drive {drive!r} cannot be read; connect it to open {file.name}", drive=drive
        ) from None
    except EntryChanged:
        raise Conflict(
            f"{file.path} changed on drive {drive!r} since it was scanned; rescan the drive"
        ) from None
    response = Response(stream_with_context(chunks), content_type=file.media_type)
    response.headers["Content-Length"] = str(file.size)
    response.headers["Content-Disposition"] = attachment_header(file.name)
    response.headers["Cache-Control"] = "no-store"
    return response


@blp.route("/exports")
class Exports(MethodView):
    @blp.arguments(ExportCreateSchema)
    @blp.response(202)
    def post(self, data):
        """Start a zip export of files; it waits for offline drives unless
        ``skip_offline`` is set."""
        return serialize_export(create_export(db(), current_principal(), data))

    @blp.arguments(Schema.from_dict({
        "limit": fields.Integer(load_default=50, validate=validate.Range(min=1, max=500)),
        "cursor": fields.String(load_default=None),
    })(), location="query")  # fmt: skip
    @blp.response(200)
    def get(self, args):
        """List the caller's exports, newest first."""
        principal = current_principal()
        query = select(Export).where(
            Export.org_id == principal.org_id, Export.user_id == principal.user_id
        ).order_by(
            Export.created_at.desc(), Export.id.desc()
        )
        offset = decode_offset(args["cursor"])
        rows = db().scalars(query.offset(offset).limit(args["limit"] + 1)).all()
        page = rows[: args["limit"]]
        cursor = encode_cursor([str(offset + len(page))]) if len(rows) > len(page) else None
        return {"items": [serialize_export(e) for e in page], "next_cursor": cursor}


@blp.route("/exports/<export_id>")
class ExportItem(MethodView):
    @blp.response(200)
    def get(self, export_id):
        """Show an export's state and progress."""
        return serialize_export(_member_export(db(), current_principal(), export_id))


@blp.route("/exports/<export_id>/cancel")
class ExportCancel(MethodView):
    @blp.response(200)
    def post(self, export_id):
        """Cancel an export that has not finished."""
        session = db()
        principal = current_principal()
        export = _member_export(session, principal, export_id)
        if export.user_id != principal.user_id:
            principal.require("admin")
        if export.status in ("queued", "waiting"):
            export.status = "cancelled"
            export.finished_at = datetime.now(timezone.utc)
        elif export.status == "running":
            export.cancel_requested = True
        session.commit()
        return serialize_export(export)


@blp.route("/exports/<export_id>/archive")
class ExportArchive(MethodView):
    @blp.response(200, content_type="application/zip")
    def get(self, export_id):
        """Download a finished export's zip."""
        return archive_response(_member_export(db(), current_principal(), export_id))


@blp.route("/files/<file_id>/original")
class Original(MethodView):
    @blp.response(200, content_type="application/octet-stream")
    def get(self, file_id):
        """Download a file's original; refused, naming the drive, while it is offline."""
        return original_response(db(), current_principal(), file_id)


def _internal_principal(session, org_id: str, user_id: str) -> Principal:
    from workers.tasks.exports import principal_for

    return principal_for(session, org_id, user_id)


@internal.route("/exports")
class InternalExports(MethodView):
    @internal.arguments(InternalExportCreateSchema)
    @internal.response(202)
    @internal.doc(security=[])
    def post(self, data):
        """Start an export with a given member's visibility (share links)."""
        check_internal_secret(get_settings().internal_secret)
        session = db()
        principal = _internal_principal(session, data["org_id"], data["user_id"])
        return serialize_export(create_export(session, principal, data))


@internal.route("/exports/<export_id>")
class InternalExportItem(MethodView):
    @internal.arguments(OrgArgsSchema, location="query")
    @internal.response(200)
    @internal.doc(security=[])
    def get(self, args, export_id):
        """Show an export for another service."""
        check_internal_secret(get_settings().internal_secret)
        return serialize_export(_get_export(db(), args["org_id"], export_id))


@internal.route("/exports/<export_id>/archive")
class InternalExportArchive(MethodView):
    @internal.arguments(OrgArgsSchema, location="query")
    @internal.response(200, content_type="application/zip")
    @internal.doc(security=[])
    def get(self, args, export_id):
        """Stream an export's zip for another service."""
        check_internal_secret(get_settings().internal_secret)
        return archive_response(_get_export(db(), args["org_id"], export_id))


@internal.route("/files/<file_id>/original")
class InternalOriginal(MethodView):
    @internal.arguments(OrgArgsSchema, location="query")
    @internal.response(200, content_type="application/octet-stream")
    @internal.doc(security=[])
    def get(self, args, file_id):
        """Stream an original with a given member's visibility (share links)."""
        check_internal_secret(get_settings().internal_secret)
        session = db()
        principal = _internal_principal(session, args["org_id"], args["user_id"])
        return original_response(session, principal, file_id)
