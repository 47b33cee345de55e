"""Public link URLs: rejections, visibility, downloads, headers and rate limits."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from core.db import session_scope
from services.sharing.models import Link
from tests.catalog.helpers import INLINE_HOST
from tests.sharing.conftest import deliver_events, give_renditions, token_of

PASSWORD = "correct horse battery"


def public_urls(token: str, file_id: str) -> dict[str, tuple[str, str]]:
    """Every kind of public URL of a link, as (method, path)."""
    return {
        "page": ("get", f"/s/{token}"),
        "items": ("get", f"/s/{token}/api/items"),
        "item": ("get", f"/s/{token}/api/items/{file_id}"),
        "thumb": ("get", f"/s/{token}/thumb/{file_id}"),
        "preview": ("get", f"/s/{token}/preview/{file_id}"),
        "download": ("get", f"/s/{token}/download/{file_id}"),
        "download_all": ("post", f"/s/{token}/download-all"),
        "download_all_status": ("get", f"/s/{token}/download-all/x"),
        "download_all_archive": ("get", f"/s/{token}/download-all/x/archive"),
    }


def request_all(client, token, file_id):
    return {
        kind: getattr(client, method)(path)
        for kind, (method, path) in public_urls(token, file_id).items()
    }


def assert_rejected(responses, status, phrase):
    for kind, response in responses.items():
        assert response.status_code == status, (kind, response.status_code)
        body = response.get_data(as_text=True)
        assert phrase in body, (kind, body[:300])
        if kind == "page":
            assert response.mimetype == "text/html", kind
        else:
            assert response.mimetype == "application/json", kind


def set_link(link_id, **values):
    with session_scope("sharing") as session:
        link = session.get(Link, link_id)
        for key, value in values.items():
            setattr(link, key, value)
        link.version += 1


def test_active_link_serves_every_url(world, sharing):
    give_renditions(world["files"].values())
    token, file_id = world["token"], world["files"]["a.png"]
    page = sharing.get(f"/s/{token}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Summer shoot" in html
    assert "Selected frames" in html
    assert 'loading="lazy"' in html
    assert '<meta name="robots" content="noindex' in html
    items = sharing.get(f"/s/{token}/api/items").json
    assert [item["name"] for item in items["items"]] == ["a.png", "b.png", "c.png", "s.png"]
    assert sharing.get(f"/s/{token}/api/items/{file_id}").json["name"] == "a.png"
    thumb = sharing.get(f"/s/{token}/thumb/{file_id}")
    assert thumb.status_code == 200
    assert thumb.mimetype == "image/png"
    assert thumb.headers["Cache-Control"] == "private, no-cache"
    assert sharing.get(f"/s/{token}/preview/{file_id}").status_code == 200


def test_unknown_token_rejected_everywhere(world, sharing):
    responses = request_all(sharing, "x" * 43, world["files"]["a.png"])
    assert_rejected(responses, 404, "does not exist")


def test_revoked_link_rejected_everywhere(world, sharing):
    give_renditions(world["files"].values())
    token, file_id = world["token"], world["files"]["a.png"]
    thumb_url = sharing.get(f"/s/{token}/api/items/{file_id}").json["thumbnail_url"]
    assert sharing.get(thumb_url).status_code == 200
    world["api"].call("post", f"/api/v1/links/{world['link']['id']}/revoke")
    assert_rejected(request_all(sharing, token, file_id), 410, "revoked")
    captured = sharing.get(thumb_url)
    assert captured.status_code == 410
    assert captured.headers["Cache-Control"] == "no-store"


def test_expired_link_rejected_everywhere(world, sharing):
    set_link(world["link"]["id"], expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))
    assert_rejected(request_all(sharing, world["token"], world["files"]["a.png"]), 410, "expired")
    shown = world["api"].call("get", f"/api/v1/links/{world['link']['id']}").json
    assert shown["state"] == "expired"


def test_password_required_then_cookie_unlocks(world, sharing):
    give_renditions(world["files"].values())
    api = world["api"]
    api.call("patch", f"/api/v1/links/{world['link']['id']}", json={"password": PASSWORD})
    token, file_id = world["token"], world["files"]["a.png"]
    responses = request_all(sharing, token, file_id)
    assert_rejected(responses, 401, "password")
    assert 'action="/s/' in responses["page"].get_data(as_text=True)

    wrong = sharing.post(f"/s/{token}/unlock", data={"password": "wrong password"})
    assert wrong.status_code == 401
    unlocked = sharing.post(f"/s/{token}/unlock", data={"password": PASSWORD})
    assert unlocked.status_code == 303
    cookie = unlocked.headers["Set-Cookie"]
    assert f"Path=/s/{token}" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert sharing.get(f"/s/{token}").status_code == 200
    assert sharing.get(f"/s/{token}/thumb/{file_id}").status_code == 200


def test_cookie_of_one_link_does_not_unlock_another(world, sharing, sharing_app):
    api = world["api"]
    second = api.create_link(world["collection"]["id"], label="B", password=PASSWORD)
    api.call("patch", f"/api/v1/links/{world['link']['id']}", json={"password": PASSWORD})
    token_a, token_b = world["token"], token_of(second)
    unlocked = sharing.post(f"/s/{token_a}/unlock", data={"password": PASSWORD})
    value = unlocked.headers["Set-Cookie"].split(";", 1)[0].split("=", 1)[1]
    other = sharing_app.test_client()
    other.set_cookie("share_unlock", value, path=f"/s/{token_b}")
    assert other.get(f"/s/{token_b}/api/items").status_code == 401
    other.set_cookie("share_unlock", value, path=f"/s/{token_a}")
    assert other.get(f"/s/{token_a}/api/items").status_code == 200


def test_new_password_signs_out_visitors(world, sharing):
    api = world["api"]
    api.call("patch", f"/api/v1/links/{world['link']['id']}", json={"password": PASSWORD})
    sharing.post(f"/s/{world['token']}/unlock", data={"password": PASSWORD})
    assert sharing.get(f"/s/{world['token']}/api/items").status_code == 200
    api.call("patch", f"/api/v1/links/{world['link']['id']}", json={"password": "another long secret"})
    assert sharing.get(f"/s/{world['token']}/api/items").status_code == 401


def test_downloads_rejected_when_not_allowed(world, sharing):
    token, file_id = world["token"], world["files"]["a.png"]
    for method, path in [
        ("get", f"/s/{token}/download/{file_id}"),
        ("post", f"/s/{token}/download-all"),
        ("get", f"/s/{token}/download-all/x"),
        ("get", f"/s/{token}/download-all/x/archive"),
    ]:
        response = getattr(sharing, method)(path)
        assert response.status_code == 403, path
        assert "not allowed" in response.json["error"]["message"]
    item = sharing.get(f"/s/{token}/api/items/{file_id}").json
    assert item["download_url"] is None
    page = sharing.get(f"/s/{token}").get_data(as_text=True)
    assert f"/s/{token}/download/" not in page
    assert 'id="download-all"' not in page


def test_download_original_and_offline_drive(world, sharing, monkeypatch):
    from core.settings import reset_settings

    # The catalog reads a drive directly when the drive's host is its own.
    monkeypatch.setenv("ARCHIVE_HOST", INLINE_HOST)
    reset_settings()
    world["api"].call("patch", f"/api/v1/links/{world['link']['id']}", json={"allow_download": True})
    token, file_id = world["token"], world["files"]["a.png"]
    item = sharing.get(f"/s/{token}/api/items/{file_id}").json
    assert item["download_url"] == f"/s/{token}/download/{file_id}"
    response = sharing.get(item["download_url"])
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.data.startswith(b"\x89PNG")
    assert "attachment" in response.headers["Content-Disposition"]

    owner = world["owner"]
    disconnected = owner.post(f"/api/v1/sources/{world['open_source']['id']}/disconnect")
    assert disconnected.status_code == 200, disconnected.json
    deliver_events()
    item = sharing.get(f"/s/{token}/api/items/{file_id}").json
    assert item["state"] == "offline"
    assert item["offline_drive"] == "OPEN-01"
    assert item["download_url"] is None
    rejected = sharing.get(f"/s/{token}/download/{file_id}")
    assert rejected.status_code == 409
    assert "connect drive OPEN-01" in rejected.json["error"]["message"]
    assert rejected.json["error"]["drive"] == "OPEN-01"
    assert "connect drive OPEN-01" in sharing.get(f"/s/{token}").get_data(as_text=True)
    shown = world["api"].call("get", f"/api/v1/links/{world['link']['id']}").json
    assert shown["stats"]["downloads"] == 1


def test_restricted_group_disappears_at_next_request(world, sharing):
    give_renditions(world["files"].values())
    token, secret_id = world["token"], world["files"]["s.png"]
    thumb = f"/s/{token}/thumb/{secret_id}"
    assert sharing.get(thumb).status_code == 200
    owner = world["owner"]
    response = owner.delete(f"/api/v1/groups/Clients/members/{owner.email}")
    assert response.status_code == 200, response.json
    deliver_events()
    names = [item["name"] for item in sharing.get(f"/s/{token}/api/items").json["items"]]
    assert names == ["a.png", "b.png", "c.png"]
    for path in (thumb, f"/s/{token}/preview/{secret_id}", f"/s/{token}/api/items/{secret_id}"):
        assert sharing.get(path).status_code == 404, path
    assert "s.png" not in sharing.get(f"/s/{token}").get_data(as_text=True)


def test_group_open_to_everyone_needs_no_listing(world, sharing):
    owner = world["owner"]
    response = owner.patch("/api/v1/groups/Clients", json={"visibility": "everyone"})
    assert response.status_code == 200, response.json
    owner.delete(f"/api/v1/groups/Clients/members/{owner.email}")
    deliver_events()
    assert len(sharing.get(f"/s/{world['token']}/api/items").json["items"]) == 4
    response = owner.patch("/api/v1/groups/Clients", json={"visibility": "restricted"})
    assert response.status_code == 200, response.json
    deliver_events()
    assert len(sharing.get(f"/s/{world['token']}/api/items").json["items"]) == 3


def test_missing_file_shown_as_missing(world, sharing):
    from tests.sharing.conftest import apply_event, catalog_facts

    facts = catalog_facts([world["files"]["b.png"]])
    facts[0].update(presence="missing", updated_at="2999-01-01T00:00:00+00:00")
    apply_event("catalog.files_updated", {"files": facts})
    item = sharing.get(f"/s/{world['token']}/api/items/{world['files']['b.png']}").json
    assert item["state"] == "missing"
    assert "Missing" in sharing.get(f"/s/{world['token']}").get_data(as_text=True)


def test_metadata_only_when_link_shows_it(world, sharing):
    token, file_id = world["token"], world["files"]["a.png"]
    assert "metadata" not in sharing.get(f"/s/{token}/api/items/{file_id}").json
    world["api"].call("patch", f"/api/v1/links/{world['link']['id']}", json={"show_metadata": True})
    metadata = sharing.get(f"/s/{token}/api/items/{file_id}").json["metadata"]
    assert set(metadata) == {"media_type", "size", "width", "height", "captured_at"}
    assert metadata["media_type"] == "image/png"
    assert metadata["size"] > 0


def test_public_json_has_no_private_fields(world, sharing):
    world["api"].call(
        "patch", f"/api/v1/links/{world['link']['id']}", json={"show_metadata": True, "allow_download": True}
    )
    token = world["token"]
    bodies = [sharing.get(f"/s/{token}/api/items").get_data(as_text=True)]
    bodies += [sharing.get(f"/s/{token}/api/items/{i}").get_data(as_text=True) for i in world["files"].values()]
    bodies.append(sharing.get(f"/s/{token}").get_data(as_text=True))
    mount = world["open_source"].get("mount_path") or "/mnt/"
    for body in bodies:
        assert "@example.com" not in body
        assert "/mnt/" not in body
        assert mount not in body
        assert '"path"' not in body
        assert "source_id" not in body
        assert "fingerprint" not in body
        assert "checksum" not in body
        assert world["owner"].user_id not in body


def test_security_headers_on_every_public_response(world, sharing):
    give_renditions(world["files"].values())
    token, file_id = world["token"], world["files"]["a.png"]
    responses = request_all(sharing, token, file_id)
    responses["unknown"] = sharing.get("/s/unknown-token")
    responses["static_css"] = sharing.get("/s-static/share.css")
    responses["static_js"] = sharing.get("/s-static/share.js")
    responses["unlock"] = sharing.post(f"/s/{token}/unlock", data={"password": "x"})
    for kind, response in responses.items():
        headers = response.headers
        csp = headers["Content-Security-Policy"]
        for directive in ("default-src 'self'", "img-src 'self'", "script-src 'self'",
                          "style-src 'self'", "frame-ancestors 'none'", "base-uri 'none'",
                          "form-action 'self'"):  # fmt: skip
            assert directive in csp, (kind, directive)
        assert headers["Referrer-Policy"] == "no-referrer", kind
        assert headers["X-Robots-Tag"] == "noindex, nofollow", kind
        assert headers["X-Content-Type-Options"] == "nosniff", kind
        for name in ("Content-Security-Policy", "Referrer-Policy", "X-Robots-Tag",
                     "X-Content-Type-Options", "X-Frame-Options", "Cache-Control"):  # fmt: skip
            assert len(headers.getlist(name)) == 1, (kind, name, headers.getlist(name))
        if kind.startswith("static"):
            assert headers["Cache-Control"] == "public, max-age=3600", kind
            continue
        assert headers["Cache-Control"] in ("no-store", "private, no-cache"), kind
        if kind not in ("thumb", "preview"):
            assert headers["Cache-Control"] == "no-store", kind


def test_failed_lookups_limited_valid_link_still_works(world, sharing):
    for attempt in range(20):
        assert sharing.get(f"/s/guess{attempt:040d}/api/items").status_code == 404
    limited = sharing.get("/s/" + "g" * 43 + "/api/items")
    assert limited.status_code == 429
    assert "Retry-After" in limited.headers
    assert sharing.get(f"/s/{world['token']}/api/items").status_code == 200
    assert sharing.get(f"/s/{world['token']}").status_code == 200
    other_client = sharing.get(
        "/s/" + "g" * 43 + "/api/items", environ_base={"REMOTE_ADDR": "127.0.0.9"}
    )
    assert other_client.status_code == 404


def test_password_attempts_limited_per_link(world, sharing):
    api = world["api"]
    api.call("patch", f"/api/v1/links/{world['link']['id']}", json={"password": PASSWORD})
    token = world["token"]
    for _ in range(10):
        assert sharing.post(f"/s/{token}/unlock", json={"password": "wrong guess"}).status_code == 401
    blocked = sharing.post(f"/s/{token}/unlock", json={"password": PASSWORD})
    assert blocked.status_code == 429
    elsewhere = sharing.post(
        f"/s/{token}/unlock", json={"password": PASSWORD}, environ_base={"REMOTE_ADDR": "127.0.0.9"}
    )
    assert elsewhere.status_code == 204


def test_public_requests_change_nothing_but_stats(world, sharing):
    from sqlalchemy import select

    def snapshot():
        with session_scope("sharing") as session:
            row = session.scalar(select(Link).where(Link.id == world["link"]["id"]))
            return {k: v for k, v in row.__dict__.items()
                    if not k.startswith("_") and k not in ("views", "downloads", "last_access_at")}  # fmt: skip

    before = snapshot()
    token = world["token"]
    for method, path in public_urls(token, world["files"]["a.png"]).values():
        getattr(sharing, method)(path)
    sharing.post(f"/s/{token}/unlock", data={"password": "x"})
    assert snapshot() == before


def test_paging_with_cursor(world, sharing):
    token = world["token"]
    first = sharing.get(f"/s/{token}/api/items?limit=3").json
    assert len(first["items"]) == 3
    assert first["next_cursor"]
    second = sharing.get(f"/s/{token}/api/items?limit=3&cursor={first['next_cursor']}").json
    assert [item["name"] for item in second["items"]] == ["s.png"]
    assert second["next_cursor"] is None
    bad = sharing.get(f"/s/{token}/api/items?cursor=garbage")
    assert bad.status_code == 422
    assert sharing.get(f"/s/{token}/api/items?limit=0").status_code == 422
    page = sharing.get(f"/s/{token}?limit=2").get_data(as_text=True)
    assert 'id="more"' in page


@pytest.mark.parametrize("field", ["skip_offline"])
def test_download_all_validates_body(world, sharing, field):
    world["api"].call("patch", f"/api/v1/links/{world['link']['id']}", json={"allow_download": True})
    response = sharing.post(f"/s/{world['token']}/download-all", data=json.dumps({field: "yes"}),
                            content_type="application/json")  # fmt: skip
    assert response.status_code == 422
    assert field in response.json["error"]["fields"]


def test_public_headers_replace_view_headers():
    from services.sharing.public import public_response_headers

    view_headers = [
        ("Content-Type", "image/webp"),
        ("x-frame-options", "SAMEORIGIN"),
        ("Cache-Control", "private, no-cache"),
    ]
    ok = dict(public_response_headers("/s/t/thumb/f", "200 OK", list(view_headers)))
    assert ok["X-Frame-Options"] == "DENY"
    assert "x-frame-options" not in ok
    assert ok["Cache-Control"] == "private, no-cache"
    assert ok["Content-Type"] == "image/webp"
    # An error is never stored, whatever the view set.
    failed = public_response_headers("/s/t/thumb/f", "410 GONE", list(view_headers))
    assert [v for n, v in failed if n.lower() == "cache-control"] == ["no-store"]
    # Paths outside the public pages are left alone.
    assert public_response_headers("/api/v1/links", "200 OK", list(view_headers)) == view_headers


def test_security_headers_on_odd_paths(world, sharing):
    token = world["token"]
    # Routing ignores repeated leading slashes, and a proxy may pass them on
    # (gunicorn also decodes "%2F" into "/").
    odd = {
        "double slash page": f"//s/{token}",
        "triple slash listing": f"///s/{token}/api/items",
        "double slash static": "//s-static/share.css",
    }
    for kind, path in odd.items():
        response = sharing.get("/", environ_overrides={"PATH_INFO": path})
        assert response.status_code == 200, kind
        assert response.headers["Referrer-Policy"] == "no-referrer", kind
        assert response.headers["X-Frame-Options"] == "DENY", kind
        assert len(response.headers.getlist("Content-Security-Policy")) == 1, kind
    assert sharing.get("/", environ_overrides={"PATH_INFO": f"//s/{token}"}).headers[
        "Cache-Control"
    ] == "no-store"


def test_static_errors_never_cached(sharing):
    missing = sharing.get("/s-static/no-such-file.css")
    assert missing.status_code == 404
    assert missing.headers["Cache-Control"] == "no-store"
    wrong_method = sharing.patch("/s-static/share.css")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["Cache-Control"] == "no-store"
    found = sharing.get("/s-static/share.css")
    assert found.headers["Cache-Control"] == "public, max-age=3600"
