"""``archive files``: browse, search and inspect catalogued files."""

from __future__ import annotations

import click

from cli.client import q
from cli.output import (
    console,
    escape_markup,
    files_table,
    human_size,
    json_option,
    print_json,
    table,
)
from cli.params import ID, LocationType


def _collect(client, path: str, params: dict, limit: int | None) -> tuple[list, dict]:
    items, cursor, last = [], None, {}
    while True:
        page_size = min(1000, limit - len(items)) if limit else 1000
        last = client.get(path, cursor=cursor, limit=page_size, **params)
        items.extend(last["items"])
        cursor = last.get("next_cursor")
        if not cursor or (limit and len(items) >= limit):
            return items, last


@click.group("files")
def files():
    """Browse, search and inspect files."""


@files.command("ls")
@click.argument("location", type=LocationType())
@json_option
@click.pass_obj
def ls(obj, location, as_json):
    """List a folder: DRIVE or DRIVE:FOLDER."""
    drive, folder = location
    items, last = _collect(obj.client, f"/api/v1/sources/{q(drive)}/folder", {"path": folder}, None)
    if as_json:
        print_json({"drive": last.get("drive"), "folder": last.get("folder"),
                    "folders": last.get("folders", []), "items": items})  # fmt: skip
        return
    for sub in last.get("folders", []):
        console.print(f"[bold blue]{escape_markup(sub['name'])}/[/bold blue]")
    files_table(items)


@files.command("search")
@click.argument("query", default="")
@click.option("--drive", help="Only files on this drive.")
@click.option("--type", "kind", type=click.Choice(["image", "video", "audio", "document", "other"]))
@click.option("--ext", help="File extension, such as jpg.")
@click.option("--state", type=click.Choice(["online", "offline", "missing"]))
@click.option("--min-size", type=click.IntRange(min=0), help="Minimum size in bytes.")
@click.option("--max-size", type=click.IntRange(min=0), help="Maximum size in bytes.")
@click.option("--after", "modified_after", help="Modified at or after (ISO 8601).")
@click.option("--before", "modified_before", help="Modified before (ISO 8601).")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@json_option
@click.pass_obj
def search(obj, query, drive, kind, ext, state, min_size, max_size, modified_after,
           modified_before, limit, as_json):  # fmt: skip
    """Search files by name; an empty QUERY matches every file."""
    params = {
        "q": query, "drive": drive, "type": kind, "ext": ext, "state": state,
        "min_size": min_size, "max_size": max_size,
        "modified_after": modified_after, "modified_before": modified_before,
    }  # fmt: skip
    items, _ = _collect(obj.client, "/api/v1/files", params, limit)
    if as_json:
        print_json({"items": items})
        return
    files_table(items, title=f"{len(items)} files")


@files.command("show")
@click.argument("file_id", type=ID)
@json_option
@click.pass_obj
def show(obj, file_id, as_json):
    """Show one file with its metadata."""
    data = obj.client.get(f"/api/v1/files/{q(file_id)}")
    if as_json:
        print_json(data)
        return
    rows = [[key, data.get(key)] for key in (
        "id", "drive", "path", "media_type", "state", "modified_at", "fingerprint",
        "checksum", "rendition_state", "thumbnail_url", "preview_url", "error",
    )]  # fmt: skip
    rows.insert(4, ["size", human_size(data["size"])])
    for key, value in sorted((data.get("metadata") or {}).items()):
        rows.append([key, value])
    for collection in data.get("collections") or []:
        rows.append(["collection", collection.get("name")])
    table(None, ["field", "value"], rows)


@files.command("duplicates")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@json_option
@click.pass_obj
def duplicates(obj, limit, as_json):
    """List files with identical content, across drives."""
    items, _ = _collect(obj.client, "/api/v1/duplicates", {}, limit)
    if as_json:
        print_json({"items": items})
        return
    for group in items:
        console.print(f"[bold]{group['copies']} copies[/bold], {human_size(group['size'])}")
        for f in group["files"]:
            where = escape_markup(f"{f['drive']}:{f['path']}")
            console.print(f"  {f['id']}  {where}  ({f['state']})")


def register(cli):
    cli.add_command(files)
