"""One JSON error shape for every service.

Every error response body is ``{"error": {"code", "message", "fields"}}``;
``fields`` maps a request field to its problems when validation failed.
"""

from __future__ import annotations

import logging
import re

from flask import Flask, jsonify
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, fields: dict | None = None, **extra):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}
        self.extra = extra


class ValidationError(ApiError):
    status = 422
    code = "invalid"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class Gone(ApiError):
    status = 410
    code = "gone"


class DriveOffline(ApiError):
    status = 409
    code = "drive_offline"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class ServiceUnavailable(ApiError):
    status = 503
    code = "unavailable"


def error_body(code: str, message: str, fields: dict | None = None, **extra):
    body = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    body.update(extra)
    return {"error": body}


def _marshmallow_fields(messages) -> dict:
    """Flatten flask-smorest's ``{location: {field: [msgs]}}`` into one map."""
    fields = {}
    if isinstance(messages, dict):
        for location, value in messages.items():
            if isinstance(value, dict):
                for field, problems in value.items():
                    fields[field] = problems
            else:
                fields[location] = value
    return fields


_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def _bad_text(text: str) -> bool:
    """True for text no field accepts: NUL characters or lone surrogates."""
    return _BAD_TEXT.search(text) is not None


def _find_nul(value, path: str) -> str | None:
    """Return where the first NUL or lone surrogate in ``value`` is, or None.

    The top level is the empty string, so callers compare with None.
    """
    if isinstance(value, str):
        return path if _bad_text(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and _bad_text(key):
                # The key is shown escaped, because it cannot be printed as it is.
                return f"{path}.{ascii(key)}" if path else ascii(key)
            found = _find_nul(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_nul(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def reject_nul_characters() -> None:
    """Reject NUL characters and lone surrogates anywhere in the request.

    No field accepts them: PostgreSQL cannot store NUL in text, and a lone
    surrogate cannot be encoded as UTF-8.
    """
    from flask import request

    # The request itself, not its proxy: this runs before every request.
    current = request._get_current_object()
    environ = current.environ
    for key, values in current.args.lists() if environ.get("QUERY_STRING") else ():
        if _bad_text(key) or any(_bad_text(v) for v in values):
            raise ValidationError(
                f"query parameter {key!r} contains a NUL character or a lone surrogate",
                fields={key: ["NUL characters and lone surrogates are not allowed"]},
            )
    if environ.get("CONTENT_TYPE") and current.is_json:
        try:
            body = current.get_json(silent=True)
        except RecursionError:
            raise ValidationError(
                "the JSON body is nested too deeply", fields={"json": ["nested too deeply"]}
            ) from None
        where = _find_nul(body, "")
        if where is not None:
            raise ValidationError(
                f"field {where!r} contains a NUL character or a lone surrogate",
                fields={where or "body": ["NUL characters and lone surrogates are not allowed"]},
            )


def register_error_handlers(app: Flask) -> None:
    app.before_request(reject_nul_characters)

    @app.errorhandler(ApiError)
    def handle_api_error(error: ApiError):
        body = error_body(error.code, error.message, error.fields, **error.extra)
        return jsonify(body), error.status

    @app.errorhandler(HTTPException)
    def handle_http_error(error: HTTPException):
        fields = {}
        data = getattr(error, "data", None)
        if isinstance(data, dict) and "messages" in data:
            fields = _marshmallow_fields(data["messages"])
        code = (error.name or "error").lower().replace(" ", "_")
        message = error.description or error.name
        if fields:
            problems = "; ".join(f"{name}: {value}" for name, value in fields.items())
            message = f"invalid request: {problems}"
        return jsonify(error_body(code, message, fields)), error.code

    @app.errorhandler(DataError)
    def handle_data_error(error):
        # A value the database cannot store (out of range, bad encoding).
        log.warning("invalid value rejected by the database", exc_info=False)
        body = error_body("invalid", "a value in the request is out of range or invalid")
        return jsonify(body), 422

    @app.errorhandler(IntegrityError)
    def handle_integrity_error(error):
        diag = getattr(error.orig, "diag", None)
        log.warning(
            "conflicting write rejected by the database: constraint %s, table %s",
            getattr(diag, "constraint_name", None),
            getattr(diag, "table_name", None),
        )
        body = error_body("conflict", "the change conflicts with existing data; retry")
        return jsonify(body), 409

    @app.errorhandler(OperationalError)
    @app.errorhandler(DBAPIError)
    def handle_database_error(error):
        log.warning("database unavailable: %s", type(error).__name__)
        body = error_body("unavailable", "the database is unavailable; retry shortly")
        return jsonify(body), 503

    @app.errorhandler(Exception)
    def handle_unexpected(error):
        log.exception("unhandled error")
        return jsonify(error_body("internal", "internal server error")), 500
