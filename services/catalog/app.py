"""The catalog service's Flask app factory."""

from __future__ import annotations

from flask import Flask

from core.auth import install_auth
from core.web import create_base_app
from services.catalog.api import exports, files, groups, internal, orgs, sources
from services.catalog.api.common import close_db, db
from services.catalog.principals import resolve_token


def create_app() -> Flask:
    app, api = create_base_app("catalog", "Archive catalog API")
    for module in (orgs, groups, sources, files, exports, internal):
        api.register_blueprint(module.blp)
    api.register_blueprint(exports.internal)
    install_auth(
        app,
        lambda token: resolve_token(db(), token),
        public={("POST", "/api/v1/orgs")},
    )
    app.teardown_appcontext(close_db)
    return app
