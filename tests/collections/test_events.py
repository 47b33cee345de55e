"""Catalog events applied to the collections read model."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from core.db import new_id
from tests.catalog.helpers import connect, files_by_path, run_active_scan
from tests.collections.conftest import deliver_catalog_events, jpeg_bytes
from tests.conftest import DATA_DIR, wait_for
from workers.tasks.collections import consume


@pytest.fixture
def shelf(owner, curator, drive_factory):
    """A collection holding the two files of a scanned drive."""
    root = drive_factory("SHELF", {"a.jpg": jpeg_bytes(), "b.jpg": jpeg_bytes(shade=20)})
    source = connect(owner, root, name="SHELF")
    run_active_scan(owner, source)
    files = files_by_path(owner)
    collection = curator.create("Shelf")
    ids = [files["a.jpg"]["id"], files["b.jpg"]["id"]]
    curator.add(collection["id"], file_ids=ids)
    deliver_catalog_events()
    facts = owner.post("/api/v1/files/lookup", json={"ids": ids[:1]}).json["items"][0]
    return {"collection": collection, "source": source, "ids": ids, "facts": facts}


def facts_event(owner, shelf, name: str, updated_at: datetime, event_id: str | None = None) -> dict:
    facts = {**shelf["facts"], "path": name, "name": name, "updated_at": updated_at.isoformat()}
    return {"id": event_id or new_id(), "topic": "catalog.files_updated", "payload": {"files": [facts]}}


def state_event(owner, shelf, state: str, at: datetime) -> dict:
    return {
        "id": new_id(),
        "topic": "catalog.source_state",
        "payload": {
            "org_id": owner.org_id,
            "source_id": shelf["source"]["id"],
            "source_name": "SHELF",
            "group_id": shelf["facts"]["group_id"],
            "state": state,
            "at": at.isoformat(),
        },
    }


def group_event(owner, group_id: str, visibility: str, at: datetime, source_ids=()) -> dict:
    return {
        "id": new_id(),
        "topic": "catalog.group_changed",
        "payload": {
            "org_id": owner.org_id,
            "group_id": group_id,
            "visibility": visibility,
            "members": [owner.user_id],
            "source_ids": list(source_ids),
            "at": at.isoformat(),
        },
    }


def first_item(curator, shelf) -> dict:
    return curator.items(shelf["collection"]["id"])["items"][0]


def test_replayed_event_applies_once(owner, curator, shelf):
    later = datetime.now(timezone.utc) + timedelta(minutes=5)
    event = facts_event(owner, shelf, "renamed.jpg", later)
    assert consume(event) is True
    assert first_item(curator, shelf)["name"] == "renamed.jpg"
    assert consume(event) is False
    assert first_item(curator, shelf)["name"] == "renamed.jpg"


def test_late_file_facts_do_not_overwrite(owner, curator, shelf):
    now = datetime.now(timezone.utc)
    assert consume(facts_event(owner, shelf, "newest.jpg", now + timedelta(minutes=10)))
    assert consume(facts_event(owner, shelf, "older.jpg", now + timedelta(minutes=5)))
    assert first_item(curator, shelf)["name"] == "newest.jpg"
    assert consume(facts_event(owner, shelf, "stale.jpg", now - timedelta(days=1)))
    assert first_item(curator, shelf)["name"] == "newest.jpg"


def test_late_source_state_does_not_overwrite(owner, curator, shelf):
    now = datetime.now(timezone.utc)
    assert consume(state_event(owner, shelf, "offline", now + timedelta(minutes=2)))
    assert first_item(curator, shelf)["state"] == "offline"
    assert consume(state_event(owner, shelf, "online", now + timedelta(minutes=1)))
    assert first_item(curator, shelf)["state"] == "offline"
    assert consume(state_event(owner, shelf, "online", now + timedelta(minutes=3)))
    assert first_item(curator, shelf)["state"] == "online"


def test_catalog_events_update_drive_name(owner, curator, shelf):
    response = owner.patch(f"/api/v1/sources/{shelf['source']['id']}", json={"name": "SHELF-2"})
    assert response.status_code == 200, response.json
    assert deliver_catalog_events() >= 1
    items = curator.items(shelf["collection"]["id"])["items"]
    assert [i["drive"] for i in items] == ["SHELF-2", "SHELF-2"]


def test_worker_relay_marks_items_offline(owner, curator, shelf, celery_worker_process):
    import workers.tasks  # noqa: F401  registers the consumers for the relay
    from workers.tasks.outbox import relay

    assert first_item(curator, shelf)["state"] == "online"
    response = owner.post(f"/api/v1/sources/{shelf['source']['id']}/disconnect")
    assert response.status_code == 200, response.json
    assert relay("catalog") >= 1

    def all_offline():
        items = curator.items(shelf["collection"]["id"])["items"]
        return all(item["state"] == "offline" for item in items)

    wait_for(
        all_offline,
        timeout=30,
        message=f"items to show offline after the relay (worker log: {DATA_DIR / 'worker.log'})",
    )


def test_late_group_visibility_does_not_overwrite(owner, curator_factory, shelf):
    viewer = curator_factory(owner.add_member("viewer@example.com", "viewer"))
    group_id = shelf["facts"]["group_id"]
    collection_id = shelf["collection"]["id"]
    now = datetime.now(timezone.utc)

    assert consume(group_event(owner, group_id, "restricted", now + timedelta(minutes=2)))
    assert viewer.items(collection_id)["hidden_count"] == 2
    assert consume(group_event(owner, group_id, "everyone", now + timedelta(minutes=1)))
    assert viewer.items(collection_id)["hidden_count"] == 2
    assert consume(group_event(owner, group_id, "everyone", now + timedelta(minutes=3)))
    assert viewer.items(collection_id)["hidden_count"] == 0


def test_late_group_event_keeps_drive_group(owner, curator_factory, shelf):
    viewer = curator_factory(owner.add_member("viewer@example.com", "viewer"))
    collection_id = shelf["collection"]["id"]
    an_hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
    stale = group_event(
        owner, new_id(), "restricted", an_hour_ago, source_ids=[shelf["source"]["id"]]
    )

    assert consume(stale)
    page = viewer.items(collection_id)
    assert page["hidden_count"] == 0
    assert [item["file_id"] for item in page["items"]] == shelf["ids"]
