"""Fixtures for the sharing service: live catalog and collections over HTTP.

The sharing service calls both services when a link is created, so both
run on 127.0.0.1 in threads and the settings point at them. The sharing app
itself is tested through Flask's test client, and over real HTTP where a
browser or a benchmark needs it.
"""

from __future__ import annotations

import io

import pytest

from tests.catalog.helpers import connect, run_active_scan
# serve is imported from here by the sharing tests.
from tests.collections.conftest import serve, served_at  # noqa: F401


@pytest.fixture
def services(catalog_app):
    """Run the catalog and collections services over HTTP for the test."""
    from services.collections.app import create_app as create_collections
    from services.sharing.listing import clear_cache

    with served_at(catalog_app, "CATALOG_URL") as catalog_url, served_at(
        create_collections(), "COLLECTIONS_URL"
    ) as collections_url:
        clear_cache()
        yield {"catalog": catalog_url, "collections": collections_url}


@pytest.fixture
def sharing_app(services):
    from services.sharing.app import create_app

    app = create_app()
    app.config["TESTING"] = True
    return app


@pytest.fixture
def sharing(sharing_app):
    return sharing_app.test_client()


def png_bytes(width=32, height=24, shade=0) -> bytes:
    from PIL import Image

    image = Image.new("RGB", (width, height), ((shade * 37) % 256, (shade * 91) % 256, 160))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class Api:
    """Requests from one member to the collections and sharing services."""

    def __init__(self, member, sharing, collections_url):
        import requests

        self.member = member
        self.sharing = sharing
        self.collections_url = collections_url
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {member.token}"

    def create_collection(self, name, description="", file_ids=()):
        response = self.http.post(
            f"{self.collections_url}/api/v1/collections",
            json={"name": name, "description": description},
        )
        assert response.status_code == 201, response.text
        collection = response.json()
        if file_ids:
            self.add_items(collection["id"], list(file_ids))
        return collection

    def add_items(self, collection_id, file_ids):
        response = self.http.post(
            f"{self.collections_url}/api/v1/collections/{collection_id}/items",
            json={"file_ids": file_ids},
        )
        assert response.status_code == 200, response.text
        return response.json()

    def call(self, method, path, **kwargs):
        return getattr(self.sharing, method)(path, headers=self.member.headers, **kwargs)

    def create_link(self, collection_id, **body):
        response = self.call(
            "post", "/api/v1/links", json={"collection_id": collection_id, "label": "Client", **body}
        )
        assert response.status_code == 201, response.json
        return response.json


def token_of(link: dict) -> str:
    return link["url"].rsplit("/s/", 1)[1]


def file_ids_by_name(member, drive: str) -> dict[str, str]:
    page = member.get("/api/v1/files", query_string={"drive": drive, "limit": 1000}).json
    return {item["name"]: item["id"] for item in page["items"]}


def add_drive(member, drive_factory, name, files, group=None, host=None):
    """Create, connect and scan a drive; return (source, {file name: id})."""
    root = drive_factory(name, files)
    kwargs = {"name": name, "group": group}
    if host:
        kwargs["host"] = host
    source = connect(member, root, **kwargs)
    run_active_scan(member, source)
    return source, file_ids_by_name(member, name)


def deliver_events() -> int:
    """Apply every unsent catalog and collections event to the sharing read model inline.

    Marks them sent, as the relay does, and returns how many were applied.
    """
    from sqlalchemy import select

    from core.db import session_scope, utcnow
    from services.catalog.models import OutboxEvent as CatalogOutbox
    from services.collections.models import OutboxEvent as CollectionsOutbox
    from services.sharing import freshness
    from workers.tasks.sharing import APPLIERS, consume

    applied = 0
    for service, model in (("catalog", CatalogOutbox), ("collections", CollectionsOutbox)):
        with session_scope(service) as session:
            rows = session.scalars(
                select(model).where(model.sent_at.is_(None)).order_by(model.seq)
            ).all()
            events = [{"id": r.id, "topic": r.topic, "payload": r.payload} for r in rows]
            for row in rows:
                row.sent_at = utcnow()
        for event in events:
            if event["topic"] in APPLIERS:
                consume(event)
                applied += 1
    # Public requests trust a confirmed version for a moment after it
    # changed. In this one process, forgetting it is that moment passing.
    freshness.forget_confirmed()
    return applied


@pytest.fixture
def world(owner, sharing, services, drive_factory):
    """An organization with an open drive and a restricted one, a collection and a link.

    The owner created the link and is listed in the restricted group, so
    the link shows the files of both drives.
    """
    editor = owner.add_member("editor@example.com", "editor")
    viewer = owner.add_member("viewer@example.com", "viewer")
    response = owner.post("/api/v1/groups", json={"name": "Clients", "visibility": "restricted"})
    assert response.status_code == 201, response.json
    _open_source, open_files = add_drive(
        owner, drive_factory, "OPEN-01",
        {"a.png": png_bytes(shade=1), "b.png": png_bytes(shade=2), "c.png": png_bytes(shade=3)},
    )  # fmt: skip
    _secret_source, secret_files = add_drive(
        owner, drive_factory, "SECRET-01", {"s.png": png_bytes(shade=4)}, group="Clients"
    )
    api = Api(owner, sharing, services["collections"])
    ids = [open_files["a.png"], open_files["b.png"], open_files["c.png"], secret_files["s.png"]]
    collection = api.create_collection("Summer shoot", "Selected frames", ids)
    deliver_events()
    link = api.create_link(collection["id"])
    return {
        "owner": owner,
        "editor": editor,
        "viewer": viewer,
        "api": api,
        "collection": collection,
        "link": link,
        "token": token_of(link),
        "files": {**open_files, **secret_files},
        "open_source": _open_source,
        "secret_source": _secret_source,
    }


def catalog_facts(file_ids) -> list[dict]:
    from core.db import get_engine
    from services.catalog.events import facts_for

    with get_engine("catalog").connect() as conn:
        return facts_for(conn, list(file_ids))


def apply_event(topic: str, payload: dict) -> None:
    """Deliver one event to the sharing consumers inline."""
    from core.db import new_id
    from workers.tasks.sharing import consume

    from services.sharing import freshness

    consume({"id": new_id(), "topic": topic, "payload": payload})
    # Public requests trust a confirmed version for a moment after it
    # changed. In this one process, forgetting it is that moment passing.
    freshness.forget_confirmed()


def give_renditions(file_ids) -> None:
    """Store a thumbnail and a preview per file and publish facts that name them."""
    from datetime import datetime, timedelta

    from core.storage import get_store

    store = get_store()
    facts = catalog_facts(file_ids)
    for index, fact in enumerate(facts):
        thumb = f"thumbs/test/{fact['id']}.png"
        preview = f"previews/test/{fact['id']}.png"
        store.put_bytes(thumb, png_bytes(48, 36, index), "image/png")
        store.put_bytes(preview, png_bytes(320, 240, index), "image/png")
        updated = datetime.fromisoformat(fact["updated_at"]) + timedelta(seconds=1)
        fact.update(thumbnail_key=thumb, preview_key=preview, updated_at=updated.isoformat())
    apply_event("catalog.files_updated", {"files": facts})
