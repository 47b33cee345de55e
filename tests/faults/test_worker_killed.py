"""Celery workers killed with SIGKILL in the middle of scans, renditions and exports.

Each test runs a real worker subprocess on a drive queue of its own, kills
its whole process group at a chosen moment, starts a new worker and runs the
recovery task that the beat schedule would run. The catalog must end up as if
nothing had happened: no file lost, none counted twice, every artifact whole.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import time
import zipfile
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy
import pytest
from PIL import Image
from sqlalchemy import func, select, text

from core.db import get_engine, session_scope, utcnow
from services.catalog.models import Export, File, Scan
from tests.catalog.helpers import files_by_path
from tests.conftest import DATA_DIR
from workers.scan.volume import MARKER_NAME, ensure_volume_id

OBJECTS_DIR = DATA_DIR / "objects"
# The beat schedule re-runs each recovery task every 15-60 s. The tests re-run
# it this often while they wait, as beat would.
RECOVERY_INTERVAL_S = 10
FINISHED_SCAN = ("succeeded", "interrupted", "failed")


def connect(member, root: Path, host: str) -> dict:
    body = {"volume_id": ensure_volume_id(root), "mount_path": str(root), "host": host}
    response = member.post("/api/v1/sources", json=body)
    assert response.status_code == 200, response.json
    return response.json


def wait_recovering(predicate, timeout: float, message: str, recover=None):
    """Poll ``predicate`` until truthy, calling ``recover()`` every few seconds."""
    deadline = time.monotonic() + timeout
    next_recovery = time.monotonic() + RECOVERY_INTERVAL_S
    while True:
        value = predicate()
        if value:
            return value
        now = time.monotonic()
        if now > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        if recover is not None and now >= next_recovery:
            recover()
            next_recovery = now + RECOVERY_INTERVAL_S
        time.sleep(0.05)


def heartbeat_age(model, row_id: str) -> timedelta:
    with session_scope("catalog") as session:
        heartbeat = session.scalar(select(model.heartbeat_at).where(model.id == row_id))
    assert heartbeat is not None, f"{model.__name__} {row_id} has no heartbeat"
    return utcnow() - heartbeat


def wait_until_stale(model, row_id: str, stale_after: int) -> None:
    """Sleep until the row's heartbeat is older than ``stale_after`` seconds."""
    margin = timedelta(seconds=stale_after + 0.5)
    age = heartbeat_age(model, row_id)
    if age < margin:
        time.sleep((margin - age).total_seconds())
    assert heartbeat_age(model, row_id) > timedelta(seconds=stale_after)


def files_on_disk(root: Path) -> set[str]:
    return {
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() and path.name != MARKER_NAME
    }


def catalog_rows(source_id: str) -> list[tuple[str, str, str]]:
    with session_scope("catalog") as session:
        return session.execute(
            select(File.id, File.path, File.presence).where(File.source_id == source_id)
        ).all()


@contextmanager
def rows_held(statement, timeout: float = 60):
    """Lock the rows ``statement`` selects until a worker blocks on them.

    The caller kills the worker inside the block. The lock is released on
    leaving, so the update the dead worker was waiting to make is never
    committed. The lock lets foreign keys be checked (FOR NO KEY UPDATE), so
    the worker runs on until it updates one of the rows itself. Returns the
    rows selected.
    """
    engine = get_engine("catalog")
    with engine.connect() as conn, engine.connect() as watcher:
        transaction = conn.begin()
        holder = conn.scalar(text("SELECT pg_backend_pid()"))
        rows = conn.execute(statement.with_for_update(key_share=True)).all()
        # PostgreSQL reads statistics views once per transaction, so the
        # watcher queries them outside one.
        watcher = watcher.execution_options(isolation_level="AUTOCOMMIT")
        blocked = text(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE CAST(:holder AS integer) = ANY(pg_blocking_pids(pid))"
        )
        deadline = time.monotonic() + timeout
        while not watcher.scalar(blocked, {"holder": holder}):
            assert time.monotonic() < deadline, "the worker never reached the held rows"
            time.sleep(0.05)
        try:
            yield rows
        finally:
            transaction.rollback()


