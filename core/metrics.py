"""Prometheus metrics of the web services and the Celery workers.

Processes record into prometheus_client's default registry. When
``PROMETHEUS_MULTIPROC_DIR`` is set (production: gunicorn workers and Celery
prefork children), each process writes its samples to files in that folder
and every scrape sums the files of all processes, so any process returns the
totals. Without the variable (tests, the embedded profile) each process
reports only its own samples.

The catalog service also reports Celery queue lengths and work backlogs,
read from Redis and the catalog database at scrape time by
``BacklogCollector``.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from redis import RedisError
from sqlalchemy.exc import SQLAlchemyError

from core.logs import get_logger

log = get_logger(__name__)

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUEST_SECONDS = Histogram(
    "archive_http_request_seconds",
    "HTTP request latency in seconds",
    ["service", "method", "route", "status"],
)

# Histogram children by label values. ``labels()`` checks and looks up its
# arguments on every call, which took longer than a fast request's view.
# So each child is looked up once.
_request_children: dict[tuple, object] = {}


def observe_request(service: str, method: str, route: str, status: int, seconds: float) -> None:
    """Record one HTTP request's latency."""
    key = (service, method, route, status)
    child = _request_children.get(key)
    if child is None:
        child = REQUEST_SECONDS.labels(service, method, route, str(status))
        _request_children[key] = child
    child.observe(seconds)


# Tasks run from milliseconds (event consumers) to hours (scans, exports).
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600)

TASKS = Counter(
    "archive_celery_tasks",
    "Celery tasks that finished in a worker, by task name and outcome",
    ["task", "outcome"],
)
TASK_SECONDS = Histogram(
    "archive_celery_task_seconds",
    "Run time of Celery tasks in seconds, by task name and outcome",
    ["task", "outcome"],
    buckets=TASK_BUCKETS,
)
TASK_FAILURES = Counter(
    "archive_celery_task_failures",
    "Celery task failures by task name and exception class, including hard "
    "time limits and lost worker processes",
    ["task", "exception"],
)

# Celery task states (task_postrun's ``state``) to outcome label values.
OUTCOMES = {
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "RETRY": "retried",
    "REJECTED": "rejected",
    "IGNORED": "ignored",
}


def multiprocess_dir() -> Path | None:
    """Return the multiprocess folder, or None in single-process mode."""
    value = os.environ.get(MULTIPROCESS_DIR_ENV)
    return Path(value) if value else None


def reset_multiprocess_dir() -> None:
    """Create the multiprocess folder and delete the samples of earlier runs.

    Call it once in the parent process before it starts the processes that
    record, because counters would otherwise continue from a previous run.
    """
    folder = multiprocess_dir()
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    removed = 0
    for path in folder.glob("*.db"):
        path.unlink(missing_ok=True)
        removed += 1
    log.info("metrics_dir_reset", path=str(folder), removed_files=removed)


def mark_process_dead(pid: int) -> None:
    """Drop the live-gauge files of an exited process (multiprocess mode only)."""
    if multiprocess_dir() is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


def scrape_registry(extra_collectors=()) -> CollectorRegistry:
    """Build a registry with every process's samples plus ``extra_collectors``.

    A fresh registry per scrape keeps the extra collectors out of the default
    registry, which every ``create_app`` call in one process would share.
    """
    registry = CollectorRegistry()
    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)
    for collector in extra_collectors:
        registry.register(collector)
    return registry


# Celery signal receivers. They run in the process that runs the task (a
# prefork child), except task_failure for hard time limits and lost workers,
# which Celery sends from the worker's main process.

_task_started: dict[str, float] = {}


def record_task_start(task_id=None, **_) -> None:
    if task_id:
        _task_started[task_id] = time.monotonic()


def record_task_end(task_id=None, task=None, state=None, **_) -> None:
    started = _task_started.pop(task_id, None)
    name = getattr(task, "name", None) or "unknown"
    outcome = OUTCOMES.get(state, str(state).lower())
    TASKS.labels(name, outcome).inc()
    if started is not None:
        TASK_SECONDS.labels(name, outcome).observe(time.monotonic() - started)


def record_task_failure(sender=None, exception=None, **_) -> None:
    name = getattr(sender, "name", None) or "unknown"
    TASK_FAILURES.labels(name, type(exception).__name__).inc()


