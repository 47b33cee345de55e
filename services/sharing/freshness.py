"""Organization versions in Redis, so public requests can trust cached link state.

Every change that can alter what a link shows (the link's settings, its
revocation, the read model of its organization) increments the
organization's ``OrgState.version`` in the same transaction. Public
requests keep each link's state in the process and, on every request,
compare the version it was read at with the one in Redis: one Redis round
trip in place of a database query. The view is counted in that same round
trip when the versions match.

The key of an organization contains its committed version, or a marker while a
change is in flight. Writers follow three steps, so a key never holds an old
number once a newer version is committed:

1. before the commit, set the marker (with a TTL); if Redis is down, the
   change fails and nothing is committed;
2. commit;
3. set the key to the new version; if this fails, the marker expires and
   the next request reads the database and fills the key in.

Readers that find no key read the database and set the key only where it
is still absent (``SET NX``), so a reader holding an old version can never
replace a marker or a newer number.

NOTE: a reader that takes longer than the marker's TTL between its database
read and its ``SET NX``, while the writer's step 3 failed, could still set
an old number. That needs a stall of 30 s inside one request.
"""

from __future__ import annotations

import threading
from datetime import datetime

import redis
from sqlalchemy import event
from sqlalchemy.orm import Session

from core.errors import ServiceUnavailable
from core.logs import get_logger
from core.settings import get_settings
from services.sharing import stats

log = get_logger(__name__)

# Long enough for any transaction to commit, short enough that a writer that
# died between its marker and its final write delays nothing for long.
MARKER_TTL_S = 30
MARKER = "pending"
_SESSION_KEY = "sharing_org_versions"

# KEYS: organization version, link statistics. ARGV: the version the caller
# read the link at, views to count, access time. The view is counted only
# when the versions match, that is when the caller's state is current.
_CHECK_AND_COUNT = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] and ARGV[2] ~= '0' then
    redis.call('HINCRBY', KEYS[2], 'views', ARGV[2])
    redis.call('HSET', KEYS[2], 'last_access', ARGV[3])
end
return current
"""

_script = None
_script_lock = threading.Lock()


def org_key(org_id: str) -> str:
    return f"{get_settings().redis_key_prefix}sharing:org-version:{org_id}"


def _check_script():
    global _script
    client = stats.redis_client()
    with _script_lock:
        if _script is None or _script.registered_client is not client:
            _script = client.register_script(_CHECK_AND_COUNT)
        return _script


def current_version(org_id: str, read_at: int, link_id: str, views: int, now: datetime):
    """Return the organization's version in Redis, counting ``views`` if it equals ``read_at``.

    Returns None when the key is absent or contains a marker. Raises
    redis.RedisError when Redis cannot be reached.
    """
    value = _check_script()(
        keys=[org_key(org_id), stats.stats_key(link_id)],
        args=[str(read_at), views, now.isoformat()],
    )
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def fill_in(org_id: str, version: int) -> None:
    """Set the organization's version where no key exists; errors are logged."""
    try:
        stats.redis_client().set(org_key(org_id), version, nx=True)
    except redis.RedisError as error:
        log.warning("org_version_fill_failed", org_id=org_id, error=str(error))


def announce_change(session: Session, org_id: str, version: int) -> None:
    """Mark the organization's version as changing until ``session`` commits.

    Raises ServiceUnavailable when Redis cannot be reached, so the change is
    not committed while public requests could still trust the old state.
    """
    pending = session.info.setdefault(_SESSION_KEY, {})
    if org_id not in pending:
        try:
            stats.redis_client().set(org_key(org_id), MARKER, ex=MARKER_TTL_S)
        except redis.RedisError as error:
            log.error("org_version_mark_failed", org_id=org_id, error=str(error))
            raise ServiceUnavailable(
                "Redis is unavailable, so share links cannot be changed now; retry shortly"
            ) from error
    pending[org_id] = version


@event.listens_for(Session, "after_commit")
def _publish_versions(session: Session) -> None:
    pending = session.info.pop(_SESSION_KEY, None)
    if not pending:
        return
    try:
        pipe = stats.redis_client().pipeline(transaction=False)
        for org_id, version in pending.items():
            pipe.set(org_key(org_id), version)
        pipe.execute()
    except redis.RedisError as error:
        # The markers expire, and readers then fill the keys in from the
        # database, so public requests never trust the old state meanwhile.
        log.warning("org_version_publish_failed", orgs=sorted(pending), error=str(error))


@event.listens_for(Session, "after_rollback")
def _forget_versions(session: Session) -> None:
    # The markers of a rolled-back change expire by themselves.
    session.info.pop(_SESSION_KEY, None)
