"""Generated organizations check that collections, links and exports hide files.

Hypothesis builds groups (everyone or restricted), members with roles and
group grants, drives in those groups, collections of the drives' files and
share links made by members. Each member then reads the collections, each
link's public pages are opened, and members and links start exports. The
same reads run again after visibility changes: grants are revoked and
added, groups become restricted or open to everyone, drives move between
groups, and members leave (some rejoin with no grants). At every step no
read may reveal a file that its reader may not see:

- a member sees the files of "everyone" groups and of groups that list them;
- a link shows what its creator sees, or, after the creator left the
  organization, only the files of "everyone" groups;
- an export plans only files its creator (member or link creator) sees at
  planning time.

The read models of the collections and sharing services are fed by the
outbox relay, run inline here with each event handed straight to its
consumer tasks instead of through the broker.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from core.db import session_scope
from services.catalog.models import Export
from tests.catalog.helpers import connect, run_active_scan
from tests.conftest import Member, _truncate_all, make_org
from tests.security.openapi_walk import small_jpeg
from tests.sharing.conftest import token_of
from workers.tasks.exports import build_plan
from workers.tasks.renditions import render_source

ROLES = ("viewer", "editor", "admin")
FILES_PER_DRIVE = 2
PAGE_LIMIT = 2

worlds = st.fixed_dictionaries(
    {
        # True is a restricted group, False one visible to everyone.
        "groups": st.lists(st.booleans(), min_size=1, max_size=3),
        "members": st.lists(st.sampled_from(ROLES), min_size=1, max_size=3),
        "grants": st.sets(st.tuples(st.integers(0, 2), st.integers(0, 2)), max_size=6),
        # The group of each drive, as an index that wraps around the groups.
        "drives": st.lists(st.integers(0, 2), min_size=1, max_size=3),
        # Each collection is a set of file indices that wraps around the files.
        "collections": st.lists(st.sets(st.integers(0, 5), min_size=1), min_size=1, max_size=2),
        # (collection index, creator): creator -1 is the owner, else a member index.
        "links": st.lists(
            st.tuples(st.integers(0, 1), st.integers(-1, 2)), min_size=1, max_size=3
        ),
        # Changes made after the first round of checks.
        "revoked": st.sets(st.tuples(st.integers(0, 2), st.integers(0, 2)), max_size=3),
        "granted_later": st.sets(st.tuples(st.integers(0, 2), st.integers(0, 2)), max_size=2),
        "restricted_later": st.sets(st.integers(0, 2), max_size=2),
        "opened_later": st.sets(st.integers(0, 2), max_size=1),
        # (drive index, group index): drives moved to another group.
        "moved": st.sets(st.tuples(st.integers(0, 2), st.integers(0, 2)), max_size=2),
        "leavers": st.sets(st.integers(0, 2), max_size=2),
        "rejoiners": st.sets(st.integers(0, 2), max_size=2),
    }
)


def relay_events() -> int:
    """Relay every unsent outbox event to its consumer tasks in this process.

    This runs the relay's own code and subscriptions, so a topic that no
    consumer subscribes to is not applied here either. Returns how many
    events were sent.
    """
    import workers.tasks  # noqa: F401  registers every consumer and subscription
    from core import outbox
    from core.celery_app import celery_app
    from services.catalog.models import OutboxEvent as CatalogOutbox
    from services.collections.models import OutboxEvent as CollectionsOutbox
    from services.sharing import freshness
    from services.sharing.models import OutboxEvent as SharingOutbox

    def send(task_name: str, event: dict) -> None:
        celery_app.tasks[task_name](event)

    total = 0
    while True:
        sent = 0
        for service, model in (
            ("catalog", CatalogOutbox),
            ("collections", CollectionsOutbox),
            ("sharing", SharingOutbox),
        ):
            with session_scope(service) as session:
                sent += outbox.relay(session, model, send)
        total += sent
        if sent == 0:
            # Public requests trust a confirmed version for a moment after
            # it changed. In this one process, forgetting it is that moment
            # passing.
            freshness.forget_confirmed()
            return total


def forget_cached_tokens() -> None:
    """Drop the collections and sharing services' cached token lookups.

    Those services keep a token's principal for up to
    ``core.remote_auth.CACHE_SECONDS``, a documented delay before a changed
    grant or a removed member is seen.
    """
    from core.remote_auth import clear_cache

    clear_cache()


@dataclass
class Person:
    """A member of the generated organization (index -1 is the owner)."""

    index: int
    member: Member
    role: str
    present: bool = True


@dataclass
class World:
    """The generated organization and the visibility the test expects of it."""

    owner: Member
    people: list[Person]
    # Group name -> restricted?
    groups: dict[str, bool]
    # Group name -> user ids listed in it.
    listed: dict[str, set[str]]
    # File id -> group name of its drive.
    file_groups: dict[str, str]
    # File id -> file name.
    file_names: dict[str, str]
    # Drive id -> its file ids.
    drive_files: dict[str, list[str]]
    collections: list[dict] = field(default_factory=list)
    # Collection id -> item file ids.
    items: dict[str, list[str]] = field(default_factory=dict)
    # (link, creator person, collection id) for every link created.
    links: list[tuple[dict, Person, str]] = field(default_factory=list)
    # Export id -> user id whose visibility the export uses.
    exports: dict[str, str] = field(default_factory=dict)

    def visible_to(self, user_id: str | None) -> set[str]:
        """Return the files a user may see now; None is a user who left."""
        return {
            file_id
            for file_id, group in self.file_groups.items()
            if not self.groups[group] or (user_id is not None and user_id in self.listed[group])
        }

    def person_of(self, user_id: str) -> Person:
        return next(p for p in self.people if p.member.user_id == user_id)

    def link_viewer(self, creator: Person) -> str | None:
        return creator.member.user_id if creator.present else None


def build_world(catalog, tmp_path, spec) -> World:
    owner = make_org(catalog, name="Generated")
    people = [Person(-1, owner, "owner")]
    for index, role in enumerate(spec["members"]):
        email = f"m{index}-{uuid.uuid4().hex[:6]}@example.com"
        people.append(Person(index, owner.add_member(email, role), role))

    groups, listed = {}, {}
    for index, restricted in enumerate(spec["groups"]):
        name = f"group-{index}"
        body = {"name": name, "visibility": "restricted" if restricted else "everyone"}
        created = owner.post("/api/v1/groups", json=body)
        assert created.status_code == 201, created.json
        groups[name] = restricted
        # The creator of a group is listed in it.
        listed[name] = {owner.user_id}
    group_names = list(groups)
    members = people[1:]
    for group_index, member_index in sorted(spec["grants"]):
        if group_index < len(group_names) and member_index < len(members):
            name = group_names[group_index]
            member = members[member_index].member
            granted = owner.post(f"/api/v1/groups/{name}/members", json={"email": member.email})
            assert granted.status_code == 200, granted.json
            listed[name].add(member.user_id)

    file_groups, file_names, drive_files = {}, {}, {}
    for index, group_choice in enumerate(spec["drives"]):
        group = group_names[group_choice % len(group_names)]
        root = tmp_path / f"drive-{uuid.uuid4().hex[:8]}"
        root.mkdir(parents=True)
        for n in range(FILES_PER_DRIVE):
            color = (40 * index + 20 * n, 255 - 60 * n, (97 * index) % 256)
            (root / f"h{uuid.uuid4().hex[:10]}.jpg").write_bytes(small_jpeg(color))
        source = connect(owner, root, group=group)
        assert run_active_scan(owner, source)["status"] == "succeeded"
        render_source(source["id"])
        page = owner.get("/api/v1/files", query_string={"drive": source["id"], "limit": 1000})
        assert len(page.json["items"]) == FILES_PER_DRIVE
        drive_files[source["id"]] = [item["id"] for item in page.json["items"]]
        for item in page.json["items"]:
            file_groups[item["id"]] = group
            file_names[item["id"]] = item["name"]
    return World(owner, people, groups, listed, file_groups, file_names, drive_files)


def create_collections(world: World, collections, spec) -> None:
    every_file = sorted(world.file_groups)
    for index, chosen in enumerate(spec["collections"]):
        file_ids = list(dict.fromkeys(every_file[i % len(every_file)] for i in sorted(chosen)))
        name = f"Selects-{index}-{uuid.uuid4().hex[:8]}"
        created = collections.post(
            "/api/v1/collections", json={"name": name}, headers=world.owner.headers
        )
        assert created.status_code == 201, created.json
        added = collections.post(
            f"/api/v1/collections/{created.json['id']}/items",
            json={"file_ids": file_ids},
            headers=world.owner.headers,
        )
        assert added.status_code == 200, added.json
        world.collections.append(created.json)
        world.items[created.json["id"]] = file_ids


def create_links(world: World, sharing, spec) -> None:
    for collection_choice, creator_index in spec["links"]:
        if creator_index >= len(world.people) - 1:
            continue
        creator = world.people[creator_index + 1]
        collection = world.collections[collection_choice % len(world.collections)]
        body = {
            "collection_id": collection["id"],
            "label": f"Client-{uuid.uuid4().hex[:6]}",
            "allow_download": True,
        }
        response = sharing.post("/api/v1/links", json=body, headers=creator.member.headers)
        if creator.role == "viewer":
            assert response.status_code == 403, response.json
            continue
        assert response.status_code == 201, response.json
        world.links.append((response.json, creator, collection["id"]))


def export_ids(org_id: str) -> set[str]:
    with session_scope("catalog") as session:
        return set(session.scalars(select(Export.id).where(Export.org_id == org_id)))


def start_exports(world: World, catalog, sharing) -> None:
    """Start an export of every visible file per present member and per link."""
    for person in world.people:
        if not person.present:
            continue
        visible = sorted(world.visible_to(person.member.user_id))
        if not visible:
            continue
        response = person.member.post("/api/v1/exports", json={"file_ids": visible})
        assert response.status_code == 202, response.json
        world.exports[response.json["id"]] = person.member.user_id
    for link, creator, collection_id in world.links:
        shown = set(world.items[collection_id]) & world.visible_to(world.link_viewer(creator))
        before = export_ids(world.owner.org_id)
        response = sharing.post(f"/s/{token_of(link)}/download-all", json={"skip_offline": True})
        if not shown:
            assert response.status_code == 409, response.json
            continue
        assert response.status_code == 202, response.json
        created = export_ids(world.owner.org_id) - before
        assert len(created) == 1, created
        world.exports[created.pop()] = creator.member.user_id


def read_collection_pages(collections, member: Member, collection_id: str) -> list[dict]:
    pages, cursor = [], None
    while True:
        query = {"limit": PAGE_LIMIT}
        if cursor:
            query["cursor"] = cursor
        response = collections.get(
            f"/api/v1/collections/{collection_id}/items",
            query_string=query,
            headers=member.headers,
        )
        assert response.status_code == 200, response.json
        pages.append(response.json)
        cursor = response.json["next_cursor"]
        if not cursor:
            return pages


def check_collections(world: World, collections) -> None:
    """Check each present member's view of every collection: items, counts and covers."""
    for person in world.people:
        if not person.present:
            continue
        member = person.member
        allowed = world.visible_to(member.user_id)
        hidden_names = {world.file_names[f] for f in set(world.file_groups) - allowed}
        listing = collections.get(
            "/api/v1/collections", query_string={"limit": 100}, headers=member.headers
        )
        assert listing.status_code == 200, listing.json
        listed = {c["id"]: c for c in listing.json["items"]}
        for collection in world.collections:
            collection_id = collection["id"]
            items = world.items[collection_id]
            shown = [f for f in items if f in allowed]
            hidden = [f for f in items if f not in allowed]
            shown_one = collections.get(
                f"/api/v1/collections/{collection_id}", headers=member.headers
            )
            assert shown_one.status_code == 200, shown_one.json
            for view in (listed[collection_id], shown_one.json):
                assert view["item_count"] == len(shown), (person.index, view)
                assert view["hidden_count"] == len(hidden), (person.index, view)
                if view["cover_url"] is not None:
                    cover_file = view["cover_url"].rsplit("/", 2)[-2]
                    assert cover_file in allowed, (person.index, view["cover_url"])

            pages = read_collection_pages(collections, member, collection_id)
            listed_ids = [item["file_id"] for page in pages for item in page["items"]]
            leaked = set(listed_ids) - allowed
            assert leaked == set(), (person.index, "collection items reveal", leaked)
            assert sorted(listed_ids) == sorted(shown), person.index
            for page in pages:
                assert page["item_count"] == len(shown), (person.index, page)
                assert page["hidden_count"] == len(hidden), (person.index, page)
                text = str(page)
                assert not {n for n in hidden_names if n in text}, (person.index, page)

            if person.role in ("editor", "admin", "owner"):
                outside = sorted(set(world.file_groups) - allowed)
                if outside:
                    added = collections.post(
                        f"/api/v1/collections/{collection_id}/items",
                        json={"file_ids": outside},
                        headers=member.headers,
                    )
                    assert added.status_code == 422, (person.index, added.json)
                    assert sorted(added.json["error"]["not_found"]) == outside, person.index
                for file_id in hidden:
                    path = f"/api/v1/collections/{collection_id}/items/{file_id}"
                    moved = collections.post(
                        f"{path}/move", json={"position": 0}, headers=member.headers
                    )
                    assert moved.status_code == 404, (person.index, moved.json)
                    removed = collections.delete(path, headers=member.headers)
                    assert removed.status_code == 404, (person.index, removed.json)


