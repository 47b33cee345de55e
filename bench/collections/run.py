"""Benchmark collection pages and bulk adds on PostgreSQL.

Usage: .venv/bin/python bench/collections/run.py [--items 100000] [--repeat 30]

Creates the databases ``archive_bench_catalog`` and
``archive_bench_collections`` on ``--postgres`` (dropped again at the end),
inserts the catalog's file rows directly with SQL, and serves the catalog
over HTTP on 127.0.0.1 in a thread. The collections service runs in this
process through the Flask test client, so add requests include the real
HTTP lookup to the catalog.

It builds one collection by adding ``--items`` files in requests of 10,000
ids, and times each add. One drive in ten is in a restricted group, so a
viewer outside that group has every tenth item hidden. It then times one
page of 100 items at the start, the middle and the end in two ways. The
"client" numbers are whole requests through the test client, with the auth
cache, schemas and JSON. The "service" numbers are direct calls of
``list_items`` on a session, which cover the queries and serialization.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPOSITORY_ROOT))

BATCH = 10_000
PAGE = 100
DATABASES = ("archive_bench_catalog", "archive_bench_collections")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000, help="Items in the collection.")
    parser.add_argument("--repeat", type=int, default=30, help="Timed runs per page.")
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432",
        help="PostgreSQL server URL without a database name.",
    )
    return parser.parse_args()


def recreate_databases(server_url: str, create: bool) -> None:
    import psycopg

    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as conn:
        for name in DATABASES:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if create:
                conn.execute(f'CREATE DATABASE "{name}"')


def configure_environment(server_url: str, data_dir: str) -> None:
    os.environ.update(
        ARCHIVE_DATA_DIR=data_dir,
        CATALOG_DATABASE_URL=f"{server_url}/archive_bench_catalog",
        COLLECTIONS_DATABASE_URL=f"{server_url}/archive_bench_collections",
        SHARING_DATABASE_URL=f"sqlite:///{data_dir}/sharing.sqlite3",
        INTERNAL_SECRET="bench-internal-secret",
        LOG_LEVEL="WARNING",
    )


def insert_catalog_files(org_id: str, sources: list[tuple[str, str]], count: int) -> list[str]:
    """Insert ``count`` file rows spread over ``sources``; return their ids in order.

    Every tenth file goes to the last source, the restricted one.
    """
    from sqlalchemy import insert

    from core.db import get_engine, utcnow
    from services.catalog.models import File

    now = utcnow()
    ids = []
    rows = []
    for index in range(count):
        source_id = sources[-1][0] if index % 10 == 9 else sources[index % (len(sources) - 1)][0]
        file_id = uuid.uuid4().hex
        ids.append(file_id)
        name = f"img_{index:07}.jpg"
        folder = f"day{index // 1000:03}"
        rows.append(
            {
                "id": file_id,
                "org_id": org_id,
                "source_id": source_id,
                "path": f"{folder}/{name}",
                "path_bytes": f"{folder}/{name}".encode(),
                "path_hash": uuid.uuid4().hex,
                "folder": folder,
                "folder_hash": uuid.uuid5(uuid.NAMESPACE_URL, folder).hex,
                "name": name,
                "name_lower": name,
                "extension": "jpg",
                "size": 4_000_000 + index,
                "mtime_ns": 1_700_000_000_000_000_000 + index,
                "ctime_ns": 0,
                "inode": index,
                "fingerprint": uuid.uuid4().hex,
                "media_type": "image/jpeg",
                "kind": "image",
                "presence": "present",
                "first_seen_at": now,
                "updated_at": now,
                "content_version": 1,
                "rendition_state": "done",
                "media_info": {"width": 6000, "height": 4000},
                "thumbnail_key": f"thumbnails/{file_id}.webp",
                "preview_key": f"previews/{file_id}.webp",
            }
        )
    with get_engine("catalog").begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(insert(File), rows[start : start + 5000])
    return ids


def serve(app):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def timed(call, repeat: int) -> list[float]:
    call()  # warm-up, not timed
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"median {statistics.median(ordered):6.2f} ms  p95 {p95:6.2f} ms"


def main() -> int:
    args = parse_args()
    data_dir = tempfile.mkdtemp(prefix="archive-bench-collections-")
    configure_environment(args.postgres, data_dir)
    recreate_databases(args.postgres, create=True)
    try:
        return run(args)
    finally:
        from core.db import dispose_engines

        dispose_engines()
        recreate_databases(args.postgres, create=False)


def run(args) -> int:
    from sqlalchemy import insert

    from core.auth import Principal
    from core.db import get_engine, session_factory, upgrade
    from core.settings import reset_settings
    from services.catalog.app import create_app as create_catalog
    from services.catalog.models import Source

    upgrade("catalog")
    upgrade("collections")
    catalog_app = create_catalog()
    catalog = catalog_app.test_client()
    org = catalog.post("/api/v1/orgs", json={"name": "Bench", "email": "bench@example.com"}).json
    owner_headers = {"Authorization": f"Bearer {org['token']}"}
    group = catalog.post(
        "/api/v1/groups", json={"name": "Restricted", "visibility": "restricted"}, headers=owner_headers
    ).json
    everyone = catalog.get("/api/v1/groups", headers=owner_headers).json
    everyone_id = next(g["id"] for g in everyone if g["name"] == "Everyone")
    viewer = catalog.post(
        "/api/v1/members", json={"email": "viewer@example.com", "role": "viewer"}, headers=owner_headers
    ).json
    viewer_headers = {"Authorization": f"Bearer {viewer['token']}"}

    sources = [(uuid.uuid4().hex, everyone_id) for _ in range(9)] + [(uuid.uuid4().hex, group["id"])]
    with get_engine("catalog").begin() as conn:
        conn.execute(
            insert(Source),
            [
                {"id": source_id, "org_id": org["org_id"], "group_id": group_id,
                 "name": f"DRIVE-{index:02}", "volume_id": source_id, "state": "online"}  # fmt: skip
                for index, (source_id, group_id) in enumerate(sources)
            ],
        )
    started = time.perf_counter()
    file_ids = insert_catalog_files(org["org_id"], sources, args.items)
    print(f"catalog rows: {args.items} files in {time.perf_counter() - started:.1f} s")

    server, catalog_url = serve(catalog_app)
    os.environ["CATALOG_URL"] = catalog_url
    reset_settings()
    from services.collections.api.items import list_items
    from services.collections.app import create_app as create_collections
    from services.collections.models import Collection

    collections = create_collections().test_client()
    collection = collections.post(
        "/api/v1/collections", json={"name": "Big"}, headers=owner_headers
    ).json

    add_times = []
    for start in range(0, len(file_ids), BATCH):
        began = time.perf_counter()
        response = collections.post(
            f"/api/v1/collections/{collection['id']}/items",
            json={"file_ids": file_ids[start : start + BATCH]},
            headers=owner_headers,
        )
        add_times.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, response.json
        assert len(response.json["added"]) == min(BATCH, len(file_ids) - start)
    print(f"add {BATCH} ids per request (test client, incl. HTTP lookup): "
          f"first {add_times[0]:.0f} ms, median {statistics.median(add_times):.0f} ms, "
          f"max {max(add_times):.0f} ms over {len(add_times)} requests")  # fmt: skip

    # Autovacuum would analyze the new rows within a minute or so; the
    # benchmark does it at once so that page plans use fresh statistics.
    with get_engine("collections").connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    total = len(file_ids)
    hidden_total = sum(1 for index in range(total) if index % 10 == 9)
    places = {"start": 0, "middle": total // 2, "end": total - PAGE}
    principals = {
        "owner": Principal(user_id=org["user_id"], org_id=org["org_id"], role="owner",
                           group_ids=frozenset({group["id"]})),  # fmt: skip
        "viewer": Principal(user_id=viewer["user_id"], org_id=org["org_id"], role="viewer"),
    }
    headers = {"owner": owner_headers, "viewer": viewer_headers}
    session = session_factory("collections")()
    results = {}
    for who, principal in principals.items():
        visible_total = total - (hidden_total if who == "viewer" else 0)
        for place, index in places.items():
            # A viewer's page at the same depth of their own view.
            depth = index if who == "owner" else min(index, visible_total - PAGE)
            cursor = _view_cursor(session, collection["id"], principal, depth)
            path = f"/api/v1/collections/{collection['id']}/items"
            query = {"limit": PAGE, **({"cursor": cursor} if cursor else {})}

            def request_page():
                response = collections.get(path, query_string=query, headers=headers[who])
                assert response.status_code == 200, response.json
                assert len(response.json["items"]) == PAGE

            def call_service():
                found = session.get(Collection, collection["id"])
                page = list_items(session, found, principal, PAGE, cursor)
                assert len(page["items"]) == PAGE
                session.rollback()

            results[(who, place, "client")] = timed(request_page, args.repeat)
            results[(who, place, "service")] = timed(call_service, args.repeat)
    session.close()
    server.shutdown()

    print(f"\npage of {PAGE} items in a collection of {total} "
          f"({hidden_total} hidden from the viewer), {args.repeat} runs each")  # fmt: skip
    for who in principals:
        for how in ("service", "client"):
            for place in places:
                print(f"  {who:6} {how:7} {place:6}  {summary(results[(who, place, how)])}")
            first = statistics.median(results[(who, "start", how)])
            last = statistics.median(results[(who, "end", how)])
            print(f"  {who:6} {how:7} end/start ratio {last / first:.2f}x")
    return 0


def _view_cursor(session, collection_id, principal, depth):
    """Return the cursor of a page at ``depth`` in the principal's view."""
    from sqlalchemy import select

    from core.pagination import encode_cursor
    from services.collections.models import CollectionItem
    from services.collections.readmodel import hidden_source_ids

    if depth == 0:
        return None
    hidden = hidden_source_ids(session, principal)
    query = (
        select(CollectionItem.position, CollectionItem.file_id)
        .where(CollectionItem.collection_id == collection_id)
        .order_by(CollectionItem.position, CollectionItem.file_id)
        .offset(depth - 1)
        .limit(1)
    )
    if hidden:
        query = query.where(CollectionItem.source_id.not_in(hidden))
    row = session.execute(query).one()
    session.rollback()
    return encode_cursor([row.position, row.file_id])


if __name__ == "__main__":
    sys.exit(main())
