"""Human output with rich, or JSON with ``--json``."""

from __future__ import annotations

import functools
import json

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

# Emoji codes stay off, so a name such as "a:smile:b.jpg" prints as written.
console = Console(emoji=False)

# C0 controls, DEL and C1 controls, shown as Python string escapes.
CONTROL_ESCAPES = {code: f"\\x{code:02x}" for code in [*range(0x20), *range(0x7F, 0xA0)]}
CONTROL_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


def escape_controls(value) -> str:
    """Return ``str(value)`` with each control character written as an escape.

    ESC becomes ``\\x1b`` and a newline ``\\n``, so user data cannot move the
    cursor, recolour the terminal or forge extra lines.

    NOTE: backslashes are not escaped, so a name that contains the text
    ``\\x1b`` prints the same as one that contains ESC.
    """
    return str(value).translate(CONTROL_ESCAPES)


def escape_markup(value) -> str:
    """Return ``str(value)`` with control characters and rich markup escaped.

    Use it for user data inside a string that ``console.print`` or a rich
    column parses as markup, so ``[bold]`` in a file name prints as text.
    """
    return escape(escape_controls(value))


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
        grid.add_row(*[Text("" if cell is None else escape_controls(cell)) for cell in row])
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
