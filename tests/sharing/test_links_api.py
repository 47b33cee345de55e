"""The members' links API: create, list, change, revoke, hand over."""

from __future__ import annotations

from sqlalchemy import select

from core.db import session_scope
from services.sharing import stats
from services.sharing.models import Link
from tests.sharing.conftest import Api, apply_event, deliver_events, token_of


def test_create_link_returns_url_and_defaults(world):
    link = world["link"]
    assert link["state"] == "active"
    assert link["url"].startswith("http")
    assert "/s/" in link["url"]
    assert len(token_of(link)) >= 43
    assert link["allow_download"] is False
    assert link["show_metadata"] is False
    assert link["has_password"] is False
    assert link["expires_at"] is None
    assert link["creator_left"] is False
    assert link["stats"] == {"views": 0, "downloads": 0, "last_access_at": None}


def test_database_holds_no_usable_token(world):
    token = token_of(world["link"])
    with session_scope("sharing") as session:
        row = session.scalar(select(Link).where(Link.id == world["link"]["id"]))
        stored = [str(value) for value in row.__dict__.values()]
    assert not any(token in value for value in stored)
    assert len(row.token_digest) == 64


def test_url_shown_again_later(world):
    api = world["api"]
    shown = api.call("get", f"/api/v1/links/{world['link']['id']}")
    assert shown.status_code == 200
    assert shown.json["url"] == world["link"]["url"]


def test_viewer_lists_but_cannot_create(world, sharing, services):
    viewer = Api(world["viewer"], sharing, services["collections"])
    listed = viewer.call("get", "/api/v1/links", query_string={"collection_id": world["collection"]["id"]})
    assert listed.status_code == 200
    assert [item["id"] for item in listed.json["items"]] == [world["link"]["id"]]
    created = viewer.call(
        "post", "/api/v1/links", json={"collection_id": world["collection"]["id"], "label": "x"}
    )
    assert created.status_code == 403
    revoked = viewer.call("post", f"/api/v1/links/{world['link']['id']}/revoke")
    assert revoked.status_code == 403


def test_create_validation_names_fields(world):
    api = world["api"]
    cases = [
        ({"label": "x"}, "collection_id"),
        ({"collection_id": world["collection"]["id"]}, "label"),
        ({"collection_id": world["collection"]["id"], "label": "x", "expires_in": "7 days"}, "expires_in"),
        ({"collection_id": world["collection"]["id"], "label": "x", "expires_in": "0d"}, "expires_in"),
        ({"collection_id": world["collection"]["id"], "label": "x", "expires_at": "2000-01-01T00:00:00+00:00"}, "expires_at"),
        ({"collection_id": world["collection"]["id"], "label": "x", "expires_at": "2999-01-01T00:00:00"}, "expires_at"),
        ({"collection_id": world["collection"]["id"], "label": "x", "allow_download": "maybe"}, "allow_download"),
        ({"collection_id": "nope", "label": "x"}, "collection_id"),
    ]  # fmt: skip
    for body, field in cases:
        response = api.call("post", "/api/v1/links", json=body)
        assert response.status_code in (404, 422), (body, response.json)
        assert field in response.json["error"].get("fields", {}), (body, response.json)


def test_weak_passwords_rejected(world):
    api = world["api"]
    for password, reason in [
        ("", "too short"),
        ("short", "too short"),
        ("aaaaaaaaaaaa", "repeats one character"),
        ("password123", "commonly used"),
    ]:
        response = api.call(
            "post",
            "/api/v1/links",
            json={"collection_id": world["collection"]["id"], "label": "x", "password": password},
        )
        assert response.status_code == 422, password
        assert reason in str(response.json["error"]["fields"]["password"]), password
    changed = api.call("patch", f"/api/v1/links/{world['link']['id']}", json={"password": "1234"})
    assert changed.status_code == 422
    assert "password" in changed.json["error"]["fields"]


def test_patch_changes_settings(world):
    api = world["api"]
    link_id = world["link"]["id"]
    response = api.call(
        "patch",
        f"/api/v1/links/{link_id}",
        json={"label": "Agency", "expires_in": "12h", "allow_download": True,
              "show_metadata": True, "password": "correct horse battery"},
    )  # fmt: skip
    assert response.status_code == 200, response.json
    data = response.json
    assert data["label"] == "Agency"
    assert data["expires_at"] is not None
    assert data["allow_download"] is True
    assert data["show_metadata"] is True
    assert data["has_password"] is True
    cleared = api.call(
        "patch", f"/api/v1/links/{link_id}", json={"password": None, "expires_at": None}
    )
    assert cleared.json["has_password"] is False
    assert cleared.json["expires_at"] is None


def test_revoke_one_link_leaves_others(world):
    api = world["api"]
    second = api.create_link(world["collection"]["id"], label="Second")
    revoked = api.call("post", f"/api/v1/links/{world['link']['id']}/revoke")
    assert revoked.status_code == 200
    assert revoked.json["state"] == "revoked"
    listed = api.call("get", "/api/v1/links", query_string={"collection_id": world["collection"]["id"]})
    states = {item["id"]: item["state"] for item in listed.json["items"]}
    assert states == {world["link"]["id"]: "revoked", second["id"]: "active"}
    assert world["api"].sharing.get(f"/s/{token_of(second)}/api/items").status_code == 200
    patched = api.call("patch", f"/api/v1/links/{world['link']['id']}", json={"label": "x"})
    assert patched.status_code == 409