def check_links(world: World, sharing) -> None:
    """Check every link's public JSON, page, renditions and downloads."""
    for link, creator, collection_id in world.links:
        token = token_of(link)
        allowed = world.visible_to(world.link_viewer(creator))
        shown = set(world.items[collection_id]) & allowed
        hidden_names = {world.file_names[f] for f in set(world.file_groups) - shown}
        label = (creator.index, creator.present, link["id"])

        listed_ids, cursor = [], None
        while True:
            query = {"limit": PAGE_LIMIT}
            if cursor:
                query["cursor"] = cursor
            response = sharing.get(f"/s/{token}/api/items", query_string=query)
            assert response.status_code == 200, (label, response.json)
            body = response.json
            assert body["item_count"] == len(shown), (label, body)
            text = response.get_data(as_text=True)
            assert not {n for n in hidden_names if n in text}, (label, body)
            listed_ids += [item["id"] for item in body["items"]]
            cursor = body["next_cursor"]
            if not cursor:
                break
        leaked = set(listed_ids) - allowed
        assert leaked == set(), (label, "link listing reveals", leaked)
        assert sorted(listed_ids) == sorted(shown), label

        page = sharing.get(f"/s/{token}")
        assert page.status_code == 200, label
        html = page.get_data(as_text=True)
        assert not {n for n in hidden_names if n in html}, label

        for file_id in sorted(world.file_groups):
            # The originals of these drives are read by a worker on their
            # host, which this test does not run, so only hidden files are
            # downloaded: the link rejects those before asking the catalog.
            routes = ("api/items", "thumb", "preview")
            if file_id not in shown:
                routes += ("download",)
            for route in routes:
                response = sharing.get(f"/s/{token}/{route}/{file_id}")
                expected = 200 if file_id in shown else 404
                assert response.status_code == expected, (label, route, file_id)


