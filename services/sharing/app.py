"""The sharing service's Flask app factory."""

from __future__ import annotations

from flask import Flask

from core.auth import install_auth
from core.remote_auth import resolve_remote
from core.web import create_base_app
from services.sharing import public, ratelimit
from services.sharing.api import links
from services.sharing.api.links import close_db
from services.sharing.keys import link_secret


def create_app() -> Flask:
    # Fail at start-up, not at the first request, when LINK_SECRET is unset.
    link_secret()
    app, api = create_base_app(
        "sharing", "Archive sharing API", response_headers=public.public_response_headers
    )
    api.register_blueprint(links.blp)
    app.register_blueprint(public.blp)
    # Rate limits connect to the Redis configured now, at the first check.
    ratelimit.reset()
    install_auth(app, resolve_remote)
    app.teardown_appcontext(close_db)

    return app
