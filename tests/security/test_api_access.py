"""Who may call each operation of the catalog, collections and sharing APIs.

One test walks the three OpenAPI documents (see ``openapi_walk``), so an
endpoint added to any service is checked without editing this file. Only
the exceptions to "GET needs a viewer, other methods an editor" are listed
by hand below.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

import pytest
from sqlalchemy import update

from core.db import session_scope
from services.catalog.models import Source
from tests.catalog.helpers import connect, run_active_scan
from tests.conftest import TEST_HOST, Member, make_org
from tests.security.openapi_walk import (
    Operation,
    ServiceRules,
    call,
    classify,
    documented_operations,
    error_shape_problem,
    fill_path,
    minimum_role,
    missing_inputs,
    small_jpeg,
    undocumented_rules,
)
from tests.sharing.conftest import deliver_events, token_of
from workers.tasks.checksums import checksum_source
from workers.tasks.renditions import render_source

CATALOG_RULES = ServiceRules(
    name="catalog",
    # Creating an organization needs the internal secret, not a token.
    public={("POST", "/api/v1/orgs")},
    # A viewer may look files up, make tokens for itself, export files it
    # can see and cancel its own exports.
    viewer_writes={
        ("POST", "/api/v1/files/lookup"),
        ("POST", "/api/v1/tokens"),
        ("POST", "/api/v1/exports"),
        ("POST", "/api/v1/exports/{export_id}/cancel"),
    },
    admin={
        ("POST", "/api/v1/members"),
        ("PATCH", "/api/v1/members/{user_id}"),
        ("DELETE", "/api/v1/members/{user_id}"),
        ("POST", "/api/v1/groups"),
        ("PATCH", "/api/v1/groups/{group_ref}"),
        ("POST", "/api/v1/groups/{group_ref}/members"),
        ("DELETE", "/api/v1/groups/{group_ref}/members/{email}"),
        ("PATCH", "/api/v1/sources/{ref}"),
    },
)

COLLECTIONS_RULES = ServiceRules(name="collections")

SHARING_RULES = ServiceRules(
    name="sharing",
    admin={("POST", "/api/v1/links/{link_id}/owner")},
    # The public pages of share links: the token in the path is the only
    # credential, and the members' document does not list them.
    public_rules={
        "/s/<token>",
        "/s/<token>/unlock",
        "/s/<token>/api/items",
        "/s/<token>/api/items/<file_id>",
        "/s/<token>/thumb/<file_id>",
        "/s/<token>/preview/<file_id>",
        "/s/<token>/download/<file_id>",
        "/s/<token>/download-all",
        "/s/<token>/download-all/<export_ref>",
        "/s/<token>/download-all/<export_ref>/archive",
        "/s-static/<path:filename>",
    },
)


@dataclass
class OrgWorld:
    """Organization A: a drive with files, a scan, a group, members, a collection and a link."""

    owner: Member
    admin: Member
    editor: Member
    viewer: Member
    drive: dict
    files: list[dict]
    scan_id: str
    group: dict
    export_id: str
    collection: dict
    link: dict
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
            "collection_id": [self.collection["id"]],
            "link_id": [self.link["id"]],
        }

    def query_values(self) -> dict[str, str]:
        """Values of A for required query parameters, by name."""
        return {
            "org_id": self.owner.org_id,
            "user_id": self.owner.user_id,
            "collection_id": self.collection["id"],
        }

    def request_bodies(self) -> dict[tuple[str, str], dict]:
        """A valid body for every operation that takes one."""
        file_ids = [f["id"] for f in self.files]
        return {
            ("POST", "/api/v1/orgs"): {
                "name": "Gamma",
                "email": f"gamma-{uuid.uuid4().hex[:6]}@example.com",
            },
            ("POST", "/api/v1/members"): {
                "email": "invitee@example.com",
                "role": "viewer",
            },
            ("PATCH", "/api/v1/members/{user_id}"): {"role": "viewer"},
            ("POST", "/api/v1/groups"): {"name": "Newcomers"},
            ("PATCH", "/api/v1/groups/{group_ref}"): {"visibility": "restricted"},
            ("POST", "/api/v1/groups/{group_ref}/members"): {"email": self.viewer.email},
            ("POST", "/api/v1/sources"): {
                "volume_id": self.drive["volume_id"],
                "mount_path": "/mnt/elsewhere",
                "host": "inline-host",
                "name": "elsewhere",
            },
            ("PATCH", "/api/v1/sources/{ref}"): {"name": "renamed-drive"},
            ("POST", "/api/v1/files/lookup"): {"ids": file_ids},
            ("POST", "/api/v1/exports"): {"file_ids": [file_ids[0]]},
            ("POST", "/api/v1/internal/introspect"): {"token": self.viewer.token},
            ("POST", "/api/v1/internal/exports"): {
                "org_id": self.owner.org_id,
                "user_id": self.owner.user_id,
                "file_ids": [file_ids[0]],
            },
            ("POST", "/api/v1/collections"): {"name": "Walker-new"},
            ("PATCH", "/api/v1/collections/{collection_id}"): {"description": "changed"},
            ("POST", "/api/v1/collections/{collection_id}/items"): {"file_ids": file_ids},
            ("POST", "/api/v1/collections/{collection_id}/items/{file_id}/move"): {
                "position": 0
            },
            ("POST", "/api/v1/links"): {
                "collection_id": self.collection["id"],
                "label": "Walker",
            },
            ("PATCH", "/api/v1/links/{link_id}"): {"label": "Walker-renamed"},
            ("POST", "/api/v1/links/{link_id}/owner"): {"user_id": self.editor.user_id},
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
            self.collection["id"],
            self.collection["name"],
            self.link["id"],
            self.link["label"],
            token_of(self.link),
            *self.extra_secrets,
        }
        for member in (self.owner, self.admin, self.editor, self.viewer):
            values.update({member.user_id, member.email})
        for item in self.files:
            values.update({item["id"], item["name"]})
        return values


@pytest.fixture
def world(owner, drive_factory, collections, sharing) -> OrgWorld:
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
        session.execute(update(Source).where(Source.id == drive["id"]).values(host=TEST_HOST))

    # The viewer's own export, so that cancelling it is an allowed write.
    export = viewer.post("/api/v1/exports", json={"file_ids": [files[0]["id"]]})
    assert export.status_code == 202, export.json

    name = f"Alpha-Selects-{uuid.uuid4().hex[:8]}"
    collection = collections.post(
        "/api/v1/collections", json={"name": name}, headers=owner.headers
    )
    assert collection.status_code == 201, collection.json
    added = collections.post(
        f"/api/v1/collections/{collection.json['id']}/items",
        json={"file_ids": [f["id"] for f in files]},
        headers=owner.headers,
    )
    assert added.status_code == 200, added.json
    deliver_events()
    label = f"Alpha-Client-{uuid.uuid4().hex[:8]}"
    link = sharing.post(
        "/api/v1/links",
        json={"collection_id": collection.json["id"], "label": label},
        headers=owner.headers,
    )
    assert link.status_code == 201, link.json

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
        collection=collection.json,
        link=link.json,
        extra_secrets={duplicates[0]["checksum"]},
    )


def bearer(member: Member) -> dict:
    return {"Authorization": f"Bearer {member.token}"}


def query_for(operation: Operation, values: dict[str, str]) -> dict[str, str]:
    return {name: values[name] for name in operation.required_query()}


def member_problems(
    client, rules: ServiceRules, operations: list[Operation], world: OrgWorld, other: Member
) -> list[str]:
    """Call each member operation without a token, as another organization and by role."""
    bodies = world.request_bodies()
    path_values = world.path_values()
    query_values = world.query_values()
    secrets = world.secrets()
    problems = []

    for operation in operations:
        body = bodies.get(operation.key)
        query = query_for(operation, query_values)
        for path in fill_path(operation.template, path_values):
            label = f"{rules.name}: {operation.method} {path}"

            anonymous = call(client, operation.method, path, body=body, query=query)
            if anonymous.status_code != 401:
                problems.append(f"{label} without a token: {anonymous.status_code}, expected 401")
            elif shape := error_shape_problem(anonymous):
                problems.append(f"{label} without a token: {shape}")

            invalid = call(
                client,
                operation.method,
                path,
                headers={"Authorization": "Bearer arc_not-a-real-token"},
                body=body,
                query=query,
            )
            if invalid.status_code != 401:
                problems.append(
                    f"{label} with an invalid token: {invalid.status_code}, expected 401"
                )

            foreign = call(client, operation.method, path, bearer(other), body, query)
            takes_ids = "{" in operation.template
            if takes_ids and foreign.status_code not in (401, 403, 404):
                problems.append(f"{label} by another organization: {foreign.status_code}")
            if foreign.status_code >= 500:
                problems.append(f"{label} by another organization: {foreign.status_code}")
            sent = path + repr(body) + repr(query)
            text = foreign.get_data(as_text=True)
            leaked = sorted(s for s in secrets if s not in sent and s in text)
            if leaked:
                problems.append(f"{label} by another organization returned {leaked}")

    for operation in operations:
        body = bodies.get(operation.key)
        query = query_for(operation, query_values)
        role = minimum_role(rules, operation)
        for path in fill_path(operation.template, path_values):
            label = f"{rules.name}: {operation.method} {path}"
            as_viewer = call(client, operation.method, path, bearer(world.viewer), body, query)
            # A read may still fail for the object's state, such as an
            # unfinished export's archive (409), but never for the role.
            rejected = as_viewer.status_code in (401, 403) or as_viewer.status_code >= 500
            if role == "viewer" and rejected:
                problems.append(f"{label} by a viewer: {as_viewer.status_code}")
            if role != "viewer" and as_viewer.status_code != 403:
                problems.append(f"{label} by a viewer: {as_viewer.status_code}, expected 403")
            if role == "admin":
                as_editor = call(client, operation.method, path, bearer(world.editor), body, query)
                if as_editor.status_code != 403:
                    problems.append(
                        f"{label} by an editor: {as_editor.status_code}, expected 403"
                    )
    return problems


def internal_problems(client, rules: ServiceRules, operations: list[Operation], world: OrgWorld):
    """Check that each internal operation rejects every caller without the secret.

    The same request with the secret must pass the check, which shows that
    the rejection came from the missing secret and not from the input.
    """
    bodies = world.request_bodies()
    path_values = world.path_values()
    query_values = world.query_values()
    secret = os.environ["INTERNAL_SECRET"]
    problems = []
    for operation in operations:
        body = bodies.get(operation.key)
        query = query_for(operation, query_values)
        for path in fill_path(operation.template, path_values):
            label = f"{rules.name}: {operation.method} {path}"
            attempts = {
                "without the secret": {},
                "with a wrong secret": {"X-Internal-Secret": secret + "-wrong"},
                "with an empty secret": {"X-Internal-Secret": ""},
                "with an owner's token only": bearer(world.owner),
            }
            for name, headers in attempts.items():
                response = call(client, operation.method, path, headers, body, query)
                if response.status_code != 401:
                    problems.append(f"{label} {name}: {response.status_code}, expected 401")
                elif shape := error_shape_problem(response):
                    problems.append(f"{label} {name}: {shape}")
            # Input validation may run before the secret check, but an
            # empty request must never succeed.
            bare = call(client, operation.method, path)
            if bare.status_code < 400 or bare.status_code >= 500:
                problems.append(f"{label} without the secret or input: {bare.status_code}")
            allowed = call(
                client, operation.method, path, {"X-Internal-Secret": secret}, body, query
            )
            if allowed.status_code in (401, 403) or allowed.status_code >= 500:
                problems.append(
                    f"{label} with the secret: {allowed.status_code}; fix the walker's input"
                )
    return problems


def public_problems(client, rules: ServiceRules, operations: list[Operation], world: OrgWorld):
    """Check the public operations, each of which needs its own rule here.

    Creating an organization needs no token, but once one exists it needs
    the internal secret, and a member's token does not replace it.
    """
    bodies = world.request_bodies()
    secret = os.environ["INTERNAL_SECRET"]
    problems = []
    for operation in operations:
        if operation.key != ("POST", "/api/v1/orgs"):
            problems.append(f"{operation.label}: public, but this test has no rule for it")
            continue
        body = bodies[operation.key]
        attempts = {
            "without the secret": {},
            "with a wrong secret": {"X-Internal-Secret": secret + "-wrong"},
            "with an owner's token only": bearer(world.owner),
        }
        for name, headers in attempts.items():
            response = call(client, "POST", operation.template, headers, body)
            if response.status_code != 403:
                problems.append(f"{operation.label} {name}: {response.status_code}, expected 403")
            elif shape := error_shape_problem(response):
                problems.append(f"{operation.label} {name}: {shape}")
        allowed = call(client, "POST", operation.template, {"X-Internal-Secret": secret}, body)
        if allowed.status_code != 201:
            problems.append(f"{operation.label} with the secret: {allowed.status_code}")
    return problems


def test_every_operation_checks_token_and_role(
    catalog_app, catalog, collections, sharing_app, sharing, world
):
    from services.collections.app import create_app as create_collections

    services = [
        (CATALOG_RULES, catalog, catalog_app),
        (COLLECTIONS_RULES, collections, create_collections()),
        (SHARING_RULES, sharing, sharing_app),
    ]
    other = make_org(catalog, name="Beta")
    bodies = world.request_bodies()
    path_values = world.path_values()
    query_values = world.query_values()
    problems = []
    walked = {}

    for rules, client, app in services:
        operations, setup = documented_operations(rules.name, client)
        setup += undocumented_rules(app, rules, operations)
        classified = classify(rules, operations)
        setup += classified.problems
        for operation in operations:
            missing = missing_inputs(operation, path_values, query_values, bodies)
            if missing:
                setup.append(f"{operation.label}: the walker has no {', '.join(missing)}")
        problems += setup
        walked[rules.name] = len(classified.member)
        if setup:
            continue
        problems += member_problems(client, rules, classified.member, world, other)
        problems += internal_problems(client, rules, classified.internal, world)
        problems += public_problems(client, rules, classified.public, world)

    assert problems == [], "\n".join(problems)
    assert walked["catalog"] >= 20, "the catalog document lists too few operations"
    assert walked["collections"] >= 8, "the collections document lists too few operations"
    assert walked["sharing"] >= 6, "the sharing document lists too few operations"
