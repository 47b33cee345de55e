"""Structured logging with structlog: a fixed event name plus keyword fields.

Every line logged while a service handles a request carries the request id
and the service's name, read from Flask's request context. Task ids
(workers) are bound through structlog's context variables.
"""

from __future__ import annotations

import logging
import sys

import structlog
from flask import current_app, has_request_context, request

from core.settings import get_settings

_configured = False


def add_request_context(_logger, _method, event_dict: dict) -> dict:
    """Add the request id and service of the request being handled, if any."""
    if has_request_context():
        # Set by core.web.ResponseHeaders.
        request_id = request.environ.get("archive.request_id")
        if request_id is not None:
            event_dict.setdefault("request_id", request_id)
        event_dict.setdefault("service", current_app.name)
    return event_dict


def configure_logging() -> None:
    global _configured
    if _configured:
        return
    settings = get_settings()
    renderer = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared = [
        structlog.contextvars.merge_contextvars,
        add_request_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=shared
        + [
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        processor=renderer,
        foreign_pre_chain=shared,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    _configured = True


def get_logger(name: str):
    return structlog.get_logger(name)
