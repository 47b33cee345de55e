"""Organization versions in Redis, so public requests can trust cached link state.

Every change that can alter what a link shows (the link's settings, its
revocation, the read model of its organization) increments the
organization's ``OrgState.version`` in the same transaction. Public
requests keep each link's state in the process and compare the version it
was read at with the one in Redis. A process trusts a confirmed version for
TRUST_SECONDS, so busy links cost about ten Redis round trips a second per
process in place of a database query per request. Link changes made
through the API wait out that trust before they return.

The key of an organization contains its committed version, or a marker
while a change is in flight. Writers follow three steps, so a key never
contains an old number once a newer version is committed:

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
import time

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

# How long a process trusts an organization's version after Redis confirmed
# it, counted from when the confirming request was sent. Link changes wait
# this long (plus a margin for clock rates) after their commit before they
# return, so no request that starts after a revocation returns is served
# from a state confirmed before it.
TRUST_SECONDS = 0.1
WAIT_MARGIN_SECONDS = 0.05

# Organization id -> (version confirmed, monotonic time the trust ends).
_confirmed: dict[str, tuple[int, float]] = {}
_confirmed_lock = threading.Lock()


def org_key(org_id: str) -> str:
    return f"{get_settings().redis_key_prefix}sharing:org-version:{org_id}"


def is_current(org_id: str, version: int) -> bool:
    """Check that ``version`` is the organization's current version.

    Asks Redis at most once per TRUST_SECONDS for a confirmed version.
    Returns False when Redis contains a marker, no key or another number, or
    cannot be reached.
    """
    now = time.monotonic()
    with _confirmed_lock:
        entry = _confirmed.get(org_id)
    if entry is not None and entry[0] == version and now < entry[1]:
        return True
    try:
        value = stats.redis_client().get(org_key(org_id))
    except redis.RedisError as error:
        log.warning("org_version_read_failed", org_id=org_id, error=str(error))
        return False
    if value != str(version).encode():
        with _confirmed_lock:
            _confirmed.pop(org_id, None)
        return False
    with _confirmed_lock:
        _confirmed[org_id] = (version, now + TRUST_SECONDS)
    return True


def forget_confirmed() -> None:
    """Drop every confirmed version, so the next requests ask Redis."""
    with _confirmed_lock:
        _confirmed.clear()


def wait_for_trust_to_end() -> None:
    """Sleep until no process trusts a version confirmed before this call."""
    time.sleep(TRUST_SECONDS + WAIT_MARGIN_SECONDS)


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
