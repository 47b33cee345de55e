"""Fast bulk writes of scan staging rows.

PostgreSQL gets ``COPY FROM STDIN`` through psycopg; SQLite gets an
``executemany`` insert. Both run on the caller's connection and transaction.
"""

from __future__ import annotations

from sqlalchemy import Connection, Table


def bulk_insert(conn: Connection, table: Table, columns: list[str], rows: list[tuple]):
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        column_list = ", ".join(columns)
        with raw.cursor() as cursor:
            with cursor.copy(f"COPY {table.name} ({column_list}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        return
    placeholders = ", ".join("?" for _ in columns)
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({placeholders})"
    conn.exec_driver_sql(sql, rows)
