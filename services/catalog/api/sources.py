"""Drives: connect, disconnect, rescan, verify, scans and folder views."""

from __future__ import annotations

from pathlib import PurePosixPath

from flask.views import MethodView
from sqlalchemy import select

from core.auth import current_principal
from core.errors import Conflict, DriveOffline, NotFound
from core.pagination import decode_cursor, decode_offset, encode_cursor
from core.db import utcnow
from core.web import ServiceBlueprint
from services.catalog import schemas
from services.catalog.access import find_source, visible_files, visible_sources
from services.catalog.api.common import db, serialize_file
from services.catalog.api.groups import find_group, publish_group_change
from services.catalog.events import publish_source_state, set_source_offline
from services.catalog.models import File, Folder, Scan, ScanIssue, Source, SourceGroup
from workers.scan.walker import path_hash

blp = ServiceBlueprint("sources", __name__, url_prefix="/api/v1", description="Drives and scans")

ACTIVE = ("queued", "running", "finalizing")


def serialize_scan(scan: Scan, issues: list | None = None) -> dict:
    data = {
        "id": scan.id,
        "source_id": scan.source_id,
        "kind": scan.kind,
        "status": scan.status,
        "complete": scan.complete,
        "requested_at": scan.requested_at,
        "started_at": scan.started_at,
        "finished_at": scan.finished_at,
        "attempt": scan.attempt,
        "counts": scan.counts or {},
        "message": scan.message,
    }
    if issues is not None:
        data["issues"] = issues
    return data


def _plain_scan(scan: Scan) -> dict:
    """A scan as JSON-ready values, for nesting in a free-form field."""
    data = serialize_scan(scan)
    for key in ("requested_at", "started_at", "finished_at"):
        if data[key] is not None:
            data[key] = data[key].isoformat()
    return data


def serialize_source(session, source: Source) -> dict:
    group = session.get(SourceGroup, source.group_id) if source.group_id else None
    active = session.scalar(
        select(Scan)
        .where(Scan.source_id == source.id, Scan.status.in_(ACTIVE))
        .order_by(Scan.requested_at.desc())
        .limit(1)
    )
    return {
        "id": source.id,
        "name": source.name,
        "volume_id": source.volume_id,
        "state": source.state,
        "host": source.host,
        "mount_path": source.mount_path,
        "group": group.name if group else None,
        "connected_at": source.connected_at,
        "disconnected_at": source.disconnected_at,
        "last_complete_scan_at": source.last_complete_scan_at,
        "file_count": source.file_count,
        "missing_count": source.missing_count,
        "total_bytes": source.total_bytes,
        "renditions_pending": source.renditions_pending,
        "checksums_pending": source.checksums_pending,
        "active_scan": _plain_scan(active) if active else None,
    }


def start_scan(session, source: Source, kind: str = "scan") -> Scan:
    """Return the drive's active scan of ``kind``, or queue a new one."""
    active = session.scalar(
        select(Scan).where(
            Scan.source_id == source.id, Scan.kind == kind, Scan.status.in_(ACTIVE)
        )
    )
    if active is not None:
        return active
    scan = Scan(org_id=source.org_id, source_id=source.id, kind=kind, counts={})
    session.add(scan)
    session.flush()
    return scan


def enqueue_after_commit(scan: Scan, host: str) -> None:
    from workers.tasks.scans import enqueue_scan

    try:
        enqueue_scan(scan.id, host, scan.kind)
    except Exception as error:  # broker down: the stalled-scan sweep resends it
        from core.logs import get_logger

        get_logger(__name__).warning("scan_enqueue_failed", scan_id=scan.id, error=str(error))


def _unique_name(session, org_id: str, wanted: str) -> str:
    name, n = wanted, 2
    while session.scalar(select(Source.id).where(Source.org_id == org_id, Source.name == name)):
        name = f"{wanted}-{n}"
        n += 1
    return name