def check_export_plans(world: World) -> None:
    """Plan every export now and check that it reads only files its user may see."""
    with session_scope("catalog") as session:
        for export_id, user_id in world.exports.items():
            export = session.get(Export, export_id)
            person = world.person_of(user_id)
            allowed = world.visible_to(user_id if person.present else None)
            plan = build_plan(session, export)
            planned = {entry["file_id"] for entry in plan["entries"]}
            read = {entry["read_file_id"] for entry in plan["entries"]}
            assert planned - allowed == set(), (person.index, person.present, "planned", planned)
            assert read - allowed == set(), (person.index, person.present, "read", read)
            assert planned == set(export.file_ids) & allowed, (person.index, plan)
        session.rollback()


def change_visibility(world: World, spec) -> None:
    """Revoke and add grants, change groups' visibility, move drives and remove
    members, some of whom rejoin with no grants."""
    owner = world.owner
    group_names = list(world.groups)
    members = world.people[1:]
    for group_index, member_index in sorted(spec["revoked"]):
        if group_index >= len(group_names) or member_index >= len(members):
            continue
        name = group_names[group_index]
        member = members[member_index].member
        if member.user_id not in world.listed[name]:
            continue
        response = owner.delete(f"/api/v1/groups/{name}/members/{member.email}")
        assert response.status_code == 200, response.json
        world.listed[name].discard(member.user_id)
        event("a grant was revoked")
    for group_index, member_index in sorted(spec["granted_later"]):
        if group_index >= len(group_names) or member_index >= len(members):
            continue
        name = group_names[group_index]
        member = members[member_index].member
        response = owner.post(f"/api/v1/groups/{name}/members", json={"email": member.email})
        assert response.status_code == 200, response.json
        if member.user_id not in world.listed[name]:
            event("a grant was added")
        world.listed[name].add(member.user_id)
    visibility_changes = (
        ("restricted_later", "restricted", True, "a group became restricted"),
        ("opened_later", "everyone", False, "a group was opened to everyone"),
    )
    for key, visibility, restricted, description in visibility_changes:
        for group_index in sorted(spec[key]):
            if group_index >= len(group_names):
                continue
            name = group_names[group_index]
            response = owner.patch(f"/api/v1/groups/{name}", json={"visibility": visibility})
            assert response.status_code == 200, response.json
            if world.groups[name] != restricted:
                event(description)
            world.groups[name] = restricted
    drive_ids = list(world.drive_files)
    for drive_index, group_index in sorted(spec["moved"]):
        if drive_index >= len(drive_ids) or group_index >= len(group_names):
            continue
        drive_id = drive_ids[drive_index]
        target = group_names[group_index]
        response = owner.patch(f"/api/v1/sources/{drive_id}", json={"group": target})
        assert response.status_code == 200, response.json
        for file_id in world.drive_files[drive_id]:
            world.file_groups[file_id] = target
        event("a drive moved")
    for member_index in sorted(spec["leavers"]):
        if member_index >= len(members):
            continue
        person = members[member_index]
        response = owner.delete(f"/api/v1/members/{person.member.user_id}")
        assert response.status_code == 204, response.json
        person.present = False
        for listed in world.listed.values():
            listed.discard(person.member.user_id)
        created_links = any(creator is person for _, creator, _ in world.links)
        event("a link's creator left" if created_links else "a member left")
        if member_index in spec["rejoiners"]:
            event("a link's creator rejoined" if created_links else "a member rejoined")
            # The rejoined member gets a new token but keeps the user id,
            # and no grant comes back.
            again = owner.add_member(person.member.email, person.role)
            assert again.user_id == person.member.user_id
            person.member = again
            person.present = True


