"""Rate limits on failed token look-ups and password attempts, in Redis.

The ``limits`` package (the engine of Flask-Limiter) keeps moving windows
in Redis. The routes count failures themselves: Flask-Limiter's request
hooks count requests, which would limit valid visitors and cost every
public request a Redis round trip.

Only failures are counted, and a request with a valid token never consults
the look-up counter, so a client holding a valid link keeps working while
others behind the same address are limited. Tokens carry 256 bits, so the
look-up limit bounds the load of guessing rather than its odds of success.
Password attempts are counted per link and client address, and once over
the limit every attempt on that link from that address is rejected,
including a correct one, so a password cannot be guessed faster.

NOTE: the client address is ``request.remote_addr``. Behind a reverse
proxy, wrap the app in werkzeug's ProxyFix or every client shares the
proxy's address and its limits.
"""

from __future__ import annotations

import threading

from flask import request
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from core.celery_app import redis_client_url
from core.settings import get_settings

LOOKUP_FAILURES = parse("20/minute")
PASSWORD_FAILURES = parse("10/minute")

_limiter: MovingWindowRateLimiter | None = None
_limiter_lock = threading.Lock()


def storage_uri() -> str:
    """Return the Redis URL in the form the ``limits`` package accepts."""
    url = redis_client_url()
    if url.startswith("unix://"):
        return "redis+unix://" + url[len("unix://") :]
    return url


def _strategy() -> MovingWindowRateLimiter:
    # A fixed window resets at each minute boundary and would let a burst of
    # twice the limit through across it, hence the moving window.
    global _limiter
    with _limiter_lock:
        if _limiter is None:
            storage = storage_from_string(
                storage_uri(), key_prefix=get_settings().redis_key_prefix + "sharing"
            )
            _limiter = MovingWindowRateLimiter(storage)
        return _limiter


def reset() -> None:
    """Forget the limiter, so the next check connects to the current Redis."""
    global _limiter
    with _limiter_lock:
        _limiter = None


def client_address() -> str:
    return request.remote_addr or "unknown"


def _scope(name: str) -> str:
    # The deployment's key prefix lets several deployments share one Redis.
    return get_settings().redis_key_prefix + name


def lookups_blocked() -> bool:
    return not _strategy().test(LOOKUP_FAILURES, _scope("lookup"), client_address())


def count_lookup_failure() -> None:
    _strategy().hit(LOOKUP_FAILURES, _scope("lookup"), client_address())


def password_blocked(link_id: str) -> bool:
    return not _strategy().test(
        PASSWORD_FAILURES, _scope("password"), link_id, client_address()
    )


def count_password_failure(link_id: str) -> None:
    _strategy().hit(PASSWORD_FAILURES, _scope("password"), link_id, client_address())


def retry_after_seconds() -> int:
    return 60