@blp.route("/sources")
class Sources(MethodView):
    @blp.arguments(schemas.PageArgsSchema, location="query")
    @blp.response(200, schemas.SourcePageSchema)
    def get(self, args):
        """List the drives the caller may see."""
        principal = current_principal()
        session = db()
        query = visible_sources(principal).order_by(Source.name, Source.id)
        after = decode_cursor(args["cursor"], 2)
        if after:
            query = query.where((Source.name > after[0]) | ((Source.name == after[0]) & (Source.id > after[1])))
        sources = session.scalars(query.limit(args["limit"] + 1)).all()
        page = sources[: args["limit"]]
        cursor = encode_cursor([page[-1].name, page[-1].id]) if len(sources) > args["limit"] else None
        return {"items": [serialize_source(session, s) for s in page], "next_cursor": cursor}

    @blp.arguments(schemas.ConnectSchema)
    @blp.response(200, schemas.SourceSchema)
    def post(self, data):
        """Connect a drive: create or re-attach its source and queue a scan.

        A drive is matched by its volume id, so the same drive mounted at a
        new path or on another host re-attaches to the same source.
        """
        principal = current_principal()
        principal.require("editor")
        session = db()
        source = session.scalar(
            select(Source).where(
                Source.org_id == principal.org_id, Source.volume_id == data["volume_id"]
            )
        )
        _reject_nested(session, principal.org_id, data, source)
        group = None
        if data.get("group"):
            group = find_group(session, principal, data["group"])
        if source is None:
            if group is None:
                group = session.scalar(
                    select(SourceGroup).where(
                        SourceGroup.org_id == principal.org_id, SourceGroup.name == "Everyone"
                    )
                )
            # Leave room for the "-N" suffix that keeps names unique.
            wanted = data.get("name") or PurePosixPath(data["mount_path"]).name[:190] or "drive"
            if data.get("name") and session.scalar(
                select(Source.id).where(Source.org_id == principal.org_id, Source.name == wanted)
            ):
                raise Conflict(
                    f"another drive is already named {wanted!r}",
                    fields={"name": ["already used by another drive"]},
                )
            source = Source(
                org_id=principal.org_id,
                volume_id=data["volume_id"],
                name=_unique_name(session, principal.org_id, wanted),
                group_id=group.id if group else None,
                created_by=principal.user_id,
            )
            session.add(source)
        else:
            # A member who cannot see the drive's group must not learn of it.
            visible = session.scalar(visible_sources(principal).where(Source.id == source.id))
            if visible is None:
                raise Conflict("this drive belongs to a group you cannot see")
            if data.get("name") and data["name"] != source.name:
                taken = session.scalar(
                    select(Source.id).where(
                        Source.org_id == principal.org_id, Source.name == data["name"]
                    )
                )
                if taken:
                    raise Conflict(
                        f"another drive is already named {data['name']!r}",
                        fields={"name": ["already used by another drive"]},
                    )
                source.name = data["name"]
            if group is not None:
                source.group_id = group.id
        source.state = "online"
        source.mount_path = data["mount_path"]
        source.host = data["host"]
        source.connected_at = utcnow()
        session.flush()
        publish_source_state(session.connection(), source)
        scan = start_scan(session, source)
        session.commit()
        enqueue_after_commit(scan, source.host)
        _resume_exports()
        return serialize_source(session, source)


def _reject_nested(session, org_id: str, data: dict, source: Source | None) -> None:
    """Reject a drive whose folder is inside, or contains, another connected drive.

    Its files would be catalogued twice, and the inner drive's marker file
    would be catalogued as a file of the outer one.
    """
    mount = data["mount_path"].rstrip("/") + "/"
    others = session.execute(
        select(Source.name, Source.mount_path).where(
            Source.org_id == org_id,
            Source.host == data["host"],
            Source.state == "online",
            Source.mount_path.is_not(None),
            Source.id != (source.id if source is not None else ""),
        )
    ).all()
    for name, other_path in others:
        other = other_path.rstrip("/") + "/"
        if mount.startswith(other) or other.startswith(mount):
            raise Conflict(
                f"{data['mount_path']} overlaps drive {name!r}, connected at {other_path}; "
                f"connect a drive's root folder, or disconnect {name!r} first",
                fields={"mount_path": [f"overlaps drive {name!r} at {other_path}"]},
            )


