"""The collections service's Flask app factory."""

from __future__ import annotations

from flask import Flask

from core.web import create_base_app


def create_app() -> Flask:
    app, _api = create_base_app("collections", "Archive collections API")
    return app
