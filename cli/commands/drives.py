"""``archive drives``: connect, disconnect, list, rescan and verify drives."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import click

from cli.client import q
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from cli.output import console, escape_markup, human_size, json_option, print_json, table
from cli.params import DRIVE, reject_blank_path
from workers.scan.volume import VolumeError, ensure_volume_id

FINISHED = ("succeeded", "interrupted", "failed")


def drive_host() -> str:
    return os.environ.get("ARCHIVE_HOST") or socket.gethostname()


def connect_drive(client, path: str, name: str | None = None, group: str | None = None) -> dict:
    root = Path(path).expanduser().resolve()
    try:
        volume_id = ensure_volume_id(root, label=name or root.name)
    except VolumeError as error:
        raise click.ClickException(str(error)) from None
    body = {"volume_id": volume_id, "mount_path": str(root), "host": drive_host()}
    if name:
        body["name"] = name
    if group:
        body["group"] = group
    return client.post("/api/v1/sources", body)


def wait_for_scan(client, scan_id: str, total: int | None, quiet: bool) -> dict:
    """Poll a scan until it ends, showing a progress bar unless ``quiet``."""
    if quiet:
        while True:
            scan = client.get(f"/api/v1/scans/{q(scan_id)}")
            if scan["status"] in FINISHED:
                return scan
            time.sleep(0.5)
    columns = [
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed} files"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("scanning", total=total or None)
        while True:
            scan = client.get(f"/api/v1/scans/{q(scan_id)}")
            progress.update(
                task,
                completed=scan["counts"].get("files", 0),
                description=scan["status"],
            )
            if scan["status"] in FINISHED:
                if scan["status"] == "succeeded":
                    progress.update(task, total=scan["counts"].get("files", 0))
                return scan
            time.sleep(0.3)


def _issue_text(issue: dict) -> str:
    return escape_markup(f"{issue['path']}: {issue['message']}")


def _report_scan(scan: dict) -> None:
    counts = scan.get("counts", {})
    if scan["status"] != "succeeded":
        message = escape_markup(scan.get("message") or "")
        console.print(f"[red]scan {scan['status']}[/red]: {message}")
        return
    summary = ", ".join(
        f"{counts.get(key, 0)} {key}"
        for key in ("new", "unchanged", "changed", "moved", "restored", "missing", "errors")
        if counts.get(key)
    )
    console.print(f"scan finished: {counts.get('files', 0)} files ({summary or 'no changes'})")
    for issue in scan.get("issues", [])[:20]:
        console.print(f"  [yellow]{issue['kind']}[/yellow] {_issue_text(issue)}")


@click.group("drives")
def drives():
    """Connect, disconnect, list, rescan and verify drives."""


@drives.command("connect")
@click.argument("path", type=click.Path(file_okay=False), callback=reject_blank_path)
@click.option("--name", help="Name of the drive in the catalog (default: folder name).")
@click.option("--group", help="Source group the drive belongs to (default: Everyone).")
@click.option("--wait", is_flag=True, help="Wait for the scan to finish.")
@json_option
@click.pass_obj
def connect(obj, path, name, group, wait, as_json):
    """Connect the drive mounted at PATH and scan it."""
    source = connect_drive(obj.client, path, name, group)
    scan = source.get("active_scan")
    if wait and scan:
        previous = source["file_count"] or None
        scan = wait_for_scan(obj.client, scan["id"], previous, quiet=as_json)
        source = obj.client.get(f"/api/v1/sources/{q(source['id'])}")
    if as_json:
        print_json({"drive": source, "scan": scan})
        return
    name, mount_path = escape_markup(source["name"]), escape_markup(source["mount_path"])
    console.print(f"drive [bold]{name}[/bold] connected ({mount_path})")
    if wait and scan:
        _report_scan(scan)
    elif scan:
        console.print(f"scan {scan['id']} queued; follow it with `archive drives list`")


@drives.command("disconnect")
@click.argument("name", type=DRIVE)
@click.option("--wait", is_flag=True, help="Wait until any running scan has stopped.")
@json_option
@click.pass_obj
def disconnect(obj, name, wait, as_json):
    """Mark a drive offline; its files stay listed with thumbnails."""
    source = obj.client.post(f"/api/v1/sources/{q(name)}/disconnect")
    while wait and source.get("active_scan"):
        time.sleep(0.3)
        source = obj.client.get(f"/api/v1/sources/{q(source['id'])}")
    if as_json:
        print_json(source)
        return
    console.print(f"drive [bold]{escape_markup(source['name'])}[/bold] is offline")


@drives.command("list")
@json_option
@click.pass_obj
def list_drives(obj, as_json):
    """List drives with their state, file counts and pending work."""
    items, cursor = [], None
    while True:
        page = obj.client.get("/api/v1/sources", cursor=cursor, limit=1000)
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    if as_json:
        print_json({"items": items})
        return
    rows = []
    for s in items:
        scan = s.get("active_scan")
        rows.append([
            s["name"], s["state"], s["group"], s["file_count"], s["missing_count"],
            human_size(s["total_bytes"]), s["renditions_pending"],
            f"{scan['status']} ({scan['counts'].get('files', 0)} files)" if scan else "",
            s["host"], s["mount_path"],
        ])  # fmt: skip
    table(
        None,
        ["name", "state", "group", "files", "missing", "size", "renditions pending",
         "scan", "host", "mount path"],
        rows,
    )  # fmt: skip


@drives.command("rescan")
@click.argument("name", type=DRIVE)
@click.option("--wait", is_flag=True, help="Wait for the scan to finish.")
@json_option
@click.pass_obj
def rescan(obj, name, wait, as_json):
    """Scan a connected drive again."""
    source = obj.client.get(f"/api/v1/sources/{q(name)}")
    scan = obj.client.post(f"/api/v1/sources/{q(source['id'])}/scans")
    if wait:
        scan = wait_for_scan(obj.client, scan["id"], source["file_count"], quiet=as_json)
    if as_json:
        print_json(scan)
        return
    if wait:
        _report_scan(scan)
    else:
        console.print(f"scan {scan['id']} queued")


@drives.command("verify")
@click.argument("name", type=DRIVE)
@json_option
@click.pass_obj
def verify(obj, name, as_json):
    """Re-read a drive; report files whose bytes changed but metadata did not."""
    source = obj.client.get(f"/api/v1/sources/{q(name)}")
    scan = obj.client.post(f"/api/v1/sources/{q(source['id'])}/verify")
    scan = wait_for_scan(obj.client, scan["id"], source["file_count"], quiet=True)
    if as_json:
        print_json(scan)
        return
    counts = scan.get("counts", {})
    console.print(
        f"verified {counts.get('verified', 0)} files: {counts.get('mismatched', 0)} changed "
        f"silently, {counts.get('skipped', 0)} skipped (changed since the last scan "
        f"or not yet checksummed), {counts.get('unreadable', 0)} unreadable"
    )
    for issue in scan.get("issues", []):
        console.print(f"  [red]{issue['kind']}[/red] {_issue_text(issue)}")


@drives.command("scans")
@click.argument("name", type=DRIVE)
@json_option
@click.pass_obj
def scans(obj, name, as_json):
    """Show a drive's scan history."""
    page = obj.client.get(f"/api/v1/sources/{q(name)}/scans", limit=50)
    if as_json:
        print_json(page)
        return
    table(
        None,
        ["id", "kind", "status", "requested", "files", "new", "moved", "missing", "message"],
        [
            [s["id"], s["kind"], s["status"], s["requested_at"], s["counts"].get("files"),
             s["counts"].get("new"), s["counts"].get("moved"), s["counts"].get("missing"),
             s["message"]]
            for s in page["items"]
        ],
    )  # fmt: skip


def register(cli):
    cli.add_command(drives)
