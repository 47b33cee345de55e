"""Generated organizations check that no catalog read reveals a hidden file.

Hypothesis builds groups (everyone or restricted), members with roles and
group grants, and drives in those groups; every member then lists, searches,
looks up, opens and exports, and must reach exactly the files of the groups
they may see.
"""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.catalog.helpers import connect, run_active_scan
from tests.conftest import _truncate_all, make_org

ROLES = ("viewer", "editor", "admin")

world = st.fixed_dictionaries(
    {
        "groups": st.lists(st.booleans(), min_size=1, max_size=3),  # True = restricted
        "members": st.lists(st.sampled_from(ROLES), min_size=1, max_size=3),
        "drives": st.lists(st.integers(min_value=0, max_value=2), min_size=1, max_size=3),
        "grants": st.sets(st.tuples(st.integers(0, 2), st.integers(0, 2)), max_size=6),
    }
)


def build(catalog, tmp_path, spec):
    owner = make_org(catalog, name="Generated")
    members = [
        owner.add_member(f"m{i}-{uuid.uuid4().hex[:6]}@example.com", role)
        for i, role in enumerate(spec["members"])
    ]
    groups = []
    for index, restricted in enumerate(spec["groups"]):
        name = f"group-{index}"
        body = {"name": name, "visibility": "restricted" if restricted else "everyone"}
        assert owner.post("/api/v1/groups", json=body).status_code == 201
        groups.append((name, restricted))
    for group_index, member_index in spec["grants"]:
        if group_index < len(groups) and member_index < len(members):
            response = owner.post(
                f"/api/v1/groups/{groups[group_index][0]}/members",
                json={"email": members[member_index].email},
            )
            assert response.status_code == 200, response.json
    drives = []
    for index, group_choice in enumerate(spec["drives"]):
        group_name, _ = groups[group_choice % len(groups)]
        root = tmp_path / f"drive-{uuid.uuid4().hex[:8]}"
        (root / "sub").mkdir(parents=True)
        for n in range(2):
            (root / "sub" / f"f{index}-{n}.jpg").write_bytes(uuid.uuid4().bytes * 50)
        source = connect(owner, root, group=group_name)
        run_active_scan(owner, source)
        drives.append((source, group_name))
    return owner, members, groups, drives


def expected_files(owner, member_index, spec, groups, drives) -> set[str]:
    """Files on drives of groups the member may see; None is the owner,
    who created every group and so is listed in each."""
    visible_groups = {
        name
        for index, (name, restricted) in enumerate(groups)
        if not restricted or member_index is None or (index, member_index) in spec["grants"]
    }
    ids = set()
    for source, group_name in drives:
        if group_name in visible_groups:
            listing = owner.get(f"/api/v1/sources/{source['id']}/folder", query_string={"path": "sub"})
            ids.update(item["id"] for item in listing.json["items"])
    return ids


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=world)
def test_no_read_reveals_a_hidden_file(catalog, tmp_path_factory, spec):
    _truncate_all()
    tmp_path = tmp_path_factory.mktemp("world")
    owner, members, groups, drives = build(catalog, tmp_path, spec)
    every_file = set(
        item["id"] for item in owner.get("/api/v1/files", query_string={"limit": 1000}).json["items"]
    )
    for member_index, member in [(None, owner), *enumerate(members)]:
        allowed = expected_files(owner, member_index, spec, groups, drives)
        assert allowed <= every_file

        listed = member.get("/api/v1/files", query_string={"limit": 1000}).json["items"]
        assert {item["id"] for item in listed} == allowed
        searched = member.get("/api/v1/files", query_string={"q": "f", "limit": 1000}).json
        assert {item["id"] for item in searched["items"]} == allowed

        lookup = member.post("/api/v1/files/lookup", json={"ids": sorted(every_file)}).json
        assert {item["id"] for item in lookup["items"]} == allowed

        visible_drives = {s["id"] for s in member.get("/api/v1/sources").json["items"]}
        for source, _ in drives:
            folder = member.get(f"/api/v1/sources/{source['id']}/folder", query_string={"path": "sub"})
            if source["id"] in visible_drives:
                assert {i["id"] for i in folder.json["items"]} <= allowed
            else:
                assert folder.status_code == 404

        for file_id in sorted(every_file - allowed):
            for suffix in ("", "/thumbnail", "/preview", "/original"):
                response = member.get(f"/api/v1/files/{file_id}{suffix}")
                assert response.status_code == 404, (suffix, response.json)
            export = member.post("/api/v1/exports", json={"file_ids": [file_id]})
            assert export.status_code == 422

        counts = member.get("/api/v1/groups").json
        shown_groups = {g["name"] for g in counts}
        for name, restricted in groups:
            if restricted and name not in shown_groups:
                assert all(
                    source["id"] not in visible_drives for source, group in drives if group == name
                )


def test_group_change_applies_at_next_request(owner, drive_factory):
    viewer = owner.add_member("viewer@example.com", "viewer")
    owner.post("/api/v1/groups", json={"name": "Press", "visibility": "everyone"})
    root = drive_factory("press", {"a.jpg": b"a" * 100})
    run_active_scan(owner, connect(owner, root, group="Press"))
    assert len(viewer.get("/api/v1/files").json["items"]) == 1
    owner.patch("/api/v1/groups/Press", json={"visibility": "restricted"})
    assert viewer.get("/api/v1/files").json["items"] == []
    owner.post("/api/v1/groups/Press/members", json={"email": "viewer@example.com"})
    assert len(viewer.get("/api/v1/files").json["items"]) == 1
