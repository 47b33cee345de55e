"""Collections over real scanned drives: moves, disconnects, deletions, groups."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image
from PIL.ExifTags import IFD, Base

from tests.catalog.helpers import connect, files_by_path, run_active_scan, scan
from tests.collections.conftest import deliver_catalog_events, jpeg_bytes, served_at


def camera_jpeg(width: int, height: int, taken_at: str, offset: str) -> bytes:
    """Encode a JPEG whose EXIF DateTimeOriginal is ``taken_at`` ("YYYY:MM:DD HH:MM:SS")."""
    exif = Image.Exif()
    details = exif.get_ifd(IFD.Exif)
    details[Base.DateTimeOriginal] = taken_at
    details[Base.OffsetTimeOriginal] = offset
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 200)).save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


@pytest.fixture
def collections_url(collections_app):
    """Serve the collections app over HTTP and point the settings' COLLECTIONS_URL at it."""
    with served_at(collections_app, "COLLECTIONS_URL") as url:
        yield url


def scanned_drive(owner, drive_factory, name, files, group=None):
    root = drive_factory(name, files)
    source = connect(owner, root, name=name, group=group)
    result = run_active_scan(owner, source)
    assert result["status"] == "succeeded", result
    return root, source, files_by_path(owner, drive=name)


def test_collection_spans_two_drives(owner, curator, drive_factory):
    _, _, shoot = scanned_drive(
        owner, drive_factory, "SHOOT-01", {"a/one.jpg": jpeg_bytes(), "a/two.jpg": jpeg_bytes(shade=40)}
    )
    _, _, archive = scanned_drive(owner, drive_factory, "ARCHIVE-02", {"x/three.jpg": jpeg_bytes(shade=90)})
    collection = curator.create("Best of", "picks from two drives")
    ids = [shoot["a/two.jpg"]["id"], archive["x/three.jpg"]["id"], shoot["a/one.jpg"]["id"]]
    added = curator.add(collection["id"], file_ids=ids + [ids[0]])
    assert added["added"] == ids
    assert added["item_count"] == 3

    again = curator.add(collection["id"], file_ids=[ids[1]])
    assert again["added"] == []
    assert again["already_present"] == 1

    page = curator.items(collection["id"])
    assert [i["file_id"] for i in page["items"]] == ids
    assert [i["drive"] for i in page["items"]] == ["SHOOT-01", "ARCHIVE-02", "SHOOT-01"]
    assert [i["name"] for i in page["items"]] == ["two.jpg", "three.jpg", "one.jpg"]
    assert all(i["state"] == "online" for i in page["items"])
    assert all(i["added_by"] == owner.user_id for i in page["items"])
    assert page["item_count"] == 3
    assert page["hidden_count"] == 0

    listed = curator.get("/api/v1/collections").json["items"]
    assert [(c["name"], c["item_count"]) for c in listed] == [("Best of", 3)]


def test_moves_and_renames_keep_items(owner, curator, drive_factory):
    root, source, files = scanned_drive(
        owner, drive_factory, "SHOOT", {"a/one.jpg": jpeg_bytes(), "a/two.jpg": jpeg_bytes(shade=7)}
    )
    collection = curator.create("Moves")
    ids = [files["a/one.jpg"]["id"], files["a/two.jpg"]["id"]]
    curator.add(collection["id"], file_ids=ids)
    deliver_catalog_events()

    os.makedirs(root / "b")
    os.rename(root / "a/one.jpg", root / "b/first.jpg")
    os.rename(root / "a", root / "renamed")
    result = scan(owner, source)
    assert result["counts"]["moved"] == 2
    deliver_catalog_events()

    page = curator.items(collection["id"])
    assert [i["file_id"] for i in page["items"]] == ids
    assert [i["path"] for i in page["items"]] == ["b/first.jpg", "renamed/two.jpg"]
    assert [i["name"] for i in page["items"]] == ["first.jpg", "two.jpg"]
    assert all(i["state"] == "online" for i in page["items"])


