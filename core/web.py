"""Flask app factory pieces every service shares."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from urllib.parse import quote

from flask import Flask, g, jsonify, request
from flask_smorest import Api, Blueprint
from webargs.flaskparser import FlaskParser, is_json_request
from marshmallow import RAISE, Schema
from marshmallow import fields as ma_fields

from core.errors import UnsupportedMediaType, register_error_handlers
from core.logs import configure_logging, get_logger
from core.metrics import observe_request
from core.settings import get_settings

log = get_logger(__name__)

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


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


class ServiceFlask(Flask):
    """Flask that checks each view and hook for a coroutine once, not per call.

    Flask calls ``inspect.iscoroutinefunction`` for every hook and view of
    every request. At about eight calls a request, that is a measurable
    part of a fast public request.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._known_sync: set = set()

    def ensure_sync(self, func):
        if func in self._known_sync:
            return func
        result = super().ensure_sync(func)
        if result is func and len(self._known_sync) < 4096:
            self._known_sync.add(func)
        return result


REQUEST_ID_KEY = "archive.request_id"
REQUEST_STARTED_KEY = "archive.request_started"
# A request id given by the client is kept only when it looks like one.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class ResponseHeaders:
    """WSGI middleware: an id for each request, and headers added to each response.

    The id comes from the client's ``X-Request-Id`` when that is a plain
    token of at most 64 characters, or is made here. It is returned in
    ``X-Request-Id`` and logged with every line of the request (see
    ``core.logs``). Headers are added to the plain list handed to
    ``start_response``, which costs a fraction of setting them one by one on
    a Flask response, and a fast request notices.
    """

    def __init__(self, wsgi_app, extra=None):
        self.wsgi_app = wsgi_app
        self.extra = extra

    def __call__(self, environ, start_response):
        environ[REQUEST_STARTED_KEY] = time.monotonic()
        client_id = environ.get("HTTP_X_REQUEST_ID")
        if client_id and _REQUEST_ID.fullmatch(client_id):
            request_id = client_id
        else:
            request_id = uuid.uuid4().hex
        environ[REQUEST_ID_KEY] = request_id
        # Routing ignores repeated leading slashes ("//s/..." is "/s/..."),
        # so the headers chosen by path must too.
        path = "/" + environ.get("PATH_INFO", "").lstrip("/")
        extra = self.extra

        def start(status, headers, exc_info=None):
            headers.append(("X-Request-Id", request_id))
            if extra is not None:
                headers = extra(path, status, headers)
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start)


def attachment_header(filename: str) -> str:
    """Return a Content-Disposition value that downloads ``filename``.

    The plain ``filename`` keeps printable ASCII only, because control
    characters are not valid in a header, and ``filename*`` carries the
    exact name percent-encoded.
    """
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


class ServiceApi(Api):
    ERROR_SCHEMA = ErrorResponseSchema


class SafeParser(FlaskParser):
    """A request parser that returns 400, not 500, for deeply nested JSON.

    A body sent with another Content-Type than JSON gets 415. webargs would
    treat it as no body at all, so a PATCH would succeed and change nothing.
    An unknown query parameter gets 422, as an unknown body field does:
    webargs would drop it, so a misspelt filter would list everything.
    """

    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION, "query": RAISE}

    def _raw_load_json(self, req):
        if not is_json_request(req) and (req.content_length or req.get_data(cache=True)):
            sent = req.mimetype or "none"
            raise UnsupportedMediaType(
                f"the request body must be JSON, but its Content-Type is {sent!r}: "
                "send it with Content-Type: application/json",
                fields={"Content-Type": [f"expected application/json, got {sent}"]},
            )
        try:
            return super()._raw_load_json(req)
        except RecursionError:
            raise json.JSONDecodeError("nested too deeply", "", 0) from None


class ServiceBlueprint(Blueprint):
    """A flask-smorest blueprint whose arguments go through ``SafeParser``.

    A subclass, not a parser set on flask-smorest's class: that setting
    reached only the blueprints decorated after this module was imported.
    """

    ARGUMENTS_PARSER = SafeParser()


def create_base_app(name: str, title: str, response_headers=None) -> tuple[Flask, Api]:
    """Return a service's Flask app and its API, with the hooks every service shares.

    ``response_headers(path, status, headers)``, when given, returns the
    header list of each response (see ``ResponseHeaders``).
    """
    configure_logging()
    settings = get_settings()
    app = ServiceFlask(name)
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

    app.wsgi_app = ResponseHeaders(app.wsgi_app, response_headers)

    @app.after_request
    def finish_request(response):
        # The request itself, not its proxy: this runs after every request.
        current = request._get_current_object()
        elapsed = time.monotonic() - current.environ.get(REQUEST_STARTED_KEY, time.monotonic())
        rule = current.url_rule.rule if current.url_rule else "unmatched"
        # Any word is accepted as a method; unknown ones share one label, so
        # clients cannot add series.
        method = current.method if current.method in KNOWN_METHODS else "OTHER"
        status = response.status_code
        observe_request(name, method, rule, status, elapsed)
        if status >= 500:
            log.error("request_failed", path=current.path, status=status)
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
    """Expose Prometheus metrics at ``/metrics``.

    Request latency is recorded for every request by ``finish_request``.

    The catalog service also exposes Celery queue lengths and work backlogs,
    because only it can read the catalog database.
    """
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from core import metrics as prometheus_metrics

    extra_collectors = [prometheus_metrics.BacklogCollector()] if service == "catalog" else []

    @app.get("/metrics")
    def metrics():
        registry = prometheus_metrics.scrape_registry(extra_collectors)
        return generate_latest(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST}
