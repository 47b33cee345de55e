"""What members see in the catalog: restricted groups, roles and tokens.

The walk of every documented operation, by token and role, is in
tests/security/test_api_access.py and covers all three services.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy import select

from core.db import session_scope
from services.catalog.models import OutboxEvent
from tests.catalog.helpers import connect, run_active_scan
from tests.conftest import Member, make_org
from tests.security.openapi_walk import error_shape_problem, small_jpeg
from workers.tasks.checksums import checksum_source
from workers.tasks.renditions import render_source

# -- restricted groups ---------------------------------------------------------


@dataclass
class SecretDrive:
    drive: dict
    files: list[dict]
    scan_id: str


@pytest.fixture
def secret(owner, drive_factory) -> SecretDrive:
    created = owner.post(
        "/api/v1/groups", json={"name": "Secret", "visibility": "restricted"}
    )
    assert created.status_code == 201, created.json
    assert created.json["members"] == [owner.email]
    twin = small_jpeg((10, 120, 10))
    root = drive_factory(
        "vault", {"merger/secret-plan.jpg": twin, "merger/secret-plan-copy.jpg": twin}
    )
    drive = connect(owner, root, group="Secret")
    scan = run_active_scan(owner, drive)
    assert scan["status"] == "succeeded", scan
    render_source(drive["id"])
    checksum_source(drive["id"])
    files = owner.get("/api/v1/files", query_string={"drive": drive["id"]}).json[
        "items"
    ]
    assert len(files) == 2
    return SecretDrive(drive=drive, files=files, scan_id=scan["id"])


@pytest.fixture
def public_drive(owner, drive_factory) -> dict:
    root = drive_factory("lobby", {"welcome.jpg": small_jpeg((250, 250, 0))})
    drive = connect(owner, root)
    assert run_active_scan(owner, drive)["status"] == "succeeded"
    return drive


def secret_exposures(member: Member, secret: SecretDrive) -> list[str]:
    """Name every endpoint through which ``member`` learns of the secret drive."""
    drive_id = secret.drive["id"]
    file_ids = {f["id"] for f in secret.files}
    file_id = secret.files[0]["id"]
    exposures = []

    def listed(items, key="id", wanted=None):
        wanted = file_ids if wanted is None else wanted
        return any(item[key] in wanted for item in items)

    if listed(member.get("/api/v1/files").json["items"]):
        exposures.append("files")
    searched = member.get("/api/v1/files", query_string={"q": "secret-plan"})
    if listed(searched.json["items"]):
        exposures.append("files?q")
    by_drive = member.get("/api/v1/files", query_string={"drive": secret.drive["name"]})
    if listed(by_drive.json["items"]):
        exposures.append("files?drive")
    for suffix in ("", "/thumbnail", "/preview"):
        if member.get(f"/api/v1/files/{file_id}{suffix}").status_code != 404:
            exposures.append(f"files/<id>{suffix}")
    lookup = member.post("/api/v1/files/lookup", json={"ids": sorted(file_ids)}).json
    if lookup["items"] or sorted(lookup["not_found"]) != sorted(file_ids):
        exposures.append("files/lookup")
    sources = member.get("/api/v1/sources").json["items"]
    if listed(sources, wanted={drive_id}):
        exposures.append("sources")
    for ref in (drive_id, secret.drive["name"]):
        if member.get(f"/api/v1/sources/{ref}").status_code != 404:
            exposures.append(f"sources/{ref}")
    for suffix in ("/folder", "/scans"):
        if member.get(f"/api/v1/sources/{drive_id}{suffix}").status_code != 404:
            exposures.append(f"sources/<id>{suffix}")
    if member.get(f"/api/v1/scans/{secret.scan_id}").status_code != 404:
        exposures.append("scans/<id>")
    duplicates = member.get("/api/v1/duplicates").json["items"]
    if any(listed(group["files"]) for group in duplicates):
        exposures.append("duplicates")
    groups = member.get("/api/v1/groups").json
    if any(group["name"] == "Secret" for group in groups):
        exposures.append("groups")
    if member.get("/api/v1/groups/Secret").status_code != 404:
        exposures.append("groups/Secret")
    return exposures


ALL_EXPOSURES = [
    "files",
    "files?q",
    "files?drive",
    "files/<id>",
    "files/<id>/thumbnail",
    "files/<id>/preview",
    "files/lookup",
    "sources",
    "sources/{id}",
    "sources/{name}",
    "sources/<id>/folder",
    "sources/<id>/scans",
    "scans/<id>",
    "duplicates",
    "groups",
    "groups/Secret",
]


def expected_exposures(secret: SecretDrive) -> list[str]:
    names = {"sources/{id}": secret.drive["id"], "sources/{name}": secret.drive["name"]}
    return [f"sources/{names[e]}" if e in names else e for e in ALL_EXPOSURES]


@pytest.mark.parametrize("role", ["viewer", "editor"])
def test_restricted_group_hidden_until_granted(owner, secret, public_drive, role):
    member = owner.add_member(f"outsider-{role}@example.com", role)
    assert secret_exposures(owner, secret) == expected_exposures(secret)

    assert secret_exposures(member, secret) == []
    public_files = member.get("/api/v1/files").json["items"]
    assert [f["name"] for f in public_files] == ["welcome.jpg"]

    granted = owner.post("/api/v1/groups/Secret/members", json={"email": member.email})
    assert granted.status_code == 200, granted.json
    assert member.email in granted.json["members"]
    assert secret_exposures(member, secret) == expected_exposures(secret)

    revoked = owner.delete(f"/api/v1/groups/Secret/members/{member.email}")
    assert revoked.status_code == 200, revoked.json
    assert member.email not in revoked.json["members"]
    assert secret_exposures(member, secret) == []


def test_editor_cannot_reattach_hidden_drive(owner, secret):
    editor = owner.add_member("outsider-editor@example.com", "editor")
    body = {
        "volume_id": secret.drive["volume_id"],
        "mount_path": "/mnt/somewhere",
        "host": "inline-host",
    }
    response = editor.post("/api/v1/sources", json=body)
    assert response.status_code in (403, 404, 409)
    assert error_shape_problem(response) is None
    text = response.get_data(as_text=True)
    assert secret.drive["id"] not in text
    assert secret.drive["name"] not in text
    rescan = editor.post(f"/api/v1/sources/{secret.drive['id']}/scans")
    assert rescan.status_code == 404
    drive_after = owner.get(f"/api/v1/sources/{secret.drive['id']}").json
    assert drive_after["mount_path"] == secret.drive["mount_path"]


def test_restricted_export_hidden_from_outsiders(owner, secret):
    outsider = owner.add_member("outsider-editor@example.com", "editor")
    ids = [f["id"] for f in secret.files]
    export = owner.post("/api/v1/exports", json={"file_ids": ids})
    assert export.status_code == 202, export.json
    export_id = export.json["id"]

    assert outsider.get(f"/api/v1/exports/{export_id}").status_code == 404
    assert outsider.get(f"/api/v1/exports/{export_id}/archive").status_code == 404
    cancel = outsider.post(f"/api/v1/exports/{export_id}/cancel")
    assert cancel.status_code in (403, 404)
    assert owner.get(f"/api/v1/exports/{export_id}").json["status"] != "cancelled"
    listed = outsider.get("/api/v1/exports").json["items"]
    assert export_id not in [item["id"] for item in listed]


def test_viewer_cannot_cancel_others_export(owner, public_drive):
    viewer = owner.add_member("viewer@example.com", "viewer")
    file_id = owner.get("/api/v1/files").json["items"][0]["id"]
    export = owner.post("/api/v1/exports", json={"file_ids": [file_id]})
    assert export.status_code == 202, export.json

    cancel = viewer.post(f"/api/v1/exports/{export.json['id']}/cancel")
    assert cancel.status_code in (403, 404)


# -- members -------------------------------------------------------------------


def test_admin_cannot_grant_or_take_owner(owner):
    admin = owner.add_member("admin@example.com", "admin")
    editor = owner.add_member("editor@example.com", "editor")

    invite = admin.post(
        "/api/v1/members", json={"email": "boss@example.com", "role": "owner"}
    )
    assert invite.status_code == 403
    assert error_shape_problem(invite) is None
    promote = admin.patch(f"/api/v1/members/{editor.user_id}", json={"role": "owner"})
    assert promote.status_code == 403
    promote_self = admin.patch(
        f"/api/v1/members/{admin.user_id}", json={"role": "owner"}
    )
    assert promote_self.status_code == 403
    demote = admin.patch(f"/api/v1/members/{owner.user_id}", json={"role": "viewer"})
    assert demote.status_code == 403
    remove = admin.delete(f"/api/v1/members/{owner.user_id}")
    assert remove.status_code == 403

    roles = {m["email"]: m["role"] for m in owner.get("/api/v1/members").json}
    assert roles == {
        owner.email: "owner",
        "admin@example.com": "admin",
        "editor@example.com": "editor",
    }


def test_last_owner_cannot_be_removed(owner):
    removed = owner.delete(f"/api/v1/members/{owner.user_id}")
    assert removed.status_code == 403
    assert error_shape_problem(removed) is None
    assert owner.get("/api/v1/me").json["role"] == "owner"

    second = owner.add_member("second-owner@example.com", "owner")
    assert owner.delete(f"/api/v1/members/{second.user_id}").status_code == 204
    assert second.get("/api/v1/me").status_code == 401


def test_last_owner_cannot_be_demoted(owner):
    demoted = owner.patch(f"/api/v1/members/{owner.user_id}", json={"role": "admin"})
    assert demoted.status_code in (403, 409)
    assert owner.get("/api/v1/me").json["role"] == "owner"


def test_removed_member_token_stops_working(owner):
    admin = owner.add_member("admin@example.com", "admin")
    viewer = owner.add_member("leaver@example.com", "viewer")
    second = viewer.post("/api/v1/tokens")
    assert second.status_code == 201
    second_token = second.json["token"]
    assert viewer.get("/api/v1/me").status_code == 200

    assert admin.delete(f"/api/v1/members/{viewer.user_id}").status_code == 204

    response = viewer.get("/api/v1/files")
    assert response.status_code == 401
    assert error_shape_problem(response) is None
    other_token = viewer.client.get(
        "/api/v1/me", headers={"Authorization": f"Bearer {second_token}"}
    )
    assert other_token.status_code == 401
    emails = [m["email"] for m in owner.get("/api/v1/members").json]
    assert "leaver@example.com" not in emails


def test_readded_member_loses_old_grants(owner, secret):
    member = owner.add_member("returning@example.com", "viewer")
    granted = owner.post("/api/v1/groups/Secret/members", json={"email": member.email})
    assert granted.status_code == 200
    assert owner.delete(f"/api/v1/members/{member.user_id}").status_code == 204

    again = owner.add_member("returning@example.com", "viewer")
    assert secret_exposures(again, secret) == []


def test_member_removal_publishes_group_members(owner, secret):
    member = owner.add_member("leaving@example.com", "viewer")
    secret_id = owner.get("/api/v1/groups/Secret").json["id"]
    granted = owner.post("/api/v1/groups/Secret/members", json={"email": member.email})
    assert granted.status_code == 200
    assert owner.delete(f"/api/v1/members/{member.user_id}").status_code == 204

    # The other services keep group member lists from these events, so the
    # last one for the group must no longer list the removed member.
    with session_scope("catalog") as session:
        events = session.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.topic == "catalog.group_changed")
            .order_by(OutboxEvent.seq)
        ).all()
    latest = [e.payload for e in events if e.payload["group_id"] == secret_id][-1]
    assert member.user_id not in latest["members"]
    assert owner.user_id in latest["members"]


def test_me_lists_only_own_org_groups(catalog, owner, secret):
    foreign_groups = {g["id"] for g in owner.get("/api/v1/groups").json}
    other = make_org(catalog, name="Beta", email=owner.email)
    me = other.get("/api/v1/me").json
    assert me["org_id"] == other.org_id
    assert not foreign_groups & set(me["group_ids"])