def catalog_count(source_id: str) -> int:
    with session_scope("catalog") as session:
        return session.scalar(
            select(func.count()).select_from(File).where(File.source_id == source_id)
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# -- scans ----------------------------------------------------------------------------

SCAN_FOLDERS = 600
FILES_PER_FOLDER = 10


@pytest.fixture
def bulk_drive(drive_factory):
    """A drive of 6000 small files, ten per folder.

    Folders of ten and a batch size of ten make the worker commit one small
    transaction per folder. The scan's counts first show files about 2 s into
    the walk (the heartbeat interval), so the walk must last well beyond that
    to be killed midway. It takes about 6 s on a 2-core test machine, an
    estimate from a measured 3000-file walk.
    """
    files = {
        f"roll-{folder:03d}/frame-{index:02d}.dat": f"{folder}:{index}\n".encode() * 8
        for folder in range(SCAN_FOLDERS)
        for index in range(FILES_PER_FOLDER)
    }
    return drive_factory("bulk", files)


@pytest.mark.slow
def test_scan_survives_worker_kill(
    owner, bulk_drive, worker_factory, drive_host, fast_stale
):
    from workers.tasks.scans import recover_stalled

    # Batches of 10 files, each committed as soon as it is sent, so the
    # first files are in the catalog long before the scan ends.
    worker = worker_factory(SCAN_BATCH_SIZE="10", SCAN_COMMIT_SECONDS="0")
    source = connect(owner, bulk_drive, drive_host)
    scan_id = source["active_scan"]["id"]

    def scan_writing():
        scan = owner.get(f"/api/v1/scans/{scan_id}").json
        assert scan["status"] not in FINISHED_SCAN, (
            f"scan ended before the kill: {scan}"
        )
        return catalog_count(source["id"]) > 0

    wait_recovering(scan_writing, 60, "the scan to write its first files")
    # The worker updates the scan row with a heartbeat every few seconds and
    # once more before its final transaction. Holding that row locked stops
    # it at one of those points, so the kill always lands in the middle of
    # the scan, however fast the machine walks.
    with rows_held(select(Scan.status).where(Scan.id == scan_id)) as held:
        assert [row.status for row in held] == ["running"], held
        worker.kill()

    killed = owner.get(f"/api/v1/scans/{scan_id}").json
    assert killed["status"] == "running", killed
    assert catalog_count(source["id"]) > 0

    worker_factory(SCAN_BATCH_SIZE="10", SCAN_COMMIT_SECONDS="0")
    wait_until_stale(Scan, scan_id, fast_stale)
    assert recover_stalled() >= 1

    def scan_finished():
        scan = owner.get(f"/api/v1/scans/{scan_id}").json
        return scan if scan["status"] in FINISHED_SCAN else None

    scan = wait_recovering(scan_finished, 120, "the resent scan", recover_stalled)
    assert scan["status"] == "succeeded", scan
    assert scan["attempt"] >= 2, scan

    on_disk = files_on_disk(bulk_drive)
    assert len(on_disk) == SCAN_FOLDERS * FILES_PER_FOLDER
    # The killed first scan wrote some files directly. The resent scan finds
    # those unchanged and inserts the rest.
    counts = scan["counts"]
    assert counts["files"] == len(on_disk), counts
    assert counts["new"] + counts["unchanged"] == len(on_disk), counts
    assert counts["missing"] == 0, counts
    rows = catalog_rows(source["id"])
    paths = [path for _, path, _ in rows]
    assert len(rows) == len(on_disk), "files catalogued twice or lost"
    assert len(set(paths)) == len(paths), "a path is catalogued twice"
    assert set(paths) == on_disk
    assert {presence for _, _, presence in rows} == {"present"}
    listed = files_by_path(owner, drive=source["name"])
    assert set(listed) == on_disk
    ids_before = {path: file_id for file_id, path, _ in rows}

    response = owner.post(f"/api/v1/sources/{source['id']}/scans")
    assert response.status_code == 202, response.json
    rescan_id = response.json["id"]

    def rescan_finished():
        scan = owner.get(f"/api/v1/scans/{rescan_id}").json
        return scan if scan["status"] in FINISHED_SCAN else None

    rescan = wait_recovering(rescan_finished, 120, "the rescan", recover_stalled)
    assert rescan["status"] == "succeeded", rescan
    counts = rescan["counts"]
    assert counts["unchanged"] == len(on_disk), counts
    for name in ("new", "changed", "moved", "missing", "restored", "errors"):
        assert counts[name] == 0, (name, counts)
    ids_after = {path: file_id for file_id, path, _ in catalog_rows(source["id"])}
    assert ids_after == ids_before


# -- renditions -----------------------------------------------------------------------

PHOTO_COUNT = 40
PHOTO_SIZE = (1200, 900)


def noise_jpeg(seed: int) -> bytes:
    """Encode a JPEG of random pixels, which decodes and resizes slowly."""
    width, height = PHOTO_SIZE
    pixels = numpy.random.default_rng(seed).integers(
        0, 256, (height, width, 3), dtype=numpy.uint8
    )
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def rendition_states(source_id: str) -> dict[str, int]:
    with session_scope("catalog") as session:
        rows = session.execute(
            select(File.rendition_state, func.count())
            .where(File.source_id == source_id)
            .group_by(File.rendition_state)
        ).all()
    return dict(rows)


def stored_objects(prefix: str) -> list[Path]:
    folder = OBJECTS_DIR / prefix
    return (
        [path for path in folder.rglob("*") if path.is_file()]
        if folder.exists()
        else []
    )


@pytest.mark.slow
def test_renditions_survive_worker_kill(
    owner, drive_factory, worker_factory, drive_host
):
    from workers.tasks.renditions import sweep_pending

    started = time.time()
    root = drive_factory(
        "photos", {f"shoot/img-{i:03d}.jpg": noise_jpeg(i) for i in range(PHOTO_COUNT)}
    )
    worker = worker_factory(concurrency=2)
    source = connect(owner, root, drive_host)
    scan_id = source["active_scan"]["id"]

    def partly_rendered():
        scan = owner.get(f"/api/v1/scans/{scan_id}").json
        assert scan["status"] in ("queued", "running", "finalizing", "succeeded"), scan
        done = rendition_states(source["id"]).get("done", 0)
        assert done < PHOTO_COUNT, "every rendition was made before the kill"
        return done >= 2

    wait_recovering(partly_rendered, 120, "the first renditions")
    # The worker stops when it comes to store the renditions of a file still
    # pending, so it is killed with work done and work left.
    still_pending = select(File.id).where(
        File.source_id == source["id"], File.rendition_state == "pending"
    )
    with rows_held(still_pending):
        worker.kill()
    states = rendition_states(source["id"])
    assert 0 < states.get("done", 0) < PHOTO_COUNT, states

    worker_factory(concurrency=2)
    assert sweep_pending() >= 1

    def settled():
        source_view = owner.get(f"/api/v1/sources/{source['id']}").json
        return source_view if source_view["renditions_pending"] == 0 else None

    settled_source = wait_recovering(settled, 180, "every rendition", sweep_pending)
    assert settled_source["file_count"] == PHOTO_COUNT

    files = files_by_path(owner, drive=source["name"])
    assert len(files) == PHOTO_COUNT
    for path, item in files.items():
        assert item["rendition_state"] == "done", item
        assert item["thumbnail_url"] is not None, path
        response = owner.get(f"/api/v1/files/{item['id']}/thumbnail")
        assert response.status_code == 200, (path, response.status_code)
        thumbnail = Image.open(io.BytesIO(response.data))
        thumbnail.load()
        assert max(thumbnail.size) <= 320, (path, thumbnail.size)

    with session_scope("catalog") as session:
        keys = session.scalars(
            select(File.thumbnail_key).where(File.source_id == source["id"])
        ).all()
    assert len(keys) == PHOTO_COUNT
    # Every photo differs, so every thumbnail differs. Keys are content
    # addressed, so a file rendered twice still has one thumbnail object, and
    # the thumbnails stored since the test began are exactly the files' ones.
    assert len(set(keys)) == PHOTO_COUNT
    stored_since_start = {
        path.relative_to(OBJECTS_DIR).as_posix()
        for path in stored_objects("thumbnails")
        if not path.name.startswith(".upload-") and path.stat().st_mtime >= started
    }
    assert stored_since_start == set(keys)


# -- exports --------------------------------------------------------------------------

EXPORT_FILES = 6
EXPORT_FILE_MIB = 150


@pytest.fixture
def large_drive(drive_factory):
    """A drive of six 150 MiB files of random bytes, deleted after the test.

    Random bytes make the export's copy take real time. One random block is
    written at a different rotation into each file, so every file differs.
    """
    root = drive_factory("footage")
    block = numpy.random.default_rng(7).bytes(EXPORT_FILE_MIB << 20)
    view = memoryview(block)
    for index in range(EXPORT_FILES):
        shift = index * 4099
        with open(root / f"clip-{index}.bin", "wb") as handle:
            handle.write(view[shift:])
            handle.write(view[:shift])
    yield root
    for path in root.glob("clip-*.bin"):
        path.unlink()


def fetch_export(member, export_id: str) -> dict:
    response = member.get(f"/api/v1/exports/{export_id}")
    assert response.status_code == 200, response.json
    return response.json


class PartialArchiveLeft(AssertionError):
    """The killed worker's partial archive is still stored beside the finished one."""


@pytest.mark.slow
def test_export_survives_worker_kill(
    owner, large_drive, worker_factory, drive_host, fast_stale
):
    from workers.tasks.exports import resume_exports
    from workers.tasks.scans import recover_stalled

    worker = worker_factory(queues=("exports",))
    source = connect(owner, large_drive, drive_host)
    scan_id = source["active_scan"]["id"]

    def scan_finished():
        scan = owner.get(f"/api/v1/scans/{scan_id}").json
        return scan if scan["status"] in FINISHED_SCAN else None

    scan = wait_recovering(scan_finished, 60, "the scan", recover_stalled)
    assert scan["status"] == "succeeded", scan
    files = files_by_path(owner, drive=source["name"])
    assert len(files) == EXPORT_FILES

    response = owner.post(
        "/api/v1/exports",
        json={"file_ids": [f["id"] for f in files.values()], "name": "footage"},
    )
    assert response.status_code == 202, response.json
    export_id = response.json["id"]

    def copying():
        export = fetch_export(owner, export_id)
        assert export["status"] in ("queued", "running"), (
            f"export ended before the kill: {export}"
        )
        return export["status"] == "running" and export["bytes_done"] > 0

    wait_recovering(copying, 60, "the export to copy its first bytes", resume_exports)
    # The worker stops at its next progress update, mid-copy.
    with rows_held(select(Export.status).where(Export.id == export_id)) as held:
        assert [row.status for row in held] == ["running"], held
        worker.kill()
    killed = fetch_export(owner, export_id)
    assert killed["status"] == "running", killed
    assert 0 < killed["bytes_done"] <= killed["bytes_total"], killed

    worker_factory(queues=("exports",))
    wait_until_stale(Export, export_id, fast_stale)
    assert resume_exports() >= 1

    def export_finished():
        export = fetch_export(owner, export_id)
        return (
            export if export["status"] not in ("queued", "running", "waiting") else None
        )

    export = wait_recovering(export_finished, 120, "the resumed export", resume_exports)
    assert export["status"] == "succeeded", export
    assert export["files_done"] == EXPORT_FILES, export
    assert export["skipped"] == [], export

    key = f"exports/{export_id}/footage.zip"
    with session_scope("catalog") as session:
        assert session.get(Export, export_id).archive_key == key
    archive_path = OBJECTS_DIR / key
    tested = subprocess.run(
        ["unzip", "-t", str(archive_path)], check=False, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout[-2000:] + tested.stderr

    expected = {path.name: sha256_file(path) for path in large_drive.glob("clip-*.bin")}
    with zipfile.ZipFile(archive_path) as archive:
        assert sorted(archive.namelist()) == sorted(expected)
        for name, digest in expected.items():
            entry = hashlib.sha256()
            with archive.open(name) as handle:
                while chunk := handle.read(1 << 20):
                    entry.update(chunk)
            assert entry.hexdigest() == digest, name

    # Checked last and with its own exception, so that the expected failure
    # cannot hide a failure of any check above.
    leftovers = sorted(path.name for path in archive_path.parent.iterdir())
    if leftovers != ["footage.zip"]:
        raise PartialArchiveLeft(f"the export's folder contains {leftovers}")
