"""The collections API: lifecycle, roles, organizations, input checks, order."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import select, update

from core.db import session_scope
from services.collections.models import CollectionItem, OutboxEvent
from services.collections.ordering import GAP
from tests.catalog.helpers import connect, files_by_path, run_active_scan
from tests.conftest import make_org


@pytest.fixture
def file_ids(owner, drive_factory) -> list[str]:
    """Ids of 12 scanned files, ordered by name (f00.bin ... f11.bin)."""
    root = drive_factory("DISK", {f"f{i:02}.bin": f"file {i}".encode() * 50 for i in range(12)})
    source = connect(owner, root, name="DISK")
    run_active_scan(owner, source)
    files = files_by_path(owner)
    return [files[f"f{i:02}.bin"]["id"] for i in range(12)]


def outbox_events(topic: str) -> list[dict]:
    with session_scope("collections") as session:
        rows = session.scalars(
            select(OutboxEvent).where(OutboxEvent.topic == topic).order_by(OutboxEvent.seq)
        ).all()
        return [row.payload for row in rows]


def order(curator, collection_id) -> list[str]:
    return [i["file_id"] for i in curator.items(collection_id)["items"]]


def test_collection_lifecycle(owner, curator, file_ids):
    created = curator.create("Selects", "first pass")
    assert created["name"] == "Selects"
    assert created["description"] == "first pass"
    assert created["created_by"] == owner.user_id
    assert created["item_count"] == 0
    assert created["cover_url"] is None

    path = f"/api/v1/collections/{created['id']}"
    renamed = curator.patch(path, json={"name": "Final selects"})
    assert renamed.status_code == 200, renamed.json
    assert renamed.json["name"] == "Final selects"
    assert renamed.json["description"] == "first pass"
    described = curator.patch(path, json={"description": "approved"}).json
    assert described["description"] == "approved"
    assert described["name"] == "Final selects"

    changed = outbox_events("collections.collection_changed")
    assert [e["name"] for e in changed] == ["Selects", "Final selects", "Final selects"]
    assert changed[-1]["description"] == "approved"
    assert all(e["collection_id"] == created["id"] for e in changed)
    assert all(e["org_id"] == owner.org_id for e in changed)

    curator.add(created["id"], file_ids=file_ids[:2])
    response = curator.delete(path)
    assert response.status_code == 204
    assert curator.get(path).status_code == 404
    deleted = outbox_events("collections.collection_deleted")
    assert deleted == [{"collection_id": created["id"], "org_id": owner.org_id}]
    with session_scope("collections") as session:
        left = session.scalars(
            select(CollectionItem).where(CollectionItem.collection_id == created["id"])
        ).all()
    assert left == []


def test_items_changed_events(curator, file_ids):
    collection = curator.create("Events")
    curator.add(collection["id"], file_ids=file_ids[:3])
    curator.delete(f"/api/v1/collections/{collection['id']}/items/{file_ids[1]}")
    curator.post(f"/api/v1/collections/{collection['id']}/items/{file_ids[2]}/move", json={"position": 0})
    events = outbox_events("collections.items_changed")
    assert [e["added"] for e in events] == [file_ids[:3], [], []]
    assert [e["removed"] for e in events] == [[], [file_ids[1]], []]
    assert [e["moved"] for e in events] == [[], [], [file_ids[2]]]
    assert all(e["collection_id"] == collection["id"] for e in events)


def test_viewer_cannot_change_collections(owner, curator, curator_factory, file_ids):
    collection = curator.create("Read only")
    curator.add(collection["id"], file_ids=file_ids[:2])
    viewer = curator_factory(owner.add_member("viewer@example.com", "viewer"))
    base = f"/api/v1/collections/{collection['id']}"
    attempts = [
        viewer.post("/api/v1/collections", json={"name": "Mine"}),
        viewer.patch(base, json={"name": "Renamed"}),
        viewer.delete(base),
        viewer.post(f"{base}/items", json={"file_ids": file_ids[2:3]}),
        viewer.delete(f"{base}/items/{file_ids[0]}"),
        viewer.post(f"{base}/items/{file_ids[0]}/move", json={"position": 1}),
    ]
    assert [r.status_code for r in attempts] == [403] * 6
    assert all(r.json["error"]["code"] == "forbidden" for r in attempts)
    assert viewer.get(base).status_code == 200
    assert len(viewer.items(collection["id"])["items"]) == 2
    assert order(curator, collection["id"]) == file_ids[:2]


def test_other_organization_gets_not_found(catalog, curator, curator_factory, file_ids):
    collection = curator.create("Ours")
    curator.add(collection["id"], file_ids=file_ids[:1])
    stranger = curator_factory(make_org(catalog, name="Other"))
    base = f"/api/v1/collections/{collection['id']}"
    responses = [
        stranger.get(base),
        stranger.get(f"{base}/items"),
        stranger.patch(base, json={"name": "Taken"}),
        stranger.delete(base),
        stranger.post(f"{base}/items", json={"file_ids": file_ids[:1]}),
        stranger.delete(f"{base}/items/{file_ids[0]}"),
    ]
    assert [r.status_code for r in responses] == [404] * 6
    assert stranger.get("/api/v1/collections").json["items"] == []
    # Files of another organization cannot be added either.
    theirs = stranger.create("Theirs")
    response = stranger.post(f"/api/v1/collections/{theirs['id']}/items", json={"file_ids": file_ids[:1]})
    assert response.status_code == 422
    assert response.json["error"]["not_found"] == file_ids[:1]


def test_every_member_sees_collections(owner, curator, curator_factory):
    curator.create("Shared")
    viewer = curator_factory(owner.add_member("v@example.com", "viewer"))
    assert [c["name"] for c in viewer.get("/api/v1/collections").json["items"]] == ["Shared"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "file_ids"),
        ({"file_ids": []}, "file_ids"),
        ({"file_ids": "abc"}, "file_ids"),
        ({"file_ids": ["x" * 33]}, "file_ids"),
        ({"file_ids": ["a"], "query": {"q": "x"}}, "file_ids"),
        ({"query": {"type": "painting"}}, "query"),
        ({"query": {"min_size": -1}}, "query"),
        ({"folder": {"path": "a"}}, "folder"),
        ({"folder": "DISK"}, "folder"),
    ],
)
def test_add_rejects_invalid_body(curator, file_ids, body, field):
    collection = curator.create("Checks")
    response = curator.post(f"/api/v1/collections/{collection['id']}/items", json=body)
    assert response.status_code == 422, response.json
    assert field in response.json["error"]["fields"]


def test_add_unknown_ids_adds_nothing(curator, file_ids):
    collection = curator.create("All or nothing")
    response = curator.post(
        f"/api/v1/collections/{collection['id']}/items",
        json={"file_ids": [file_ids[0], "0" * 32, file_ids[1], "nope"]},
    )
    assert response.status_code == 422
    assert response.json["error"]["not_found"] == ["0" * 32, "nope"]
    assert "0" * 32 in response.json["error"]["message"]
    assert curator.items(collection["id"])["items"] == []


@pytest.mark.parametrize(
    "method, suffix, body, field",
    [
        ("post", "", {"description": "no name"}, "name"),
        ("post", "", {"name": "   "}, "name"),
        ("post", "", {"name": "x" * 201}, "name"),
        ("patch", "/{id}", {}, "name"),
        ("patch", "/{id}", {"name": ""}, "name"),
        ("post", "/{id}/items/{file}/move", {}, "position"),
        ("post", "/{id}/items/{file}/move", {"position": -1}, "position"),
        ("post", "/{id}/items/{file}/move", {"position": "first"}, "position"),
    ],
)
def test_invalid_input_names_field(curator, file_ids, method, suffix, body, field):
    collection = curator.create("Inputs")
    curator.add(collection["id"], file_ids=file_ids[:1])
    path = "/api/v1/collections" + suffix.format(id=collection["id"], file=file_ids[0])
    response = getattr(curator, method)(path, json=body)
    assert response.status_code == 422, response.json
    assert field in response.json["error"]["fields"]


def test_invalid_cursor_and_limit(curator):
    collection = curator.create("Paging")
    path = f"/api/v1/collections/{collection['id']}/items"
    for query, field in [({"cursor": "garbage"}, "cursor"), ({"limit": 0}, "limit"),
                         ({"cursor": "WyJhIiwiYiJd"}, "cursor")]:  # fmt: skip
        response = curator.get(path, query_string=query)
        assert response.status_code == 422, (query, response.json)
        assert field in response.json["error"]["fields"]


def test_requests_without_token_are_rejected(collections_client):
    response = collections_client.get("/api/v1/collections")
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"


def test_pagination_follows_position(curator, file_ids):
    collection = curator.create("Pages")
    curator.add(collection["id"], file_ids=file_ids)
    seen, cursor = [], None
    while True:
        query = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        page = curator.get(f"/api/v1/collections/{collection['id']}/items", query_string=query).json
        assert len(page["items"]) <= 5
        assert page["item_count"] == 12
        seen.extend(i["file_id"] for i in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == file_ids


def test_move_to_positions(curator, file_ids):
    ids = file_ids[:5]
    collection = curator.create("Order")
    curator.add(collection["id"], file_ids=ids)
    base = f"/api/v1/collections/{collection['id']}/items"

    def move(file_id, position):
        response = curator.post(f"{base}/{file_id}/move", json={"position": position})
        assert response.status_code == 204, response.json

    move(ids[4], 0)
    assert order(curator, collection["id"]) == [ids[4], ids[0], ids[1], ids[2], ids[3]]
    move(ids[4], 2)
    assert order(curator, collection["id"]) == [ids[0], ids[1], ids[4], ids[2], ids[3]]
    move(ids[0], 4)
    assert order(curator, collection["id"]) == [ids[1], ids[4], ids[2], ids[3], ids[0]]
    move(ids[1], 99)
    assert order(curator, collection["id"]) == [ids[4], ids[2], ids[3], ids[0], ids[1]]
    move(ids[2], 1)
    assert order(curator, collection["id"]) == [ids[4], ids[2], ids[3], ids[0], ids[1]]
    response = curator.post(f"{base}/{'f' * 32}/move", json={"position": 0})
    assert response.status_code == 404


def test_move_renumbers_when_positions_touch(curator, file_ids):
    ids = file_ids[:4]
    collection = curator.create("Dense")
    curator.add(collection["id"], file_ids=ids)
    with session_scope("collections") as session:
        for index, file_id in enumerate(ids):
            session.execute(
                update(CollectionItem)
                .where(CollectionItem.collection_id == collection["id"], CollectionItem.file_id == file_id)
                .values(position=index)
            )
    response = curator.post(
        f"/api/v1/collections/{collection['id']}/items/{ids[3]}/move", json={"position": 1}
    )
    assert response.status_code == 204
    assert order(curator, collection["id"]) == [ids[0], ids[3], ids[1], ids[2]]
    with session_scope("collections") as session:
        positions = session.scalars(
            select(CollectionItem.position)
            .where(CollectionItem.collection_id == collection["id"])
            .order_by(CollectionItem.position)
        ).all()
    assert positions[0] == GAP
    assert all(b - a >= 2 for a, b in zip(positions, positions[1:]))


def test_remove_item(curator, file_ids):
    collection = curator.create("Removal")
    curator.add(collection["id"], file_ids=file_ids[:3])
    base = f"/api/v1/collections/{collection['id']}/items"
    assert curator.delete(f"{base}/{file_ids[1]}").status_code == 204
    assert order(curator, collection["id"]) == [file_ids[0], file_ids[2]]
    assert curator.delete(f"{base}/{file_ids[1]}").status_code == 404
    shown = curator.get(f"/api/v1/collections/{collection['id']}").json
    assert shown["item_count"] == 2


def test_file_in_many_collections(curator, collections_client, file_ids):
    first = curator.create("B first")
    second = curator.create("A second")
    curator.add(first["id"], file_ids=file_ids[:2])
    curator.add(second["id"], file_ids=file_ids[1:3])
    org_id = curator.member.org_id
    path = f"/api/v1/internal/files/{file_ids[1]}/collections"
    secret = {"X-Internal-Secret": os.environ["INTERNAL_SECRET"]}
    response = collections_client.get(path, query_string={"org_id": org_id}, headers=secret)
    assert response.status_code == 200, response.json
    assert response.json == [
        {"id": second["id"], "name": "A second"},
        {"id": first["id"], "name": "B first"},
    ]
    other_org = collections_client.get(path, query_string={"org_id": "x" * 32}, headers=secret)
    assert other_org.json == []
    assert collections_client.get(path, query_string={"org_id": org_id}).status_code == 401
    missing_org = collections_client.get(path, headers=secret)
    assert missing_org.status_code == 422
    assert "org_id" in missing_org.json["error"]["fields"]


def test_openapi_lists_endpoints(collections_client):
    spec = collections_client.get("/api/v1/openapi.json").json
    assert "/api/v1/collections/{collection_id}/items/{file_id}/move" in spec["paths"]
    assert "/api/v1/internal/files/{file_id}/collections" in spec["paths"]
