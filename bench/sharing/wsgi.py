"""WSGI entry points for the sharing benchmark: the service and a bare Flask reference."""

from __future__ import annotations

import os

from flask import Flask, Response


def create_bare() -> Flask:
    """A Flask app that returns the body of BENCH_BODY_FILE, with nothing else."""
    with open(os.environ["BENCH_BODY_FILE"], "rb") as handle:
        body = handle.read()
    app = Flask("bare")

    @app.get("/items")
    def items():
        return Response(body, mimetype="application/json")

    return app


if os.environ.get("BENCH_APP") == "bare":
    app = create_bare()
else:
    from services.sharing.app import create_app

    app = create_app()
