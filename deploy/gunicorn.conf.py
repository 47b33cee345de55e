"""Gunicorn settings for the catalog, collections and sharing services.

Every value comes from an environment variable, so one file serves all three:

    gunicorn -c deploy/gunicorn.conf.py 'services.catalog.app:create_app()'

PORT                       listen port on all interfaces (default 8000)
WEB_CONCURRENCY            worker processes (default 2 * CPUs + 1, at most 8)
GUNICORN_THREADS           threads per worker (default 2)
GUNICORN_TIMEOUT           seconds a silent worker may take before it is
                           killed and restarted (default 60)
GUNICORN_GRACEFUL_TIMEOUT  seconds workers get to finish requests after
                           SIGTERM (default 30)
FORWARDED_ALLOW_IPS        comma-separated proxy addresses whose
                           X-Forwarded-* headers are trusted, or "*"
                           (default 127.0.0.1,::1)
PROMETHEUS_MULTIPROC_DIR   folder where every worker writes its metric
                           samples, so /metrics of any worker returns the
                           totals of all workers (default unset: each worker
                           reports only its own requests)
"""

from __future__ import annotations

import os

# Each worker thread may hold one database connection, so the cap bounds the
# connections of one service to 8 workers * threads. PostgreSQL 16 allows 100
# connections by default, shared by three services and the Celery workers.
MAX_DEFAULT_WORKERS = 8


def _env_int(name: str, default: int, minimum: int, maximum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is invalid: expected an integer") from None
    if not minimum <= value <= maximum:
        raise ValueError(
            f"{name}={value} is invalid: expected {minimum} to {maximum}"
        )
    return value


def _cpu_count() -> int:
    # sched_getaffinity honours a cpuset limit (docker --cpuset-cpus). It does
    # not see a CPU quota (docker --cpus), so set WEB_CONCURRENCY in that case.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _default_workers() -> int:
    return min(2 * _cpu_count() + 1, MAX_DEFAULT_WORKERS)


bind = f"0.0.0.0:{_env_int('PORT', 8000, 1, 65535)}"
workers = _env_int("WEB_CONCURRENCY", _default_workers(), 1, 256)
# gthread serves each worker's requests from a thread pool of this size.
worker_class = "gthread"
threads = _env_int("GUNICORN_THREADS", 2, 1, 64)
timeout = _env_int("GUNICORN_TIMEOUT", 60, 1, 3600)
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 30, 1, 3600)
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# Access log to stdout and error log to stderr, for the container runtime.
accesslog = "-"
errorlog = "-"
# Client, time, request line, status, response bytes, response time in
# milliseconds (%(M)s) and user agent.
access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'

# Workers write heartbeats to a file, so a RAM-backed folder keeps them
# from blocking on a slow container file system.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"


def on_starting(server):
    """Empty the metrics folder in the master, before any worker records."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from core.metrics import reset_multiprocess_dir

        reset_multiprocess_dir()


def child_exit(server, worker):
    """Mark an exited worker dead in prometheus_client's multiprocess mode.

    This removes the worker's live-gauge files. It does nothing unless
    PROMETHEUS_MULTIPROC_DIR is set.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
