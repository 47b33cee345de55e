"""Each drive's file counts are kept on its row and follow scans and tasks."""

from __future__ import annotations

import os

from sqlalchemy import create_engine, event, text

from core.db import alembic_config, get_engine
from tests.catalog.helpers import connect, run_active_scan, scan


def jpeg(shade: int) -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.new("RGB", (16, 16), (shade, shade, shade)).save(buffer, "JPEG")
    return buffer.getvalue()


def drive_counts(member, source: dict) -> dict:
    drive = member.get(f"/api/v1/sources/{source['id']}").json
    names = ("file_count", "missing_count", "total_bytes", "renditions_pending", "checksums_pending")
    return {name: drive[name] for name in names}


def test_counts_follow_scans(owner, drive_factory):
    layout = {"a/one.jpg": jpeg(10), "a/two.jpg": jpeg(200), "notes.txt": b"hello"}
    root = drive_factory("counted", layout)
    source = connect(owner, root)
    run_active_scan(owner, source)
    # The photos wait for renditions, and every file for its checksum.
    assert drive_counts(owner, source) == {
        "file_count": 3,
        "missing_count": 0,
        "total_bytes": sum(len(data) for data in layout.values()),
        "renditions_pending": 2,
        "checksums_pending": 3,
    }
    os.unlink(root / "a/two.jpg")
    scan(owner, source)
    counts = drive_counts(owner, source)
    assert counts["file_count"] == 2
    assert counts["missing_count"] == 1
    assert counts["total_bytes"] == len(layout["a/one.jpg"]) + len(layout["notes.txt"])
    assert counts["renditions_pending"] == 1


def test_counts_follow_rendition_and_checksum_tasks(owner, drive_factory):
    from workers.tasks.checksums import checksum_source
    from workers.tasks.renditions import render_source

    root = drive_factory("worked", {"a/one.jpg": jpeg(10), "b.txt": b"text"})
    source = connect(owner, root)
    run_active_scan(owner, source)
    assert drive_counts(owner, source)["renditions_pending"] == 1
    render_source(source["id"])
    checksum_source(source["id"])
    counts = drive_counts(owner, source)
    assert counts["renditions_pending"] == 0
    assert counts["checksums_pending"] == 0
    assert counts["file_count"] == 2


def test_listing_drives_counts_no_files(owner, drive_factory):
    source = connect(owner, drive_factory("listed", {"a.jpg": b"x" * 10}))
    run_active_scan(owner, source)
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    engine = get_engine("catalog")
    event.listen(engine, "before_cursor_execute", record)
    try:
        listed = owner.get("/api/v1/sources")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert listed.status_code == 200
    assert [item["file_count"] for item in listed.json["items"]] == [1]
    assert statements
    assert not [s for s in statements if "FROM files" in s]


def test_migration_fills_counts_of_catalogued_drives(tmp_path):
    from alembic import command

    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    config = alembic_config("catalog", url)
    command.upgrade(config, "0003")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO organizations (id, name) VALUES ('o', 'org')"))
            conn.execute(
                text(
                    "INSERT INTO sources (id, org_id, name, volume_id, state) "
                    "VALUES ('s', 'o', 'drive', 'v', 'online')"
                )
            )
            for number, (presence, state, checksum) in enumerate(
                [("present", "pending", None), ("present", "done", "c"), ("missing", "done", None)]
            ):
                conn.execute(
                    text(
                        "INSERT INTO files (id, org_id, source_id, path, path_bytes, path_hash, "
                        "folder, folder_hash, name, name_lower, extension, size, mtime_ns, "
                        "ctime_ns, inode, fingerprint, checksum, media_type, kind, presence, "
                        "content_version, rendition_state) VALUES (:id, 'o', 's', :id, :path, "
                        ":id, '', 'root', :id, :id, '', :size, 0, 0, 0, 'fp', :checksum, "
                        "'image/jpeg', 'image', :presence, 1, :state)"
                    ),
                    {
                        "id": f"f{number}",
                        "path": f"f{number}".encode(),
                        "size": 100 * (number + 1),
                        "checksum": checksum,
                        "presence": presence,
                        "state": state,
                    },
                )
        command.upgrade(config, "head")
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT file_count, missing_count, total_bytes, renditions_pending, "
                    "checksums_pending FROM sources WHERE id = 's'"
                )
            ).one()
        assert tuple(row) == (2, 1, 300, 1, 1)
    finally:
        engine.dispose()
