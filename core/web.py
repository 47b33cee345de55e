"""Flask app factory pieces every service shares."""

from __future__ import annotations

import time
import uuid

import structlog
from flask import Flask, g, jsonify, request
from flask_smorest import Api

from core.errors import register_error_handlers
from core.logs import configure_logging, get_logger
from core.settings import get_settings

log = get_logger(__name__)


def create_base_app(name: str, title: str) -> tuple[Flask, Api]:
    configure_logging()
    settings = get_settings()
    app = Flask(name)
    app.config.update(
        API_TITLE=title,
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        JSON_SORT_KEYS=False,
        MAX_CONTENT_LENGTH=16 * 1024 * 1024,
    )
    app.config["ARCHIVE_SETTINGS"] = settings
    api = Api(
        app,
        spec_kwargs={
            "components": {
                "securitySchemes": {
                    "bearer": {"type": "http", "scheme": "bearer"},
                }
            },
            "security": [{"bearer": []}],
        },
    )
    register_error_handlers(app)

    @app.before_request
    def bind_request_id():
        g.request_started = time.monotonic()
        request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        g.request_id = request_id[:64]
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=g.request_id, service=name)

    @app.after_request
    def add_request_id(response):
        response.headers["X-Request-Id"] = getattr(g, "request_id", "")
        elapsed = time.monotonic() - getattr(g, "request_started", time.monotonic())
        if response.status_code >= 500:
            log.error("request_failed", path=request.path, status=response.status_code)
        else:
            log.debug(
                "request_done",
                method=request.method,
                path=request.path,
                status=response.status_code,
                ms=round(elapsed * 1000, 1),
            )
        return response

    @app.get("/health")
    def health():
        return jsonify({"status": "ok", "service": name})

    return app, api
