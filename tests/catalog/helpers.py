"""Helpers for scanning drives inline, without a worker."""

from __future__ import annotations

from pathlib import Path

from workers.scan.volume import ensure_volume_id

# Sources connected with this host get their scans queued to a queue no test
# worker consumes, so the test runs each scan inline as a plain function.
INLINE_HOST = "inline-host"


def connect(member, root: Path, name: str | None = None, group: str | None = None,
            host: str = INLINE_HOST) -> dict:  # fmt: skip
    body = {"volume_id": ensure_volume_id(root), "mount_path": str(root), "host": host}
    if name:
        body["name"] = name
    if group:
        body["group"] = group
    response = member.post("/api/v1/sources", json=body)
    assert response.status_code == 200, response.json
    return response.json


def run_active_scan(member, source: dict, **scanner_options) -> dict:
    """Run the drive's queued scan inline and return the scan as the API shows it."""
    from workers.tasks.scans import run_scan

    shown = member.get(f"/api/v1/sources/{source['id']}")
    assert shown.status_code == 200, shown.json
    scan = shown.json["active_scan"]
    assert scan is not None, "no scan queued"
    run_scan(scan["id"], **scanner_options)
    return member.get(f"/api/v1/scans/{scan['id']}").json


def scan(member, source: dict, **scanner_options) -> dict:
    """Queue a rescan and run it inline."""
    response = member.post(f"/api/v1/sources/{source['id']}/scans")
    assert response.status_code == 202, response.json
    return run_active_scan(member, source, **scanner_options)


def files_by_path(member, drive: str | None = None, **params) -> dict[str, dict]:
    items, cursor = [], None
    while True:
        query = {"limit": 1000, **params}
        if drive:
            query["drive"] = drive
        if cursor:
            query["cursor"] = cursor
        page = member.get("/api/v1/files", query_string=query).json
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return {item["path"]: item for item in items}
