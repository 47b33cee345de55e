"""``archive groups``: who sees which drives."""

from __future__ import annotations

import click

from cli.client import q
from cli.output import escape_controls, json_option, print_json, table
from cli.params import DRIVE, EMAIL, GROUP


@click.group("groups")
def groups():
    """Create source groups and grant access to restricted ones."""


@groups.command("ls")
@json_option
@click.pass_obj
def ls(obj, as_json):
    """List the groups you can see."""
    data = obj.client.get("/api/v1/groups")
    if as_json:
        print_json({"items": data})
        return
    table(
        None,
        ["name", "visibility", "drives", "members"],
        [[g["name"], g["visibility"], g["source_count"], ", ".join(g["members"])] for g in data],
    )


@groups.command("create")
@click.argument("name")
@click.option("--restricted", is_flag=True, help="Only listed members see its drives.")
@json_option
@click.pass_obj
def create(obj, name, restricted, as_json):
    """Create a group (visible to everyone unless --restricted)."""
    body = {"name": name, "visibility": "restricted" if restricted else "everyone"}
    data = obj.client.post("/api/v1/groups", body)
    if as_json:
        print_json(data)
        return
    click.echo(f"group {data['name']!r} created ({data['visibility']})")


@groups.command("grant")
@click.argument("name", type=GROUP)
@click.argument("email", type=EMAIL)
@json_option
@click.pass_obj
def grant(obj, name, email, as_json):
    """Let a member see a restricted group."""
    data = obj.client.post(f"/api/v1/groups/{q(name)}/members", {"email": email})
    if as_json:
        print_json(data)
        return
    click.echo(f"{escape_controls(email)} can now see group {name!r}")


@groups.command("revoke")
@click.argument("name", type=GROUP)
@click.argument("email", type=EMAIL)
@json_option
@click.pass_obj
def revoke(obj, name, email, as_json):
    """Stop a member from seeing a restricted group."""
    data = obj.client.delete(f"/api/v1/groups/{q(name)}/members/{q(email)}")
    if as_json:
        print_json(data)
        return
    click.echo(f"{escape_controls(email)} no longer sees group {name!r}")


@groups.command("add-drive")
@click.argument("name", type=GROUP)
@click.argument("drive", type=DRIVE)
@json_option
@click.pass_obj
def add_drive(obj, name, drive, as_json):
    """Move a drive into a group."""
    data = obj.client.patch(f"/api/v1/sources/{q(drive)}", {"group": name})
    if as_json:
        print_json(data)
        return
    click.echo(f"drive {data['name']!r} is now in group {name!r}")


def register(cli):
    cli.add_command(groups)
