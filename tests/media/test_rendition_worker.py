"""The rendition task over scanned drives: progress counts, offline drives and broken files."""

from __future__ import annotations

import os

from tests.catalog.helpers import connect, files_by_path, run_active_scan
from tests.collections.conftest import jpeg_bytes
from workers.tasks.renditions import render_source


def file_details(owner) -> dict[str, dict]:
    """Return the file view of every catalogued file, by path."""
    return {
        path: owner.get(f"/api/v1/files/{item['id']}").json
        for path, item in files_by_path(owner).items()
    }


def test_pending_renditions_wait_for_drive(owner, archive, drive_factory):
    root = drive_factory(
        "CARD",
        {"a.jpg": jpeg_bytes(), "b.jpg": jpeg_bytes(shade=50), "notes.txt": b"shot list"},
    )
    source = connect(owner, root, name="CARD")
    run_active_scan(owner, source)
    assert owner.get(f"/api/v1/sources/{source['id']}").json["renditions_pending"] == 2

    listed = archive.run_json("drives", "list", "--json", token=owner.token)["items"]
    assert [(d["name"], d["renditions_pending"]) for d in listed] == [("CARD", 2)]
    # Wide enough that rich prints each table row on one line.
    table = archive.run("drives", "list", token=owner.token, env={"COLUMNS": "250"})
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    # Line 0 is the table's top border, line 1 its header, line 2 a rule, line 3 the first row.
    header = [cell.strip() for cell in lines[1].split("┃")]
    row = [cell.strip() for cell in lines[3].split("│")]
    assert row[header.index("name")] == "CARD"
    assert row[header.index("renditions pending")] == "2"

    # Work for an offline drive waits, and is done once the drive is back.
    response = owner.post(f"/api/v1/sources/{source['id']}/disconnect")
    assert response.status_code == 200, response.json
    assert render_source(source["id"]) == 0
    assert owner.get(f"/api/v1/sources/{source['id']}").json["renditions_pending"] == 2

    source = connect(owner, root, name="CARD")
    assert run_active_scan(owner, source)["counts"]["unchanged"] == 3
    assert render_source(source["id"]) == 2
    assert owner.get(f"/api/v1/sources/{source['id']}").json["renditions_pending"] == 0
    listed = archive.run_json("drives", "list", "--json", token=owner.token)["items"]
    assert listed[0]["renditions_pending"] == 0


