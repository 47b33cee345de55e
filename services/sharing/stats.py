"""Use statistics of links: views, downloads and last access.

Public requests count views in the process, and a thread adds them in
Redis every second. The beat task ``sharing.flush_stats`` moves the counts
to the links' rows in the database every 10 seconds. Members see the
database values plus the counts still in Redis.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime

import redis
from sqlalchemy import case, update

from core.celery_app import redis_client_url
from core.settings import get_settings
from core.db import session_scope, utcnow
from core.logs import get_logger
from services.sharing.models import Link
from services.sharing.readmodel import parse_time

log = get_logger(__name__)


def stats_key(link_id: str) -> str:
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


def _add_counts(pipe, link_id: str, views: int, downloads: int, at: datetime) -> None:
    key = stats_key(link_id)
    if views:
        pipe.hincrby(key, "views", views)
    if downloads:
        pipe.hincrby(key, "downloads", downloads)
    pipe.hset(key, "last_access", at.isoformat())


def record(link_id: str, views: int = 0, downloads: int = 0, at: datetime | None = None) -> None:
    """Count views or downloads of a link made ``at`` (default: now).

    A Redis failure is logged, not raised.
    """
    try:
        pipe = redis_client().pipeline(transaction=True)
        _add_counts(pipe, link_id, views, downloads, at or utcnow())
        pipe.execute()
    except redis.RedisError as error:
        log.warning("link_stats_failed", link_id=link_id, error=str(error))


# Views counted in this process and not yet added in Redis: link id ->
# [views, time of the last view]. A thread adds them every FLUSH_SECONDS.
FLUSH_SECONDS = 1.0
_local: dict[str, list] = {}
_local_lock = threading.Lock()
_flusher: threading.Thread | None = None


def count_view(link_id: str) -> None:
    """Count a view of a link in this process; Redis gets it within FLUSH_SECONDS.

    Views still in the process are lost if it is killed.
    """
    global _flusher
    now = utcnow()
    with _local_lock:
        entry = _local.get(link_id)
        if entry is None:
            _local[link_id] = [1, now]
        else:
            entry[0] += 1
            entry[1] = now
        # After a fork the parent's thread does not exist in the child.
        if _flusher is None or not _flusher.is_alive():
            _flusher = threading.Thread(target=_flush_forever, name="link-views", daemon=True)
            _flusher.start()


def _flush_forever() -> None:
    while True:
        time.sleep(FLUSH_SECONDS)
        flush_local()


def flush_local() -> None:
    """Add the views counted in this process to Redis; on failure keep them."""
    with _local_lock:
        pending = dict(_local)
        _local.clear()
    if not pending:
        return
    try:
        pipe = redis_client().pipeline(transaction=False)
        for link_id, (views, last) in pending.items():
            _add_counts(pipe, link_id, views, 0, last)
        pipe.execute()
    except redis.RedisError as error:
        log.warning("link_views_flush_failed", links=len(pending), error=str(error))
        with _local_lock:
            for link_id, (views, last) in pending.items():
                entry = _local.setdefault(link_id, [0, last])
                entry[0] += views
                entry[1] = max(entry[1], last)


def flush_all() -> int:
    """Move every link's pending counts to the database; return how many links."""
    prefix = stats_key("")
    flushed = 0
    for key in redis_client().scan_iter(match=prefix + "*", count=500):
        flush(key.decode()[len(prefix) :])
        flushed += 1
    return flushed


def _take(link_id: str) -> dict:
    key = stats_key(link_id)
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
    views = int(pending.get("views", 0))
    downloads = int(pending.get("downloads", 0))
    last_access = parse_time(pending.get("last_access"))
    try:
        with session_scope("sharing") as session:
            session.execute(
                update(Link)
                .where(Link.id == link_id)
                .values(
                    views=Link.views + views,
                    downloads=Link.downloads + downloads,
                    last_access_at=case(
                        (Link.last_access_at.is_(None), last_access),
                        (Link.last_access_at < last_access, last_access),
                        else_=Link.last_access_at,
                    ),
                )
            )
    except Exception:
        # Put the counts back, so the next flush moves them.
        record(link_id, views=views, downloads=downloads, at=last_access)
        raise


def pending_counts(link_ids: list[str]) -> dict[str, dict]:
    """Return the counts of each link not yet moved to the database."""
    if not link_ids:
        return {}
    try:
        pipe = redis_client().pipeline(transaction=False)
        for link_id in link_ids:
            pipe.hgetall(stats_key(link_id))
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
