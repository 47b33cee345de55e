"""The pieces every service's Flask app shares: request ids, log context, metrics."""

from __future__ import annotations

import json
import logging

import pytest
from flask import Response
from marshmallow import Schema
from marshmallow import fields as ma_fields

from core.logs import add_request_context, get_logger
from core.metrics import REQUEST_SECONDS
from core.web import ServiceBlueprint, ServiceFlask, create_base_app


@pytest.fixture
def app():
    app, api = create_base_app("probe", "Probe API")
    seen = {}

    @app.get("/echo")
    def echo():
        seen["context"] = add_request_context(None, "info", {})
        get_logger("probe").warning("probe_logged", marker="echo")
        return Response(b"{}", mimetype="application/json")

    @app.post("/echo")
    def echo_body():
        return Response(b"{}", mimetype="application/json")

    @app.get("/boom")
    def boom():
        raise RuntimeError("deliberate")

    class Rename(Schema):
        name = ma_fields.String()

    blueprint = ServiceBlueprint("probe_items", __name__)

    @blueprint.route("/items", methods=["PATCH"])
    @blueprint.arguments(Rename)
    def rename(changes):
        seen["changes"] = changes
        return {"changed": sorted(changes)}

    api.register_blueprint(blueprint)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.seen = seen
    return app


def test_request_id_fresh_per_response(app):
    client = app.test_client()
    first = client.get("/echo").headers["X-Request-Id"]
    second = client.get("/echo").headers["X-Request-Id"]
    assert len(first) == 32
    assert len(second) == 32
    assert first != second
    # Errors and unknown paths carry one too.
    assert client.get("/no-such-path").headers["X-Request-Id"]
    assert client.get("/boom").headers["X-Request-Id"]


def test_request_id_from_client_kept(app):
    response = app.test_client().get("/echo", headers={"X-Request-Id": "edge-42.a:b_c"})
    assert response.headers["X-Request-Id"] == "edge-42.a:b_c"
    assert app.seen["context"] == {"request_id": "edge-42.a:b_c", "service": "probe"}


@pytest.mark.parametrize("given", ["has space", "x" * 65, "semi;colon", "quote\"d", "é"])
def test_request_id_odd_value_replaced(app, given):
    response = app.test_client().get("/echo", headers={"X-Request-Id": given})
    returned = response.headers["X-Request-Id"]
    assert returned != given
    assert len(returned) == 32
    assert int(returned, 16) >= 0


def _logged(caplog, event: str) -> dict:
    # structlog hands the standard library the event as a dict.
    return next(r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == event)


def test_log_line_carries_request_id(app, caplog):
    with caplog.at_level(logging.WARNING):
        app.test_client().get("/echo", headers={"X-Request-Id": "trace-1"})
    logged = _logged(caplog, "probe_logged")
    assert logged["request_id"] == "trace-1"
    assert logged["service"] == "probe"
    assert logged["marker"] == "echo"


def test_log_line_outside_request():
    assert add_request_context(None, "info", {"event": "x"}) == {"event": "x"}


def _count(service: str, method: str, route: str, status: str) -> float:
    for metric in REQUEST_SECONDS.collect():
        for sample in metric.samples:
            labels = sample.labels
            if (
                sample.name.endswith("_count")
                and labels.get("service") == service
                and labels.get("method") == method
                and labels.get("route") == route
                and labels.get("status") == status
            ):
                return sample.value
    return 0.0


def test_request_metrics_label_methods(app):
    client = app.test_client()
    before = _count("probe", "GET", "/echo", "200")
    client.get("/echo")
    client.get("/echo")
    assert _count("probe", "GET", "/echo", "200") == before + 2

    other_before = _count("probe", "OTHER", "unmatched", "405")
    for method in ("BREW", "WHEN", "ZZZ1"):
        assert client.open("/echo", method=method).status_code == 405
    assert _count("probe", "OTHER", "unmatched", "405") == other_before + 3
    assert _count("probe", "BREW", "unmatched", "405") == 0
    errors_before = _count("probe", "GET", "/boom", "500")
    client.get("/boom")
    assert _count("probe", "GET", "/boom", "500") == errors_before + 1


def test_server_error_logged(app, caplog):
    with caplog.at_level(logging.ERROR):
        response = app.test_client().get("/boom")
    assert response.status_code == 500
    logged = _logged(caplog, "request_failed")
    assert logged["request_id"] == response.headers["X-Request-Id"]
    assert logged["path"] == "/boom"


def test_ensure_sync_coroutines():
    app = ServiceFlask("probe-async")

    def plain():
        return "ok"

    async def coroutine():
        return "ok"

    assert app.ensure_sync(plain) is plain
    assert app.ensure_sync(plain) is plain
    # Flask wraps coroutines (and needs asgiref for that); either way it
    # must not hand the coroutine back as if it were synchronous.
    try:
        wrapped = app.ensure_sync(coroutine)
    except RuntimeError as error:
        assert "async" in str(error).lower()
    else:
        assert wrapped is not coroutine


@pytest.mark.parametrize(
    "body",
    [
        {"la\u0000bel": "x"},
        {"\ud800": "x"},
        {"outer": {"in\u0000ner": 1}},
        {"list": ["fine", "bad\u0000"]},
        {"text": "bad\ud800"},
    ],
)
def test_nul_in_json_rejected(app, body):
    raw = json.dumps(body)
    response = app.test_client().post("/echo", data=raw, content_type="application/json")
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "invalid"
    assert "NUL character or a lone surrogate" in error["message"]
    # The offending text is named escaped, never echoed raw.
    for text in [error["message"], *error["fields"]]:
        assert "\x00" not in text
        assert not any("\ud800" <= ch <= "\udfff" for ch in text)


def test_nul_check_skips_bodies_of_other_types(app):
    response = app.test_client().post("/echo", data='{"a": "\u0000"}', content_type="text/plain")
    assert response.status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_json_body_with_other_type_rejected(app, content_type):
    client = app.test_client()
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.patch("/items", data='{"name": "new"}', headers=headers)
    assert response.status_code == 415
    error = response.get_json()["error"]
    assert error["code"] == "unsupported_media_type"
    assert "application/json" in error["message"]
    assert "changes" not in app.seen


def test_json_body_accepted_and_empty_body_allowed(app):
    client = app.test_client()
    sent = client.patch("/items", json={"name": "new"})
    assert sent.status_code == 200
    assert sent.get_json() == {"changed": ["name"]}
    empty = client.patch("/items")
    assert empty.status_code == 200
    assert empty.get_json() == {"changed": []}


def test_parser_independent_of_import_order():
    import subprocess
    import sys

    # The API module is imported first, before anything imports core.web.
    script = (
        "import services.catalog.api.orgs\n"
        "from services.catalog.app import create_app\n"
        "client = create_app().test_client()\n"
        "response = client.post('/api/v1/orgs', data='{\"name\": \"x\"}', content_type='text/plain')\n"
        "print(response.status_code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "415"
