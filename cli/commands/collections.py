"""``archive collections``: curate ordered sets of files from any drives."""

from __future__ import annotations

import click

from cli.client import q
from cli.output import escape_controls, human_size, json_option, print_json, table
from cli.params import COLLECTION, ID, LocationType, explain_invalid_id

SERVICE = "collections"
MEDIA_TYPES = ["image", "video", "audio", "document", "other"]


def find_collection(client, ref: str) -> dict:
    """Return the collection whose name is ``ref``, or whose id is ``ref``."""
    named = client.get("/api/v1/collections", service=SERVICE, name=ref, limit=2)["items"]
    if len(named) > 1:
        raise click.ClickException(
            f"more than one collection is named {ref!r}: pass its id instead "
            "(see `archive collections ls`)"
        )
    if named:
        return named[0]
    if explain_invalid_id(ref):
        raise click.UsageError(
            f"no collection is named {ref!r}, and {ref!r} is not a valid collection id"
        )
    return client.get(f"/api/v1/collections/{q(ref)}", service=SERVICE)


def _collect(client, path: str, limit: int | None) -> tuple[list, dict]:
    items, cursor, last = [], None, {}
    while True:
        page_size = min(1000, limit - len(items)) if limit else 1000
        last = client.get(path, service=SERVICE, cursor=cursor, limit=page_size)
        items.extend(last["items"])
        cursor = last.get("next_cursor")
        if not cursor or (limit and len(items) >= limit):
            return items, last


def _hidden_note(count: int) -> str:
    return f", {count} hidden from you" if count else ""


@click.group("collections")
def collections():
    """Create collections of files from any drives and order them."""


@collections.command("create")
@click.argument("name")
@click.option("--description", default="", help="Free text shown with the collection.")
@json_option
@click.pass_obj
def create(obj, name, description, as_json):
    """Create a collection named NAME."""
    data = obj.client.post(
        "/api/v1/collections", {"name": name, "description": description}, service=SERVICE
    )
    if as_json:
        print_json(data)
        return
    click.echo(f"collection {data['name']!r} created ({data['id']})")


@collections.command("ls")
@json_option
@click.pass_obj
def ls(obj, as_json):
    """List the organization's collections."""
    items, _ = _collect(obj.client, "/api/v1/collections", None)
    if as_json:
        print_json({"items": items})
        return
    table(
        None,
        ["id", "name", "items", "hidden", "updated"],
        [[c["id"], c["name"], c["item_count"], c["hidden_count"], c["updated_at"]] for c in items],
    )


@collections.command("show")
@click.argument("collection", type=COLLECTION)
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="Maximum number of items to list.")  # fmt: skip
@json_option
@click.pass_obj
def show(obj, collection, limit, as_json):
    """Show COLLECTION (an id or a unique name) and its items in order."""
    found = find_collection(obj.client, collection)
    items, _ = _collect(obj.client, f"/api/v1/collections/{q(found['id'])}/items", limit)
    if as_json:
        print_json({**found, "items": items})
        return
    click.echo(f"{escape_controls(found['name'])} ({found['id']}): {found['item_count']} items"
               f"{_hidden_note(found['hidden_count'])}")  # fmt: skip
    if found["description"]:
        click.echo(escape_controls(found["description"]))
    table(
        None,
        ["#", "file id", "drive", "name", "type", "size", "state"],
        [
            [index, i["file_id"], i["drive"], i["name"], i["media_type"], human_size(i["size"]),
             i["state"]]  # fmt: skip
            for index, i in enumerate(items)
        ],
    )


@collections.command("edit")
@click.argument("collection", type=COLLECTION)
@click.option("--name", help="New name.")
@click.option("--description", help="New description.")
@json_option
@click.pass_obj
def edit(obj, collection, name, description, as_json):
    """Rename COLLECTION or change its description."""
    body = {k: v for k, v in {"name": name, "description": description}.items() if v is not None}
    if not body:
        raise click.UsageError("pass --name, --description or both")
    found = find_collection(obj.client, collection)
    data = obj.client.patch(f"/api/v1/collections/{q(found['id'])}", body, service=SERVICE)
    if as_json:
        print_json(data)
        return
    click.echo(f"collection {data['name']!r} updated")