# The parts of a world spec that change nothing after the first checks.
NO_CHANGES = {
    "revoked": set(),
    "granted_later": set(),
    "restricted_later": set(),
    "opened_later": set(),
    "moved": set(),
    "leavers": set(),
    "rejoiners": set(),
}


def build_linked_world(catalog, collections, sharing, tmp_path, spec) -> World:
    """Build a world with its collections and links, and relay its events."""
    forget_cached_tokens()
    world = build_world(catalog, tmp_path, spec)
    create_collections(world, collections, spec)
    relay_events()
    create_links(world, sharing, spec)
    return world


@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=worlds)
# A link whose creator was listed in a restricted group and then left: the
# link falls back to the "everyone" drive while the other link keeps both.
@example(
    spec={
        **NO_CHANGES,
        "groups": [True, False],
        "members": ["editor", "admin"],
        "grants": {(0, 0), (0, 1)},
        "drives": [0, 1],
        "collections": [{0, 1, 2, 3}],
        "links": [(0, 0), (0, 1)],
        "leavers": {0},
    }
)
def test_shared_reads_hide_files(catalog, collections, sharing, tmp_path_factory, spec):
    _truncate_all()
    tmp_path = tmp_path_factory.mktemp("world")
    world = build_linked_world(catalog, collections, sharing, tmp_path, spec)
    start_exports(world, catalog, sharing)

    check_collections(world, collections)
    check_links(world, sharing)
    check_export_plans(world)

    change_visibility(world, spec)
    relay_events()
    forget_cached_tokens()

    check_collections(world, collections)
    check_links(world, sharing)
    check_export_plans(world)
    start_exports(world, catalog, sharing)
    check_export_plans(world)


