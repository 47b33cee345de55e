"""The per-test reset of the databases survives a deadlock with a leftover task."""

from __future__ import annotations

import threading

from sqlalchemy import text

from core.db import get_engine
from tests.conftest import _truncate_service, wait_for


def _tables(conn) -> list[str]:
    rows = conn.execute(
        text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version'"
        )
    )
    return [row[0] for row in rows]


def test_truncate_retries_after_deadlock():
    engine = get_engine("catalog")
    with engine.connect() as probe:
        tables = _tables(probe)
    first, last = tables[0], tables[-1]
    errors: list[BaseException] = []

    # A leftover task's transaction: it holds the table the TRUNCATE locks
    # last, and once the TRUNCATE waits for it, requests the one it locked
    # first. PostgreSQL aborts one side as a deadlock.
    with engine.connect() as other:
        other.execute(text(f'LOCK TABLE "{last}" IN ACCESS SHARE MODE'))
        truncate = threading.Thread(
            target=lambda: _run(errors, _truncate_service, "catalog"), daemon=True
        )
        truncate.start()
        other_pid = other.execute(text("SELECT pg_backend_pid()")).scalar()

        def truncate_waits() -> bool:
            with engine.connect() as watcher:
                blocked = watcher.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE :pid = ANY(pg_blocking_pids(pid))"
                    ),
                    {"pid": other_pid},
                ).scalar()
            return blocked > 0

        wait_for(truncate_waits, 30, 0.05, "the TRUNCATE to wait for the other transaction")
        try:
            other.execute(text(f'LOCK TABLE "{first}" IN ACCESS SHARE MODE'))
        except Exception:  # the other side may be the one PostgreSQL aborts
            pass
        other.rollback()
    truncate.join(60)
    assert not truncate.is_alive()
    assert errors == []


def _run(errors: list, function, *args) -> None:
    try:
        function(*args)
    except BaseException as error:  # reported by the test's assert
        errors.append(error)
