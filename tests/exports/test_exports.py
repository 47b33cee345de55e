"""Zip exports and single originals, read from real drives."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.catalog.helpers import INLINE_HOST, connect, files_by_path, run_active_scan, scan


def run_export(member, file_ids, **options) -> dict:
    """Create an export and run its plan and assembly inline."""
    from workers.tasks.exports import assemble_export, plan_export

    response = member.post("/api/v1/exports", json={"file_ids": file_ids, **options})
    assert response.status_code == 202, response.json
    export_id = response.json["id"]
    plan_export(export_id)
    shown = member.get(f"/api/v1/exports/{export_id}").json
    if shown["status"] == "running":
        assemble_export(export_id, INLINE_HOST)
    return member.get(f"/api/v1/exports/{export_id}").json


def download(member, export_id) -> bytes:
    response = member.get(f"/api/v1/exports/{export_id}/archive")
    assert response.status_code == 200, response.json
    return response.data


def unzip_test(path: Path) -> None:
    result = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def test_export_of_corpus_is_byte_exact(owner, corpus, tmp_path):
    for drive in ("drive-a", "drive-b"):
        source = connect(owner, corpus / drive, name=drive)
        run_active_scan(owner, source)
    files, types = {}, {}
    for drive in ("drive-a", "drive-b"):
        for path, item in files_by_path(owner, drive=drive).items():
            files[item["id"]] = corpus / drive / path
            types[f"{drive}/{path}"] = item["media_type"]
    export = run_export(owner, sorted(files), keep_structure=True, name="corpus")
    assert export["status"] == "succeeded", export
    assert export["files_done"] == len(files)
    archive_path = tmp_path / "corpus.zip"
    archive_path.write_bytes(download(owner, export["id"]))
    unzip_test(archive_path)
    with zipfile.ZipFile(archive_path) as archive:
        names = set(archive.namelist())
        assert len(names) == len(files)
        for file_id, original in files.items():
            drive = original.relative_to(corpus).parts[0]
            rel = original.relative_to(corpus / drive).as_posix()
            name = f"{drive}/{rel}"
            assert name in names, name
            assert archive.read(name) == original.read_bytes(), name
            info = archive.getinfo(name)
            text_like = types[name].startswith("text/") or types[name] == "application/xml"
            expected = zipfile.ZIP_DEFLATED if text_like else zipfile.ZIP_STORED
            assert info.compress_type == expected, name


def test_offline_export_waits_then_resumes(owner, drive_factory):
    root = drive_factory("shelf", {"a.jpg": b"a" * 5000, "b.jpg": b"b" * 7000})
    source = connect(owner, root)
    run_active_scan(owner, source)
    ids = [f["id"] for f in files_by_path(owner).values()]
    owner.post(f"/api/v1/sources/{source['id']}/disconnect")
    waiting = run_export(owner, ids)
    assert waiting["status"] == "waiting"
    assert waiting["waiting_for"] == ["shelf"]

    from workers.tasks.exports import assemble_export, resume_exports

    connect(owner, root)
    assert resume_exports() >= 1
    # resume_exports queued the plan; run it inline as the worker would.
    from workers.tasks.exports import plan_export

    plan_export(waiting["id"])
    assemble_export(waiting["id"], INLINE_HOST)
    done = owner.get(f"/api/v1/exports/{waiting['id']}").json
    assert done["status"] == "succeeded"
    archive = zipfile.ZipFile(io.BytesIO(download(owner, done["id"])))
    assert sorted(archive.namelist()) == ["a.jpg", "b.jpg"]


def test_skip_offline_writes_manifest(owner, drive_factory):
    online = drive_factory("online", {"keep.jpg": b"k" * 3000})
    offline = drive_factory("offline", {"gone.jpg": b"g" * 3000})
    for root in (online, offline):
        run_active_scan(owner, connect(owner, root))
    by_path = files_by_path(owner)
    owner.post("/api/v1/sources/offline/disconnect")
    export = run_export(owner, [by_path["keep.jpg"]["id"], by_path["gone.jpg"]["id"]], skip_offline=True)
    assert export["status"] == "succeeded"
    archive = zipfile.ZipFile(io.BytesIO(download(owner, export["id"])))
    assert sorted(archive.namelist()) == ["MANIFEST.json", "keep.jpg"]
    manifest = archive.read("MANIFEST.json").decode()
    assert "gone.jpg" in manifest
    assert "offline" in manifest


def test_identical_copy_on_online_drive_is_used(owner, drive_factory):
    from workers.tasks.checksums import checksum_source

    data = os.urandom(9000)
    shelf = drive_factory("shelf", {"photo.jpg": data})
    desk = drive_factory("desk", {"copy/photo-backup.jpg": data})
    sources = [connect(owner, root) for root in (shelf, desk)]
    for source in sources:
        run_active_scan(owner, source)
        checksum_source(source["id"])
    wanted = files_by_path(owner, drive="shelf")["photo.jpg"]["id"]
    owner.post("/api/v1/sources/shelf/disconnect")
    export = run_export(owner, [wanted])
    assert export["status"] == "succeeded", export
    assert export["substituted"][0]["copy_drive"] == "desk"
    archive = zipfile.ZipFile(io.BytesIO(download(owner, export["id"])))
    assert archive.read("photo.jpg") == data
    assert "photo-backup.jpg" in archive.read("MANIFEST.json").decode()


def test_missing_file_is_skipped_and_listed(owner, drive_factory):
    root = drive_factory("d", {"here.jpg": b"h" * 100, "lost.jpg": b"l" * 100})
    source = connect(owner, root)
    run_active_scan(owner, source)
    ids = [f["id"] for f in files_by_path(owner).values()]
    (root / "lost.jpg").unlink()
    scan(owner, source)
    export = run_export(owner, ids)
    assert export["status"] == "succeeded"
    assert [s["path"] for s in export["skipped"]] == ["lost.jpg"]


def test_file_changed_after_request_is_reported(owner, drive_factory):
    root = drive_factory("d", {"stable.jpg": b"s" * 4000, "edited.jpg": b"e" * 4000})
    source = connect(owner, root)
    run_active_scan(owner, source)
    ids = [f["id"] for f in files_by_path(owner).values()]
    from workers.tasks.exports import assemble_export, plan_export

    created = owner.post("/api/v1/exports", json={"file_ids": ids}).json
    (root / "edited.jpg").write_bytes(b"E" * 4000)
    plan_export(created["id"])
    assemble_export(created["id"], INLINE_HOST)
    done = owner.get(f"/api/v1/exports/{created['id']}").json
    assert done["status"] == "succeeded"
    archive = zipfile.ZipFile(io.BytesIO(download(owner, done["id"])))
    assert "edited.jpg" not in archive.namelist()
    assert "changed" in archive.read("MANIFEST.json").decode()


def test_hostile_names_are_made_safe_and_unique(owner, drive_factory):
    root = drive_factory(
        "names",
        {"a/photo.jpg": b"1" * 10, "b/photo.jpg": b"2" * 10, "c/PHOTO.jpg": b"3" * 10,
         "d/..jpg": b"4" * 10, "e/bad\x07name.jpg": b"5" * 10},
    )  # fmt: skip
    source = connect(owner, root)
    run_active_scan(owner, source)
    ids = [f["id"] for f in files_by_path(owner).values()]
    export = run_export(owner, ids)
    archive = zipfile.ZipFile(io.BytesIO(download(owner, export["id"])))
    names = archive.namelist()
    assert len(names) == 5
    assert len({n.lower() for n in names}) == 5
    for name in names:
        assert not name.startswith("/")
        assert ".." not in name.split("/")
        assert all(ord(ch) >= 32 for ch in name)
    lowered = {n.lower() for n in names}
    assert {"photo.jpg", "photo (2).jpg", "photo (3).jpg"} <= lowered
    assert "bad_name.jpg" in names


def test_original_download_and_offline_refusal(owner, drive_factory):
    data = os.urandom(300_000)
    root = drive_factory("cam", {"clip.mov": data})
    source = connect(owner, root)
    run_active_scan(owner, source)
    # The service reads originals itself when it runs on the drive's host.
    from sqlalchemy import update

    from core.db import session_scope
    from services.catalog.models import Source

    with session_scope("catalog") as session:
        session.execute(
            update(Source).where(Source.id == source["id"]).values(host=os.environ["ARCHIVE_HOST"])
        )
    file_id = files_by_path(owner)["clip.mov"]["id"]
    response = owner.get(f"/api/v1/files/{file_id}/original")
    assert response.status_code == 200
    assert response.data == data
    assert "clip.mov" in response.headers["Content-Disposition"]
    owner.post(f"/api/v1/sources/{source['id']}/disconnect")
    refused = owner.get(f"/api/v1/files/{file_id}/original")
    assert refused.status_code == 409
    assert refused.json["error"]["code"] == "drive_offline"
    assert refused.json["error"]["drive"] == "cam"
    assert "connect drive 'cam'" in refused.json["error"]["message"]


@pytest.mark.parametrize("name", ["new\nline.jpg", "\x1b[31mred.jpg", 'quo"te\\d é.jpg'])
def test_original_download_odd_name(owner, drive_factory, name):
    from urllib.parse import quote

    from sqlalchemy import update

    from core.db import session_scope
    from services.catalog.models import Source

    root = drive_factory("odd", {name: b"bytes of an odd name"})
    source = connect(owner, root)
    run_active_scan(owner, source)
    with session_scope("catalog") as session:
        session.execute(
            update(Source).where(Source.id == source["id"]).values(host=os.environ["ARCHIVE_HOST"])
        )
    file_id = files_by_path(owner)[name]["id"]
    response = owner.get(f"/api/v1/files/{file_id}/original")
    assert response.status_code == 200
    assert response.data == b"bytes of an odd name"
    header = response.headers["Content-Disposition"]
    # Every character of the header is printable ASCII, and the exact name
    # travels percent-encoded.
    assert all(32 <= ord(ch) < 127 for ch in header)
    assert header.endswith("filename*=UTF-8''" + quote(name, safe=""))


@pytest.mark.slow
def test_export_over_4gb_uses_zip64(owner, tmp_path):
    root = tmp_path / "mnt" / "big"
    root.mkdir(parents=True)
    # Sparse files: 4.5 GB of zeros that take no disk space to hold.
    for i, size in enumerate((2_300_000_000, 2_300_000_000)):
        with open(root / f"part{i}.bin", "wb") as handle:
            handle.truncate(size)
    (root / "small.txt").write_text("hello\n")
    source = connect(owner, root)
    run_active_scan(owner, source)
    ids = [f["id"] for f in files_by_path(owner).values()]
    export = run_export(owner, ids)
    assert export["status"] == "succeeded", export
    from core.storage import get_store

    store = get_store()
    path = store.root / f"exports/{export['id']}/{export['name']}.zip"
    assert path.stat().st_size > 4_600_000_000
    unzip_test(path)
    path.unlink()


def test_second_plan_keeps_running_export(owner, drive_factory, monkeypatch):
    import workers.tasks.exports as exports

    root = drive_factory("twice", {"a.jpg": b"a" * 5000, "b.jpg": b"b" * 7000})
    source = connect(owner, root)
    run_active_scan(owner, source)
    ids = [f["id"] for f in files_by_path(owner).values()]
    dispatched = []
    monkeypatch.setattr(exports, "_dispatch", lambda export_id, plan: dispatched.append(export_id))
    # Plans run inline only: a test worker left from another test would
    # otherwise plan the export first, with the real dispatch.
    monkeypatch.setattr(exports.plan_export, "apply_async", lambda *args, **options: None)

    response = owner.post("/api/v1/exports", json={"file_ids": ids})
    export_id = response.json["id"]
    exports.plan_export(export_id)
    exports._update(export_id, files_done=1, bytes_done=5000)
    # The same plan queued again, while the first one's assembly runs.
    exports.plan_export(export_id)
    running = owner.get(f"/api/v1/exports/{export_id}").json
    assert running["status"] == "running"
    assert running["files_done"] == 1
    assert dispatched == [export_id]

    exports.assemble_export(export_id, INLINE_HOST)
    done = owner.get(f"/api/v1/exports/{export_id}").json
    assert done["status"] == "succeeded"
    assert sorted(zipfile.ZipFile(io.BytesIO(download(owner, export_id))).namelist()) == ["a.jpg", "b.jpg"]
