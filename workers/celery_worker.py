"""Worker entry point: ``celery -A workers.celery_worker worker``."""

from core.celery_app import celery_app as app
from core.logs import configure_logging

configure_logging()

__all__ = ["app"]
