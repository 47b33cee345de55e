"""Drives scanned by a real Celery worker process, with real images and video.

The Flask test client runs in this process and the worker in another. Both
use the same PostgreSQL databases, Redis database and object store folder,
which tests/conftest.py puts in the environment.
"""

from __future__ import annotations

import io
import os
import re
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy
import pytest
from PIL import Image
from PIL.ExifTags import Base
from sqlalchemy import func, select

from core.db import session_scope
from services.catalog.models import File, OutboxEvent
from tests.catalog.helpers import files_by_path
from tests.conftest import DATA_DIR, TEST_HOST, wait_for
from workers.scan.volume import ensure_volume_id

# Scans, renditions and checksums of these few small files finish within a few
# seconds. The timeout leaves a margin for a cold worker and a loaded machine.
WORKER_TIMEOUT_S = 60
THUMBNAIL_MAX_SIDE = 320
PREVIEW_MAX_SIDE = 1440
WORKER_LOG = DATA_DIR / "worker.log"


# A task's "received" line and the line that ends it, as Celery 5 logs them.
TASK_LOG_LINE = re.compile(
    r"Task [\w.]+\[([0-9a-f-]+)\] (received|succeeded|raised|failed|retry)"
)


def unfinished_task_ids() -> set[str]:
    """Return the ids of tasks the worker has logged as received but not ended."""
    received, ended = set(), set()
    for task_id, event in TASK_LOG_LINE.findall(WORKER_LOG.read_text(errors="replace")):
        if event == "received":
            received.add(task_id)
        else:
            ended.add(task_id)
    return received - ended


def wait_for_idle_worker() -> None:
    """Wait until the worker has ended every task it received, twice in a row.

    The next test truncates every table, and a task still writing then can
    deadlock with the TRUNCATE. A task that is queued but not yet received is
    not seen, so the check repeats after a pause.
    """

    def idle_twice() -> bool:
        if unfinished_task_ids():
            return False
        time.sleep(0.3)
        return not unfinished_task_ids()

    wait_for(idle_twice, WORKER_TIMEOUT_S, 0.1, "the worker to end its tasks")


@pytest.fixture(autouse=True)
def worker(celery_worker_process):
    assert celery_worker_process.poll() is None, f"worker exited; see {WORKER_LOG}"
    yield celery_worker_process
    wait_for_idle_worker()


def gradient_jpeg(
    width: int, height: int, orientation: int | None = None, seed: int = 0
) -> bytes:
    """Encode a JPEG whose pixels differ by ``seed``, optionally with an EXIF orientation."""
    x = numpy.linspace(0, 255, width, dtype=numpy.uint8)
    y = numpy.linspace(0, 255, height, dtype=numpy.uint8)
    pixels = numpy.zeros((height, width, 3), dtype=numpy.uint8)
    pixels[:, :, 0] = x[numpy.newaxis, :]
    pixels[:, :, 1] = y[:, numpy.newaxis]
    pixels[:, :, 2] = seed % 256
    buffer = io.BytesIO()
    image = Image.fromarray(pixels, "RGB")
    if orientation is None:
        image.save(buffer, "JPEG", quality=85)
    else:
        exif = Image.Exif()
        exif[Base.Orientation] = orientation
        image.save(buffer, "JPEG", quality=85, exif=exif)
    return buffer.getvalue()


def short_video(
    path: Path, width: int = 160, height: int = 96, frames: int = 12
) -> None:
    """Write an MPEG-4 Part 2 clip of moving colour bars."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=12)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 12)
        for index in range(frames):
            pixels = numpy.zeros((height, width, 3), dtype=numpy.uint8)
            pixels[:, : width // 2, 0] = 200
            pixels[:, width // 2 :, 2] = 200
            pixels[:, :, 1] = (index * 20) % 256
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def open_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def connect(member, root: Path) -> dict:
    body = {
        "volume_id": ensure_volume_id(root),
        "mount_path": str(root),
        "host": TEST_HOST,
    }
    response = member.post("/api/v1/sources", json=body)
    assert response.status_code == 200, response.json
    return response.json


def worker_log_tail(lines: int = 30) -> str:
    return "\n".join(WORKER_LOG.read_text(errors="replace").splitlines()[-lines:])


def wait_for_worker(predicate, message: str, interval: float = 0.2):
    """Poll like ``wait_for``, and add the worker's last log lines to a timeout error."""
    try:
        return wait_for(predicate, WORKER_TIMEOUT_S, interval, message)
    except AssertionError as error:
        raise AssertionError(f"{error}\nworker log:\n{worker_log_tail()}") from None


