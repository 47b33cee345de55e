"""Calls from the sharing service to the catalog and collections services.

Member calls forward the member's ``Authorization`` header, so the other
services answer with what that member may see. Export and original
downloads use the catalog's internal endpoints, authenticated with
``X-Internal-Secret``.
"""

from __future__ import annotations

import requests

from core.errors import ApiError, NotFound, ServiceUnavailable
from core.logs import get_logger
from core.settings import get_settings

log = get_logger(__name__)

TIMEOUT_SECONDS = 30
# File ids per catalog look-up request.
LOOKUP_CHUNK = 1000
ITEMS_PAGE = 1000


class UpstreamError(ApiError):
    """Another service rejected a request with a 4xx status."""

    def __init__(self, status: int, message: str, body: dict | None = None):
        super().__init__(message)
        self.status = status
        self.body = body or {}


def _call(session: requests.Session, service: str, method: str, url: str, **kwargs):
    try:
        response = session.request(method, url, timeout=TIMEOUT_SECONDS, **kwargs)
    except requests.RequestException as error:
        log.warning("upstream_request_failed", service=service, url=url, error=str(error))
        raise ServiceUnavailable(f"the {service} service is unavailable; retry shortly") from None
    if response.status_code >= 500:
        log.warning("upstream_request_failed", service=service, url=url, status=response.status_code)
        raise ServiceUnavailable(
            f"the {service} service failed (HTTP {response.status_code}); retry shortly"
        )
    return response


def _error_of(response) -> tuple[str, dict]:
    try:
        body = response.json()
        return body["error"].get("message", "request failed"), body["error"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"HTTP {response.status_code}", {}


class MemberClient:
    """The catalog and collections APIs, called with a member's token."""

    def __init__(self, authorization: str):
        settings = get_settings()
        self.catalog_url = settings.catalog_url
        self.collections_url = settings.collections_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = authorization

    def _json(self, service: str, method: str, url: str, **kwargs):
        response = _call(self.session, service, method, url, **kwargs)
        if response.status_code >= 400:
            message, body = _error_of(response)
            raise UpstreamError(response.status_code, message, body)
        return response.json()

    def collection(self, collection_id: str) -> dict:
        """Return the collection, or raise NotFound naming ``collection_id``."""
        url = f"{self.collections_url}/api/v1/collections/{requests.utils.quote(collection_id, safe='')}"
        try:
            return self._json("collections", "GET", url)
        except UpstreamError as error:
            if error.status == 404:
                raise NotFound(
                    f"collection {collection_id!r} not found",
                    fields={"collection_id": ["not found"]},
                ) from None
            raise

    def collection_item_ids(self, collection_id: str) -> list[str]:
        """Return the ids of the collection's items the member may see, in order."""
        ids, cursor = [], None
        url = f"{self.collections_url}/api/v1/collections/{collection_id}/items"
        while True:
            params = {"limit": ITEMS_PAGE}
            if cursor:
                params["cursor"] = cursor
            page = self._json("collections", "GET", url, params=params)
            ids.extend(item["file_id"] for item in page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return ids

    def file_facts(self, file_ids: list[str]) -> list[dict]:
        facts = []
        for start in range(0, len(file_ids), LOOKUP_CHUNK):
            chunk = file_ids[start : start + LOOKUP_CHUNK]
            data = self._json(
                "catalog", "POST", f"{self.catalog_url}/api/v1/files/lookup", json={"ids": chunk}
            )
            facts.extend(data["items"])
        return facts

    def groups(self) -> list[dict]:
        """Return the groups the member may see, with their members' emails."""
        return self._json("catalog", "GET", f"{self.catalog_url}/api/v1/groups")

    def members(self) -> list[dict]:
        return self._json("catalog", "GET", f"{self.catalog_url}/api/v1/members")


class ExportClient:
    """The catalog's internal export and original-file endpoints."""

    def __init__(self):
        settings = get_settings()
        self.catalog_url = settings.catalog_url
        self.session = requests.Session()
        self.session.headers["X-Internal-Secret"] = settings.internal_secret or ""

    def _json(self, method: str, path: str, **kwargs) -> dict:
        response = _call(self.session, "catalog", method, self.catalog_url + path, **kwargs)
        if response.status_code >= 400:
            message, body = _error_of(response)
            raise UpstreamError(response.status_code, message, body)
        return response.json()

    def create_export(self, org_id: str, user_id: str, file_ids: list[str], skip_offline: bool,
                      name: str) -> dict:  # fmt: skip
        body = {
            "org_id": org_id,
            "user_id": user_id,
            "file_ids": file_ids,
            "skip_offline": skip_offline,
            "name": name,
        }
        return self._json("POST", "/api/v1/internal/exports", json=body)

    def export_status(self, org_id: str, export_id: str) -> dict:
        return self._json(
            "GET", f"/api/v1/internal/exports/{export_id}", params={"org_id": org_id}
        )

    def stream(self, path: str, params: dict) -> requests.Response:
        """Open a streamed GET; the caller closes the response."""
        return _call(
            self.session, "catalog", "GET", self.catalog_url + path, params=params, stream=True
        )
