"""Prometheus metrics: task counters, queue lengths, backlogs, multiprocess mode.

Scrapes are parsed with prometheus_client's text parser. The Celery worker and
gunicorn tests start their own processes on free ports, each with a
multiprocess folder of its own, scrape them over 127.0.0.1, and stop them
before the test ends.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid

import psutil
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from core import metrics
from core.celery_app import celery_app, drive_queue
from core.db import session_scope
from core.settings import SettingsError, load_settings
from services.catalog.models import Export, File, Organization, Scan, Source
from tests.conftest import (
    DATA_DIR,
    PG_URL,
    ROOT,
    RUN_ID,
    TEST_HOST,
    spawn_celery_worker,
    stop_process_group,
    wait_for,
)

PROCESS_START_TIMEOUT_S = 30
TASK_TIMEOUT_S = 30


def parse_samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Map (sample name, label items) to the value of every sample in a scrape."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sample(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def sample_names(samples: dict) -> set[str]:
    return {name for name, _ in samples}


def scrape_client(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200, response.data
    return parse_samples(response.get_data(as_text=True))


def scrape_http(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return parse_samples(response.read().decode())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_stale_sample(folder) -> None:
    """Record a counter sample in ``folder`` from another process, as an earlier run would."""
    code = (
        "from prometheus_client import Counter\n"
        "Counter('archive_celery_tasks', 'stale', ['task', 'outcome'])"
        ".labels('stale.task', 'succeeded').inc()\n"
    )
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(folder))
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


class FakeTask:
    def __init__(self, name):
        self.name = name


class RecordingLogger:
    def __init__(self):
        self.warnings = []
        self.errors = []

    def info(self, event, **fields):
        pass

    def warning(self, event, **fields):
        self.warnings.append((event, fields))

    def error(self, event, **fields):
        self.errors.append((event, fields))


# Signal receivers, called directly and scraped through the catalog's /metrics.


def test_task_signals_move_counters(catalog):
    name = f"metrics.test_{uuid.uuid4().hex[:8]}"
    task = FakeTask(name)
    metrics.record_task_start(task_id="t1", task=task)
    metrics.record_task_end(task_id="t1", task=task, state="SUCCESS")
    metrics.record_task_start(task_id="t2", task=task)
    metrics.record_task_failure(sender=task, task_id="t2", exception=KeyError("x"))
    metrics.record_task_end(task_id="t2", task=task, state="FAILURE")
    metrics.record_task_start(task_id="t3", task=task)
    metrics.record_task_end(task_id="t3", task=task, state="RETRY")

    samples = scrape_client(catalog)

    total = "archive_celery_tasks_total"
    assert sample(samples, total, task=name, outcome="succeeded") == 1
    assert sample(samples, total, task=name, outcome="failed") == 1
    assert sample(samples, total, task=name, outcome="retried") == 1
    count = "archive_celery_task_seconds_count"
    assert sample(samples, count, task=name, outcome="succeeded") == 1
    assert sample(samples, count, task=name, outcome="failed") == 1
    failures = "archive_celery_task_failures_total"
    assert sample(samples, failures, task=name, exception="KeyError") == 1


def test_task_end_without_start_counts_no_duration(catalog):
    name = f"metrics.test_{uuid.uuid4().hex[:8]}"
    metrics.record_task_end(task_id="never-started", task=FakeTask(name), state="SUCCESS")

    samples = scrape_client(catalog)

    assert sample(samples, "archive_celery_tasks_total", task=name, outcome="succeeded") == 1
    seconds = "archive_celery_task_seconds_count"
    assert sample(samples, seconds, task=name, outcome="succeeded") is None


def test_request_latency_recorded(catalog):
    catalog.get("/health")
    catalog.get("/health")

    samples = scrape_client(catalog)

    count = sample(
        samples,
        "archive_http_request_seconds_count",
        service="catalog",
        method="GET",
        route="/health",
        status="200",
    )
    assert count is not None
    assert count >= 2


# A real prefork worker with the multiprocess folder and the HTTP port.


@pytest.fixture
def metrics_worker(tmp_path):
    """Start a prefork worker that consumes one queue of its own and serves metrics."""
    folder = tmp_path / "worker-metrics"
    folder.mkdir()
    write_stale_sample(folder)
    port = free_port()
    queue = f"metrics-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(folder), WORKER_METRICS_PORT=str(port))
    log_path = DATA_DIR / f"{queue}.log"
    process = spawn_celery_worker(queue, f"{queue}@{TEST_HOST}", 2, env, log_path)

    def serving():
        assert process.poll() is None, f"worker exited; see {log_path}"
        try:
            scrape_http(port)
        except OSError:
            return False
        return True

    wait_for(serving, PROCESS_START_TIMEOUT_S, 0.2, f"worker metrics on port {port}")
    yield {"port": port, "queue": queue, "folder": folder, "log": log_path}
    stop_process_group(process)


def test_worker_counts_real_tasks(metrics_worker):
    port, queue = metrics_worker["port"], metrics_worker["queue"]
    total = "archive_celery_tasks_total"

    first = scrape_http(port)
    # The folder reset at worker start removed the earlier run's sample.
    assert sample(first, total, task="stale.task", outcome="succeeded") is None

    for _ in range(4):
        celery_app.send_task("renditions.sweep", queue=queue)
    # A missing argument makes the task raise TypeError.
    celery_app.send_task("checksums.source", args=[], queue=queue)
    # An event without a topic raises KeyError, which the consumer retries.
    celery_app.send_task("collections.files_updated", args=[{}], queue=queue)

    def counted():
        samples = scrape_http(port)
        done = (
            sample(samples, total, task="renditions.sweep", outcome="succeeded") == 4
            and sample(samples, total, task="checksums.source", outcome="failed") == 1
            and (sample(samples, total, task="collections.files_updated", outcome="retried") or 0)
            >= 1
        )
        return samples if done else None

    samples = wait_for(counted, TASK_TIMEOUT_S, 0.2, f"task counters; see {metrics_worker['log']}")

    seconds = "archive_celery_task_seconds_count"
    assert sample(samples, seconds, task="renditions.sweep", outcome="succeeded") == 4
    failures = "archive_celery_task_failures_total"
    assert sample(samples, failures, task="checksums.source", exception="TypeError") == 1
    recorded_pids = {path.stem.rsplit("_", 1)[1] for path in metrics_worker["folder"].glob("*.db")}
    assert recorded_pids, "the worker's processes wrote no sample files"


def test_worker_metrics_off_by_default():
    settings = load_settings({})

    assert settings.worker_metrics_port == 0


@pytest.mark.parametrize("raw", ["-1", "65536", "ninety"])
def test_worker_metrics_port_rejects_invalid(raw):
    with pytest.raises(SettingsError, match="WORKER_METRICS_PORT"):
        load_settings({"WORKER_METRICS_PORT": raw})


class FakeWorker:
    def __init__(self, pool_cls):
        self.pool_cls = pool_cls


@pytest.fixture
def worker_metrics_port(monkeypatch):
    """Set ``WORKER_METRICS_PORT`` to a free port for this test's settings."""
    from core.settings import reset_settings

    port = free_port()
    monkeypatch.setenv("WORKER_METRICS_PORT", str(port))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    reset_settings()
    yield port
    monkeypatch.undo()
    reset_settings()