def on_worker_process_exit(pid=None, **_) -> None:
    if pid:
        mark_process_dead(pid)


def start_worker_metrics_server(sender=None, **_) -> tuple | None:
    """Serve the worker's task metrics over HTTP when ``WORKER_METRICS_PORT`` is set.

    Runs in the worker's main process at ``worker_init``, before the pool
    starts its child processes. Returns prometheus_client's server and thread,
    or None when the server is off or could not start.
    """
    from core.settings import get_settings

    reset_multiprocess_dir()
    port = get_settings().worker_metrics_port
    if not port:
        return None
    if multiprocess_dir() is None and _uses_prefork_pool(sender):
        log.error(
            "worker_metrics_disabled",
            port=port,
            reason=(
                f"the prefork pool records tasks in child processes, so set "
                f"{MULTIPROCESS_DIR_ENV} to an empty folder, or use --pool solo "
                f"or --pool threads"
            ),
        )
        return None
    from prometheus_client import start_http_server

    try:
        server_and_thread = start_http_server(port, registry=scrape_registry())
    except OSError as error:
        log.error("worker_metrics_failed", port=port, error=str(error))
        return None
    log.info("worker_metrics_started", port=port, multiprocess=multiprocess_dir() is not None)
    return server_and_thread


def _uses_prefork_pool(worker) -> bool:
    from celery.concurrency import ALIASES

    pool = getattr(worker, "pool_cls", "prefork")
    if isinstance(pool, str):
        target = ALIASES.get(pool, pool)
    else:
        target = f"{pool.__module__}:{pool.__qualname__}"
    return target == ALIASES["prefork"]


# Queue lengths and backlogs of the catalog service, read at scrape time.

SCAN_STATUSES = ("queued", "running", "finalizing")
EXPORT_STATUSES = ("queued", "waiting", "running")
SOURCE_STATES = ("online", "offline")
# kombu's Redis transport keeps messages of priority p > 0 in the list
# "<queue>\x06\x16<p>", for the default priority steps 0, 3, 6 and 9.
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
# Limits each backlog query on PostgreSQL, so a slow query ends the scrape's
# database part instead of holding the request.
STATEMENT_TIMEOUT_MS = 5000
WARNING_INTERVAL_SECONDS = 60.0


class BacklogCollector:
    """Celery queue lengths from Redis and work backlogs from the catalog database.

    A failing Redis or database leaves its gauges out of the scrape and logs
    a warning, at most once a minute per part.
    """

    def __init__(self, redis_url=None, key_prefix=None, engine=None, drive_host=None):
        self._redis_url = redis_url
        self._key_prefix = key_prefix
        self._engine = engine
        self._drive_host = drive_host
        self._warnings = _RateLimitedWarnings(WARNING_INTERVAL_SECONDS)

    def describe(self):
        # An empty description keeps registration from running the queries.
        return []

    def collect(self):
        hosts = {self._drive_host or _settings().drive_host}
        try:
            families, source_hosts = self._read_database()
        except (SQLAlchemyError, OSError) as error:
            self._warnings.warn("database", error)
        else:
            hosts.update(source_hosts)
            yield from families
        try:
            lengths = self._read_queue_lengths(sorted(hosts))
        except (RedisError, OSError) as error:
            self._warnings.warn("redis", error)
        else:
            gauge = GaugeMetricFamily(
                "archive_celery_queue_length",
                "Messages waiting in a Celery queue in Redis, all priorities",
                labels=["queue"],
            )
            for queue, length in lengths.items():
                gauge.add_metric([queue], length)
            yield gauge

    def _read_queue_lengths(self, hosts) -> dict[str, int]:
        import redis

        from core.celery_app import QUEUE_DEFAULT, QUEUE_EVENTS, QUEUE_EXPORTS, drive_queue

        queues = [QUEUE_DEFAULT, QUEUE_EVENTS, QUEUE_EXPORTS]
        queues += [drive_queue(host) for host in hosts]
        prefix = self._key_prefix
        if prefix is None:
            prefix = _settings().redis_key_prefix
        client = redis.Redis.from_url(
            self._redis_url or _redis_url(), socket_timeout=2, socket_connect_timeout=2
        )
        try:
            pipeline = client.pipeline(transaction=False)
            for queue in queues:
                for step in PRIORITY_STEPS:
                    suffix = f"{PRIORITY_SEPARATOR}{step}" if step else ""
                    pipeline.llen(f"{prefix}{queue}{suffix}")
            sizes = iter(pipeline.execute())
        finally:
            client.close()
        return {queue: sum(next(sizes) for _ in PRIORITY_STEPS) for queue in queues}

    def _read_database(self):
        from sqlalchemy import case, func, select, text

        from services.catalog.models import Export, File, Scan, Source

        engine = self._engine or _catalog_engine()
        # NOTE: the statement timeout does not cover connecting, so an
        # unreachable database host blocks the scrape until the connect fails.
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
            scans = dict(
                conn.execute(
                    select(Scan.status, func.count())
                    .where(Scan.status.in_(SCAN_STATUSES))
                    .group_by(Scan.status)
                ).all()
            )
            exports = dict(
                conn.execute(
                    select(Export.status, func.count())
                    .where(Export.status.in_(EXPORT_STATUSES))
                    .group_by(Export.status)
                ).all()
            )
            # NOTE: no index covers these conditions, so this reads every row
            # of ``files`` once per scrape. On PostgreSQL the statement
            # timeout bounds it.
            rendition_pending = func.sum(case((File.rendition_state == "pending", 1), else_=0))
            checksum_pending = func.sum(
                case((File.checksum.is_(None) & (File.fingerprint != ""), 1), else_=0)
            )
            files = conn.execute(
                select(Source.state, rendition_pending, checksum_pending)
                .join(Source, Source.id == File.source_id)
                .where(File.presence == "present")
                .group_by(Source.state)
            ).all()
            hosts = conn.execute(
                select(Source.host).where(Source.host.is_not(None)).distinct()
            ).scalars().all()
        return _backlog_families(scans, exports, files), hosts