def wait_for_scan(member, scan_id: str) -> dict:
    def finished():
        scan = member.get(f"/api/v1/scans/{scan_id}").json
        return (
            scan if scan["status"] in ("succeeded", "interrupted", "failed") else None
        )

    scan = wait_for_worker(finished, f"scan {scan_id} to finish", 0.1)
    assert scan["status"] == "succeeded", scan
    return scan


def wait_for_renditions(member, source_id: str) -> dict:
    def settled():
        source = member.get(f"/api/v1/sources/{source_id}").json
        return source if source["renditions_pending"] == 0 else None

    return wait_for_worker(settled, f"renditions of drive {source_id}")


def wait_for_checksums(member, source_id: str) -> dict:
    def settled():
        source = member.get(f"/api/v1/sources/{source_id}").json
        return source if source["checksums_pending"] == 0 else None

    return wait_for_worker(settled, f"checksums of drive {source_id}")


def connect_and_settle(member, root: Path) -> dict:
    """Connect a drive on the worker's host and wait for its scan and renditions."""
    source = connect(member, root)
    assert source["active_scan"] is not None, source
    wait_for_scan(member, source["active_scan"]["id"])
    return wait_for_renditions(member, source["id"])


def rescan(member, source_id: str) -> dict:
    response = member.post(f"/api/v1/sources/{source_id}/scans")
    assert response.status_code == 202, response.json
    return wait_for_scan(member, response.json["id"])


def thumbnail_keys(source_id: str) -> dict[str, str | None]:
    with session_scope("catalog") as session:
        rows = session.execute(
            select(File.path, File.thumbnail_key).where(File.source_id == source_id)
        ).all()
    return {path: key for path, key in rows}


def rendition_tasks_received() -> int:
    """Count the rendition tasks the worker has logged as received so far."""
    return WORKER_LOG.read_text(errors="replace").count("renditions.source[")


@pytest.fixture
def media_drive(drive_factory):
    root = drive_factory(
        "media",
        {
            "photos/landscape.jpg": gradient_jpeg(640, 400, seed=1),
            "photos/turned.jpg": gradient_jpeg(600, 400, orientation=6, seed=2),
            "notes.txt": b"shot list\n",
        },
    )
    (root / "clips").mkdir()
    short_video(root / "clips" / "bars.mp4")
    return root


def test_worker_makes_thumbnails_and_previews(owner, media_drive):
    source = connect_and_settle(owner, media_drive)
    assert source["file_count"] == 4
    files = files_by_path(owner)

    for path in ("photos/landscape.jpg", "photos/turned.jpg", "clips/bars.mp4"):
        item = files[path]
        assert item["rendition_state"] == "done", item
        thumbnail = owner.get(f"/api/v1/files/{item['id']}/thumbnail")
        assert thumbnail.status_code == 200, path
        image = open_image(thumbnail.data)
        assert max(image.size) <= THUMBNAIL_MAX_SIDE, (path, image.size)
        preview = owner.get(f"/api/v1/files/{item['id']}/preview")
        assert preview.status_code == 200, path
        assert max(open_image(preview.data).size) <= PREVIEW_MAX_SIDE, path
        detail = owner.get(f"/api/v1/files/{item['id']}").json
        assert detail["metadata"]["width"] > 0, detail
        assert detail["metadata"]["height"] > 0, detail

    landscape = owner.get(f"/api/v1/files/{files['photos/landscape.jpg']['id']}").json
    assert (landscape["metadata"]["width"], landscape["metadata"]["height"]) == (
        640,
        400,
    )
    video = owner.get(f"/api/v1/files/{files['clips/bars.mp4']['id']}").json
    assert video["kind"] == "video"
    assert (video["metadata"]["width"], video["metadata"]["height"]) == (160, 96)

    # The stored pixels of turned.jpg are landscape, and orientation 6 turns them upright.
    turned = files["photos/turned.jpg"]
    detail = owner.get(f"/api/v1/files/{turned['id']}").json
    assert (detail["metadata"]["width"], detail["metadata"]["height"]) == (400, 600)
    thumbnail = open_image(owner.get(f"/api/v1/files/{turned['id']}/thumbnail").data)
    assert thumbnail.height > thumbnail.width, thumbnail.size

    notes = files["notes.txt"]
    assert notes["rendition_state"] == "none"
    assert owner.get(f"/api/v1/files/{notes['id']}/thumbnail").status_code == 404

    response = owner.post(f"/api/v1/sources/{source['id']}/disconnect")
    assert response.status_code == 200, response.json
    assert response.json["state"] == "offline"
    offline = files_by_path(owner)
    assert {item["state"] for item in offline.values()} == {"offline"}
    landscape_id = files["photos/landscape.jpg"]["id"]
    thumbnail = owner.get(f"/api/v1/files/{landscape_id}/thumbnail")
    assert thumbnail.status_code == 200
    assert max(open_image(thumbnail.data).size) <= THUMBNAIL_MAX_SIDE