def test_disconnected_drive_shows_offline_with_thumbnails(owner, curator, drive_factory):
    from workers.tasks.renditions import render_source

    _, source, files = scanned_drive(
        owner, drive_factory, "PHOTOS", {"one.jpg": jpeg_bytes(320, 240), "two.jpg": jpeg_bytes(200, 100, 60)}
    )
    assert render_source(source["id"]) == 2
    collection = curator.create("Offline")
    ids = [files["one.jpg"]["id"], files["two.jpg"]["id"]]
    curator.add(collection["id"], file_ids=ids)

    response = owner.post(f"/api/v1/sources/{source['id']}/disconnect")
    assert response.status_code == 200, response.json
    deliver_catalog_events()

    items = curator.items(collection["id"])["items"]
    assert [i["state"] for i in items] == ["offline", "offline"]
    assert [(i["width"], i["height"]) for i in items] == [(320, 240), (200, 100)]
    assert items[0]["media_type"] == "image/jpeg"
    for item in items:
        assert item["thumbnail_url"].endswith(f"/api/v1/files/{item['file_id']}/thumbnail")
        assert item["preview_url"].endswith(f"/api/v1/files/{item['file_id']}/preview")
        path = item["thumbnail_url"].split("://", 1)[1].split("/", 1)[1]
        thumbnail = owner.get("/" + path)
        assert thumbnail.status_code == 200
        assert len(thumbnail.data) > 0

    shown = curator.get(f"/api/v1/collections/{collection['id']}").json
    assert shown["cover_url"] == items[0]["thumbnail_url"]


def test_deleted_file_stays_as_missing(owner, curator, drive_factory):
    root, source, files = scanned_drive(
        owner, drive_factory, "GONE", {"keep.jpg": jpeg_bytes(), "lose.jpg": jpeg_bytes(shade=3)}
    )
    collection = curator.create("Missing")
    ids = [files["keep.jpg"]["id"], files["lose.jpg"]["id"]]
    curator.add(collection["id"], file_ids=ids)
    (root / "lose.jpg").unlink()
    assert scan(owner, source)["counts"]["missing"] == 1
    deliver_catalog_events()

    page = curator.items(collection["id"])
    assert [i["file_id"] for i in page["items"]] == ids
    assert [i["state"] for i in page["items"]] == ["online", "missing"]
    assert page["item_count"] == 2


def test_restricted_items_hidden_without_access(owner, curator_factory, drive_factory):
    response = owner.post("/api/v1/groups", json={"name": "Clients", "visibility": "restricted"})
    assert response.status_code == 201, response.json
    viewer = owner.add_member("viewer@example.com", "viewer")
    insider = owner.add_member("insider@example.com", "editor")
    response = owner.post("/api/v1/groups/Clients/members", json={"email": insider.email})
    assert response.status_code == 200, response.json
    _, _, public = scanned_drive(owner, drive_factory, "PUBLIC", {"p.jpg": jpeg_bytes()})
    _, _, secret = scanned_drive(
        owner, drive_factory, "SECRET", {"s1.jpg": jpeg_bytes(shade=1), "s2.jpg": jpeg_bytes(shade=2)},
        group="Clients",
    )
    curator = curator_factory(owner)
    collection = curator.create("Mixed")
    ids = [secret["s1.jpg"]["id"], public["p.jpg"]["id"], secret["s2.jpg"]["id"]]
    curator.add(collection["id"], file_ids=ids)

    outsider_view = curator_factory(viewer).items(collection["id"])
    assert [i["file_id"] for i in outsider_view["items"]] == [public["p.jpg"]["id"]]
    assert outsider_view["item_count"] == 1
    assert outsider_view["hidden_count"] == 2
    listed = curator_factory(viewer).get("/api/v1/collections").json["items"][0]
    assert listed["item_count"] == 1
    assert listed["hidden_count"] == 2

    insider_view = curator_factory(insider).items(collection["id"])
    assert [i["file_id"] for i in insider_view["items"]] == ids
    assert insider_view["hidden_count"] == 0

    response = curator_factory(insider).post(
        f"/api/v1/collections/{collection['id']}/items/{ids[0]}/move", json={"position": 0}
    )
    assert response.status_code == 204, response.json

    # An editor without access can neither touch nor add the restricted files.
    outsider_editor = curator_factory(owner.add_member("outsider@example.com", "editor"))
    base = f"/api/v1/collections/{collection['id']}/items/{ids[0]}"
    assert outsider_editor.delete(base).status_code == 404
    assert outsider_editor.post(base + "/move", json={"position": 1}).status_code == 404
    response = outsider_editor.post(
        f"/api/v1/collections/{collection['id']}/items", json={"file_ids": [ids[0], ids[1]]}
    )
    assert response.status_code == 422
    assert response.json["error"]["not_found"] == [ids[0]]
    assert "file_ids" in response.json["error"]["fields"]


