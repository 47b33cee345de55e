"""Shared infrastructure used by every service and worker.

Settings, database sessions, the Celery app, the event outbox, the object
store, authentication and the JSON error shape live here, once.
"""