def test_worker_server_off_for_prefork_without_folder(worker_metrics_port, monkeypatch):
    logger = RecordingLogger()
    monkeypatch.setattr(metrics, "log", logger)

    started = metrics.start_worker_metrics_server(sender=FakeWorker("prefork"))

    assert started is None
    assert [event for event, _ in logger.errors] == ["worker_metrics_disabled"]
    with pytest.raises(OSError):
        scrape_http(worker_metrics_port)


def test_worker_server_serves_solo_pool(worker_metrics_port):
    name = f"metrics.test_{uuid.uuid4().hex[:8]}"
    metrics.record_task_end(task_id="solo", task=FakeTask(name), state="SUCCESS")

    server, thread = metrics.start_worker_metrics_server(sender=FakeWorker("solo"))
    try:
        samples = scrape_http(worker_metrics_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

    assert sample(samples, "archive_celery_tasks_total", task=name, outcome="succeeded") == 1


def test_worker_server_port_in_use(worker_metrics_port, monkeypatch):
    logger = RecordingLogger()
    monkeypatch.setattr(metrics, "log", logger)

    with socket.socket() as holder:
        holder.bind(("0.0.0.0", worker_metrics_port))
        holder.listen()
        started = metrics.start_worker_metrics_server(sender=FakeWorker("threads"))

    assert started is None
    assert [event for event, _ in logger.errors] == ["worker_metrics_failed"]


# gunicorn with two workers sharing one multiprocess folder.


def gunicorn_worker_pids(master: subprocess.Popen) -> set[int]:
    return {child.pid for child in psutil.Process(master.pid).children()}


def test_gunicorn_scrape_sums_every_worker(tmp_path):
    folder = tmp_path / "web-metrics"
    folder.mkdir()
    write_stale_sample(folder)
    port = free_port()
    env = dict(
        os.environ,
        PROMETHEUS_MULTIPROC_DIR=str(folder),
        PORT=str(port),
        WEB_CONCURRENCY="2",
        GUNICORN_THREADS="1",
    )
    log_path = DATA_DIR / f"gunicorn-{port}.log"
    with open(log_path, "ab") as log_file:
        master = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py",
                "--bind", f"127.0.0.1:{port}", "services.catalog.app:create_app()",
            ],  # fmt: skip
            env=env,
            cwd=str(ROOT),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: len(gunicorn_worker_pids(master)) == 2,
            PROCESS_START_TIMEOUT_S,
            0.2,
            f"two gunicorn workers; see {log_path}",
        )
        wait_for(lambda: _health_ok(port), PROCESS_START_TIMEOUT_S, 0.2, "gunicorn to serve")
        old_workers = gunicorn_worker_pids(master)
        for _ in range(9):
            assert _health_ok(port)

        # HUP replaces every worker, so the next requests are served by new
        # processes while the old ones' counters stay in the folder.
        master.send_signal(signal.SIGHUP)
        wait_for(
            lambda: len(gunicorn_worker_pids(master) - old_workers) == 2
            and not gunicorn_worker_pids(master) & old_workers,
            PROCESS_START_TIMEOUT_S,
            0.2,
            "gunicorn to replace its workers",
        )
        wait_for(lambda: _health_ok(port), PROCESS_START_TIMEOUT_S, 0.2, "new workers to serve")
        for _ in range(9):
            assert _health_ok(port)

        health = dict(service="catalog", method="GET", route="/health", status="200")
        for _ in range(4):
            samples = scrape_http(port)
            assert sample(samples, "archive_http_request_seconds_count", **health) == 20
            assert sample(
                samples, "archive_celery_tasks_total", task="stale.task", outcome="succeeded"
            ) is None
        recorded_pids = {int(path.stem.rsplit("_", 1)[1]) for path in folder.glob("histogram_*.db")}
        assert recorded_pids & old_workers
        assert recorded_pids - old_workers
    finally:
        stop_process_group(master)


