"""Use statistics of links: views, downloads and last access.

Public requests count in Redis (one HINCRBY, no database row lock), and
every FLUSH_EVERY counts of a link move to the link's row in the database.
Members see the database values plus the counts still in Redis.
"""

from __future__ import annotations

import threading

import redis
from sqlalchemy import case, update

from core.celery_app import redis_client_url
from core.settings import get_settings
from core.db import session_scope, utcnow
from core.logs import get_logger
from services.sharing.models import Link
from services.sharing.readmodel import parse_time

log = get_logger(__name__)

FLUSH_EVERY = 25
def _key(link_id: str) -> str:
    return f"{get_settings().redis_key_prefix}sharing:stats:{link_id}"

_client: redis.Redis | None = None
_client_lock = threading.Lock()


def redis_client() -> redis.Redis:
    global _client
    with _client_lock:
        if _client is None:
            _client = redis.Redis.from_url(redis_client_url(), socket_timeout=2)
        return _client


def reset_client() -> None:
    global _client
    with _client_lock:
        _client = None


def record(link_id: str, views: int = 0, downloads: int = 0) -> None:
    """Count a view or a download of a link; a Redis failure is logged, not raised."""
    key = _key(link_id)
    try:
        pipe = redis_client().pipeline(transaction=True)
        pipe.hincrby(key, "views", views)
        pipe.hincrby(key, "downloads", downloads)
        pipe.hset(key, "last_access", utcnow().isoformat())
        pending_views, pending_downloads, _ = pipe.execute()
    except redis.RedisError as error:
        log.warning("link_stats_failed", link_id=link_id, error=str(error))
        return
    if pending_views + pending_downloads >= FLUSH_EVERY:
        flush(link_id)


def _take(link_id: str) -> dict:
    key = _key(link_id)
    pipe = redis_client().pipeline(transaction=True)
    pipe.hgetall(key)
    pipe.delete(key)
    values, _ = pipe.execute()
    return {k.decode(): v.decode() for k, v in values.items()}


def flush(link_id: str) -> None:
    """Move a link's counts from Redis to its database row."""
    try:
        pending = _take(link_id)
    except redis.RedisError as error:
        log.warning("link_stats_flush_failed", link_id=link_id, error=str(error))
        return
    if not pending:
        return
    last_access = parse_time(pending.get("last_access"))
    with session_scope("sharing") as session:
        session.execute(
            update(Link)
            .where(Link.id == link_id)
            .values(
                views=Link.views + int(pending.get("views", 0)),
                downloads=Link.downloads + int(pending.get("downloads", 0)),
                last_access_at=case(
                    (Link.last_access_at.is_(None), last_access),
                    (Link.last_access_at < last_access, last_access),
                    else_=Link.last_access_at,
                ),
            )
        )


def pending_counts(link_ids: list[str]) -> dict[str, dict]:
    """Return the counts of each link not yet moved to the database."""
    if not link_ids:
        return {}
    try:
        pipe = redis_client().pipeline(transaction=False)
        for link_id in link_ids:
            pipe.hgetall(_key(link_id))
        results = pipe.execute()
    except redis.RedisError as error:
        log.warning("link_stats_read_failed", error=str(error))
        return {}
    counts = {}
    for link_id, values in zip(link_ids, results):
        if values:
            decoded = {k.decode(): v.decode() for k, v in values.items()}
            counts[link_id] = {
                "views": int(decoded.get("views", 0)),
                "downloads": int(decoded.get("downloads", 0)),
                "last_access": parse_time(decoded.get("last_access")),
            }
    return counts