def test_rescan_renders_only_changed_files(owner, media_drive):
    source = connect_and_settle(owner, media_drive)
    keys_before = thumbnail_keys(source["id"])
    assert all(
        keys_before[path] for path in ("photos/landscape.jpg", "photos/turned.jpg")
    )
    tasks_before = rendition_tasks_received()
    assert tasks_before > 0, f"no rendition task found in {WORKER_LOG}"

    unchanged = rescan(owner, source["id"])
    assert unchanged["counts"]["unchanged"] == 4, unchanged["counts"]
    assert unchanged["counts"]["changed"] == 0, unchanged["counts"]
    assert unchanged["counts"]["new"] == 0, unchanged["counts"]
    drive_after = owner.get(f"/api/v1/sources/{source['id']}").json
    assert drive_after["renditions_pending"] == 0
    assert thumbnail_keys(source["id"]) == keys_before
    assert rendition_tasks_received() == tasks_before

    path = media_drive / "photos/landscape.jpg"
    path.write_bytes(gradient_jpeg(640, 400, seed=99))
    changed = rescan(owner, source["id"])
    assert changed["counts"]["changed"] == 1, changed["counts"]
    wait_for_renditions(owner, source["id"])
    keys_after = thumbnail_keys(source["id"])
    assert keys_after["photos/landscape.jpg"] is not None
    assert keys_after["photos/landscape.jpg"] != keys_before["photos/landscape.jpg"]
    assert keys_after["photos/turned.jpg"] == keys_before["photos/turned.jpg"]
    assert keys_after["clips/bars.mp4"] == keys_before["clips/bars.mp4"]


def test_outbox_rows_are_relayed(owner, media_drive):
    from workers.tasks.outbox import relay

    connect_and_settle(owner, media_drive)
    with session_scope("catalog") as session:
        total = session.scalar(select(func.count(OutboxEvent.seq)))
    assert total > 0, "the connect and the renditions should have published events"

    relay("catalog")

    with session_scope("catalog") as session:
        unsent = session.scalar(
            select(func.count(OutboxEvent.seq)).where(OutboxEvent.sent_at.is_(None))
        )
    assert unsent == 0


def test_checksums_find_duplicates_and_verify(owner, drive_factory):
    photo = gradient_jpeg(320, 200, seed=5)
    root = drive_factory(
        "copies",
        {
            "a/original.jpg": photo,
            "b/copy.jpg": photo,
            "c/unique.bin": os.urandom(5000),
        },
    )
    source = connect_and_settle(owner, root)
    wait_for_checksums(owner, source["id"])
    files = files_by_path(owner)
    details = {
        path: owner.get(f"/api/v1/files/{item['id']}").json
        for path, item in files.items()
    }
    for path, detail in details.items():
        assert detail["checksum"] is not None, path
    assert details["a/original.jpg"]["checksum"] == details["b/copy.jpg"]["checksum"]

    duplicates = owner.get("/api/v1/duplicates")
    assert duplicates.status_code == 200, duplicates.json
    groups = duplicates.json["items"]
    assert len(groups) == 1, groups
    assert groups[0]["copies"] == 2
    assert {f["path"] for f in groups[0]["files"]} == {"a/original.jpg", "b/copy.jpg"}

    # Flip bytes inside the file, then put back its size and modification time,
    # so only a re-read of the content can notice the change.
    target = root / "c/unique.bin"
    stat = target.stat()
    data = bytearray(target.read_bytes())
    data[100:110] = bytes(255 - b for b in data[100:110])
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert target.stat().st_size == stat.st_size
    assert target.stat().st_mtime_ns == stat.st_mtime_ns

    response = owner.post(f"/api/v1/sources/{source['id']}/verify")
    assert response.status_code == 202, response.json
    verify = wait_for_scan(owner, response.json["id"])
    assert verify["kind"] == "verify"
    assert verify["counts"]["mismatched"] == 1, verify["counts"]
    assert verify["counts"]["verified"] == 3, verify["counts"]
    issues = verify["issues"]
    assert [issue["kind"] for issue in issues] == ["content_changed"], issues
    assert issues[0]["path"] == "c/unique.bin"
    assert issues[0]["file_id"] == files["c/unique.bin"]["id"]
