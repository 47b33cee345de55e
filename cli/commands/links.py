"""``archive links``: public, read-only links to collections."""

from __future__ import annotations

import click

from cli.commands.collections import find_collection
from cli.output import json_option, print_json, table

SERVICE = "sharing"


def _collection_id(client, ref: str) -> str:
    return find_collection(client, ref)["id"]


def _print_link(link: dict) -> None:
    click.echo(f"{link['label']} ({link['id']}): {link['state']}")
    click.echo(f"  url: {link['url'] or 'unavailable'}")
    expires = link["expires_at"] or "never"
    click.echo(f"  expires: {expires}")
    click.echo(
        f"  password: {'yes' if link['has_password'] else 'no'}, "
        f"downloads: {'allowed' if link['allow_download'] else 'not allowed'}, "
        f"metadata: {'shown' if link['show_metadata'] else 'hidden'}"
    )
    stats = link["stats"]
    click.echo(
        f"  views: {stats['views']}, downloads: {stats['downloads']}, "
        f"last access: {stats['last_access_at'] or 'never'}"
    )
    for warning in link.get("warnings", []):
        click.echo(f"  warning: {warning}", err=True)


@click.group("links")
def links():
    """Share collections outside the organization through revocable links."""


@links.command("create")
@click.argument("collection")
@click.option("--label", required=True, help="Who the link is for, shown to members.")
@click.option("--expires", help="Lifetime from now, such as 30m, 12h, 7d or 2w; default: no expiry.")
@click.option("--password", "ask_password", is_flag=True, help="Prompt for a password visitors must enter.")
@click.option("--allow-download", is_flag=True, help="Let visitors download originals and zips.")
@click.option("--show-metadata", is_flag=True, help="Show size, dimensions and capture time.")
@json_option
@click.pass_obj
def create(obj, collection, label, expires, ask_password, allow_download, show_metadata, as_json):
    """Create a link to COLLECTION (a name or an id) and print its URL."""
    body = {
        "collection_id": _collection_id(obj.client, collection),
        "label": label,
        "allow_download": allow_download,
        "show_metadata": show_metadata,
    }
    if expires:
        body["expires_in"] = expires
    if ask_password:
        body["password"] = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    link = obj.client.post("/api/v1/links", body, service=SERVICE)
    if as_json:
        print_json(link)
        return
    _print_link(link)


@links.command("ls")
@click.argument("collection")
@json_option
@click.pass_obj
def list_links(obj, collection, as_json):
    """List the links of COLLECTION with their state and statistics."""
    collection_id = _collection_id(obj.client, collection)
    data = obj.client.get("/api/v1/links", service=SERVICE, collection_id=collection_id)
    if as_json:
        print_json(data)
        return
    table(
        None,
        ["id", "label", "state", "expires", "views", "downloads", "last access", "url"],
        [
            [
                link["id"],
                link["label"] + (" (creator left)" if link["creator_left"] else ""),
                link["state"],
                link["expires_at"] or "never",
                link["stats"]["views"],
                link["stats"]["downloads"],
                link["stats"]["last_access_at"] or "never",
                link["url"],
            ]
            for link in data["items"]
        ],
    )


@links.command("show")
@click.argument("link_id")
@json_option
@click.pass_obj
def show(obj, link_id, as_json):
    """Show a link with its full URL."""
    link = obj.client.get(f"/api/v1/links/{link_id}", service=SERVICE)
    if as_json:
        print_json(link)
        return
    _print_link(link)


@links.command("revoke")
@click.argument("link_id")
@json_option
@click.pass_obj
def revoke(obj, link_id, as_json):
    """Revoke a link; its URL stops working at once."""
    link = obj.client.post(f"/api/v1/links/{link_id}/revoke", service=SERVICE)
    if as_json:
        print_json(link)
        return
    click.echo(f"link {link['label']!r} ({link['id']}) revoked")


def register(cli) -> None:
    cli.add_command(links)
