"""Cached link state on public requests: trusted only while Redis confirms it.

Public requests keep each link's state in the process and check the
organization's version in Redis, trusting a confirmed version for a tenth of
a second. These tests warm that cache, then change the link in each way a
writer can leave Redis, wait as the API does after a change, and check that
no request trusts the old state.
"""

from __future__ import annotations

import pytest
import redis
from sqlalchemy import select

from core.db import session_scope
from services.sharing import freshness, listing, stats
from services.sharing.models import Link
from tests.sharing.conftest import token_of


def items_status(sharing, token: str) -> int:
    return sharing.get(f"/s/{token}/api/items").status_code


def org_key_value(org_id: str):
    return stats.redis_client().get(freshness.org_key(org_id))


@pytest.fixture
def warm(world, sharing):
    """The world's link, opened twice so its state is cached and confirmed."""
    token = token_of(world["link"])
    assert items_status(sharing, token) == 200
    assert items_status(sharing, token) == 200
    cached = listing.cached_link(token)
    assert cached is not None
    assert freshness.is_current(cached.org_id, cached.org_version)
    return token


@pytest.fixture
def redis_unreachable(monkeypatch):
    """Point the sharing service's Redis client at a port where nothing listens."""
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    monkeypatch.setattr(stats, "_client", dead)
    return dead


def test_revoke_seen_after_warm_cache(world, sharing, warm):
    response = world["api"].call("post", f"/api/v1/links/{world['link']['id']}/revoke")
    assert response.status_code == 200
    assert items_status(sharing, warm) == 410
    assert sharing.get(f"/s/{warm}").status_code == 410


def test_version_published_after_commit(world, sharing, warm):
    org_id = world["owner"].org_id
    before = int(org_key_value(org_id))
    world["api"].call("patch", f"/api/v1/links/{world['link']['id']}", json={"label": "renamed"})
    assert int(org_key_value(org_id)) == before + 1


def test_marker_forces_database_read(world, sharing, warm):
    # A writer that committed and then failed to publish leaves its marker:
    # requests must read the database until the marker expires.
    org_id = world["owner"].org_id
    stats.redis_client().set(freshness.org_key(org_id), freshness.MARKER, ex=30)
    with session_scope("sharing") as session:
        link = session.get(Link, world["link"]["id"])
        link.allow_download = True
        link.version += 1
    freshness.wait_for_trust_to_end()
    assert items_status(sharing, warm) == 200
    assert listing.cached_link(warm).allow_download is True
    assert org_key_value(org_id) == freshness.MARKER.encode()


def test_failed_publish_keeps_marker(world, sharing, warm, monkeypatch):
    def failing_pipeline(*args, **kwargs):
        raise redis.ConnectionError("Redis went away after the commit")

    client = stats.redis_client()
    monkeypatch.setattr(client, "pipeline", failing_pipeline)
    response = world["api"].call("post", f"/api/v1/links/{world['link']['id']}/revoke")
    monkeypatch.undo()
    assert response.status_code == 200
    assert org_key_value(world["owner"].org_id) == freshness.MARKER.encode()
    assert items_status(sharing, warm) == 410


def test_revoke_rejected_without_redis(world, sharing, warm, redis_unreachable):
    link_id = world["link"]["id"]
    response = world["api"].call("post", f"/api/v1/links/{link_id}/revoke")
    assert response.status_code == 503
    assert response.json["error"]["code"] == "unavailable"
    assert "Redis" in response.json["error"]["message"]
    with session_scope("sharing") as session:
        assert session.scalar(select(Link.revoked_at).where(Link.id == link_id)) is None


def test_public_reads_database_without_redis(world, sharing, warm, redis_unreachable):
    # With Redis down, nothing can be confirmed, so every request reads the
    # database and a change made meanwhile is seen at once.
    with session_scope("sharing") as session:
        session.get(Link, world["link"]["id"]).allow_download = True
    freshness.wait_for_trust_to_end()
    assert items_status(sharing, warm) == 200
    assert listing.cached_link(warm).allow_download is True


def test_fill_in_never_replaces_marker(world):
    org_id = world["owner"].org_id
    key = freshness.org_key(org_id)
    stats.redis_client().set(key, freshness.MARKER, ex=30)
    freshness.fill_in(org_id, 1)
    assert stats.redis_client().get(key) == freshness.MARKER.encode()
    stats.redis_client().delete(key)
    freshness.fill_in(org_id, 7)
    assert stats.redis_client().get(key) == b"7"


def test_view_counted_once_per_request(world, sharing, warm):
    link_id = world["link"]["id"]
    stats.flush_local()
    before = world["api"].call("get", f"/api/v1/links/{link_id}").json["stats"]["views"]
    for _ in range(4):
        assert items_status(sharing, warm) == 200
    first = sharing.get(f"/s/{warm}/api/items?limit=1")
    assert first.status_code == 200
    cursor = first.json["next_cursor"]
    assert cursor
    # A later page is not a view.
    assert sharing.get(f"/s/{warm}/api/items", query_string={"cursor": cursor}).status_code == 200
    stats.flush_local()
    after = world["api"].call("get", f"/api/v1/links/{link_id}").json["stats"]["views"]
    assert after == before + 5


def test_confirmed_version_spares_redis(world, sharing, warm, monkeypatch):
    # Within the trust period, requests do not ask Redis at all.
    calls = []
    client = stats.redis_client()
    real_get = client.get

    def counting_get(*args, **kwargs):
        calls.append(args)
        return real_get(*args, **kwargs)

    monkeypatch.setattr(client, "get", counting_get)
    freshness.forget_confirmed()
    for _ in range(5):
        assert items_status(sharing, warm) == 200
    assert len(calls) <= 2
    freshness.wait_for_trust_to_end()
    assert items_status(sharing, warm) == 200
    assert len(calls) >= 2


def test_views_kept_when_redis_fails(world, sharing, warm, monkeypatch):
    link_id = world["link"]["id"]
    stats.flush_local()
    before = world["api"].call("get", f"/api/v1/links/{link_id}").json["stats"]["views"]
    assert items_status(sharing, warm) == 200
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    monkeypatch.setattr(stats, "_client", dead)
    stats.flush_local()
    monkeypatch.undo()
    stats.flush_local()
    after = world["api"].call("get", f"/api/v1/links/{link_id}").json["stats"]["views"]
    assert after == before + 1
