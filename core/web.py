"""Flask app factory pieces every service shares."""

from __future__ import annotations

import json
import logging
import time
import uuid

import structlog
from flask import Flask, g, jsonify, request
from flask_smorest import Api, Blueprint
from webargs.flaskparser import FlaskParser
from marshmallow import Schema
from marshmallow import fields as ma_fields

from core.errors import register_error_handlers
from core.logs import configure_logging, get_logger
from core.settings import get_settings

log = get_logger(__name__)


class ErrorDetailSchema(Schema):
    code = ma_fields.String(required=True)
    message = ma_fields.String(required=True)
    # Problems per request field, when validation failed.
    fields = ma_fields.Dict()
    # The drive to connect, when an original is on an offline drive.
    drive = ma_fields.String()


class ErrorResponseSchema(Schema):
    """The one error shape of every service, as documented in OpenAPI."""

    error = ma_fields.Nested(ErrorDetailSchema, required=True)


class ServiceApi(Api):
    ERROR_SCHEMA = ErrorResponseSchema


class SafeParser(FlaskParser):
    """A request parser that returns 400, not 500, for deeply nested JSON."""

    def _raw_load_json(self, req):
        try:
            return super()._raw_load_json(req)
        except RecursionError:
            raise json.JSONDecodeError("nested too deeply", "", 0) from None


Blueprint.ARGUMENTS_PARSER = SafeParser()


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
    api = ServiceApi(
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
        elif log.isEnabledFor(logging.DEBUG):
            # Checked first: building the event costs more than a fast request.
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

    @app.get("/ready")
    def ready():
        checks = readiness_checks(name)
        status = 200 if all(c == "ok" for c in checks.values()) else 503
        return jsonify({"status": "ok" if status == 200 else "unavailable", "checks": checks}), status

    install_metrics(app, name)

    return app, api


def readiness_checks(service: str) -> dict:
    """Check the database, Redis and the object store; name what fails."""
    from sqlalchemy import text

    from core.celery_app import redis_client_url
    from core.db import get_engine
    from core.storage import get_store

    checks = {}
    try:
        with get_engine(service).connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as error:  # any failure makes the service not ready
        checks["database"] = f"failed: {type(error).__name__}"
    try:
        import redis

        redis.Redis.from_url(redis_client_url(), socket_timeout=2).ping()
        checks["redis"] = "ok"
    except Exception as error:
        checks["redis"] = f"failed: {type(error).__name__}"
    try:
        get_store().exists("readiness-probe")
        checks["object_store"] = "ok"
    except Exception as error:
        checks["object_store"] = f"failed: {type(error).__name__}"
    return checks


def install_metrics(app: Flask, service: str) -> None:
    """Record request latency and expose Prometheus metrics at ``/metrics``.

    The catalog service also exposes Celery queue lengths and work backlogs,
    because only it can read the catalog database.
    """
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from core import metrics as prometheus_metrics

    extra_collectors = [prometheus_metrics.BacklogCollector()] if service == "catalog" else []

    @app.after_request
    def observe(response):
        started = getattr(g, "request_started", None)
        rule = request.url_rule.rule if request.url_rule else "unmatched"
        if started is not None:
            prometheus_metrics.REQUEST_SECONDS.labels(
                service, request.method, rule, str(response.status_code)
            ).observe(time.monotonic() - started)
        return response

    @app.get("/metrics")
    def metrics():
        registry = prometheus_metrics.scrape_registry(extra_collectors)
        return generate_latest(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST}