def _health_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


# Queue lengths read from the real Redis.


def push_messages(client, key: str, count: int) -> None:
    client.rpush(key, *[f"message-{i}" for i in range(count)])


def test_queue_lengths_sum_priorities():
    prefix = f"{os.environ['REDIS_KEY_PREFIX']}queues-{uuid.uuid4().hex[:6]}:"
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    push_messages(client, f"{prefix}default", 3)
    push_messages(client, f"{prefix}default\x06\x169", 2)
    push_messages(client, f"{prefix}events\x06\x163", 4)
    push_messages(client, f"{prefix}{drive_queue('shelf-host')}", 5)
    collector = metrics.BacklogCollector(key_prefix=prefix, drive_host="shelf-host")

    samples = parse_samples(_expose(collector))

    length = "archive_celery_queue_length"
    assert sample(samples, length, queue="default") == 5
    assert sample(samples, length, queue="events") == 4
    assert sample(samples, length, queue="exports") == 0
    assert sample(samples, length, queue="drive.shelf-host") == 5


def test_catalog_reports_drive_queue_of_each_source(catalog):
    """A host known only from the sources table gets its drive queue gauge."""
    org_id = insert_org()
    insert_source(org_id, "nas", "online", host="metrics-nas")
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    # No worker consumes this queue, so the messages stay.
    push_messages(client, f"{os.environ['REDIS_KEY_PREFIX']}drive.metrics-nas", 3)

    samples = scrape_client(catalog)

    length = "archive_celery_queue_length"
    assert sample(samples, length, queue="drive.metrics-nas") == 3
    assert sample(samples, length, queue=f"drive.{TEST_HOST}") is not None
    assert sample(samples, length, queue="default") is not None




def test_unreachable_redis_leaves_queue_gauge_out(monkeypatch):
    logger = RecordingLogger()
    monkeypatch.setattr(metrics, "log", logger)
    collector = metrics.BacklogCollector(redis_url=f"redis://127.0.0.1:{free_port()}/0")

    samples = parse_samples(_expose(collector))

    names = sample_names(samples)
    assert "archive_celery_queue_length" not in names
    assert "archive_scans" in names
    assert len(logger.warnings) == 1
    event, fields = logger.warnings[0]
    assert event == "metrics_collect_failed"
    assert fields["part"] == "redis"
    assert fields["error"].startswith("ConnectionError")


def test_repeated_failures_warn_once_per_interval(monkeypatch):
    logger = RecordingLogger()
    monkeypatch.setattr(metrics, "log", logger)
    collector = metrics.BacklogCollector(redis_url=f"redis://127.0.0.1:{free_port()}/0")

    for _ in range(3):
        _expose(collector)

    assert len(logger.warnings) == 1
    monkeypatch.setattr(collector._warnings, "_interval", 0.0)
    _expose(collector)
    assert len(logger.warnings) == 2
    assert logger.warnings[1][1]["failures_since_last_warning"] == 2


