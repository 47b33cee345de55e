"""``archive exports`` and ``archive files open``: get originals out."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from cli.client import q
from cli.commands.collections import find_collection
from cli.output import console, escape_markup, human_size, json_option, print_json
from cli.params import COLLECTION, ID

FINISHED = ("succeeded", "failed", "cancelled", "expired")


def collection_file_ids(client, collection_id: str) -> list[str]:
    """Every file id of a collection, in the collection's order."""
    ids, cursor = [], None
    while True:
        page = client.get(
            f"/api/v1/collections/{q(collection_id)}/items", service="collections",
            cursor=cursor, limit=1000,
        )  # fmt: skip
        ids.extend(item["file_id"] for item in page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return ids


def wait_for_export(client, export: dict, quiet: bool) -> dict:
    if quiet:
        while export["status"] not in FINISHED:
            time.sleep(0.5)
            export = client.get(f"/api/v1/exports/{q(export['id'])}")
        return export
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[files]}"),
    ]
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(export["status"], total=export["bytes_total"] or None, files="")
        while True:
            description = export["status"]
            if export["waiting_for"]:
                description = "waiting for " + _drive_list(export["waiting_for"])
            progress.update(
                task,
                description=description,
                total=export["bytes_total"] or None,
                completed=export["bytes_done"],
                files=f"{export['files_done']}/{export['files_total']} files",
            )
            if export["status"] in FINISHED:
                return export
            time.sleep(0.5)
            export = client.get(f"/api/v1/exports/{q(export['id'])}")


def _drive_list(names: list[str]) -> str:
    return ", ".join(escape_markup(name) for name in names)


def _report(export: dict) -> None:
    console.print(
        f"export {export['id']}: {export['status']}, {export['files_done']} files, "
        f"{human_size(export.get('archive_size'))}"
    )
    for skipped in export.get("skipped", []):
        where = f"{skipped.get('drive', '')}:{skipped.get('path') or skipped.get('name', '')}"
        detail = escape_markup(f"{where}: {skipped['reason']}")
        console.print(f"  [yellow]skipped[/yellow] {detail}")
    for copy in export.get("substituted", []):
        original = escape_markup(f"{copy['drive']}:{copy['path']}")
        used = escape_markup(f"{copy['copy_drive']}:{copy['copy_path']}")
        console.print(f"  [cyan]copy used[/cyan] {original} from {used}")
    if export["waiting_for"]:
        console.print("  waiting for drives: " + _drive_list(export["waiting_for"]))


@click.group("exports")
def exports():
    """Zip archives of collections, made from the originals on the drives."""


@exports.command("create")
@click.argument("collection", type=COLLECTION)
@click.option("--items", "items", multiple=True, help="Only these file ids (repeatable).")
@click.option("--skip-offline", is_flag=True, help="Leave out files on offline drives.")
@click.option("--keep-structure", is_flag=True, help="Keep drive and folder names.")
@click.option("--name", help="Name of the archive (without .zip).")
@click.option("--wait", is_flag=True, help="Wait until the export finishes.")
@json_option
@click.pass_obj
def create(obj, collection, items, skip_offline, keep_structure, name, wait, as_json):
    """Export COLLECTION (id or name) as a zip archive."""
    found = find_collection(obj.client, collection)
    file_ids = list(items) or collection_file_ids(obj.client, found["id"])
    if not file_ids:
        raise click.ClickException(f"collection {found['name']!r} has no files to export")
    body = {"file_ids": file_ids, "skip_offline": skip_offline, "keep_structure": keep_structure}
    if name:
        body["name"] = name
    export = obj.client.post("/api/v1/exports", body)
    if wait:
        export = wait_for_export(obj.client, export, quiet=as_json)
    if as_json:
        print_json(export)
        return
    _report(export)
    if not wait:
        console.print(f"follow it with `archive exports status {export['id']}`")


@exports.command("status")
@click.argument("export_id", type=ID)
@json_option
@click.pass_obj
def status(obj, export_id, as_json):
    """Show an export's state and progress."""
    export = obj.client.get(f"/api/v1/exports/{q(export_id)}")
    if as_json:
        print_json(export)
        return
    _report(export)


@exports.command("cancel")
@click.argument("export_id", type=ID)
@json_option
@click.pass_obj
def cancel(obj, export_id, as_json):
    """Cancel an export."""
    export = obj.client.post(f"/api/v1/exports/{q(export_id)}/cancel")
    if as_json:
        print_json(export)
        return
    _report(export)


def local_name(name: str) -> str:
    """Return the last part of a name the server sent, safe to create in a folder."""
    last = name.rsplit("/", 1)[-1].strip()
    return "download" if last in ("", ".", "..") else last


def _save(response, output: Path | None, default_name: str, as_json: bool) -> Path | None:
    if output is not None and str(output) == "-":
        for chunk in response.iter_content(1 << 20):
            sys.stdout.buffer.write(chunk)
        return None
    # The name comes from the server, so it must not lead out of the folder.
    default_name = local_name(default_name)
    target = output or Path(default_name)
    if target.is_dir():
        target = target / default_name
    total = int(response.headers.get("Content-Length", 0)) or None
    tmp = target.with_name(target.name + ".part")
    # The name goes in the task description: a column's format string would
    # read braces in the name as fields, and its markup as styles.
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    ]
    with Progress(*columns, console=console, disable=as_json) as progress:
        task = progress.add_task(escape_markup(target.name), total=total)
        with open(tmp, "wb") as out:
            for chunk in response.iter_content(1 << 20):
                out.write(chunk)
                progress.advance(task, len(chunk))
    tmp.replace(target)
    return target


@exports.command("download")
@click.argument("export_id", type=ID)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="File or folder; - for stdout.")
@json_option
@click.pass_obj
def download(obj, export_id, output, as_json):
    """Download a finished export's zip."""
    export_path = f"/api/v1/exports/{q(export_id)}"
    export = obj.client.get(export_path)
    response = obj.client.request("GET", f"{export_path}/archive", stream=True)
    path = _save(response, output, f"{export['name']}.zip", as_json)
    if as_json:
        print_json({"export": export, "path": str(path) if path else None})
    elif path:
        console.print(f"saved {escape_markup(path)}")


@click.command("open")
@click.argument("file_id", type=ID)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="File or folder; - for stdout.")
@json_option
@click.pass_obj
def open_file(obj, file_id, output, as_json):
    """Save a file's original (or stream it with -o -); its drive must be online."""
    file_path = f"/api/v1/files/{q(file_id)}"
    info = obj.client.get(file_path)
    response = obj.client.request("GET", f"{file_path}/original", stream=True)
    path = _save(response, output, info["name"], as_json)
    if as_json:
        print_json({"file": info, "path": str(path) if path else None})
    elif path:
        console.print(f"saved {escape_markup(path)}")


def register(cli):
    cli.add_command(exports)
    from cli.commands.files import files

    files.add_command(open_file)
