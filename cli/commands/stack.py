"""``archive up`` and ``archive demo``: run the embedded stack."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import click

from cli import config as cli_config
from cli.client import ApiClient, q
from cli.output import console, escape_markup, files_table, human_size, print_json
from cli.stack_runner import SERVICE_PORTS, EmbeddedStack, default_data_dir

DATA_DIR_HELP = "Folder for databases, Redis, object store and logs."


def _wait_for_interrupt(stack: EmbeddedStack) -> None:
    stopping = []

    def request_stop(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        while not stopping:
            stack.check_alive()
            time.sleep(0.5)
    finally:
        console.print("stopping the embedded stack ...")
        stack.stop()
        console.print("stopped")


@click.command("up")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help=DATA_DIR_HELP)
def up(data_dir):
    """Run the whole embedded stack in the foreground; Ctrl-C stops it."""
    stack = EmbeddedStack(
        data_dir or default_data_dir(), log=lambda text: console.print(escape_markup(text))
    )
    try:
        env = stack.start()
    except RuntimeError as error:
        stack.stop()
        raise click.ClickException(str(error)) from None
    for name in SERVICE_PORTS:
        console.print(f"{name:12} http://127.0.0.1:{env[f'{name.upper()}_PORT']}")
    console.print(f"data folder  {escape_markup(stack.data_dir)}")
    console.print("running; press Ctrl-C to stop")
    _wait_for_interrupt(stack)


def sample_photos(target: Path) -> Path:
    """Copy the real sample photos that scikit-image ships into ``target``."""
    import skimage.data

    source = Path(skimage.data.__file__).parent
    photos = target / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".gif"):
            if not (photos / path.name).exists():
                shutil.copy2(path, photos / path.name)
    return target


def _client_for(stack: EmbeddedStack, email: str) -> ApiClient:
    """Reuse the saved token when it still works, else create an organization."""
    env = stack.env
    urls = {
        name + "_url": f"http://127.0.0.1:{env[f'{name.upper()}_PORT']}"
        for name in SERVICE_PORTS
    }
    stored = cli_config.load_file()
    if stored.get("token") and stored.get("catalog_url") == urls["catalog_url"]:
        client = ApiClient(cli_config.ClientConfig(token=stored["token"], **urls))
        try:
            client.get("/api/v1/me")
            return client
        except click.ClickException:
            pass
    client = ApiClient(cli_config.ClientConfig(token=None, **urls))
    created = client.post(
        "/api/v1/orgs",
        {"name": "My team", "email": email},
        headers={"X-Internal-Secret": env["INTERNAL_SECRET"]},
    )
    cli_config.save_file({**urls, "token": created["token"], "org_id": created["org_id"]})
    return ApiClient(cli_config.ClientConfig(token=created["token"], **urls))


def _wait_for_renditions(client: ApiClient, source_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    with console.status("making thumbnails and previews ...") as status:
        while True:
            source = client.get(f"/api/v1/sources/{q(source_id)}")
            pending = source["renditions_pending"]
            status.update(f"making thumbnails and previews: {pending} files left")
            if pending == 0 or time.monotonic() > deadline:
                return source
            time.sleep(0.5)


@click.command("demo")
@click.argument("folder", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help=DATA_DIR_HELP)
@click.option("--email", default="owner@example.com", show_default=True,
              help="Owner of the organization created on first run.")  # fmt: skip
@click.option("--exit", "exit_after", is_flag=True, help="Stop the stack after the report.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def demo(folder, data_dir, email, exit_after, as_json):
    """Start the stack, catalog FOLDER (or sample photos) and report.

    Without FOLDER, the real sample photos shipped by scikit-image are
    copied into the data folder and catalogued.
    """
    from cli.commands.drives import connect_drive, wait_for_scan

    stack = EmbeddedStack(data_dir or default_data_dir(), log=lambda *_: None)
    with console.status("starting the embedded stack ..."):
        try:
            stack.start()
        except RuntimeError as error:
            stack.stop()
            raise click.ClickException(str(error)) from None
    try:
        client = _client_for(stack, email)
        if folder is None:
            folder = str(sample_photos(stack.data_dir / "sample-drive"))
        source = connect_drive(client, folder)
        scan = source.get("active_scan")
        if scan:
            scan = wait_for_scan(client, scan["id"], source["file_count"] or None, quiet=as_json)
        source = _wait_for_renditions(client, source["id"], timeout=600)
        report = _report(client, source, scan)
        report["share"] = _share(client, source)
        if as_json:
            print_json(report)
        else:
            _print_report(report)
    except BaseException:
        stack.stop()
        raise
    if exit_after:
        stack.stop()
        return
    console.print("\nThe stack keeps running; press Ctrl-C to stop it.")
    _wait_for_interrupt(stack)


def _report(client: ApiClient, source: dict, scan: dict | None) -> dict:
    items, cursor = [], None
    while True:
        page = client.get("/api/v1/files", drive=source["id"], cursor=cursor, limit=1000)
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    kinds = Counter(item["media_type"] for item in items)
    return {
        "drive": source,
        "scan": scan,
        "files": len(items),
        "media_types": dict(kinds.most_common()),
        "with_thumbnail": sum(1 for item in items if item["thumbnail_url"]),
        "items": items,
        "config_file": str(cli_config.config_path()),
    }


def _share(client: ApiClient, source: dict) -> dict:
    """Collect the drive's files into a collection and share it with a link."""
    name = f"{source['name']} highlights"
    found = client.get("/api/v1/collections", service="collections", name=name, limit=1)
    if found["items"]:
        collection = found["items"][0]
    else:
        collection = client.post(
            "/api/v1/collections",
            {"name": name, "description": f"Every file of drive {source['name']}"},
            service="collections",
        )
    added = client.post(
        f"/api/v1/collections/{q(collection['id'])}/items",
        {"query": {"q": "", "drive": source["id"]}},
        service="collections",
    )
    link = client.post(
        "/api/v1/links",
        {
            "collection_id": collection["id"],
            "label": "demo",
            "expires_in": "7d",
            "allow_download": True,
            "show_metadata": True,
        },
        service="sharing",
    )
    return {
        "collection": collection["name"],
        "collection_id": collection["id"],
        "items": added["item_count"],
        "link_id": link["id"],
        "url": link["url"],
    }


def _print_report(report: dict) -> None:
    source = report["drive"]
    drive_name = escape_markup(source["name"])
    console.rule(f"[bold]drive {drive_name}")
    console.print(
        f"{report['files']} files, {human_size(source['total_bytes'])}, "
        f"{report['with_thumbnail']} with thumbnails"
    )
    for media_type, count in report["media_types"].items():
        console.print(f"  {count:5}  {escape_markup(media_type)}")
    files_table(report["items"][:15], title="first files")
    console.print(f"\nBrowse it (token saved in {escape_markup(report['config_file'])}):")
    console.print(f"  archive files ls {drive_name}")
    console.print("  archive files search QUERY --type image")
    console.print("  archive drives list")
    share = report["share"]
    console.print(
        f"\nCollection {escape_markup(repr(share['collection']))} ({share['items']} files) "
        "is shared at:"
    )
    console.print(f"  [bold]{escape_markup(share['url'])}[/bold]")


def register(cli):
    cli.add_command(up)
    cli.add_command(demo)