def _resume_exports() -> None:
    """Exports waiting for this drive resume as soon as it is connected."""
    from workers.tasks.exports import resume_exports

    try:
        resume_exports.apply_async(queue="default")
    except Exception as error:  # the periodic sweep resumes them later
        from core.logs import get_logger

        get_logger(__name__).warning("export_resume_failed", error=str(error))


@blp.route("/sources/<ref>")
class SourceItem(MethodView):
    @blp.response(200, schemas.SourceSchema)
    def get(self, ref):
        """Show a drive by id or name."""
        session = db()
        return serialize_source(session, find_source(session, current_principal(), ref))

    @blp.arguments(schemas.SourceUpdateSchema)
    @blp.response(200, schemas.SourceSchema)
    def patch(self, data, ref):
        """Rename a drive or move it to another group."""
        principal = current_principal()
        principal.require("admin")
        session = db()
        source = find_source(session, principal, ref)
        if "name" in data and data["name"] != source.name:
            taken = session.scalar(
                select(Source.id).where(Source.org_id == principal.org_id, Source.name == data["name"])
            )
            if taken:
                raise Conflict(
                    f"another drive is already named {data['name']!r}",
                    fields={"name": ["already used by another drive"]},
                )
            source.name = data["name"]
        if "group" in data:
            old_group = session.get(SourceGroup, source.group_id) if source.group_id else None
            group = find_group(session, principal, data["group"])
            source.group_id = group.id
            session.flush()
            publish_group_change(session, group)
            if old_group is not None:
                publish_group_change(session, old_group)
        publish_source_state(session.connection(), source)
        session.commit()
        return serialize_source(session, source)


@blp.route("/sources/<ref>/disconnect")
class Disconnect(MethodView):
    @blp.response(200, schemas.SourceSchema)
    def post(self, ref):
        """Mark a drive offline; a scan in progress stops without changes."""
        principal = current_principal()
        principal.require("editor")
        session = db()
        source = find_source(session, principal, ref)
        set_source_offline(session, source)
        session.commit()
        return serialize_source(session, source)


@blp.route("/sources/<ref>/scans")
class Scans(MethodView):
    @blp.arguments(schemas.PageArgsSchema, location="query")
    @blp.response(200, schemas.ScanPageSchema)
    def get(self, args, ref):
        """Scan history of a drive, newest first."""
        session = db()
        source = find_source(session, current_principal(), ref)
        query = select(Scan).where(Scan.source_id == source.id).order_by(Scan.requested_at.desc(), Scan.id.desc())
        offset = decode_offset(args["cursor"])
        scans = session.scalars(query.offset(offset).limit(args["limit"] + 1)).all()
        page = scans[: args["limit"]]
        cursor = encode_cursor([str(offset + len(page))]) if len(scans) > len(page) else None
        return {"items": [serialize_scan(s) for s in page], "next_cursor": cursor}

    @blp.response(202, schemas.ScanSchema)
    def post(self, ref):
        """Rescan a connected drive."""
        principal = current_principal()
        principal.require("editor")
        session = db()
        source = find_source(session, principal, ref)
        if source.state != "online":
            raise DriveOffline(
                f"drive {source.name!r} is offline: connect it before rescanning",
                drive=source.name,
            )
        scan = start_scan(session, source)
        session.commit()
        enqueue_after_commit(scan, source.host)
        return serialize_scan(scan)