def test_group_made_restricted_by_event_hides_items(owner, curator_factory, drive_factory):
    viewer = owner.add_member("viewer@example.com", "viewer")
    _, _, files = scanned_drive(owner, drive_factory, "OPEN", {"o.jpg": jpeg_bytes()})
    curator = curator_factory(owner)
    collection = curator.create("Becomes private")
    curator.add(collection["id"], file_ids=[files["o.jpg"]["id"]])
    assert curator_factory(viewer).items(collection["id"])["hidden_count"] == 0

    response = owner.patch("/api/v1/groups/Everyone", json={"visibility": "restricted"})
    assert response.status_code == 200, response.json
    deliver_catalog_events()

    page = curator_factory(viewer).items(collection["id"])
    assert page["items"] == []
    assert page["hidden_count"] == 1


def test_add_by_query_and_folder(owner, curator, drive_factory):
    _, _, files = scanned_drive(
        owner,
        drive_factory,
        "LIB",
        {
            "trip/beach-1.jpg": jpeg_bytes(),
            "trip/day2/beach-2.jpg": jpeg_bytes(shade=5),
            "trip/notes.txt": b"notes",
            "home/cat.jpg": jpeg_bytes(shade=9),
        },
    )
    by_query = curator.create("Beach")
    added = curator.add(by_query["id"], query={"q": "beach", "drive": "LIB"})
    assert sorted(added["added"]) == sorted(
        [files["trip/beach-1.jpg"]["id"], files["trip/day2/beach-2.jpg"]["id"]]
    )

    by_folder = curator.create("Trip")
    added = curator.add(by_folder["id"], folder={"drive": "LIB", "path": "trip"})
    expected = {files[p]["id"] for p in ("trip/beach-1.jpg", "trip/day2/beach-2.jpg", "trip/notes.txt")}
    assert set(added["added"]) == expected
    assert len(added["added"]) == 3

    whole_drive = curator.create("Everything")
    assert len(curator.add(whole_drive["id"], folder={"drive": "LIB"})["added"]) == 4

    response = curator.post(
        f"/api/v1/collections/{by_folder['id']}/items", json={"folder": {"drive": "LIB", "path": "nope"}}
    )
    assert response.status_code == 422
    assert "folder" in response.json["error"]["fields"]
    response = curator.post(
        f"/api/v1/collections/{by_folder['id']}/items", json={"query": {"type": "painting"}}
    )
    assert response.status_code == 422
    assert "query" in response.json["error"]["fields"]


def test_add_rejects_too_many_matches(owner, curator, drive_factory, monkeypatch):
    import services.collections.catalog_client as catalog_client

    scanned_drive(owner, drive_factory, "MANY", {f"f{i}.jpg": jpeg_bytes(8, 8, i) for i in range(4)})
    monkeypatch.setattr(catalog_client, "MAX_FILES_PER_REQUEST", 3)
    collection = curator.create("Too many")
    response = curator.post(f"/api/v1/collections/{collection['id']}/items", json={"query": {"q": ""}})
    assert response.status_code == 422
    assert "query" in response.json["error"]["fields"]
    response = curator.post(
        f"/api/v1/collections/{collection['id']}/items", json={"folder": {"drive": "MANY"}}
    )
    assert response.status_code == 422
    assert "folder" in response.json["error"]["fields"]
    assert curator.items(collection["id"])["items"] == []


