"""Fast bulk writes of scan staging rows.

PostgreSQL gets ``COPY FROM STDIN`` through psycopg; SQLite gets an
``executemany`` insert. Both run on the caller's connection and transaction.
"""

from __future__ import annotations

import contextlib
import datetime
import re
from typing import Callable, Iterator

from sqlalchemy import Connection, Table


# Lines of COPY text gathered before they are handed to psycopg.
LINES_PER_WRITE = 256
_SPECIAL = re.compile(r"[\\\t\n\r]")
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}

RowFormat = Callable[[tuple], str]


def copy_text(value: str | None) -> str:
    """Return ``value`` as a field of PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    if _SPECIAL.search(value) is None:
        return value
    return _SPECIAL.sub(lambda match: _ESCAPES[match.group()], value)


def _field(value) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return copy_text(value)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\\\x" + bytes(value).hex()
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"no COPY text form for {type(value).__name__}")


def copy_line(row: tuple) -> str:
    """Return ``row`` as one line of COPY text (str, bytes, int, bool, datetime or None)."""
    return "\t".join(map(_field, row)) + "\n"


def needs_escape(value: str) -> bool:
    """Return True when ``value`` contains a character that COPY text must escape."""
    return _SPECIAL.search(value) is not None


def bulk_insert(
    conn: Connection,
    table: Table,
    columns: list[str],
    rows: list[tuple],
    row_format: RowFormat | None = None,
):
    if not rows:
        return
    with copy_rows(conn, table, columns, row_format) as write_row:
        for row in rows:
            write_row(row)


@contextlib.contextmanager
def copy_rows(
    conn: Connection,
    table: Table,
    columns: list[str],
    row_format: RowFormat | None = None,
) -> Iterator[Callable[[tuple], None]]:
    """Yield a function that inserts one row into ``table``.

    On PostgreSQL rows are sent as they come, a few hundred at a time, so the
    server stores rows while the caller prepares the next ones. The block's
    exit waits until the server has stored the last one. ``row_format``, when
    given, turns a row into one line of COPY text ending in a newline. A
    formatter written for one table's rows runs several times faster than
    psycopg's general row formatting. On SQLite the
    rows are inserted when the block exits. If the block raises, no row is
    inserted.
    """
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        column_list = ", ".join(columns)
        with raw.cursor() as cursor:
            with cursor.copy(f"COPY {table.name} ({column_list}) FROM STDIN") as copy:
                if row_format is None:
                    yield copy.write_row
                    return
                lines: list[str] = []

                def write_row(row: tuple) -> None:
                    lines.append(row_format(row))
                    if len(lines) >= LINES_PER_WRITE:
                        copy.write("".join(lines))
                        lines.clear()

                yield write_row
                if lines:
                    copy.write("".join(lines))
        return
    rows: list[tuple] = []
    yield rows.append
    if rows:
        placeholders = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({placeholders})"
        conn.exec_driver_sql(sql, rows)
