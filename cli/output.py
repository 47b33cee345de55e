"""Human output with rich, or JSON with ``--json``."""

from __future__ import annotations

import functools
import json

import click
from rich.console import Console
from rich.table import Table

console = Console()


def json_option(func):
    """Add ``--json`` to a command; the command receives ``as_json``."""

    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def print_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def human_size(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def table(title: str | None, columns: list[str], rows: list[list]) -> None:
    grid = Table(title=title, show_lines=False)
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*["" if cell is None else str(cell) for cell in row])
    console.print(grid)


def files_table(items: list[dict], title: str | None = None) -> None:
    table(
        title,
        ["id", "drive", "path", "type", "size", "state"],
        [
            [f["id"], f["drive"], f["path"], f["media_type"], human_size(f["size"]), f["state"]]
            for f in items
        ],
    )
