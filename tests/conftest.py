"""Test fixtures shared by every test package.

Tests run against a real PostgreSQL and a real Redis. The settings are put
into the environment before any project module reads them: one fresh
database per service, and one Redis database number for the run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"
TEST_HOST = "testhost"

PG_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS_BASE = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
RUN_ID = uuid.uuid4().hex[:8]
WORKER_ID = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
DB_PREFIX = f"archive_test_{RUN_ID}_{WORKER_ID}"
REDIS_DB = 10 + (int(WORKER_ID[2:]) if WORKER_ID[2:].isdigit() else 0)

DATA_DIR = Path(tempfile.mkdtemp(prefix=f"archive-test-{WORKER_ID}-"))

os.environ.update(
    ARCHIVE_DATA_DIR=str(DATA_DIR),
    CATALOG_DATABASE_URL=f"{PG_URL}/{DB_PREFIX}_catalog",
    COLLECTIONS_DATABASE_URL=f"{PG_URL}/{DB_PREFIX}_collections",
    SHARING_DATABASE_URL=f"{PG_URL}/{DB_PREFIX}_sharing",
    REDIS_URL=f"{REDIS_BASE}/{REDIS_DB}",
    ARCHIVE_HOST=TEST_HOST,
    INTERNAL_SECRET="test-internal-secret",
    LINK_SECRET="test-link-secret-0123456789abcdef",
    SCAN_BATCH_SIZE="50",
    LOG_LEVEL="WARNING",
    CELERY_VISIBILITY_TIMEOUT="30",
    REDIS_KEY_PREFIX=f"test-{RUN_ID}:",
)


def corpus_dir() -> Path:
    return Path(os.environ.get("ARCHIVE_CORPUS_DIR", DEFAULT_CORPUS))


def _recreate_databases(create: bool = True) -> None:
    import psycopg

    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        for service in ("catalog", "collections", "sharing"):
            name = f"{DB_PREFIX}_{service}"
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if create:
                conn.execute(f'CREATE DATABASE "{name}"')


@pytest.fixture(scope="session", autouse=True)
def databases():
    _recreate_databases()
    from core.db import dispose_engines, upgrade_all

    upgrade_all()
    yield
    dispose_engines()
    _recreate_databases(create=False)
    shutil.rmtree(DATA_DIR, ignore_errors=True)


TRUNCATE_ATTEMPTS = 5


def _truncate_all() -> None:
    from core.db import SERVICES

    for service in SERVICES:
        _truncate_service(service)


def _truncate_service(service: str) -> None:
    """Empty every table of one service's database.

    A task that an earlier test queued (an export plan, an event delivery)
    may still hold locks in another order, and PostgreSQL then aborts one
    side as a deadlock. That is transient, so the TRUNCATE is retried.
    """
    import psycopg
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from core.db import get_engine

    engine = get_engine(service)
    for attempt in range(TRUNCATE_ATTEMPTS):
        try:
            with engine.begin() as conn:
                tables = [
                    row[0]
                    for row in conn.execute(
                        text(
                            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                            "AND tablename <> 'alembic_version'"
                        )
                    )
                ]
                if tables:
                    quoted = ", ".join(f'"{t}"' for t in tables)
                    conn.execute(text(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"))
            return
        except OperationalError as error:
            if not isinstance(error.orig, psycopg.errors.DeadlockDetected):
                raise
            if attempt == TRUNCATE_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


@pytest.fixture(autouse=True)
def clean_state(databases):
    _truncate_all()
    import redis

    # Only this run's keys: other runs may share the Redis database.
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    keys = list(client.scan_iter(match=f"*test-{RUN_ID}:*", count=1000))
    if keys:
        client.delete(*keys)
    yield


@pytest.fixture
def catalog_app():
    from services.catalog.app import create_app

    app = create_app()
    app.config["TESTING"] = True
    return app


@pytest.fixture
def catalog(catalog_app):
    return catalog_app.test_client()


class Member:
    """A member of an organization with an authenticated test client."""

    def __init__(self, client, org_id, user_id, token, email):
        self.client = client
        self.org_id = org_id
        self.user_id = user_id
        self.token = token
        self.email = email

    @property
    def headers(self):
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path, **kwargs):
        return self.client.get(path, headers=self.headers, **kwargs)

    def post(self, path, **kwargs):
        return self.client.post(path, headers=self.headers, **kwargs)

    def patch(self, path, **kwargs):
        return self.client.patch(path, headers=self.headers, **kwargs)

    def delete(self, path, **kwargs):
        return self.client.delete(path, headers=self.headers, **kwargs)

    def add_member(self, email, role):
        response = self.post("/api/v1/members", json={"email": email, "role": role})
        assert response.status_code == 201, response.json
        data = response.json
        return Member(self.client, self.org_id, data["user_id"], data["token"], email)


def make_org(client, name="Acme", email=None) -> Member:
    email = email or f"owner-{uuid.uuid4().hex[:6]}@example.com"
    response = client.post(
        "/api/v1/orgs",
        json={"name": name, "email": email},
        headers={"X-Internal-Secret": os.environ["INTERNAL_SECRET"]},
    )
    assert response.status_code == 201, response.json
    data = response.json
    return Member(client, data["org_id"], data["user_id"], data["token"], email)


@pytest.fixture
def owner(catalog) -> Member:
    return make_org(catalog)


@pytest.fixture
def drive_factory(tmp_path):
    """Create folders that act as drives: ``drive_factory(name, files)``."""

    def make(name: str, files: dict[str, bytes] | None = None) -> Path:
        root = tmp_path / "mnt" / name
        root.mkdir(parents=True)
        for rel, data in (files or {}).items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return root

    return make


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A writable copy of the media corpus (the original is read-only)."""
    source = corpus_dir()
    if not (source / "MANIFEST.tsv").exists():
        pytest.skip(f"media corpus not found at {source}; set ARCHIVE_CORPUS_DIR")
    target = tmp_path / "corpus"
    shutil.copytree(source, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    return target


def spawn_celery_worker(
    queues: str,
    node: str,
    concurrency: int,
    env: dict,
    log_path: Path,
    extra_args: tuple[str, ...] = (),
) -> subprocess.Popen:
    """Start a Celery worker process in its own session, logging to ``log_path``.

    ``queues`` is the comma-separated list of queues it consumes and
    ``node`` its node name (``name@host``).
    """
    command = [
        sys.executable, "-m", "celery", "-A", "workers.celery_worker", "worker",
        "-Q", queues, "-c", str(concurrency), "-l", "INFO", "-n", node,
        "--without-mingle", "--without-gossip", *extra_args,
    ]  # fmt: skip
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            command,
            env=env,
            cwd=str(ROOT),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process_group(process: subprocess.Popen, timeout: float = 20) -> None:
    """Stop a process started in its own session, and its children: SIGTERM, then SIGKILL."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="session")
def celery_worker_process():
    """A real Celery worker in its own process, consuming every test queue."""
    process = spawn_celery_worker(
        f"default,events,exports,drive.{TEST_HOST}",
        f"test-{RUN_ID}@{TEST_HOST}",
        2,
        dict(os.environ),
        DATA_DIR / "worker.log",
    )
    yield process
    stop_process_group(process)


def wait_for(predicate, timeout=60.0, interval=0.1, message="condition"):
    """Poll ``predicate`` until it returns a truthy value, and return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)
