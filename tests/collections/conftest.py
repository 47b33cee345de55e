"""Fixtures for the collections service: a live catalog over HTTP and clients."""

from __future__ import annotations

import contextlib
import io
import os
import threading

import pytest
from werkzeug.serving import make_server


def serve(app):
    """Serve a WSGI app on a free 127.0.0.1 port in a thread; return (server, url)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, f"http://127.0.0.1:{server.server_port}"


@contextlib.contextmanager
def served_at(app, variable: str):
    """Serve ``app`` over real HTTP and set the environment variable ``variable`` to its URL."""
    from core.remote_auth import clear_cache
    from core.settings import reset_settings

    server, url = serve(app)
    previous = os.environ.get(variable)
    os.environ[variable] = url
    reset_settings()
    clear_cache()
    try:
        yield url
    finally:
        server.shutdown()
        if previous is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = previous
        reset_settings()
        clear_cache()


@pytest.fixture
def catalog_url(catalog_app):
    """Run the catalog over real HTTP and point the settings' CATALOG_URL at it."""
    with served_at(catalog_app, "CATALOG_URL") as url:
        yield url


@pytest.fixture
def collections_app(catalog_url):
    from services.collections.app import create_app

    app = create_app()
    app.config["TESTING"] = True
    return app


@pytest.fixture
def collections_client(collections_app):
    return collections_app.test_client()


class Curator:
    """A catalog member making requests to the collections service."""

    def __init__(self, client, member):
        self.client = client
        self.member = member

    def _call(self, method, path, **kwargs):
        return getattr(self.client, method)(path, headers=self.member.headers, **kwargs)

    def get(self, path, **kwargs):
        return self._call("get", path, **kwargs)

    def post(self, path, **kwargs):
        return self._call("post", path, **kwargs)

    def patch(self, path, **kwargs):
        return self._call("patch", path, **kwargs)

    def delete(self, path, **kwargs):
        return self._call("delete", path, **kwargs)

    def create(self, name, description=""):
        response = self.post(
            "/api/v1/collections", json={"name": name, "description": description}
        )
        assert response.status_code == 201, response.json
        return response.json

    def add(self, collection_id, **body):
        response = self.post(f"/api/v1/collections/{collection_id}/items", json=body)
        assert response.status_code == 200, response.json
        return response.json

    def items(self, collection_id, limit=1000) -> dict:
        """Return every item, reading all pages, with the last page's counts."""
        items, cursor = [], None
        while True:
            query = {"limit": limit}
            if cursor:
                query["cursor"] = cursor
            response = self.get(f"/api/v1/collections/{collection_id}/items", query_string=query)
            assert response.status_code == 200, response.json
            page = response.json
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                return {**page, "items": items}


@pytest.fixture
def curator_factory(collections_client):
    return lambda member: Curator(collections_client, member)


@pytest.fixture
def curator(owner, curator_factory):
    return curator_factory(owner)


def jpeg_bytes(width=64, height=48, shade=0) -> bytes:
    """Encode a small gradient JPEG with Pillow."""
    from PIL import Image

    image = Image.new("RGB", (width, height))
    image.putdata(
        [((x * 4 + shade) % 256, (y * 5) % 256, shade % 256) for y in range(height) for x in range(width)]
    )
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def deliver_catalog_events() -> int:
    """Apply the catalog's unsent outbox events to the collections read model inline.

    Marks them sent, as the relay does, and returns how many were delivered.
    """
    from sqlalchemy import select

    from core.db import session_scope, utcnow
    from services.catalog.models import OutboxEvent
    from workers.tasks.collections import APPLIERS, consume

    with session_scope("catalog") as session:
        rows = session.scalars(
            select(OutboxEvent).where(OutboxEvent.sent_at.is_(None)).order_by(OutboxEvent.seq)
        ).all()
        events = [{"id": r.id, "topic": r.topic, "payload": r.payload} for r in rows]
        for row in rows:
            row.sent_at = utcnow()
    for event in events:
        if event["topic"] in APPLIERS:
            consume(event)
    return len(events)
