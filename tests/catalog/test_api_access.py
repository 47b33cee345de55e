"""Who may call which catalog endpoint, and what each caller gets to see.

The endpoint walk builds its table from the OpenAPI document, so an endpoint
added later is checked without editing this file. Only the roles below are
listed by hand.
"""

from __future__ import annotations

import io
import itertools
import re
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest
from PIL import Image
from sqlalchemy import update

from core.db import session_scope
from services.catalog.models import Source
from tests.catalog.helpers import connect, run_active_scan
from tests.conftest import TEST_HOST, Member, make_org
from workers.tasks.checksums import checksum_source
from workers.tasks.renditions import render_source

# Operations that need no token: creating an organization (guarded by the
# internal secret once one exists) and the service-to-service endpoints.
PUBLIC_OPERATIONS = {("POST", "/api/v1/orgs")}
INTERNAL_PREFIX = "/api/v1/internal/"

# Operations other than GET that a viewer may call. Every other POST, PATCH,
# PUT and DELETE needs at least the editor role. A viewer may export files it
# can see and cancel its own exports.
VIEWER_WRITES = {
    ("POST", "/api/v1/files/lookup"),
    ("POST", "/api/v1/tokens"),
    ("POST", "/api/v1/exports"),
    ("POST", "/api/v1/exports/{export_id}/cancel"),
}

# Operations that need the admin role. The other writes need the editor role.
ADMIN_OPERATIONS = {
    ("POST", "/api/v1/members"),
    ("PATCH", "/api/v1/members/{user_id}"),
    ("DELETE", "/api/v1/members/{user_id}"),
    ("POST", "/api/v1/groups"),
    ("PATCH", "/api/v1/groups/{group_ref}"),
    ("POST", "/api/v1/groups/{group_ref}/members"),
    ("DELETE", "/api/v1/groups/{group_ref}/members/{email}"),
    ("PATCH", "/api/v1/sources/{ref}"),
}

HTTP_METHODS = ("get", "post", "put", "patch", "delete")


def small_jpeg(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), color).save(buffer, "JPEG")
    return buffer.getvalue()


def error_shape_problem(response) -> str | None:
    """Describe how the response breaks the ``{"error": {"code", "message"}}`` shape."""
    body = response.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return f"body is not a JSON error object: {response.get_data(as_text=True)[:200]!r}"
    error = body["error"]
    if not isinstance(error.get("code"), str) or not isinstance(
        error.get("message"), str
    ):
        return f"error object lacks a string code or message: {error!r}"
    return None


@dataclass
class OrgWorld:
    """Organization A with one drive, its files, a scan, a group and members."""

    owner: Member
    admin: Member
    editor: Member
    viewer: Member
    drive: dict
    files: list[dict]
    scan_id: str
    group: dict
    export_id: str
    extra_secrets: set[str] = field(default_factory=set)

    def path_values(self) -> dict[str, list[str]]:
        """Real values of A's objects for each path parameter, by its name."""
        return {
            "ref": [self.drive["id"], self.drive["name"]],
            "group_ref": [self.group["id"], self.group["name"]],
            "file_id": [self.files[0]["id"]],
            "scan_id": [self.scan_id],
            "user_id": [self.editor.user_id],
            "email": [self.owner.email],
            "export_id": [self.export_id],
        }

    def request_bodies(self) -> dict[tuple[str, str], dict]:
        """A valid body for every operation that takes one."""
        return {
            ("POST", "/api/v1/members"): {
                "email": "invitee@example.com",
                "role": "viewer",
            },
            ("PATCH", "/api/v1/members/{user_id}"): {"role": "viewer"},
            ("POST", "/api/v1/groups"): {"name": "Newcomers"},
            ("PATCH", "/api/v1/groups/{group_ref}"): {"visibility": "restricted"},
            ("POST", "/api/v1/groups/{group_ref}/members"): {
                "email": self.viewer.email
            },
            ("POST", "/api/v1/sources"): {
                "volume_id": self.drive["volume_id"],
                "mount_path": "/mnt/elsewhere",
                "host": "inline-host",
                "name": "elsewhere",
            },
            ("PATCH", "/api/v1/sources/{ref}"): {"name": "renamed-drive"},
            ("POST", "/api/v1/files/lookup"): {"ids": [f["id"] for f in self.files]},
            ("POST", "/api/v1/exports"): {"file_ids": [self.files[0]["id"]]},
        }

    def secrets(self) -> set[str]:
        """Ids and names that only members of A may learn."""
        values = {
            self.owner.org_id,
            self.drive["id"],
            self.drive["name"],
            self.drive["volume_id"],
            self.drive["mount_path"],
            self.scan_id,
            self.group["id"],
            self.group["name"],
            self.export_id,
            *self.extra_secrets,
        }
        for member in (self.owner, self.admin, self.editor, self.viewer):
            values.update({member.user_id, member.email})
        for item in self.files:
            values.update({item["id"], item["name"]})
        return values