def _backlog_families(scans: dict, exports: dict, files) -> list:
    scan_gauge = GaugeMetricFamily(
        "archive_scans", "Scans and verify runs not yet finished, by status", labels=["status"]
    )
    for status in SCAN_STATUSES:
        scan_gauge.add_metric([status], scans.get(status, 0))
    export_gauge = GaugeMetricFamily(
        "archive_exports", "Exports not yet finished, by status", labels=["status"]
    )
    for status in EXPORT_STATUSES:
        export_gauge.add_metric([status], exports.get(status, 0))
    rendition_gauge = GaugeMetricFamily(
        "archive_files_rendition_pending",
        "Present files whose metadata and renditions are not made yet, by drive state",
        labels=["source_state"],
    )
    checksum_gauge = GaugeMetricFamily(
        "archive_files_checksum_pending",
        "Present files whose content checksum is not computed yet, by drive state",
        labels=["source_state"],
    )
    by_state = {state: (renditions or 0, checksums or 0) for state, renditions, checksums in files}
    for state in sorted(set(SOURCE_STATES) | set(by_state)):
        renditions, checksums = by_state.get(state, (0, 0))
        rendition_gauge.add_metric([state], renditions)
        checksum_gauge.add_metric([state], checksums)
    return [scan_gauge, export_gauge, rendition_gauge, checksum_gauge]


class _RateLimitedWarnings:
    """A warning log for collection failures that writes at most one line per interval and part."""

    def __init__(self, interval: float):
        self._interval = interval
        self._lock = threading.Lock()
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, part: str, error: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last_logged.get(part)
            if last is not None and now - last < self._interval:
                self._suppressed[part] = self._suppressed.get(part, 0) + 1
                return
            self._last_logged[part] = now
            repeats = self._suppressed.pop(part, 0)
        # SQLAlchemy appends the statement and its parameters on later lines.
        lines = str(error).splitlines()
        first_line = lines[0] if lines else ""
        log.warning(
            "metrics_collect_failed",
            part=part,
            error=f"{type(error).__name__}: {first_line}",
            failures_since_last_warning=repeats,
        )


def _settings():
    from core.settings import get_settings

    return get_settings()


def _redis_url() -> str:
    from core.celery_app import redis_client_url

    return redis_client_url()


def _catalog_engine():
    from core.db import get_engine

    return get_engine("catalog")