@blp.route("/sources/<ref>/verify")
class Verify(MethodView):
    @blp.response(202, schemas.ScanSchema)
    def post(self, ref):
        """Re-read a drive and report files whose bytes changed silently."""
        principal = current_principal()
        principal.require("editor")
        session = db()
        source = find_source(session, principal, ref)
        if source.state != "online":
            raise DriveOffline(
                f"drive {source.name!r} is offline: connect it to verify it",
                drive=source.name,
            )
        scan = start_scan(session, source, kind="verify")
        session.commit()
        enqueue_after_commit(scan, source.host)
        return serialize_scan(scan)


@blp.route("/scans/<scan_id>")
class ScanItem(MethodView):
    @blp.response(200, schemas.ScanSchema)
    def get(self, scan_id):
        """Show a scan with its progress, counts and per-file issues."""
        principal = current_principal()
        session = db()
        scan = session.scalar(
            select(Scan).where(
                Scan.id == scan_id,
                Scan.source_id.in_(visible_sources(principal).with_only_columns(Source.id)),
            )
        )
        if scan is None:
            raise NotFound(f"scan {scan_id!r} not found")
        issues = session.scalars(
            select(ScanIssue).where(ScanIssue.scan_id == scan.id).order_by(ScanIssue.id).limit(1000)
        )
        issue_list = [
            {"file_id": i.file_id, "path": i.path, "kind": i.kind, "message": i.message}
            for i in issues
        ]
        return serialize_scan(scan, issue_list)


def _folder_hashes(session, source_id: str, folder: str) -> list[str]:
    """Return the hashes of the drive's folders shown as ``folder``, or [] if none.

    Hashes are taken of a folder's bytes on the drive. Names that are not
    valid UTF-8 are shown with U+FFFD, so such a folder is found by its
    shown path, which can stand for more than one folder.
    """
    folder_hash = path_hash(folder.encode("utf-8"))
    if not folder:
        return [folder_hash]
    if session.scalar(
        select(Folder.id).where(Folder.source_id == source_id, Folder.path_hash == folder_hash)
    ) or session.scalar(
        select(File.id).where(File.source_id == source_id, File.folder_hash == folder_hash).limit(1)
    ):
        return [folder_hash]
    if "\ufffd" not in folder:
        return []
    return list(
        session.scalars(
            select(Folder.path_hash).where(Folder.source_id == source_id, Folder.path == folder)
        )
    )


@blp.route("/sources/<ref>/folder")
class FolderView(MethodView):
    @blp.arguments(schemas.FolderArgsSchema, location="query")
    @blp.response(200, schemas.FolderListingSchema)
    def get(self, args, ref):
        """List the subfolders and files of one folder of a drive."""
        principal = current_principal()
        session = db()
        source = find_source(session, principal, ref)
        folder = args["path"].strip("/")
        folder_hashes = _folder_hashes(session, source.id, folder)
        if not folder_hashes:
            raise NotFound(f"folder {folder!r} not found on drive {source.name!r}")
        folders = []
        after = decode_cursor(args["cursor"], 2)
        if after is None:
            folders = [
                {"name": f.name, "path": f.path}
                for f in session.scalars(
                    select(Folder)
                    .where(Folder.source_id == source.id, Folder.parent_hash.in_(folder_hashes))
                    .order_by(Folder.name)
                )
            ]
        query = (
            visible_files(principal)
            .where(File.source_id == source.id, File.folder_hash.in_(folder_hashes))
            .order_by(File.name_lower, File.id)
        )
        if after:
            query = query.where(
                (File.name_lower > after[0]) | ((File.name_lower == after[0]) & (File.id > after[1]))
            )
        rows = session.execute(query.limit(args["limit"] + 1)).all()
        page = rows[: args["limit"]]
        cursor = None
        if len(rows) > args["limit"]:
            cursor = encode_cursor([page[-1][0].name_lower, page[-1][0].id])
        return {
            "drive": source.name,
            "folder": folder,
            "folders": folders,
            "items": [serialize_file(f, name, state) for f, name, state in page],
            "next_cursor": cursor,
        }