@pytest.fixture
def world(owner, drive_factory) -> OrgWorld:
    admin = owner.add_member("alpha-admin@example.com", "admin")
    editor = owner.add_member("alpha-editor@example.com", "editor")
    viewer = owner.add_member("alpha-viewer@example.com", "viewer")
    group = owner.post("/api/v1/groups", json={"name": "Alpha-Team"})
    assert group.status_code == 201, group.json

    twin = small_jpeg((200, 40, 40))
    root = drive_factory(
        "alpha-drive",
        {
            "shoot/alpha-red.jpg": twin,
            "shoot/alpha-red-copy.jpg": twin,
            "shoot/alpha-blue.jpg": small_jpeg((40, 40, 200)),
        },
    )
    drive = connect(owner, root, group="Alpha-Team")
    scan = run_active_scan(owner, drive)
    assert scan["status"] == "succeeded", scan
    render_source(drive["id"])
    checksum_source(drive["id"])

    files = owner.get("/api/v1/files", query_string={"limit": 1000}).json["items"]
    assert len(files) == 3
    duplicates = owner.get("/api/v1/duplicates").json["items"]
    assert len(duplicates) == 1, "the fixture should hold one duplicate pair"

    # Originals of a drive on this process's own host are read in-process,
    # instead of waiting for a worker on the drive's host to stage them.
    with session_scope("catalog") as session:
        session.execute(
            update(Source).where(Source.id == drive["id"]).values(host=TEST_HOST)
        )

    # The viewer's own export, so that cancelling it is an allowed write.
    export = viewer.post("/api/v1/exports", json={"file_ids": [files[0]["id"]]})
    assert export.status_code == 202, export.json

    return OrgWorld(
        owner=owner,
        admin=admin,
        editor=editor,
        viewer=viewer,
        drive=owner.get(f"/api/v1/sources/{drive['id']}").json,
        files=files,
        scan_id=scan["id"],
        group=group.json,
        export_id=export.json["id"],
        extra_secrets={duplicates[0]["checksum"]},
    )


def catalog_operations(client) -> list[tuple[str, str, dict]]:
    """Return (METHOD, path template, operation) for every documented operation."""
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    operations = []
    for path, item in response.json["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                operations.append((method.upper(), path, item[method]))
    return operations


def fill_path(template: str, values: dict[str, list[str]]) -> list[str]:
    """Return every concrete path made from ``values`` for the template's parameters."""
    names = re.findall(r"\{(\w+)\}", template)
    missing = [name for name in names if name not in values]
    assert not missing, f"no test value for path parameters {missing} of {template}"
    paths = []
    for combination in itertools.product(*(values[name] for name in names)):
        path = template
        for name, value in zip(names, combination):
            path = path.replace("{" + name + "}", quote(value, safe="@"))
        paths.append(path)
    return paths


def call(member_or_client, method: str, path: str, body: dict | None):
    kwargs = {} if body is None else {"json": body}
    return getattr(member_or_client, method.lower())(path, **kwargs)


def test_every_operation_checks_token_and_role(catalog, world):
    operations = [
        (method, template, operation)
        for method, template, operation in catalog_operations(catalog)
        if (method, template) not in PUBLIC_OPERATIONS
        and not template.startswith(INTERNAL_PREFIX)
    ]
    assert len(operations) >= 20, "the OpenAPI document lists too few operations"
    bodies = world.request_bodies()
    without_body = [
        f"{method} {template}"
        for method, template, operation in operations
        if "requestBody" in operation and (method, template) not in bodies
    ]
    assert without_body == [], "add a valid body to OrgWorld.request_bodies"
    path_values = world.path_values()
    other = make_org(catalog, name="Beta")
    secrets = world.secrets()
    problems = []

    for method, template, _ in operations:
        body = bodies.get((method, template))
        for path in fill_path(template, path_values):
            label = f"{method} {path}"

            anonymous = call(catalog, method, path, body)
            if anonymous.status_code != 401:
                problems.append(
                    f"{label} without a token: {anonymous.status_code}, expected 401"
                )
            elif shape := error_shape_problem(anonymous):
                problems.append(f"{label} without a token: {shape}")

            foreign = call(other, method, path, body)
            takes_ids = "{" in template
            if takes_ids and foreign.status_code not in (401, 403, 404):
                problems.append(
                    f"{label} by another organization: {foreign.status_code}"
                )
            if foreign.status_code >= 500:
                problems.append(
                    f"{label} by another organization: {foreign.status_code}"
                )
            sent = path + repr(body)
            text = foreign.get_data(as_text=True)
            leaked = sorted(s for s in secrets if s not in sent and s in text)
            if leaked:
                problems.append(f"{label} by another organization returned {leaked}")

    for method, template, _ in operations:
        body = bodies.get((method, template))
        read_only = method == "GET" or (method, template) in VIEWER_WRITES
        for path in fill_path(template, path_values):
            label = f"{method} {path}"
            as_viewer = call(world.viewer, method, path, body)
            # A read may still fail for the object's state, such as an
            # unfinished export's archive (409), but never for the role.
            rejected = (
                as_viewer.status_code in (401, 403) or as_viewer.status_code >= 500
            )
            if read_only and rejected:
                problems.append(f"{label} by a viewer: {as_viewer.status_code}")
            if not read_only and as_viewer.status_code != 403:
                problems.append(
                    f"{label} by a viewer: {as_viewer.status_code}, expected 403"
                )
            if (method, template) in ADMIN_OPERATIONS:
                as_editor = call(world.editor, method, path, body)
                if as_editor.status_code != 403:
                    problems.append(
                        f"{label} by an editor: {as_editor.status_code}, expected 403"
                    )

    assert problems == [], "\n".join(problems)


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


def test_me_lists_only_own_org_groups(catalog, owner, secret):
    foreign_groups = {g["id"] for g in owner.get("/api/v1/groups").json}
    other = make_org(catalog, name="Beta", email=owner.email)
    me = other.get("/api/v1/me").json
    assert me["org_id"] == other.org_id
    assert not foreign_groups & set(me["group_ids"])
