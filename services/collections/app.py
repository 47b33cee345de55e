"""The collections service's Flask app factory."""

from __future__ import annotations

from flask import Flask

from core.auth import install_auth
from core.remote_auth import resolve_remote
from core.web import create_base_app
from services.collections.api import collections, internal, items
from services.collections.api.common import close_db


def create_app() -> Flask:
    app, api = create_base_app("collections", "Archive collections API")
    for module in (collections, items, internal):
        api.register_blueprint(module.blp)
    install_auth(app, resolve_remote)
    app.teardown_appcontext(close_db)
    return app
