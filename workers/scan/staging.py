"""Fast bulk writes of scan staging rows.

PostgreSQL gets ``COPY FROM STDIN`` through psycopg; SQLite gets an
``executemany`` insert. Both run on the caller's connection and transaction.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from sqlalchemy import Connection, Table


def bulk_insert(conn: Connection, table: Table, columns: list[str], rows: list[tuple]):
    if not rows:
        return
    with copy_rows(conn, table, columns) as write_row:
        for row in rows:
            write_row(row)


@contextlib.contextmanager
def copy_rows(
    conn: Connection, table: Table, columns: list[str]
) -> Iterator[Callable[[tuple], None]]:
    """Yield a function that inserts one row into ``table``.

    On PostgreSQL each row is sent as it comes, so the server stores rows
    while the caller prepares the next ones. The block's exit waits until
    the server has stored the last one. On SQLite the rows are inserted when
    the block exits. If the block raises, no row is inserted.
    """
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        column_list = ", ".join(columns)
        with raw.cursor() as cursor:
            with cursor.copy(f"COPY {table.name} ({column_list}) FROM STDIN") as copy:
                yield copy.write_row
        return
    rows: list[tuple] = []
    yield rows.append
    if rows:
        placeholders = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({placeholders})"
        conn.exec_driver_sql(sql, rows)