def test_collection_deleted_revokes_all_links(world):
    api = world["api"]
    second = api.create_link(world["collection"]["id"], label="Second")
    response = api.http.delete(f"{api.collections_url}/api/v1/collections/{world['collection']['id']}")
    assert response.status_code == 204, response.text
    deliver_events()
    listed = api.call("get", "/api/v1/links", query_string={"collection_id": world["collection"]["id"]})
    assert {item["state"] for item in listed.json["items"]} == {"revoked"}
    assert {item["revoked_reason"] for item in listed.json["items"]} == {"collection deleted"}
    page = api.sharing.get(f"/s/{token_of(second)}")
    assert page.status_code == 410


def test_creator_left_then_admin_hands_over(world, sharing, services):
    owner, editor = world["owner"], world["editor"]
    editor_api = Api(editor, sharing, services["collections"])
    link = editor_api.create_link(world["collection"]["id"], label="From editor")
    token = token_of(link)
    # The editor is not in the restricted group, so the link never shows its file.
    names = {item["name"] for item in sharing.get(f"/s/{token}/api/items").json["items"]}
    assert names == {"a.png", "b.png", "c.png"}

    response = owner.post("/api/v1/groups/Clients/members", json={"email": editor.email})
    assert response.status_code == 200, response.json
    deliver_events()
    names = {item["name"] for item in sharing.get(f"/s/{token}/api/items").json["items"]}
    assert names == {"a.png", "b.png", "c.png", "s.png"}

    response = owner.delete(f"/api/v1/members/{editor.user_id}")
    assert response.status_code in (200, 204), response.json
    deliver_events()
    names = {item["name"] for item in sharing.get(f"/s/{token}/api/items").json["items"]}
    assert names == {"a.png", "b.png", "c.png"}
    shown = world["api"].call("get", f"/api/v1/links/{link['id']}").json
    assert shown["creator_left"] is True
    assert any("left the organization" in warning for warning in shown["warnings"])

    rejected = world["api"].call(
        "post", f"/api/v1/links/{link['id']}/owner", json={"user_id": world["viewer"].user_id}
    )
    assert rejected.status_code == 422
    assert "user_id" in rejected.json["error"]["fields"]
    handed = world["api"].call(
        "post", f"/api/v1/links/{link['id']}/owner", json={"user_id": owner.user_id}
    )
    assert handed.status_code == 200, handed.json
    assert handed.json["created_by"] == owner.user_id
    assert handed.json["creator_left"] is False
    names = {item["name"] for item in sharing.get(f"/s/{token}/api/items").json["items"]}
    assert names == {"a.png", "b.png", "c.png", "s.png"}


def test_editor_cannot_hand_over(world, sharing, services):
    editor_api = Api(world["editor"], sharing, services["collections"])
    response = editor_api.call(
        "post", f"/api/v1/links/{world['link']['id']}/owner", json={"user_id": world["editor"].user_id}
    )
    assert response.status_code == 403


def test_statistics_counted(world, sharing):
    token = world["token"]
    for _ in range(3):
        assert sharing.get(f"/s/{token}").status_code == 200
    assert sharing.get(f"/s/{token}/api/items").status_code == 200
    assert sharing.get(f"/s/{token}/api/items?cursor=").status_code == 200
    # Views wait in the process for up to a second; flushing is that wait.
    stats.flush_local()
    shown = world["api"].call("get", f"/api/v1/links/{world['link']['id']}").json
    assert shown["stats"]["views"] == 5
    assert shown["stats"]["downloads"] == 0
    assert shown["stats"]["last_access_at"] is not None


def test_statistics_survive_flush(world, sharing):
    from workers.tasks.sharing import flush_stats

    token = world["token"]
    link_id = world["link"]["id"]
    for _ in range(5):
        sharing.get(f"/s/{token}/api/items")
    stats.flush_local()
    assert flush_stats() >= 1
    with session_scope("sharing") as session:
        row = session.get(Link, link_id)
        assert row.views == 5
        assert row.last_access_at is not None
    # Counts made after a flush add to the stored ones.
    for _ in range(2):
        sharing.get(f"/s/{token}/api/items")
    stats.flush_local()
    shown = world["api"].call("get", f"/api/v1/links/{link_id}").json
    assert shown["stats"]["views"] == 7
    flush_stats()
    with session_scope("sharing") as session:
        assert session.get(Link, link_id).views == 7
    shown = world["api"].call("get", f"/api/v1/links/{link_id}").json
    assert shown["stats"]["views"] == 7


def test_late_member_event_ignored(world, sharing):
    # A member_changed event older than the roles read at link creation is ignored.
    apply_event(
        "catalog.member_changed",
        {"org_id": world["owner"].org_id, "user_id": world["owner"].user_id, "role": None,
         "at": "2000-01-01T00:00:00+00:00"},
    )  # fmt: skip
    shown = world["api"].call("get", f"/api/v1/links/{world['link']['id']}").json
    assert shown["creator_left"] is False


def test_url_hidden_from_member_outside_group(world):
    # The link shows the restricted drive's file, which the viewer may not see.
    link_id = world["link"]["id"]
    viewer = Api(world["viewer"], world["api"].sharing, world["api"].collections_url)
    shown = viewer.call("get", f"/api/v1/links/{link_id}")
    assert shown.status_code == 200
    assert shown.json["url"] is None
    assert any("URL is hidden" in warning for warning in shown.json["warnings"])
    listed = viewer.call(
        "get", "/api/v1/links", query_string={"collection_id": world["collection"]["id"]}
    )
    assert [item["url"] for item in listed.json["items"]] == [None]
    # The creator, who is listed in the group, still gets the URL.
    assert world["api"].call("get", f"/api/v1/links/{link_id}").json["url"] is not None
