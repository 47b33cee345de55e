"""Every Celery task, imported so the worker registers them."""

from workers.tasks import (  # noqa: F401
    checksums,
    collections,
    exports,
    outbox,
    renditions,
    scans,
    sharing,
    storage,
)
