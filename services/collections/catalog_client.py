"""Calls from the collections service to the catalog API, as the caller.

Every call forwards the caller's ``Authorization`` header, so the catalog
returns only the files, drives and groups that the caller may see.
"""

from __future__ import annotations

import requests

from core.errors import ServiceUnavailable, ValidationError
from core.logs import get_logger
from core.settings import get_settings

log = get_logger(__name__)

# The catalog's lookup endpoint takes at most this many ids per request, so
# one request adds at most this many files.
MAX_FILES_PER_REQUEST = 10_000
# Folder listings fetched for one "add a folder" request, subfolders included.
MAX_FOLDER_REQUESTS = 2_000
PAGE_SIZE = 1000
TIMEOUT_SECONDS = 30


class CatalogError(Exception):
    """The catalog rejected a request with a 4xx status."""

    def __init__(self, status: int, message: str, fields: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields or {}


class CatalogClient:
    def __init__(self, authorization: str):
        self.base_url = get_settings().catalog_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = authorization

    def _request(self, method: str, path: str, **kwargs) -> dict:
        url = self.base_url + path
        try:
            response = self.session.request(method, url, timeout=TIMEOUT_SECONDS, **kwargs)
        except requests.RequestException as error:
            log.warning("catalog_request_failed", path=path, error=str(error))
            raise ServiceUnavailable(
                "the catalog service is unavailable; retry shortly"
            ) from None
        if response.status_code >= 500:
            log.warning("catalog_request_failed", path=path, status=response.status_code)
            raise ServiceUnavailable(
                f"the catalog service failed (HTTP {response.status_code}); retry shortly"
            )
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"message": response.text[:200]}
            raise CatalogError(
                response.status_code, error.get("message", "request failed"), error.get("fields")
            )
        return response.json()

    def lookup(self, file_ids: list[str]) -> tuple[list[dict], list[str]]:
        """Return the facts of the files the caller may see, and the other ids."""
        data = self._request("POST", "/api/v1/files/lookup", json={"ids": file_ids})
        return data["items"], data["not_found"]

    def group_visibilities(self) -> dict[str, str]:
        """Return ``{group_id: visibility}`` for every group the caller may see."""
        groups = self._request("GET", "/api/v1/groups")
        return {group["id"]: group["visibility"] for group in groups}

    def search_ids(self, params: dict) -> list[str]:
        """Return the ids of every file that a catalog search matches.

        Raises ValidationError naming ``query`` when the catalog rejects the
        parameters or more than MAX_FILES_PER_REQUEST files match.
        """
        ids: list[str] = []
        cursor = None
        while True:
            query = {**params, "limit": PAGE_SIZE}
            if cursor:
                query["cursor"] = cursor
            try:
                page = self._request("GET", "/api/v1/files", params=query)
            except CatalogError as error:
                raise ValidationError(
                    f"query is invalid: {error.message}",
                    fields={"query": error.fields or [error.message]},
                ) from None
            ids.extend(item["id"] for item in page["items"])
            _check_count(len(ids), "query")
            cursor = page.get("next_cursor")
            if not cursor:
                return ids

    def folder_ids(self, drive: str, path: str) -> list[str]:
        """Return the ids of every file in a drive's folder and its subfolders.

        Walks the catalog's folder listings breadth first. Raises
        ValidationError naming ``folder`` when the drive or folder is not
        found, or when the folder holds more than MAX_FILES_PER_REQUEST files
        or more than MAX_FOLDER_REQUESTS listings.
        """
        ids: list[str] = []
        pending = [path.strip("/")]
        requests_made = 0
        while pending:
            folder = pending.pop(0)
            cursor = None
            while True:
                requests_made += 1
                if requests_made > MAX_FOLDER_REQUESTS:
                    raise ValidationError(
                        f"folder is too large: it needs more than {MAX_FOLDER_REQUESTS} "
                        "listings; add its subfolders one at a time",
                        fields={"folder": ["too many subfolders"]},
                    )
                query = {"path": folder, "limit": PAGE_SIZE}
                if cursor:
                    query["cursor"] = cursor
                try:
                    page = self._request(
                        "GET", f"/api/v1/sources/{requests.utils.quote(drive, safe='')}/folder",
                        params=query,
                    )
                except CatalogError as error:
                    raise ValidationError(
                        f"folder is invalid: {error.message}",
                        fields={"folder": [error.message]},
                    ) from None
                ids.extend(item["id"] for item in page["items"])
                _check_count(len(ids), "folder")
                pending.extend(sub["path"] for sub in page.get("folders", []))
                cursor = page.get("next_cursor")
                if not cursor:
                    break
        return ids


def _check_count(count: int, field: str) -> None:
    if count > MAX_FILES_PER_REQUEST:
        raise ValidationError(
            f"{field} matches more than {MAX_FILES_PER_REQUEST} files: narrow it, "
            "or add the files in several requests",
            fields={field: [f"matches more than {MAX_FILES_PER_REQUEST} files"]},
        )