def test_unreachable_database_leaves_backlog_out():
    engine = create_engine(f"{PG_URL}/archive_test_{RUN_ID}_missing")
    collector = metrics.BacklogCollector(engine=engine)

    samples = parse_samples(_expose(collector))

    names = sample_names(samples)
    for name in ("archive_scans", "archive_exports", "archive_files_rendition_pending"):
        assert name not in names
    assert sample(samples, "archive_celery_queue_length", queue="default") is not None
    engine.dispose()


def test_catalog_metrics_survive_failures(catalog_app, monkeypatch):
    monkeypatch.setattr(metrics, "_redis_url", lambda: f"redis://127.0.0.1:{free_port()}/0")
    client = catalog_app.test_client()

    response = client.get("/metrics")

    assert response.status_code == 200
    assert b"archive_celery_queue_length" not in response.data
    assert b"archive_http_request_seconds" in response.data


def test_other_services_have_no_backlog():
    from services.collections.app import create_app

    client = create_app().test_client()

    names = sample_names(scrape_client(client))

    assert "archive_scans" not in names
    assert "archive_celery_queue_length" not in names


def _expose(collector) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


# Backlogs counted from real catalog rows.


def insert_org() -> str:
    with session_scope("catalog") as session:
        org = Organization(name="Metrics")
        session.add(org)
        session.flush()
        return org.id


def insert_source(org_id: str, name: str, state: str, host: str | None = None) -> str:
    with session_scope("catalog") as session:
        source = Source(org_id=org_id, name=name, volume_id=f"vol-{name}", state=state, host=host)
        session.add(source)
        session.flush()
        return source.id


def insert_file(org_id, source_id, index, rendition="done", checksum="c" * 64,
                fingerprint="f" * 40, presence="present") -> None:  # fmt: skip
    path = f"file-{index}.jpg"
    with session_scope("catalog") as session:
        session.add(
            File(
                org_id=org_id,
                source_id=source_id,
                path=path,
                path_bytes=path.encode(),
                path_hash=uuid.uuid4().hex,
                folder="",
                folder_hash="root",
                name=path,
                name_lower=path,
                size=1,
                mtime_ns=0,
                fingerprint=fingerprint,
                checksum=checksum,
                rendition_state=rendition,
                presence=presence,
            )
        )


def test_backlog_counts_real_rows(catalog):
    org_id = insert_org()
    online = insert_source(org_id, "online", "online", host=TEST_HOST)
    offline = insert_source(org_id, "offline", "offline")
    insert_file(org_id, online, 1, rendition="pending", checksum=None)
    insert_file(org_id, online, 2, rendition="pending")
    insert_file(org_id, online, 3, checksum=None)
    insert_file(org_id, online, 4)
    # Not counted: a missing file, and a file without a fingerprint yet.
    insert_file(org_id, online, 5, rendition="pending", checksum=None, presence="missing")
    insert_file(org_id, online, 6, checksum=None, fingerprint="")
    insert_file(org_id, offline, 7, rendition="pending", checksum=None)
    with session_scope("catalog") as session:
        for status in ("queued", "queued", "running", "finalizing", "succeeded", "failed"):
            session.add(Scan(org_id=org_id, source_id=online, status=status))
        for status in ("queued", "waiting", "waiting", "running", "succeeded", "expired"):
            session.add(
                Export(org_id=org_id, user_id="u", name="e", file_ids=[], status=status)
            )

    samples = scrape_client(catalog)

    assert sample(samples, "archive_scans", status="queued") == 2
    assert sample(samples, "archive_scans", status="running") == 1
    assert sample(samples, "archive_scans", status="finalizing") == 1
    assert sample(samples, "archive_exports", status="queued") == 1
    assert sample(samples, "archive_exports", status="waiting") == 2
    assert sample(samples, "archive_exports", status="running") == 1
    renditions = "archive_files_rendition_pending"
    assert sample(samples, renditions, source_state="online") == 2
    assert sample(samples, renditions, source_state="offline") == 1
    checksums = "archive_files_checksum_pending"
    assert sample(samples, checksums, source_state="online") == 2
    assert sample(samples, checksums, source_state="offline") == 1


def test_backlog_zero_without_rows(catalog):
    samples = scrape_client(catalog)

    for status in ("queued", "running", "finalizing"):
        assert sample(samples, "archive_scans", status=status) == 0
    for status in ("queued", "waiting", "running"):
        assert sample(samples, "archive_exports", status=status) == 0
    for state in ("online", "offline"):
        assert sample(samples, "archive_files_rendition_pending", source_state=state) == 0
        assert sample(samples, "archive_files_checksum_pending", source_state=state) == 0