def test_renditions_ready_event_fills_items(owner, curator, drive_factory):
    from workers.tasks.renditions import render_source

    _, source, files = scanned_drive(
        owner,
        drive_factory,
        "CAMERA",
        {"shot.jpg": camera_jpeg(400, 300, "2022:08:14 17:05:09", "-04:00")},
    )
    collection = curator.create("Fresh")
    file_id = files["shot.jpg"]["id"]
    curator.add(collection["id"], file_ids=[file_id])
    before = curator.items(collection["id"])["items"][0]
    assert before["thumbnail_url"] is None
    assert before["width"] is None

    assert render_source(source["id"]) == 1
    deliver_catalog_events()

    item = curator.items(collection["id"])["items"][0]
    assert item["thumbnail_url"].endswith(f"/api/v1/files/{file_id}/thumbnail")
    assert item["preview_url"].endswith(f"/api/v1/files/{file_id}/preview")
    assert (item["width"], item["height"]) == (400, 300)
    assert item["captured_at"] == "2022-08-14T17:05:09-04:00"
    assert item["media_type"] == "image/jpeg"
    assert item["size"] == files["shot.jpg"]["size"]
    assert item["added_at"] is not None
    details = curator.get(f"/api/v1/collections/{collection['id']}").json
    assert details["cover_url"] == item["thumbnail_url"]


def test_member_leaving_keeps_collections(owner, curator_factory, drive_factory):
    _, _, files = scanned_drive(
        owner, drive_factory, "TEAM", {"a.jpg": jpeg_bytes(), "b.jpg": jpeg_bytes(shade=30)}
    )
    editor = owner.add_member("leaving@example.com", "editor")
    by_editor = curator_factory(editor)
    collection = by_editor.create("Handover", "made by a member who leaves")
    ids = [files["a.jpg"]["id"], files["b.jpg"]["id"]]
    by_editor.add(collection["id"], file_ids=ids)
    viewer = curator_factory(owner.add_member("stays@example.com", "viewer"))
    before = viewer.items(collection["id"])

    response = owner.delete(f"/api/v1/members/{editor.user_id}")
    assert response.status_code == 204, response.json
    deliver_catalog_events()

    for reader in (curator_factory(owner), viewer):
        details = reader.get(f"/api/v1/collections/{collection['id']}").json
        assert details["name"] == "Handover"
        assert details["description"] == "made by a member who leaves"
        assert details["created_by"] == editor.user_id
        assert details["item_count"] == 2
        page = reader.items(collection["id"])
        assert page["items"] == before["items"]
        assert all(item["added_by"] == editor.user_id for item in page["items"])


def test_catalog_file_view_lists_collections(owner, curator, drive_factory, collections_url):
    _, _, files = scanned_drive(
        owner, drive_factory, "VIEW", {"in.jpg": jpeg_bytes(), "out.jpg": jpeg_bytes(shade=8)}
    )
    second = curator.create("Second")
    first = curator.create("First")
    curator.add(first["id"], file_ids=[files["in.jpg"]["id"]])
    curator.add(second["id"], file_ids=[files["in.jpg"]["id"]])

    in_collections = owner.get(f"/api/v1/files/{files['in.jpg']['id']}")
    assert in_collections.status_code == 200, in_collections.json
    assert in_collections.json["collections"] == [
        {"id": first["id"], "name": "First"},
        {"id": second["id"], "name": "Second"},
    ]
    outside = owner.get(f"/api/v1/files/{files['out.jpg']['id']}")
    assert outside.status_code == 200, outside.json
    assert outside.json["collections"] == []
