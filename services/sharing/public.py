"""Public pages and JSON of share links: no account, only the token.

Every route reads the link from the database and checks it before doing
anything else: an unknown token, a revoked or expired link, a missing
password unlock, a file the link's creator may not see now and a download
the link does not allow are all rejected. The HTML page returns an HTML
error page and every other route a JSON error. No route changes anything but
the link's statistics.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass

from flask import (
    Blueprint,
    Response,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    stream_with_context,
)
from itsdangerous import BadSignature, URLSafeSerializer, URLSafeTimedSerializer

from core.errors import error_body
from core.logs import get_logger
from core.storage import ObjectNotFound, StorageError, get_store
from core.web import attachment_header
from services.sharing import freshness, ratelimit, stats
from services.sharing.clients import ExportClient, UpstreamError
from services.sharing.keys import cookie_secret
from services.sharing.listing import (
    LinkState,
    Listing,
    cached_link,
    get_listing,
    load_link,
    page,
)
from services.sharing.passwords import verify_password

log = get_logger(__name__)

blp = Blueprint(
    "public",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/s-static",
)

PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
# Longest token accepted; ``secrets.token_urlsafe(32)`` makes 43 characters.
MAX_TOKEN_LENGTH = 100
UNLOCK_COOKIE = "share_unlock"
UNLOCK_MAX_AGE = 7 * 24 * 3600
STREAM_CHUNK = 1 << 16
RENDITION_TYPES = {".webp": "image/webp", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


class PublicError(Exception):
    """A rejected public request: its HTTP status, error code and message for the visitor."""

    def __init__(self, status: int, code: str, message: str, **extra):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


@dataclass
class Context:
    token: str
    link: LinkState


def _wants_html() -> bool:
    return request.endpoint in ("public.show_page", "public.unlock") and not request.is_json


@blp.errorhandler(PublicError)
def render_public_error(error: PublicError):
    if _wants_html():
        locked = error.code == "password_required"
        body = render_template(
            "locked.html" if locked else "message.html",
            message=error.message,
            status=error.status,
            token=error.extra.get("token"),
        )
        response = make_response(body, error.status)
    else:
        extra = {k: v for k, v in error.extra.items() if k != "token"}
        response = jsonify(error_body(error.code, error.message, **extra))
        response.status_code = error.status
    if error.status == 429:
        response.headers["Retry-After"] = str(ratelimit.retry_after_seconds())
    return response


def _unlock_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(cookie_secret(), salt="link-unlock")


def _export_serializer() -> URLSafeSerializer:
    return URLSafeSerializer(cookie_secret(), salt="link-export")


def _is_unlocked(link: LinkState) -> bool:
    value = request.cookies.get(UNLOCK_COOKIE)
    if not value:
        return False
    try:
        data = _unlock_serializer().loads(value, max_age=UNLOCK_MAX_AGE)
    except BadSignature:
        return False
    return data == [link.id, link.password_version]


def _current_link(token: str) -> LinkState | None:
    """Return the link of ``token``, or None if there is no such link.

    A state read by an earlier request is used while Redis confirms it is
    current. Otherwise the link is read from the database.
    """
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    cached = cached_link(token)
    if cached is not None and freshness.is_current(cached.org_id, cached.org_version):
        return cached
    return load_link(token)


def _is_open(link: LinkState) -> bool:
    if link.revoked_at is not None or link.expired:
        return False
    return link.password_hash is None or _is_unlocked(link)


def find_link(token: str, count_view: bool = False) -> LinkState:
    """Return the link of ``token`` if it is active, or raise PublicError.

    With ``count_view``, a view is counted once the link is also unlocked.
    """
    link = _current_link(token)
    if link is None:
        if ratelimit.lookups_blocked():
            raise PublicError(429, "too_many_requests", "Too many requests for unknown links; wait a minute and retry.")
        ratelimit.count_lookup_failure()
        raise PublicError(404, "link_not_found", "This link does not exist. Check that you copied the whole address.")
    if link.revoked_at is not None:
        raise PublicError(410, "link_revoked", "This link was revoked by its owner and no longer works.")
    if link.expired:
        raise PublicError(410, "link_expired", "This link has expired. Ask its owner for a new one.")
    if count_view and _is_open(link):
        stats.count_view(link.id)
    return link


def open_link(token: str, count_view: bool = False) -> Context:
    """Return the link of ``token`` if it is active and unlocked, or raise PublicError.

    With ``count_view``, the request counts as a view of the link.
    """
    link = find_link(token, count_view)
    if link.password_hash is not None and not _is_unlocked(link):
        raise PublicError(
            401, "password_required",
            "This link is protected by a password. Enter it to continue.", token=token,
        )  # fmt: skip
    return Context(token, link)


def _require_downloads(link: LinkState) -> None:
    if not link.allow_download:
        raise PublicError(403, "downloads_not_allowed", "Downloads are not allowed for this link.")


def _entry(listing: Listing, file_id: str):
    entry = listing.by_id.get(file_id)
    if entry is None:
        raise PublicError(404, "file_not_found", f"File {file_id!r} is not part of this link.")
    return entry


def _page_args(args) -> tuple[str | None, int]:
    raw = args.get("limit")
    if raw is None:
        return args.get("cursor") or None, PAGE_SIZE
    try:
        limit = int(raw)
    except ValueError:
        limit = -1
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise PublicError(
            422, "invalid", f"limit={raw!r} is invalid: use a number from 1 to {MAX_PAGE_SIZE}",
            fields={"limit": [f"must be between 1 and {MAX_PAGE_SIZE}"]},
        )  # fmt: skip
    return args.get("cursor") or None, limit


def _listing_page(listing: Listing, cursor: str | None, limit: int):
    from core.errors import ValidationError

    try:
        return page(listing, cursor, limit)
    except ValidationError as error:
        raise PublicError(422, "invalid", error.message, fields=error.fields) from None


# Rendered pages by (token, link version, organization version, cursor,
# limit). The link itself is still checked on every request before this.
_rendered_pages: OrderedDict = OrderedDict()
_rendered_lock = threading.Lock()
RENDERED_PAGES = 512


def _render_page(token: str, link: LinkState, cursor, limit: int) -> bytes:
    key = (token, link.version, link.org_version, cursor, limit)
    with _rendered_lock:
        if key in _rendered_pages:
            _rendered_pages.move_to_end(key)
            return _rendered_pages[key]
    listing = get_listing(token, link)
    entries, next_cursor = _listing_page(listing, cursor, limit)
    html = render_template(
        "page.html",
        token=token,
        link=link,
        listing=listing,
        items=[entry.public for entry in entries],
        next_cursor=next_cursor,
        page_size=limit,
        first_page=cursor is None,
    ).encode("utf-8")
    with _rendered_lock:
        _rendered_pages[key] = html
        while len(_rendered_pages) > RENDERED_PAGES:
            _rendered_pages.popitem(last=False)
    return html


@blp.get("/s/<token>")
def show_page(token):
    # Opening the first page counts as a view, as for the JSON listing.
    args = request.args
    context = open_link(token, count_view=not args.get("cursor"))
    cursor, limit = _page_args(args)
    return Response(_render_page(token, context.link, cursor, limit), mimetype="text/html")


@blp.post("/s/<token>/unlock")
def unlock(token):
    link = find_link(token)
    if link.password_hash is None:
        return redirect(f"/s/{token}", code=303)
    if ratelimit.password_blocked(link.id):
        raise PublicError(
            429, "too_many_requests",
            "Too many wrong passwords from your network; wait a minute and retry.",
        )  # fmt: skip
    if request.is_json:
        password = (request.get_json(silent=True) or {}).get("password")
    else:
        password = request.form.get("password")
    if not isinstance(password, str) or not verify_password(link.password_hash, password):
        ratelimit.count_password_failure(link.id)
        raise PublicError(401, "password_required", "The password is wrong. Try again.", token=token)
    if request.is_json:
        response = make_response("", 204)
    else:
        response = redirect(f"/s/{token}", code=303)
    response.set_cookie(
        UNLOCK_COOKIE,
        _unlock_serializer().dumps([link.id, link.password_version]),
        max_age=UNLOCK_MAX_AGE,
        path=f"/s/{token}",
        httponly=True,
        samesite="Lax",
        secure=request.is_secure,
    )
    return response


@blp.get("/s/<token>/api/items")
def list_items(token):
    args = request.args
    context = open_link(token, count_view=not args.get("cursor"))
    listing = get_listing(token, context.link)
    cursor, limit = _page_args(args)
    cache_key = (cursor, limit)
    body = listing.pages.get(cache_key)
    if body is None:
        entries, next_cursor = _listing_page(listing, cursor, limit)
        body = _json_bytes(
            {
                "name": listing.name,
                "description": listing.description,
                "item_count": len(listing.entries),
                "items": [entry.public for entry in entries],
                "next_cursor": next_cursor,
            }
        )
        with listing.lock:
            if len(listing.pages) < 64:
                listing.pages[cache_key] = body
    return Response(body, mimetype="application/json")


def _json_bytes(data) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@blp.get("/s/<token>/api/items/<file_id>")
def show_item(token, file_id):
    context = open_link(token)
    entry = _entry(get_listing(token, context.link), file_id)
    return jsonify(entry.public)


def _rendition(token: str, file_id: str, which: str):
    context = open_link(token)
    entry = _entry(get_listing(token, context.link), file_id)
    key = entry.thumbnail_key if which == "thumbnail" else entry.preview_key
    if not key:
        raise PublicError(404, f"no_{which}", f"File {file_id!r} has no {which} yet.")
    etag = '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if request.headers.get("If-None-Match") == etag:
        return Response(status=304, headers=headers)
    try:
        chunks = get_store().iter_chunks(key)
    except ObjectNotFound:
        raise PublicError(404, f"no_{which}", f"File {file_id!r} has no {which} yet.") from None
    except StorageError as error:
        log.warning("rendition_read_failed", file_id=file_id, error=str(error))
        raise PublicError(503, "unavailable", "The image store is unavailable; retry shortly.") from None
    suffix = key[key.rfind(".") :].lower() if "." in key else ""
    mimetype = RENDITION_TYPES.get(suffix, "application/octet-stream")
    return Response(chunks, mimetype=mimetype, headers=headers)


@blp.get("/s/<token>/thumb/<file_id>")
def thumbnail(token, file_id):
    return _rendition(token, file_id, "thumbnail")


@blp.get("/s/<token>/preview/<file_id>")
def preview(token, file_id):
    return _rendition(token, file_id, "preview")


def _offline_error(drive: str) -> PublicError:
    return PublicError(
        409, "drive_offline",
        f"The original is offline: connect drive {drive} to download it.", drive=drive,
    )  # fmt: skip


def _stream(upstream, filename: str, fallback_type: str) -> Response:
    headers = {"Content-Disposition": attachment_header(filename)}
    length = upstream.headers.get("Content-Length")
    if length:
        headers["Content-Length"] = length

    def body():
        try:
            yield from upstream.iter_content(STREAM_CHUNK)
        finally:
            upstream.close()

    return Response(
        stream_with_context(body()),
        mimetype=upstream.headers.get("Content-Type", fallback_type),
        headers=headers,
    )


@blp.get("/s/<token>/download/<file_id>")
def download(token, file_id):
    context = open_link(token)
    link = context.link
    _require_downloads(link)
    entry = _entry(get_listing(token, link), file_id)
    if entry.state == "missing":
        raise PublicError(410, "file_missing", f"{entry.name} is missing from its drive.")
    if entry.state == "offline":
        raise _offline_error(entry.drive)
    upstream = ExportClient().stream(
        f"/api/v1/internal/files/{file_id}/original",
        {"org_id": link.org_id, "user_id": link.created_by},
    )
    if upstream.status_code != 200:
        return _upstream_error(upstream, file_id)
    stats.record(link.id, downloads=1)
    return _stream(upstream, entry.name, entry.media_type)


def _upstream_error(upstream, file_id: str):
    try:
        error = upstream.json().get("error", {})
    except ValueError:
        error = {}
    finally:
        upstream.close()
    if error.get("code") == "drive_offline":
        raise _offline_error(error.get("drive") or "unknown")
    log.warning("original_download_failed", file_id=file_id, status=upstream.status_code)
    raise PublicError(404, "file_not_found", f"File {file_id!r} cannot be downloaded now.")


@blp.post("/s/<token>/download-all")
def start_download_all(token):
    context = open_link(token)
    link = context.link
    _require_downloads(link)
    listing = get_listing(token, link)
    body = request.get_json(silent=True) or {}
    skip_offline = body.get("skip_offline", True)
    if not isinstance(skip_offline, bool):
        raise PublicError(
            422, "invalid", "skip_offline is invalid: expected true or false",
            fields={"skip_offline": ["not a boolean"]},
        )  # fmt: skip
    file_ids = [entry.id for entry in listing.entries if entry.state != "missing"]
    if skip_offline:
        file_ids = [entry.id for entry in listing.entries if entry.state == "online"]
    if not file_ids:
        raise PublicError(409, "nothing_to_download", "No file of this link can be downloaded now.")
    try:
        export = ExportClient().create_export(
            link.org_id, link.created_by, file_ids, skip_offline, listing.name or "shared files"
        )
    except UpstreamError as error:
        log.warning("export_create_failed", link_id=link.id, status=error.status)
        raise PublicError(503, "unavailable", "The download could not be prepared; retry shortly.") from None
    export_ref = _export_serializer().dumps([link.id, export["id"]])
    return jsonify(
        {
            "id": export_ref,
            "status": export.get("status", "queued"),
            "files_total": len(file_ids),
            "status_url": f"/s/{token}/download-all/{export_ref}",
        }
    ), 202


def _export_id(link: LinkState, export_ref: str) -> str:
    try:
        link_id, export_id = _export_serializer().loads(export_ref)
    except (BadSignature, ValueError):
        link_id, export_id = None, None
    if link_id != link.id:
        raise PublicError(404, "download_not_found", "This download does not belong to this link.")
    return export_id


@blp.get("/s/<token>/download-all/<export_ref>")
def download_all_status(token, export_ref):
    context = open_link(token)
    link = context.link
    _require_downloads(link)
    export_id = _export_id(link, export_ref)
    try:
        export = ExportClient().export_status(link.org_id, export_id)
    except UpstreamError:
        raise PublicError(404, "download_not_found", "This download no longer exists.") from None
    status = export.get("status")
    return jsonify(
        {
            "id": export_ref,
            "status": status,
            "files_done": export.get("files_done", 0),
            "files_total": export.get("files_total", 0),
            "bytes_done": export.get("bytes_done", 0),
            "bytes_total": export.get("bytes_total", 0),
            "waiting_for": list(export.get("waiting_for") or []),
            "archive_url": f"/s/{token}/download-all/{export_ref}/archive"
            if status == "succeeded"
            else None,
        }
    )


@blp.get("/s/<token>/download-all/<export_ref>/archive")
def download_all_archive(token, export_ref):
    context = open_link(token)
    link = context.link
    _require_downloads(link)
    export_id = _export_id(link, export_ref)
    upstream = ExportClient().stream(
        f"/api/v1/internal/exports/{export_id}/archive", {"org_id": link.org_id}
    )
    if upstream.status_code != 200:
        upstream.close()
        raise PublicError(409, "download_not_ready", "The archive is not ready; check its status.")
    stats.record(link.id, downloads=1)
    return _stream(upstream, f"{get_listing(token, link).name or 'shared files'}.zip", "application/zip")


# Headers every public response carries, added in one call.
SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("Referrer-Policy", "no-referrer"),
    ("X-Robots-Tag", "noindex, nofollow"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
)
# Names that ``public_response_headers`` sets itself, in lower case.
_REPLACED_HEADERS = frozenset(name.lower() for name, _value in SECURITY_HEADERS) | {"cache-control"}
STATIC_CACHE_CONTROL = "public, max-age=3600"


def public_response_headers(path: str, status: str, headers: list) -> list:
    """Return the response headers of ``path``, with the public pages' headers.

    Every response under /s/ and /s-static/ carries SECURITY_HEADERS. Errors
    are never stored. Static files may be cached for an hour, pages and JSON
    never, while a rendition's own Cache-Control is kept. Called by the WSGI
    middleware for every response of the sharing service.
    """
    if path.startswith("/s/"):
        static = False
    elif path.startswith("/s-static/"):
        static = True
    else:
        return headers
    cache_control = None
    replace = False
    for name, value in headers:
        lowered = name.lower()
        if lowered in _REPLACED_HEADERS:
            replace = True
            if lowered == "cache-control":
                cache_control = value
    if int(status[:3]) >= 400:
        cache_control = "no-store"
    elif static:
        cache_control = STATIC_CACHE_CONTROL
    elif cache_control is None:
        cache_control = "no-store"
    if replace:
        headers = [(name, value) for name, value in headers if name.lower() not in _REPLACED_HEADERS]
    headers.extend(SECURITY_HEADERS)
    headers.append(("Cache-Control", cache_control))
    return headers