@collections.command("add")
@click.argument("collection", type=COLLECTION)
@click.argument("file_ids", nargs=-1)
@click.option("--query", help="Add every file a catalog search matches; '' matches all.")
@click.option("--drive", help="With --query: only files on this drive.")
@click.option("--type", "kind", type=click.Choice(MEDIA_TYPES), help="With --query: only this type.")
@click.option("--folder", type=LocationType(),
              help="Add every file of DRIVE:PATH, subfolders included.")  # fmt: skip
@json_option
@click.pass_obj
def add(obj, collection, file_ids, query, drive, kind, folder, as_json):
    """Add files to COLLECTION by FILE_IDS, by --query, or by --folder."""
    searching = query is not None or drive is not None or kind is not None
    modes = [bool(file_ids), searching, folder is not None]
    if sum(modes) != 1:
        raise click.UsageError("pass FILE_IDS, --query (with --drive/--type) or --folder")
    if file_ids:
        body = {"file_ids": list(file_ids)}
    elif searching:
        search = {"q": query or ""}
        if drive:
            search["drive"] = drive
        if kind:
            search["type"] = kind
        body = {"query": search}
    else:
        drive_name, path = folder
        body = {"folder": {"drive": drive_name, "path": path}}
    found = find_collection(obj.client, collection)
    data = obj.client.post(f"/api/v1/collections/{q(found['id'])}/items", body, service=SERVICE)
    if as_json:
        print_json(data)
        return
    click.echo(
        f"added {len(data['added'])} files to {found['name']!r} "
        f"({data['already_present']} already there, {data['item_count']} items in all)"
    )
    if data["not_found"]:
        click.echo(f"{len(data['not_found'])} matched files were gone before they could be added")


@collections.command("rm")
@click.argument("collection", type=COLLECTION)
@click.argument("file_ids", nargs=-1, required=True, type=ID)
@json_option
@click.pass_obj
def rm(obj, collection, file_ids, as_json):
    """Remove files from COLLECTION; the files stay in the catalog."""
    found = find_collection(obj.client, collection)
    for file_id in file_ids:
        obj.client.delete(
            f"/api/v1/collections/{q(found['id'])}/items/{q(file_id)}", service=SERVICE
        )
    if as_json:
        print_json({"collection_id": found["id"], "removed": list(file_ids)})
        return
    click.echo(f"removed {len(file_ids)} files from {found['name']!r}")


@collections.command("move")
@click.argument("collection", type=COLLECTION)
@click.argument("file_id", type=ID)
@click.argument("position", type=click.IntRange(min=0))
@json_option
@click.pass_obj
def move(obj, collection, file_id, position, as_json):
    """Move FILE_ID to POSITION (0 is first) in COLLECTION; past the end moves it last."""
    found = find_collection(obj.client, collection)
    collection_path = f"/api/v1/collections/{q(found['id'])}"
    obj.client.post(
        f"{collection_path}/items/{q(file_id)}/move", {"position": position}, service=SERVICE
    )
    # The move endpoint returns no body (204). It puts an item moved past the
    # end of the caller's view last, so the index it landed at is the view's
    # last index, read from the collection after the move.
    # NOTE: items added or removed by others between the two requests can
    # make the printed position differ from the item's position.
    updated = obj.client.get(collection_path, service=SERVICE)
    position = min(position, updated["item_count"] - 1)
    if as_json:
        print_json({"collection_id": found["id"], "file_id": file_id, "position": position})
        return
    click.echo(
        f"moved {escape_controls(file_id)} to position {position} in {found['name']!r}"
    )


@collections.command("delete")
@click.argument("collection", type=COLLECTION)
@json_option
@click.pass_obj
def delete(obj, collection, as_json):
    """Delete COLLECTION; its files stay in the catalog."""
    found = find_collection(obj.client, collection)
    obj.client.delete(f"/api/v1/collections/{q(found['id'])}", service=SERVICE)
    if as_json:
        print_json({"deleted": found["id"]})
        return
    click.echo(f"collection {found['name']!r} deleted")


def register(cli) -> None:
    cli.add_command(collections)
