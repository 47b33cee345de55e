"""Bulk writes of many rows in one statement or one COPY.

On PostgreSQL, rows go through COPY, which measured about four times faster
than a multi-row INSERT for 10,000 items (bench/collections/run.py). Other
databases get an executemany INSERT.
"""

from __future__ import annotations

from sqlalchemy import Table, text
from sqlalchemy.orm import Session


def is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _copy(session: Session, table_name: str, columns: list[str], rows: list[dict]) -> None:
    # The driver connection is the one the session's transaction runs on,
    # so the copied rows commit or roll back with the rest of it.
    driver = session.connection().connection.driver_connection
    column_list = ", ".join(columns)
    with driver.cursor() as cursor:
        with cursor.copy(f"COPY {table_name} ({column_list}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[column] for column in columns])


def insert_rows(session: Session, table: Table, rows: list[dict]) -> None:
    """Insert ``rows`` into ``table``; every row must have the same keys."""
    if not rows:
        return
    if is_postgresql(session):
        _copy(session, table.name, list(rows[0]), rows)
    else:
        session.execute(table.insert(), rows)


def upsert_newer_rows(
    session: Session, table: Table, rows: list[dict], order_column: str
) -> bool:
    """Insert rows or update existing ones whose ``order_column`` is older.

    Returns False without writing when the database is not PostgreSQL, so
    the caller falls back to its own upsert.
    """
    if not is_postgresql(session):
        return False
    if not rows:
        return True
    columns = list(rows[0])
    staging = f"{table.name}_incoming"
    session.execute(
        text(f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {table.name}) ON COMMIT DELETE ROWS")
    )
    _copy(session, staging, columns, rows)
    column_list = ", ".join(columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "id")
    session.execute(
        text(
            f"INSERT INTO {table.name} ({column_list}) SELECT {column_list} FROM {staging} "
            f"ON CONFLICT (id) DO UPDATE SET {updates} "
            f"WHERE {table.name}.{order_column} < excluded.{order_column}"
        )
    )
    session.execute(text(f"DELETE FROM {staging}"))
    return True
