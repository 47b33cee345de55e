"""Upkeep of the object store."""

from __future__ import annotations

from datetime import timedelta

from core.celery_app import celery_app
from core.logs import get_logger
from core.storage import get_store

log = get_logger(__name__)

# A write in progress touches its temporary file with every chunk, so one
# untouched for a day is taken as abandoned. A writer stalled that long
# fails at its final rename, with a StorageError.
STALE_UPLOAD_AGE = timedelta(days=1)


@celery_app.task(name="storage.sweep_uploads", ignore_result=True)
def sweep_uploads() -> int:
    """Delete the unfinished uploads that killed writers left in the store."""
    removed = get_store().sweep_partial_uploads(STALE_UPLOAD_AGE)
    if removed:
        log.info("partial_uploads_removed", count=removed)
    return removed
