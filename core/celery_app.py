"""The Celery app shared by every worker and service.

Queues are named by purpose. Tasks that read a drive's bytes go to the queue
of the host where the drive is mounted (``drive.<host>``), so drives mounted
on several machines each get a worker that can reach them.
"""

from __future__ import annotations

import os

import structlog
from celery import Celery, signals
from kombu import Exchange, Queue

from core import metrics
from core.settings import get_settings

QUEUE_DEFAULT = "default"
QUEUE_EVENTS = "events"
QUEUE_EXPORTS = "exports"


# Options of every event consumer: a concurrent writer of the same read-model
# row makes the transaction fail, and a retry (idempotent by event id)
# applies the event again on the fresh state.
CONSUMER_OPTIONS = {
    "acks_late": True,
    "ignore_result": True,
    "autoretry_for": (Exception,),
    "dont_autoretry_for": (),
    "retry_backoff": 1,
    "retry_backoff_max": 60,
    "max_retries": 8,
}


def drive_queue(host: str) -> str:
    return f"drive.{host}"


def make_queue(name: str) -> Queue:
    """A queue on its own direct exchange, so a task reaches one queue only."""
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def broker_url() -> str:
    settings = get_settings()
    if settings.redis_url:
        return settings.redis_url
    socket_file = settings.data_dir / "redis" / "redis.sock"
    return f"redis+socket://{socket_file}"


def redis_client_url() -> str:
    """Return the broker URL in the form redis-py's ``from_url`` accepts."""
    url = broker_url()
    if url.startswith("redis+socket://"):
        return "unix://" + url[len("redis+socket://") :]
    return url


def create_celery() -> Celery:
    settings = get_settings()
    app = Celery("archive", broker=broker_url(), backend=broker_url())
    app.conf.update(
        task_default_queue=QUEUE_DEFAULT,
        task_queues=[
            make_queue(QUEUE_DEFAULT),
            make_queue(QUEUE_EVENTS),
            make_queue(QUEUE_EXPORTS),
            make_queue(drive_queue(settings.drive_host)),
        ],
        task_default_exchange=QUEUE_DEFAULT,
        task_default_routing_key=QUEUE_DEFAULT,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # A task of a killed worker is handed out again after this long;
            # long tasks also keep a heartbeat row, so a second copy that
            # arrives while the first still runs returns at once.
            "visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", 600)),
            # Lets several deployments (or test runs) share one Redis database.
            "global_keyprefix": settings.redis_key_prefix,
        },
        result_backend_transport_options={
            "global_keyprefix": settings.redis_key_prefix,
        },
        beat_schedule={
            # Unsent events are relayed every second, so a change reaches the
            # read models of collections and sharing a second or two later.
            "relay-outboxes": {"task": "outbox.relay_all", "schedule": 1.0},
            "recover-stalled-scans": {"task": "scans.recover_stalled", "schedule": 30.0},
            "resume-exports": {"task": "exports.resume", "schedule": 15.0},
            "sweep-renditions": {"task": "renditions.sweep", "schedule": 60.0},
            "expire-exports": {"task": "exports.expire", "schedule": 600.0},
            "flush-link-stats": {"task": "sharing.flush_stats", "schedule": 10.0},
            "sweep-partial-uploads": {"task": "storage.sweep_uploads", "schedule": 3600.0},
        },
        include=["workers.tasks"],
    )
    return app


@signals.task_prerun.connect
def _bind_task_context(task_id=None, task=None, **_):
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id, task_name=task.name)


@signals.task_postrun.connect
def _clear_task_context(**_):
    structlog.contextvars.clear_contextvars()


# Task metrics: see core/metrics.py and the Metrics section of
# docs/operations.md.
signals.worker_init.connect(metrics.start_worker_metrics_server)
signals.worker_process_shutdown.connect(metrics.on_worker_process_exit)
signals.task_prerun.connect(metrics.record_task_start)
signals.task_postrun.connect(metrics.record_task_end)
signals.task_failure.connect(metrics.record_task_failure)


celery_app = create_celery()
