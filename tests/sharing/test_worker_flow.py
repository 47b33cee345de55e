"""Events reach the sharing consumers through the real relay and a real worker."""

from __future__ import annotations

from tests.conftest import DATA_DIR, wait_for


def test_collection_deleted_revokes_links_through_worker(world, sharing, celery_worker_process):
    import workers.tasks  # noqa: F401  registers the consumers for the relay
    from workers.tasks.outbox import relay

    api = world["api"]
    token = world["token"]
    assert sharing.get(f"/s/{token}/api/items").status_code == 200
    response = api.http.delete(f"{api.collections_url}/api/v1/collections/{world['collection']['id']}")
    assert response.status_code == 204, response.text
    assert relay("collections") >= 1

    def revoked():
        return sharing.get(f"/s/{token}/api/items").status_code == 410

    wait_for(revoked, timeout=30, message=f"the link to be revoked (worker log: {DATA_DIR / 'worker.log'})")
    shown = api.call("get", f"/api/v1/links/{world['link']['id']}").json
    assert shown["state"] == "revoked"
    assert shown["revoked_reason"] == "collection deleted"
