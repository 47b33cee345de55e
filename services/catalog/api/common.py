"""Helpers shared by the catalog's API modules."""

from __future__ import annotations

from datetime import datetime, timezone

from flask import g

from core.db import close_session, session_factory
from core.settings import get_settings
from services.catalog.access import file_state


def db():
    """Return the request's catalog session; closed at teardown."""
    if "db_session" not in g:
        g.db_session = session_factory("catalog")()
    return g.db_session


def close_db(_exc=None):
    session = g.pop("db_session", None)
    if session is not None:
        close_session(session)


def mtime_to_datetime(mtime_ns: int) -> datetime:
    return datetime.fromtimestamp(mtime_ns / 1e9, tz=timezone.utc)


def file_url(file_id: str, rendition: str) -> str:
    return f"{get_settings().catalog_url}/api/v1/files/{file_id}/{rendition}"


def serialize_file(file, source_name: str, source_state: str, detail=False) -> dict:
    data = {
        "id": file.id,
        "drive": source_name,
        "source_id": file.source_id,
        "path": file.path,
        "folder": file.folder,
        "name": file.name,
        "extension": file.extension,
        "size": file.size,
        "modified_at": mtime_to_datetime(file.mtime_ns),
        "media_type": file.media_type,
        "kind": file.kind,
        "state": file_state(file.presence, source_state),
        "rendition_state": file.rendition_state,
        "thumbnail_url": file_url(file.id, "thumbnail") if file.thumbnail_key else None,
        "preview_url": file_url(file.id, "preview") if file.preview_key else None,
        "error": file.error,
        "missing_since": file.missing_since,
    }
    if detail:
        data.update(
            fingerprint=file.fingerprint,
            checksum=file.checksum,
            metadata=file.media_info,
            first_seen_at=file.first_seen_at,
        )
    return data
