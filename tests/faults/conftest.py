"""Fixtures for fault-injection tests: killable workers and private servers."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.faults.servers import PostgresCluster, RedisServer, Worker

# A running scan or export whose heartbeat is older than this many seconds is
# re-sent by the recovery tasks. The product's minimum is 2 s. The scanner
# writes its heartbeat every 2 s, so 3 s leaves a healthy scan about 1 s of
# margin before it counts as stale.
STALE_AFTER_SECONDS = 3


@pytest.fixture
def drive_host() -> str:
    """A host name whose drive queue only this test's workers consume."""
    return f"fault-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def fast_stale(monkeypatch):
    """Make this process treat heartbeats older than 3 s as stale."""
    from core.settings import reset_settings

    monkeypatch.setenv("STALE_AFTER_SECONDS", str(STALE_AFTER_SECONDS))
    reset_settings()
    yield STALE_AFTER_SECONDS
    monkeypatch.undo()
    reset_settings()


@pytest.fixture
def worker_factory(tmp_path, drive_host):
    """Start Celery workers on ``drive_host``: ``worker_factory(concurrency, queues, **env)``.

    Every worker started is stopped at teardown, killed or not.
    """
    started: list[Worker] = []
    log_path = tmp_path / "worker.log"
    log_path.touch()

    def start(
        concurrency: int = 1, queues: tuple[str, ...] = (), **extra_env: str
    ) -> Worker:
        env = dict(os.environ)
        env.update(
            ARCHIVE_HOST=drive_host,
            STALE_AFTER_SECONDS=str(STALE_AFTER_SECONDS),
            **extra_env,
        )
        worker = Worker(drive_host, log_path, env, concurrency, queues)
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def redis_server(tmp_path):
    """A private Redis that the test may stop and start again on the same port."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def postgres_cluster():
    """A private, running PostgreSQL cluster that the test may stop and restart."""
    cluster = PostgresCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
