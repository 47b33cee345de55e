"""Token resolution for services other than the catalog.

The catalog owns tokens. Other services ask its internal introspection
endpoint and keep the answer for a few seconds, so a burst of requests with
one token costs one call.
"""

from __future__ import annotations

import threading
import time

import requests

from core.auth import Principal, hash_token
from core.errors import ServiceUnavailable
from core.settings import get_settings

# NOTE: a revoked token or a changed role takes up to this long to be seen
# by the collections and sharing services.
CACHE_SECONDS = 5.0

_cache: dict[str, tuple[float, Principal | None]] = {}
_lock = threading.Lock()


def resolve_remote(token: str) -> Principal | None:
    key = hash_token(token)
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
        if hit and hit[0] > now:
            return hit[1]
    settings = get_settings()
    try:
        response = requests.post(
            f"{settings.catalog_url}/api/v1/internal/introspect",
            json={"token": token},
            headers={"X-Internal-Secret": settings.internal_secret or ""},
            timeout=5,
        )
    except requests.RequestException:
        raise ServiceUnavailable("the catalog service is unavailable; retry shortly") from None
    if response.status_code == 404:
        principal = None
    elif response.status_code == 200:
        principal = Principal.from_dict(response.json())
    else:
        raise ServiceUnavailable(
            f"the catalog service failed to check the token (HTTP {response.status_code})"
        )
    with _lock:
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[key] = (now + CACHE_SECONDS, principal)
    return principal


def clear_cache() -> None:
    with _lock:
        _cache.clear()
