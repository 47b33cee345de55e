"""Every Celery task, imported so the worker registers them."""

from workers.tasks import checksums, exports, outbox, renditions, scans  # noqa: F401
