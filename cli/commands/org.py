"""``archive init``, ``archive members`` and ``archive db``."""

from __future__ import annotations

import json
import os

import click

from cli import config as cli_config
from cli.client import ApiClient
from cli.output import json_option, print_json, table


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
@json_option
@click.pass_obj
def init(obj, org_name, email, data_dir, as_json):
    """Create the first organization and its owner, and save a token."""
    config = cli_config.resolve(obj.url, None)
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
    click.echo(f"Created organization {org_name!r} with owner {email}.")
    click.echo(f"Token saved to {path}")


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
    click.echo(f"Added {email} as {role}. Their token: {data['token']}")


@members.command("remove")
@click.argument("user_id")
@json_option
@click.pass_obj
def members_remove(obj, user_id, as_json):
    """Remove a member from the organization."""
    obj.client.delete(f"/api/v1/members/{user_id}")
    if as_json:
        print_json({"removed": user_id})
        return
    click.echo(f"Removed member {user_id}.")


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
