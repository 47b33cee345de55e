"""``archive agent``: connect and disconnect drives as they are mounted."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from cli.client import q
from cli.commands.drives import connect_drive
from cli.output import console, escape_markup
from workers.scan.volume import is_empty_dir, read_volume_id


def mounted_drives(watch_dir: Path) -> dict[str, Path]:
    """Return volume id -> path for each non-empty folder under ``watch_dir``."""
    found = {}
    try:
        children = sorted(p for p in watch_dir.iterdir() if p.is_dir())
    except OSError:
        return found
    for child in children:
        try:
            if is_empty_dir(child):
                continue
        except OSError:
            continue
        volume_id = read_volume_id(child)
        found[volume_id or f"new:{child}"] = child
    return found


@click.command("agent")
@click.option(
    "--watch",
    "watch_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of mount points, such as /media/USER or /Volumes.",
)
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True,
              help="Seconds between checks.")  # fmt: skip
@click.option("--once", is_flag=True, help="Check once and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line per event.")
@click.pass_obj
def agent(obj, watch_dir, interval, once, as_json):
    """Watch a folder of mount points: connect drives that appear, disconnect
    drives that go."""
    known: dict[str, tuple[Path, str]] = {}
    while True:
        current = mounted_drives(watch_dir)
        for key, path in current.items():
            if key in known:
                continue
            try:
                source = connect_drive(obj.client, str(path))
            except click.ClickException as error:
                _event(as_json, "connect_failed", path=str(path), error=error.message)
                continue
            known[source["volume_id"]] = (path, source["id"])
            if key != source["volume_id"]:
                known[key] = (path, source["id"])
            _event(as_json, "connected", drive=source["name"], path=str(path))
        for key in list(known):
            if key in current:
                continue
            path, source_id = known.pop(key)
            if any(sid == source_id for _, sid in known.values()):
                continue
            try:
                source = obj.client.post(f"/api/v1/sources/{q(source_id)}/disconnect")
                _event(as_json, "disconnected", drive=source["name"], path=str(path))
            except click.ClickException as error:
                _event(as_json, "disconnect_failed", path=str(path), error=error.message)
        if once:
            return
        time.sleep(interval)


def _event(as_json: bool, event: str, **fields) -> None:
    if as_json:
        click.echo(json.dumps({"event": event, **fields}, ensure_ascii=False))
    else:
        details = " ".join(f"{k}={v}" for k, v in fields.items())
        console.print(f"{event} {escape_markup(details)}")


def register(cli):
    cli.add_command(agent)
