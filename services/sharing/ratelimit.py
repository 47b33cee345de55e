"""Rate limits on failed token look-ups and password attempts, in Redis.

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

from flask import Flask, request
from flask_limiter import Limiter
from limits import parse

from core.celery_app import redis_client_url
from core.settings import get_settings

LOOKUP_FAILURES = parse("20/minute")
PASSWORD_FAILURES = parse("10/minute")

_limiter: Limiter | None = None


def storage_uri() -> str:
    """Return the Redis URL in the form the ``limits`` package accepts."""
    url = redis_client_url()
    if url.startswith("unix://"):
        return "redis+unix://" + url[len("unix://") :]
    return url


def install(app: Flask) -> None:
    """Attach a limiter with Redis storage and no default limits to the app."""
    global _limiter
    _limiter = Limiter(
        lambda: request.remote_addr or "unknown",
        app=app,
        storage_uri=storage_uri(),
        default_limits=[],
        key_prefix=get_settings().redis_key_prefix + "sharing",
        # A fixed window resets at each minute boundary and would let a
        # burst of twice the limit through across it.
        strategy="moving-window",
    )


def _strategy():
    return _limiter.limiter


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
