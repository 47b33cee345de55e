"""``archive init``, ``archive members`` and ``archive db``."""

from __future__ import annotations

import json
import os

import click

from cli import config as cli_config
from cli.client import ApiClient, q
from cli.output import escape_controls, json_option, print_json, table
from cli.params import ID


def _internal_secret(data_dir: str | None) -> str | None:
    if os.environ.get("INTERNAL_SECRET"):
        return os.environ["INTERNAL_SECRET"]
    from cli.stack_runner import secrets_file

    path = secrets_file(data_dir)
    try:
        return json.loads(path.read_text()).get("internal_secret")
    except (OSError, ValueError):
        return None


@click.command("init")
@click.option("--org", "org_name", required=True, help="Name of the organization.")
@click.option("--email", required=True, help="Email of the first owner.")
@click.option("--data-dir", help="Data folder of a local `archive up` (for its secret).")
@click.option("--force", is_flag=True,
              help="Replace the token that the config file already contains for this URL.")  # fmt: skip
@json_option
@click.pass_obj
def init(obj, org_name, email, data_dir, force, as_json):
    """Create the first organization and its owner, and save a token.

    The token is saved in the config file: ARCHIVE_CONFIG if set, else
    archive/config.json in XDG_CONFIG_HOME (~/.config by default). When that
    file already contains a token for the same URL, init stops before it
    creates anything, unless --force is given.
    """
    config = cli_config.resolve(obj.url, None)
    if not force:
        _reject_saved_token(config.catalog_url)
    client = ApiClient(config)
    headers = {}
    secret = _internal_secret(data_dir)
    if secret:
        headers["X-Internal-Secret"] = secret
    created = client.post(
        "/api/v1/orgs", {"name": org_name, "email": email}, headers=headers
    )
    path = cli_config.save_file(
        {
            "catalog_url": config.catalog_url,
            "collections_url": config.collections_url,
            "sharing_url": config.sharing_url,
            "token": created["token"],
            "org_id": created["org_id"],
        }
    )
    if as_json:
        print_json({**created, "config_file": str(path)})
        return
    click.echo(f"Created organization {org_name!r} with owner {escape_controls(email)}.")
    click.echo(f"Token saved to {escape_controls(path)}")


def _reject_saved_token(catalog_url: str) -> None:
    """Raise click.ClickException when the config file contains a token for ``catalog_url``."""
    stored = cli_config.load_file()
    # NOTE: the file contains one URL and token, so init still replaces a
    # token saved for another URL without a check.
    if not stored.get("token") or stored.get("catalog_url") != catalog_url:
        return
    path = escape_controls(cli_config.config_path())
    raise click.ClickException(
        f"the config file {path} already contains a token for {escape_controls(catalog_url)}. "
        "Pass --force to replace that token (its organization stays), "
        "or set ARCHIVE_CONFIG to another config file."
    )


@click.group("members")
def members():
    """List and add organization members."""


@members.command("ls")
@json_option
@click.pass_obj
def members_ls(obj, as_json):
    """List members and their roles."""
    data = obj.client.get("/api/v1/members")
    if as_json:
        print_json({"items": data})
        return
    table(None, ["user id", "email", "role"], [[m["user_id"], m["email"], m["role"]] for m in data])


@members.command("add")
@click.argument("email")
@click.option(
    "--role",
    type=click.Choice(["viewer", "editor", "admin", "owner"]),
    default="viewer",
    show_default=True,
)
@json_option
@click.pass_obj
def members_add(obj, email, role, as_json):
    """Add a member; prints the token to hand to them."""
    data = obj.client.post("/api/v1/members", {"email": email, "role": role})
    if as_json:
        print_json(data)
        return
    click.echo(f"Added {escape_controls(email)} as {role}. Their token: {data['token']}")


@members.command("remove")
@click.argument("user_id", type=ID)
@json_option
@click.pass_obj
def members_remove(obj, user_id, as_json):
    """Remove a member from the organization."""
    obj.client.delete(f"/api/v1/members/{q(user_id)}")
    if as_json:
        print_json({"removed": user_id})
        return
    click.echo(f"Removed member {escape_controls(user_id)}.")


@click.group("db")
def db():
    """Database administration."""


@db.command("upgrade")
@json_option
def db_upgrade(as_json):
    """Apply every service's migrations (run once per release in production)."""
    from core.db import SERVICES, upgrade_all

    upgrade_all()
    if as_json:
        print_json({"upgraded": list(SERVICES)})
        return
    click.echo("Migrations applied.")


def register(cli):
    cli.add_command(init)
    cli.add_command(members)
    cli.add_command(db)