def test_broken_files_fail_alone(owner, drive_factory, bomb_png):
    good = jpeg_bytes(160, 120)
    root = drive_factory(
        "BROKEN",
        {
            "good.jpg": good,
            "truncated.jpg": good[: len(good) // 2],
            "garbage.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8,
            "bomb.png": bomb_png.read_bytes(),
            "empty.jpg": b"",
        },
    )
    source = connect(owner, root, name="BROKEN")
    run_active_scan(owner, source)

    assert render_source(source["id"]) == 4
    files = file_details(owner)
    assert files["good.jpg"]["rendition_state"] == "done"
    assert files["good.jpg"]["error"] is None
    assert files["good.jpg"]["thumbnail_url"] is not None
    assert files["good.jpg"]["metadata"]["width"] == 160
    assert files["good.jpg"]["metadata"]["height"] == 120
    # Part of the picture decodes, so it gets renditions and its error.
    assert files["truncated.jpg"]["rendition_state"] == "done"
    assert "truncated" in files["truncated.jpg"]["error"]
    assert files["truncated.jpg"]["thumbnail_url"] is not None
    assert files["garbage.jpg"]["rendition_state"] == "failed"
    assert files["garbage.jpg"]["error"].startswith("invalid image/jpeg file")
    assert files["garbage.jpg"]["thumbnail_url"] is None
    assert files["bomb.png"]["rendition_state"] == "failed"
    assert files["bomb.png"]["error"].startswith("decompression bomb:")
    assert files["empty.jpg"]["rendition_state"] == "none"
    assert files["empty.jpg"]["media_type"] == "inode/x-empty"
    assert owner.get(f"/api/v1/sources/{source['id']}").json["renditions_pending"] == 0


def test_analysis_fault_fails_one_file(owner, drive_factory, monkeypatch):
    import workers.media.sandbox as sandbox

    real_analyze = sandbox.analyze_isolated

    def faulty_analyze(path, **options):
        if path.endswith(b"a-fault.jpg"):
            raise RuntimeError("analysis raised KeyError: 'width'")
        return real_analyze(path, **options)

    monkeypatch.setattr(sandbox, "analyze_isolated", faulty_analyze)
    root = drive_factory("FAULT", {"a-fault.jpg": jpeg_bytes(), "b-fine.jpg": jpeg_bytes(shade=90)})
    source = connect(owner, root, name="FAULT")
    run_active_scan(owner, source)

    assert render_source(source["id"]) == 2
    files = file_details(owner)
    assert files["a-fault.jpg"]["rendition_state"] == "failed"
    assert files["a-fault.jpg"]["error"] == "analysis failed: analysis raised KeyError: 'width'"
    assert files["b-fine.jpg"]["rendition_state"] == "done"
    assert owner.get(f"/api/v1/sources/{source['id']}").json["renditions_pending"] == 0


def wav_bytes(seconds: float, rate: int = 8000) -> bytes:
    """Encode a silent mono 16-bit PCM WAV of ``seconds``."""
    import io
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(rate)
        sound.writeframes(b"\x00\x00" * int(seconds * rate))
    return buffer.getvalue()


def test_audio_files_get_metadata(owner, drive_factory):
    root = drive_factory("SOUND", {"take-1.wav": wav_bytes(1.5)})
    source = connect(owner, root, name="SOUND")
    run_active_scan(owner, source)
    assert owner.get(f"/api/v1/sources/{source['id']}").json["renditions_pending"] == 1

    assert render_source(source["id"]) == 1
    take = file_details(owner)["take-1.wav"]
    assert take["kind"] == "audio"
    assert take["rendition_state"] == "done"
    assert take["thumbnail_url"] is None
    assert take["metadata"]["duration"] == 1.5
    assert take["metadata"]["audio_codec"] == "pcm_s16le"


def test_batches_continue_after_last_id(owner, drive_factory, monkeypatch):
    from sqlalchemy import update

    import workers.tasks.checksums as checksums
    import workers.tasks.renditions as renditions
    from core.db import session_scope
    from services.catalog.models import File

    root = drive_factory("CHAIN", {f"f{i}.jpg": jpeg_bytes(shade=i * 20) for i in range(5)})
    source = connect(owner, root, name="CHAIN")
    run_active_scan(owner, source)
    first_id = min(item["id"] for item in files_by_path(owner).values())
    # After the first batch, its first file waits again, as a file whose
    # rendition could not be stored does. The next batches must not go back
    # to it, or a drive whose files are mostly done is read again per batch.
    steps = (
        (renditions, renditions.render_source, {"rendition_state": "pending"}),
        (checksums, checksums.checksum_source, {"checksum": None}),
    )
    for module, task, undone in steps:
        monkeypatch.setattr(module, "BATCH", 2)
        queued = []
        monkeypatch.setattr(task, "apply_async", lambda args, queue: queued.append(args))
        done = [task(source["id"])]
        with session_scope("catalog") as session:
            session.execute(update(File).where(File.id == first_id).values(**undone))
        while queued:
            done.append(task(*queued.pop()))
        assert done == [2, 2, 1]

    files = file_details(owner)
    waiting = [f["id"] for f in files.values() if f["rendition_state"] != "done"]
    assert waiting == [first_id]
    without_checksum = [f["id"] for f in files.values() if not f["checksum"]]
    assert without_checksum == [first_id]


def test_checksums_go_on_after_gone_files(owner, drive_factory, monkeypatch):
    import workers.tasks.checksums as checksums

    root = drive_factory("GONE", {f"f{i}.jpg": jpeg_bytes(shade=i * 30) for i in range(4)})
    source = connect(owner, root, name="GONE")
    run_active_scan(owner, source)
    by_id = sorted(files_by_path(owner).items(), key=lambda pair: pair[1]["id"])
    # The first batch holds only files that were moved away after the scan.
    for path, _item in by_id[:2]:
        os.rename(root / path, root / f"moved-{path}")
    monkeypatch.setattr(checksums, "BATCH", 2)
    queued = []
    monkeypatch.setattr(
        checksums.checksum_source, "apply_async", lambda args, queue: queued.append(args)
    )
    assert checksums.checksum_source(source["id"]) == 0
    assert len(queued) == 1
    assert checksums.checksum_source(*queued.pop()) == 2
    with_checksum = {path for path, f in file_details(owner).items() if f["checksum"]}
    assert with_checksum == {path for path, _item in by_id[2:]}