REJOINED_CREATOR = {
    **NO_CHANGES,
    "groups": [True],
    "members": ["editor"],
    "grants": {(0, 0)},
    "drives": [0],
    "collections": [{0, 1}],
    "links": [(0, 0)],
}


def test_rejoined_creator_link_drops_old_grants(catalog, collections, sharing, tmp_path):
    world = build_linked_world(catalog, collections, sharing, tmp_path, REJOINED_CREATOR)
    (link, creator, _collection_id), = world.links
    token = token_of(link)
    assert sharing.get(f"/s/{token}/api/items").json["item_count"] == 2

    removed = world.owner.delete(f"/api/v1/members/{creator.member.user_id}")
    assert removed.status_code == 204, removed.json
    relay_events()
    assert sharing.get(f"/s/{token}/api/items").json["item_count"] == 0

    # Removing the member ended the grant, so the rejoined creator may see no
    # restricted group, and neither may the link.
    again = world.owner.add_member(creator.member.email, creator.role)
    assert again.user_id == creator.member.user_id
    assert again.get("/api/v1/files").json["items"] == []
    relay_events()
    shown = sharing.get(f"/s/{token}/api/items").json
    assert shown["items"] == []
    assert shown["item_count"] == 0



OWNER_LINK_TO_RESTRICTED = {
    **NO_CHANGES,
    "groups": [True, False],
    "members": ["viewer"],
    "grants": set(),
    "drives": [0, 1],
    "collections": [{0, 1, 2, 3}],
    "links": [(0, -1)],
}


def test_link_url_hides_restricted_files(catalog, collections, sharing, tmp_path):
    world = build_linked_world(
        catalog, collections, sharing, tmp_path, OWNER_LINK_TO_RESTRICTED
    )
    (link, _creator, collection_id), = world.links
    viewer = world.people[1].member
    allowed = world.visible_to(viewer.user_id)
    assert len(allowed) == 2

    listed = sharing.get(
        "/api/v1/links", query_string={"collection_id": collection_id}, headers=viewer.headers
    )
    assert listed.status_code == 200, listed.json
    shown_one = sharing.get(f"/api/v1/links/{link['id']}", headers=viewer.headers)
    urls = [item["url"] for item in listed.json["items"]]
    if shown_one.status_code == 200:
        urls.append(shown_one.json["url"])
    revealed = set()
    for url in urls:
        if url is None:
            continue
        items = sharing.get(f"/s/{url.rsplit('/s/', 1)[1]}/api/items").json["items"]
        revealed.update(item["id"] for item in items)
    assert revealed - allowed == set()
