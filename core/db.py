"""Database engines, sessions and migrations, one database per service."""

from __future__ import annotations

import contextlib
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import DateTime, String, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from core.settings import get_settings

SERVICES = ("catalog", "collections", "sharing")


# Ids are drawn 256 at a time, because a scan makes one per new file and a
# system call per id costs more than the rest of making it.
_ids: list[str] = []
_IDS_PER_DRAW = 256
# A forked child must not hand out the ids its parent holds.
os.register_at_fork(after_in_child=_ids.clear)


def new_id() -> str:
    """A random id of 32 hex characters (128 bits).

    Plain random bytes: ``uuid4()`` costs four times as much for the same
    randomness less six bits.
    """
    try:
        return _ids.pop()
    except IndexError:
        random_hex = os.urandom(16 * _IDS_PER_DRAW).hex()
        _ids.extend(random_hex[start : start + 32] for start in range(0, len(random_hex), 32))
        return _ids.pop()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always returned timezone-aware.

    SQLite drops the zone, so values read back are re-tagged as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column")
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


def id_column_type():
    return String(32)


def database_url(service: str) -> str:
    settings = get_settings()
    url = getattr(settings, f"{service}_database_url")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _sqlite_pragmas(dbapi_connection, connection_record):
    cursor = dbapi_connection.cursor()
    # WAL lets the services read while a worker writes a scan batch.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def ensure_sqlite_dir(url: str) -> None:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def build_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        ensure_sqlite_dir(url)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=20, pool_recycle=1800
    )


_engines: dict[str, Engine] = {}
_factories: dict[str, sessionmaker] = {}
_lock = threading.Lock()


def get_engine(service: str) -> Engine:
    with _lock:
        if service not in _engines:
            _engines[service] = build_engine(database_url(service))
            _factories[service] = sessionmaker(
                _engines[service], expire_on_commit=False
            )
        return _engines[service]


def session_factory(service: str) -> sessionmaker:
    get_engine(service)
    return _factories[service]


@contextlib.contextmanager
def session_scope(service: str):
    """Yield a session that commits on success and rolls back on error."""
    session: Session = session_factory(service)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def close_session(session: Session) -> None:
    """Close a request's session; a connection the server dropped is discarded.

    Runs at request teardown, after the response is built and outside the
    error handlers, so a lost connection must not raise from here.
    """
    from sqlalchemy.exc import DBAPIError

    from core.logs import get_logger

    try:
        session.close()
    except DBAPIError as error:
        get_logger(__name__).warning(
            "session_close_failed", error=type(error.orig).__name__
        )
        session.invalidate()


def dispose_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _factories.clear()


class ServiceBase(DeclarativeBase):
    """Common base; each service subclasses it with its own metadata."""


def migrations_dir(service: str) -> Path:
    return Path(__file__).resolve().parent.parent / "services" / service / "migrations"


def alembic_config(service: str, url: str | None = None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir(service)))
    config.set_main_option("sqlalchemy.url", url or database_url(service))
    config.attributes["service"] = service
    return config


def upgrade(service: str, url: str | None = None) -> None:
    """Apply the service's Alembic migrations up to the newest revision."""
    from alembic import command

    config = alembic_config(service, url)
    ensure_sqlite_dir(config.get_main_option("sqlalchemy.url"))
    command.upgrade(config, "head")


def upgrade_all() -> None:
    for service in SERVICES:
        if migrations_dir(service).joinpath("env.py").exists():
            upgrade(service)
