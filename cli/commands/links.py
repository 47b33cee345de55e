"""``archive links``: public, read-only links to collections."""

from __future__ import annotations

import re

import click

from cli.client import q
from cli.commands.collections import find_collection
from cli.output import escape_controls, json_option, print_json, table
from cli.params import COLLECTION, ID

SERVICE = "sharing"

# The sharing service accepts an expires_in of 1 to 5 digits and a unit, at
# most 3650 days (DURATION and MAX_EXPIRY in services/sharing/schemas.py).
DURATION = re.compile(r"^(\d+)([mhdw])$")
UNIT_MINUTES = {"m": 1, "h": 60, "d": 24 * 60, "w": 7 * 24 * 60}
MAX_EXPIRY_DAYS = 3650
MAX_DURATION_DIGITS = 5


def _collection_id(client, ref: str) -> str:
    return find_collection(client, ref)["id"]


def parse_expires(ctx, param, value: str | None) -> str | None:
    """Validate a --expires duration against the sharing service's limits.

    Returns the duration without surrounding spaces or leading zeros, such
    as "7d" for " 007d", which the service reads as the same lifetime.
    """
    if value is None:
        return None
    match = DURATION.match(value.strip())
    if not match:
        raise click.BadParameter(
            f"invalid duration {value!r}: use a number and a unit (m, h, d or w), "
            "such as 30m, 12h, 7d or 2w",
            ctx=ctx,
            param=param,
        )
    amount, unit = int(match.group(1)), match.group(2)
    if amount == 0:
        raise click.BadParameter("the duration must be greater than zero", ctx=ctx, param=param)
    if amount * UNIT_MINUTES[unit] > MAX_EXPIRY_DAYS * UNIT_MINUTES["d"]:
        raise click.BadParameter(
            f"{value!r} is longer than the maximum lifetime of {MAX_EXPIRY_DAYS} days "
            f"({MAX_EXPIRY_DAYS}d)",
            ctx=ctx,
            param=param,
        )
    if len(str(amount)) > MAX_DURATION_DIGITS:
        raise click.BadParameter(
            f"{value!r} has more than {MAX_DURATION_DIGITS} digits: "
            "use a larger unit, such as h or d",
            ctx=ctx,
            param=param,
        )
    return f"{amount}{unit}"


def _print_link(link: dict) -> None:
    click.echo(f"{escape_controls(link['label'])} ({link['id']}): {link['state']}")
    click.echo(f"  url: {escape_controls(link['url'] or 'unavailable')}")
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
        click.echo(f"  warning: {escape_controls(warning)}", err=True)


@click.group("links")
def links():
    """Share collections outside the organization through revocable links."""


@links.command("create")
@click.argument("collection", type=COLLECTION)
@click.option("--label", required=True, help="Who the link is for, shown to members.")
@click.option("--expires", callback=parse_expires,
              help="Lifetime from now, such as 30m, 12h, 7d or 2w, at most "
                   f"{MAX_EXPIRY_DAYS}d; default: no expiry.")  # fmt: skip
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
@click.argument("collection", type=COLLECTION)
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
@click.argument("link_id", type=ID)
@json_option
@click.pass_obj
def show(obj, link_id, as_json):
    """Show a link with its full URL."""
    link = obj.client.get(f"/api/v1/links/{q(link_id)}", service=SERVICE)
    if as_json:
        print_json(link)
        return
    _print_link(link)


@links.command("revoke")
@click.argument("link_id", type=ID)
@json_option
@click.pass_obj
def revoke(obj, link_id, as_json):
    """Revoke a link; its URL stops working at once."""
    link = obj.client.post(f"/api/v1/links/{q(link_id)}/revoke", service=SERVICE)
    if as_json:
        print_json(link)
        return
    click.echo(f"link {link['label']!r} ({link['id']}) revoked")


def register(cli) -> None:
    cli.add_command(links)
