"""Reconciliation of drive walks with the catalog, on real files."""

from __future__ import annotations

import csv
import os
import shutil

import pytest

from tests.catalog.helpers import connect, files_by_path, run_active_scan, scan


def payload(tag: str, size: int = 3000) -> bytes:
    return (tag.encode() * (size // len(tag) + 1))[:size]


@pytest.fixture
def drive(drive_factory):
    return drive_factory(
        "shoot",
        {
            "a/one.jpg": payload("one"),
            "a/two.jpg": payload("two"),
            "b/three.mov": payload("three", 400_000),
            "notes.txt": b"hello",
        },
    )


def test_cold_scan_catalogues_every_file(owner, drive):
    source = connect(owner, drive)
    result = run_active_scan(owner, source)
    assert result["status"] == "succeeded"
    assert result["complete"] is True
    assert result["counts"]["new"] == 4
    files = files_by_path(owner)
    assert sorted(files) == ["a/one.jpg", "a/two.jpg", "b/three.mov", "notes.txt"]
    assert all(f["state"] == "online" for f in files.values())


def test_move_between_folders_keeps_id(owner, drive):
    source = connect(owner, drive)
    run_active_scan(owner, source)
    before = files_by_path(owner)
    os.rename(drive / "a/one.jpg", drive / "b/one.jpg")
    result = scan(owner, source)
    after = files_by_path(owner)
    assert result["counts"]["moved"] == 1
    assert result["counts"]["missing"] == 0
    assert after["b/one.jpg"]["id"] == before["a/one.jpg"]["id"]
    assert "a/one.jpg" not in after


def test_change_events_carry_file_facts(owner, drive_factory, monkeypatch):
    from sqlalchemy import func, select, update

    import services.catalog.events as events
    from core.db import get_engine
    from core.outbox import parse_time
    from services.catalog.models import File, OutboxEvent

    # Three files per event, so that the changes span several events.
    monkeypatch.setattr(events, "CHUNK", 3)
    layout = {f"a/{i}.jpg": payload(f"file {i}") for i in range(8)}
    root = drive_factory("facts", layout)
    source = connect(owner, root)
    run_active_scan(owner, source)
    engine = get_engine("catalog")
    with engine.begin() as conn:
        last_seq = conn.scalar(select(func.max(OutboxEvent.seq)))
        # Metadata as the rendition task stores it, for the facts it feeds.
        conn.execute(
            update(File)
            .where(File.path == "a/0.jpg")
            .values(media_info={"width": 640, "height": 480, "captured_at": "2024-05-01T10:00:00+02:00"})
        )

    os.makedirs(root / "b")
    for i in range(5):
        os.rename(root / f"a/{i}.jpg", root / f"b/{i}.jpg")
    (root / "a/5.jpg").write_bytes(payload("changed content", 4000))
    os.remove(root / "a/6.jpg")
    counts = scan(owner, source)["counts"]
    assert (counts["moved"], counts["changed"], counts["missing"]) == (5, 1, 1)

    with engine.connect() as conn:
        payloads = conn.scalars(
            select(OutboxEvent.payload)
            .where(OutboxEvent.seq > last_seq, OutboxEvent.topic == events.FILES_UPDATED)
            .order_by(OutboxEvent.seq)
        ).all()
        published = [fact for payload in payloads for fact in payload["files"]]
        expected = events.facts_for(conn, [fact["id"] for fact in published])
    assert [len(payload["files"]) for payload in payloads] == [3, 3, 1]
    assert [fact["id"] for fact in published] == sorted(fact["id"] for fact in published)
    expected_by_id = {fact["id"]: fact for fact in expected}
    assert [f["width"] for f in published if f["path"] == "b/0.jpg"] == [640]
    for fact in published:
        wanted = expected_by_id[fact["id"]]
        assert list(fact) == list(wanted)
        assert parse_time(fact.pop("updated_at")) == parse_time(wanted.pop("updated_at"))
        assert fact == wanted


def test_folder_rename_keeps_ids(owner, drive):
    source = connect(owner, drive)
    run_active_scan(owner, source)
    before = files_by_path(owner)
    os.rename(drive / "a", drive / "renamed")
    result = scan(owner, source)
    after = files_by_path(owner)
    assert result["counts"]["moved"] == 2
    assert after["renamed/one.jpg"]["id"] == before["a/one.jpg"]["id"]
    assert after["renamed/two.jpg"]["id"] == before["a/two.jpg"]["id"]
    folders = owner.get(f"/api/v1/sources/{source['id']}/folder").json["folders"]
    assert [f["name"] for f in folders] == ["b", "renamed"]


def test_case_only_rename_keeps_id(owner, drive):
    source = connect(owner, drive)
    run_active_scan(owner, source)
    before = files_by_path(owner)
    os.rename(drive / "a/one.jpg", drive / "a/ONE.JPG")
    scan(owner, source)
    after = files_by_path(owner)
    assert after["a/ONE.JPG"]["id"] == before["a/one.jpg"]["id"]
    assert "a/one.jpg" not in after


def test_duplicates_moved_pair_deterministically(owner, drive_factory):
    same = payload("dup")
    root = drive_factory("dups", {"x/1.jpg": same, "x/2.jpg": same, "x/3.jpg": same})
    source = connect(owner, root)
    run_active_scan(owner, source)
    before = files_by_path(owner)
    assert len({f["id"] for f in before.values()}) == 3
    os.rename(root / "x", root / "y")
    result = scan(owner, source)
    after = files_by_path(owner)
    assert result["counts"]["moved"] == 3
    # Pairing is by path order: the n-th old path goes to the n-th new path.
    for name in ("1.jpg", "2.jpg", "3.jpg"):
        assert after[f"y/{name}"]["id"] == before[f"x/{name}"]["id"]


def test_duplicate_copy_is_a_new_file(owner, drive):
    source = connect(owner, drive)
    run_active_scan(owner, source)
    before = files_by_path(owner)
    shutil.copy2(drive / "a/one.jpg", drive / "a/one-copy.jpg")
    result = scan(owner, source)
    after = files_by_path(owner)
    assert result["counts"]["new"] == 1
    assert after["a/one.jpg"]["id"] == before["a/one.jpg"]["id"]
    assert after["a/one-copy.jpg"]["id"] != after["a/one.jpg"]["id"]


def test_changed_content_same_size_and_mtime_keeps_id(owner, drive):
    source = connect(owner, drive)
    run_active_scan(owner, source)
    before = owner.get(f"/api/v1/files/{files_by_path(owner)['a/one.jpg']['id']}").json
    path = drive / "a/one.jpg"
    stat = path.stat()
    path.write_bytes(payload("ONE"))  # same size, different bytes
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    assert path.stat().st_mtime_ns == stat.st_mtime_ns
    result = scan(owner, source)
    after = owner.get(f"/api/v1/files/{before['id']}").json
    assert result["counts"]["changed"] == 1
    assert after["fingerprint"] != before["fingerprint"]
    assert after["path"] == "a/one.jpg"


def test_fingerprint_separates_equal_size_and_mtime(owner, drive_factory):
    root = drive_factory("twins", {"p.bin": payload("p", 5000), "q.bin": payload("q", 5000)})
    os.utime(root / "q.bin", ns=((root / "p.bin").stat().st_atime_ns, (root / "p.bin").stat().st_mtime_ns))
    source = connect(owner, root)
    run_active_scan(owner, source)
    files = files_by_path(owner)
    shown = [owner.get(f"/api/v1/files/{f['id']}").json for f in files.values()]
    assert shown[0]["fingerprint"] != shown[1]["fingerprint"]


def test_deleted_file_goes_missing_and_returns(owner, drive):
    source = connect(owner, drive)
    run_active_scan(owner, source)
    before = files_by_path(owner)
    data = (drive / "notes.txt").read_bytes()
    (drive / "notes.txt").unlink()
    result = scan(owner, source)
    assert result["counts"]["missing"] == 1
    missing = files_by_path(owner, state="missing")
    assert list(missing) == ["notes.txt"]
    (drive / "notes.txt").write_bytes(data)
    result = scan(owner, source)
    assert result["counts"]["restored"] == 1
    after = files_by_path(owner)
    assert after["notes.txt"]["id"] == before["notes.txt"]["id"]
    assert after["notes.txt"]["state"] == "online"


def test_unchanged_rescan_reads_nothing(owner, drive):
    source = connect(owner, drive)
    run_active_scan(owner, source)
    result = scan(owner, source)
    counts = result["counts"]
    assert counts["unchanged"] == 4
    assert counts["new"] == counts["changed"] == counts["moved"] == counts["missing"] == 0


def _subfolders(member, source: dict, path: str) -> list[str]:
    response = member.get(f"/api/v1/sources/{source['id']}/folder", query_string={"path": path})
    assert response.status_code == 200, response.json
    return [folder["path"] for folder in response.json["folders"]]


def test_unchanged_rescan_writes_no_staging_rows(owner, drive, monkeypatch):
    import workers.scan.scanner as scanner_module

    written = []
    real_bulk_insert = scanner_module.bulk_insert

    def counting_bulk_insert(conn, table, columns, rows):
        written.extend(rows)
        return real_bulk_insert(conn, table, columns, rows)

    monkeypatch.setattr(scanner_module, "bulk_insert", counting_bulk_insert)
    source = connect(owner, drive)
    run_active_scan(owner, source)
    written.clear()
    result = scan(owner, source)
    assert result["status"] == "succeeded"
    assert result["complete"] is True
    assert result["counts"]["unchanged"] == 4
    assert written == []
    # A touched file makes the scan write and apply its rows again.
    path = drive / "notes.txt"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
    assert scan(owner, source)["counts"]["touched"] == 1
    assert written


def test_empty_folders_that_come_and_go_are_seen(owner, drive):
    source = connect(owner, drive)
    run_active_scan(owner, source)
    # An empty folder adds no file, only a name to its parent folder.
    os.makedirs(drive / "a/empty")
    os.makedirs(drive / "fresh")
    scan(owner, source)
    assert _subfolders(owner, source, "") == ["a", "b", "fresh"]
    assert _subfolders(owner, source, "a") == ["a/empty"]
    # A folder that went is seen though every folder left is unchanged.
    os.rmdir(drive / "a/empty")
    result = scan(owner, source)
    assert result["counts"]["unchanged"] == 4
    assert _subfolders(owner, source, "a") == []
    os.rename(drive / "fresh", drive / "renamed")
    scan(owner, source)
    assert _subfolders(owner, source, "") == ["a", "b", "renamed"]
    # Nothing changed since: the folders stay as they are.
    scan(owner, source)
    assert _subfolders(owner, source, "") == ["a", "b", "renamed"]


def test_drive_pulled_mid_scan_marks_nothing_missing(owner, drive_factory, tmp_path):
    root = drive_factory("big", {f"d{i:02}/f{j}.jpg": payload(f"{i}-{j}") for i in range(10) for j in range(20)})
    source = connect(owner, root)
    run_active_scan(owner, source)
    before = files_by_path(owner)
    pulled = tmp_path / "pulled"

    def pull_drive(counts):
        if counts.files >= 50 and root.exists():
            os.rename(root, pulled)
            root.mkdir()  # the mount point stays, empty

    result = scan(owner, source, on_batch=pull_drive)
    assert result["status"] == "interrupted"
    assert result["complete"] is False
    after = files_by_path(owner)
    assert len(after) == len(before)
    assert all(f["state"] == "online" for f in after.values())
    assert files_by_path(owner, state="missing") == {}


def test_disconnect_mid_scan_stops_cleanly(owner, drive_factory):
    root = drive_factory("big", {f"d{i:02}/f{j}.jpg": payload(f"{i}-{j}") for i in range(10) for j in range(20)})
    source = connect(owner, root)
    run_active_scan(owner, source)
    shutil.rmtree(root / "d05")

    def disconnect(counts):
        owner.post(f"/api/v1/sources/{source['id']}/disconnect")

    result = scan(owner, source, on_batch=disconnect)
    assert result["status"] == "interrupted"
    assert "disconnected" in result["message"]
    assert files_by_path(owner, state="missing") == {}


def test_empty_mount_point_is_not_a_wiped_drive(owner, drive, tmp_path):
    source = connect(owner, drive)
    run_active_scan(owner, source)
    os.rename(drive, tmp_path / "elsewhere")
    drive.mkdir()
    result = scan(owner, source)
    assert result["status"] == "interrupted"
    assert "not mounted" in result["message"] or "volume marker" in result["message"]
    assert files_by_path(owner, state="missing") == {}
    # The drive is not there, so it shows offline until it is connected again.
    assert owner.get(f"/api/v1/sources/{source['id']}").json["state"] == "offline"
    assert {f["state"] for f in files_by_path(owner).values()} == {"offline"}
    drive.rmdir()
    os.rename(tmp_path / "elsewhere", drive)
    again = connect(owner, drive)
    assert run_active_scan(owner, again)["counts"]["unchanged"] == 4
    assert {f["state"] for f in files_by_path(owner).values()} == {"online"}


def test_drive_with_all_files_deleted_marks_them_missing(owner, drive):
    source = connect(owner, drive)
    run_active_scan(owner, source)
    for child in list(drive.iterdir()):
        if child.name.startswith(".archive-volume"):
            continue
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    result = scan(owner, source)
    assert result["status"] == "succeeded"
    assert result["counts"]["missing"] == 4


def test_remount_at_new_path_is_same_source(owner, drive, tmp_path):
    source = connect(owner, drive)
    run_active_scan(owner, source)
    before = files_by_path(owner)
    owner.post(f"/api/v1/sources/{source['id']}/disconnect")
    new_mount = tmp_path / "other-mount" / "SHOOT"
    new_mount.parent.mkdir()
    os.rename(drive, new_mount)
    again = connect(owner, new_mount, host="inline-host")
    assert again["id"] == source["id"]
    assert again["mount_path"] == str(new_mount)
    result = run_active_scan(owner, again)
    after = files_by_path(owner)
    assert result["counts"]["missing"] == 0
    assert {p: f["id"] for p, f in after.items()} == {p: f["id"] for p, f in before.items()}
    sources = owner.get("/api/v1/sources").json["items"]
    assert len(sources) == 1


def test_nested_drive_folders_rejected(owner, drive):
    from workers.scan.volume import ensure_volume_id

    source = connect(owner, drive)
    for folder in (drive / "a", drive.parent):
        body = {"volume_id": ensure_volume_id(folder), "mount_path": str(folder), "host": "inline-host"}
        refused = owner.post("/api/v1/sources", json=body)
        assert refused.status_code == 409
        error = refused.json["error"]
        assert "overlaps drive" in error["message"]
        assert error["fields"]["mount_path"] == [f"overlaps drive {source['name']!r} at {drive}"]
    assert len(owner.get("/api/v1/sources").json["items"]) == 1
    # Once the outer drive is disconnected, its folder may be connected alone.
    owner.post(f"/api/v1/sources/{source['id']}/disconnect")
    inner = connect(owner, drive / "a")
    assert inner["mount_path"] == str(drive / "a")
    assert run_active_scan(owner, inner)["counts"]["new"] == 2
    # The outer drive, connected again alone, does not list the inner marker.
    owner.post(f"/api/v1/sources/{inner['id']}/disconnect")
    outer = connect(owner, drive)
    assert run_active_scan(owner, outer)["status"] == "succeeded"
    assert sorted(files_by_path(owner, drive=outer["name"])) == [
        "a/one.jpg", "a/two.jpg", "b/three.mov", "notes.txt",
    ]


def test_scan_left_running_is_released(owner, drive):
    from sqlalchemy import update

    from core.db import session_scope, utcnow
    from services.catalog.models import Scan
    from tests.catalog.helpers import INLINE_HOST
    from workers.tasks.scans import release_host_scans, run_scan

    source = connect(owner, drive)
    scan_id = owner.get(f"/api/v1/sources/{source['id']}").json["active_scan"]["id"]
    # A worker stopped mid-scan leaves it running with a fresh heartbeat.
    with session_scope("catalog") as session:
        session.execute(
            update(Scan).where(Scan.id == scan_id).values(status="running", heartbeat_at=utcnow())
        )
    assert release_host_scans("another-host") == []
    assert [tuple(row) for row in release_host_scans(INLINE_HOST)] == [(scan_id, "scan")]
    assert owner.get(f"/api/v1/scans/{scan_id}").json["status"] == "queued"
    run_scan(scan_id)
    assert owner.get(f"/api/v1/scans/{scan_id}").json["status"] == "succeeded"


def test_names_with_slash_rejected(owner, drive):
    from workers.scan.volume import ensure_volume_id

    body = {"volume_id": ensure_volume_id(drive), "mount_path": str(drive), "host": "inline-host"}
    refused = owner.post("/api/v1/sources", json={**body, "name": "CAM/1"})
    assert refused.status_code == 422
    assert "must not contain '/'" in refused.json["error"]["fields"]["name"][0]
    source = connect(owner, drive)
    renamed = owner.patch(f"/api/v1/sources/{source['id']}", json={"name": "a/b"})
    assert renamed.status_code == 422
    group = owner.post("/api/v1/groups", json={"name": "Clients/2024"})
    assert group.status_code == 422
    assert owner.get(f"/api/v1/sources/{source['id']}").json["name"] == source["name"]


def test_disconnect_reconnect_unchanged(owner, drive):
    source = connect(owner, drive)
    run_active_scan(owner, source)
    before = files_by_path(owner)
    owner.post(f"/api/v1/sources/{source['id']}/disconnect")
    offline = files_by_path(owner)
    assert all(f["state"] == "offline" for f in offline.values())
    again = connect(owner, drive)
    result = run_active_scan(owner, again)
    after = files_by_path(owner)
    assert result["counts"]["missing"] == 0
    assert result["counts"]["new"] == 0
    assert {p: f["id"] for p, f in after.items()} == {p: f["id"] for p, f in before.items()}
    assert all(f["state"] == "online" for f in after.values())


def test_interrupted_scan_is_redone_by_next_scan(owner, drive):
    source = connect(owner, drive)
    run_active_scan(owner, source)
    before = files_by_path(owner)
    os.rename(drive / "a/one.jpg", drive / "b/one.jpg")

    def crash(counts):
        raise RuntimeError("worker died")

    result = scan(owner, source, on_batch=crash)
    assert result["status"] == "failed"
    assert files_by_path(owner)["a/one.jpg"]["id"] == before["a/one.jpg"]["id"]
    result = scan(owner, source)
    assert result["counts"]["moved"] == 1
    assert files_by_path(owner)["b/one.jpg"]["id"] == before["a/one.jpg"]["id"]


def test_folders_not_utf8_can_be_browsed(owner, drive_factory):
    root = drive_factory("latin", {"ok.jpg": payload("ok")})
    odd = os.path.join(os.fsencode(root), b"caf\xe9 dir\nwith\tctrl")
    os.makedirs(os.path.join(odd, b"sub\xff"))
    with open(os.path.join(odd, b"in.jpg"), "wb") as handle:
        handle.write(payload("inside"))
    with open(os.path.join(odd, b"sub\xff", b"deep.jpg"), "wb") as handle:
        handle.write(payload("deeper"))
    source = connect(owner, root)
    assert run_active_scan(owner, source)["status"] == "succeeded"

    def listing(path):
        response = owner.get(f"/api/v1/sources/{source['id']}/folder", query_string={"path": path})
        assert response.status_code == 200, response.json
        return response.json

    shown = "caf\ufffd dir\nwith\tctrl"
    top = listing("")
    assert [f["path"] for f in top["folders"]] == [shown]
    middle = listing(shown)
    assert [item["name"] for item in middle["items"]] == ["in.jpg"]
    assert [f["path"] for f in middle["folders"]] == [shown + "/sub\ufffd"]
    bottom = listing(shown + "/sub\ufffd")
    assert [item["name"] for item in bottom["items"]] == ["deep.jpg"]
    missing = owner.get(
        f"/api/v1/sources/{source['id']}/folder", query_string={"path": "caf\ufffd elsewhere"}
    )
    assert missing.status_code == 404


def test_hostile_tree(owner, drive_factory):
    root = drive_factory("hostile", {"ok/fine.jpg": payload("fine"), "locked/inside.jpg": payload("in")})
    # A symlink loop and a link pointing out of the drive.
    os.symlink("..", root / "ok" / "loop")
    os.symlink("/etc", root / "escape")
    # A name that is not valid UTF-8.
    bad_name = os.path.join(os.fsencode(root / "ok"), b"caf\xe9.jpg")
    with open(bad_name, "wb") as handle:
        handle.write(payload("latin1"))
    # A path of about 4,000 characters, beyond what one open() call allows.
    deep = os.fsencode(root)
    fd = os.open(deep, os.O_RDONLY)
    rel = []
    for i in range(16):
        part = (f"{i:02}" + "x" * 248).encode()
        os.mkdir(part, dir_fd=fd)
        new_fd = os.open(part, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = new_fd
        rel.append(part)
    leaf = os.open(b"deep.jpg", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(leaf, payload("deep"))
    os.close(leaf)
    os.close(fd)
    (root / "zero.jpg").write_bytes(b"")
    source = connect(owner, root)
    first = run_active_scan(owner, source)
    assert first["status"] == "succeeded"
    files = files_by_path(owner)
    deep_path = "/".join(p.decode() for p in rel) + "/deep.jpg"
    assert len(deep_path) > 4000
    assert deep_path in files
    assert "ok/caf\ufffd.jpg" in files
    assert "zero.jpg" in files
    assert not any(p.startswith("escape") or "/loop/" in p for p in files)



@pytest.mark.parametrize("batch_size", [2000, 3])
def test_copy_special_characters_in_names(owner, drive_factory, monkeypatch, batch_size):
    import dataclasses

    import workers.tasks.scans as scan_tasks

    settings = scan_tasks.get_settings()
    monkeypatch.setattr(
        scan_tasks, "get_settings", lambda: dataclasses.replace(settings, scan_batch_size=batch_size)
    )
    # Tabs, line ends and backslashes delimit and escape COPY text. Names made
    # of them must come back byte for byte, so that a rescan matches them.
    names = [
        "tab\there.jpg", "line\nbreak.jpg", "cr\rname.jpg", "back\\slash.jpg",
        "\\N", "\\.", "literal\\tb.jpg", "fold\ter/inside.jpg", "ünïcode.jpg",
    ]  # fmt: skip
    root = drive_factory("special", {name: payload(name) for name in names})
    source = connect(owner, root)
    first = run_active_scan(owner, source)
    assert first["status"] == "succeeded"
    assert first["counts"]["new"] == len(names)
    files = files_by_path(owner)
    assert sorted(files) == sorted(names)
    for name in names:
        detail = owner.get(f"/api/v1/files/{files[name]['id']}").json
        assert detail["name"] == name.rsplit("/", 1)[-1]
    again = scan(owner, source)
    assert again["counts"]["new"] == 0
    assert again["counts"]["unchanged"] == len(names)
    assert files_by_path(owner) == files


def test_unreadable_folder_keeps_its_files(owner, drive_factory, monkeypatch):
    root = drive_factory("locked", {"ok/fine.jpg": payload("fine"), "locked/inside.jpg": payload("in")})
    source = connect(owner, root)
    run_active_scan(owner, source)
    # Root ignores permission bits, so a denied open is simulated for the
    # folder named "locked"; every other call reaches the real filesystem.
    import workers.scan.walker as walker

    real_open = os.open

    def deny_locked(path, flags, *args, **kwargs):
        if path in ("locked", b"locked") and flags & os.O_DIRECTORY:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(walker.os, "open", deny_locked)
    (root / "ok/fine.jpg").unlink()
    result = scan(owner, source)
    monkeypatch.undo()
    assert result["status"] == "succeeded"
    missing = files_by_path(owner, state="missing")
    assert list(missing) == ["ok/fine.jpg"]
    assert files_by_path(owner)["locked/inside.jpg"]["state"] == "online"
    assert any(i["kind"] == "unreadable_folder" for i in result["issues"])


class _DamagedListing:
    """A folder listing that passes each entry through ``damage(count, entry)``.

    ``damage`` returns the entry to yield, or raises as a bad disk does.
    """

    def __init__(self, listing, damage):
        self.listing = listing
        self.damage = damage

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.listing.close()

    def __iter__(self):
        for count, entry in enumerate(self.listing):
            yield self.damage(count, entry)


class _FailingStat:
    """A directory entry whose ``stat`` fails, as on a damaged disk."""

    def __init__(self, entry):
        self.name = entry.name

    def stat(self, *, follow_symlinks=True):
        raise OSError(5, "Input/output error")


@pytest.mark.parametrize("failing", ["two.jpg", "b"])
def test_failed_stat_marks_nothing_missing(owner, drive, monkeypatch, failing):
    import workers.scan.walker as walker

    source = connect(owner, drive)
    run_active_scan(owner, source)
    before = files_by_path(owner)
    real_scandir = os.scandir
    def stat_fails(count, entry):
        return _FailingStat(entry) if entry.name == failing else entry

    monkeypatch.setattr(
        walker.os, "scandir", lambda target: _DamagedListing(real_scandir(target), stat_fails)
    )
    result = scan(owner, source)
    assert result["status"] == "succeeded"
    assert result["counts"]["missing"] == 0
    assert result["counts"]["unverified"] >= 1
    assert files_by_path(owner, state="missing") == {}
    assert any(i["kind"] == "stat_failed" for i in result["issues"])
    monkeypatch.undo()
    again = scan(owner, source)
    assert again["counts"]["missing"] == 0
    after = files_by_path(owner)
    assert {p: f["id"] for p, f in after.items()} == {p: f["id"] for p, f in before.items()}


def _stored_file(path: str):
    from sqlalchemy import select

    from core.db import get_engine
    from services.catalog.models import File

    with get_engine("catalog").connect() as conn:
        return conn.execute(select(File.error, File.fingerprint).where(File.path == path)).one()


@pytest.mark.parametrize("during", ["first scan", "rescan"])
def test_unreadable_file_is_read_again(owner, drive, monkeypatch, during):
    import workers.scan.scanner as scanner_module

    real_fingerprint = scanner_module.fingerprint_entry

    def fails_for_one(entry, dir_fd):
        if entry.name == "one.jpg":
            raise OSError(5, "Input/output error")
        return real_fingerprint(entry, dir_fd)

    source = connect(owner, drive)
    if during == "first scan":
        monkeypatch.setattr(scanner_module, "fingerprint_entry", fails_for_one)
        run_active_scan(owner, source)
    else:
        run_active_scan(owner, source)
        path = drive / "a/one.jpg"
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
        monkeypatch.setattr(scanner_module, "fingerprint_entry", fails_for_one)
        assert scan(owner, source)["status"] == "succeeded"
    assert _stored_file("a/one.jpg").error is not None
    assert _stored_file("a/one.jpg").fingerprint == ""
    monkeypatch.undo()
    # The disk reads again: the next scan reads the file, whatever its stat.
    result = scan(owner, source)
    assert result["counts"]["changed"] == 1
    assert _stored_file("a/one.jpg").error is None
    assert _stored_file("a/one.jpg").fingerprint != ""
    assert scan(owner, source)["counts"]["unchanged"] == 4


def test_scan_keeps_a_freeze_made_before_it(owner, drive):
    import gc

    source = connect(owner, drive)
    run_active_scan(owner, source)
    gc.freeze()
    try:
        scan(owner, source)
        # Objects freed since the freeze leave it, so the count only drops a
        # little; a scan that unfroze everything leaves 0.
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_corpus_matches_manifest(owner, corpus):
    rows = list(csv.DictReader(open(corpus / "MANIFEST.tsv"), delimiter="\t"))
    for drive_name in ("drive-a", "drive-b"):
        source = connect(owner, corpus / drive_name)
        result = run_active_scan(owner, source)
        expected = {r["path"].split("/", 1)[1]: r for r in rows if r["path"].startswith(drive_name + "/")}
        assert result["counts"]["files"] == len(expected)
        files = files_by_path(owner, drive=drive_name)
        assert sorted(files) == sorted(expected)
        for path, row in expected.items():
            assert files[path]["media_type"] == row["media_type"], path
            assert files[path]["size"] == int(row["bytes"]), path


def test_large_folder_listed_in_chunks(owner, drive_factory):
    # The test settings list folders in chunks of 50 entries, so this folder
    # takes the per-file path rather than the folder-signature one.
    files = {f"big/f{i:03}.jpg": payload(f"big-{i}") for i in range(120)}
    root = drive_factory("chunked", files)
    source = connect(owner, root)
    first = run_active_scan(owner, source)
    assert first["counts"]["new"] == 120
    before = files_by_path(owner)
    os.rename(root / "big/f007.jpg", root / "big/renamed.jpg")
    (root / "big/f100.jpg").unlink()
    (root / "big/added.jpg").write_bytes(payload("added"))
    result = scan(owner, source)
    counts = result["counts"]
    assert counts["moved"] == 1
    assert counts["missing"] == 1
    assert counts["new"] == 1
    assert counts["unchanged"] == 118
    after = files_by_path(owner)
    assert after["big/renamed.jpg"]["id"] == before["big/f007.jpg"]["id"]
    assert files_by_path(owner, state="missing").keys() == {"big/f100.jpg"}


def test_unchanged_folder_skips_lookup_but_sees_changes(owner, drive):
    source = connect(owner, drive)
    run_active_scan(owner, source)
    scan(owner, source)
    # A touched file changes its folder's signature; the others stay skipped.
    path = drive / "a/two.jpg"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
    result = scan(owner, source)
    assert result["counts"]["touched"] == 1
    assert result["counts"]["unchanged"] == 3


@pytest.mark.parametrize("batch_size", [2000, 2])
def test_listing_error_midway_keeps_files(owner, drive_factory, monkeypatch, batch_size):
    names = [f"big/clip{n}.mov" for n in range(6)]
    root = drive_factory("flaky", {**{n: payload(n) for n in names}, "ok/fine.jpg": payload("fine")})
    source = connect(owner, root)
    run_active_scan(owner, source)
    before = files_by_path(owner)
    # A read error in the middle of a folder's listing cannot be caused on
    # a healthy filesystem, so the folder "big" fails after three entries.
    import workers.scan.scanner as scanner_module
    import workers.scan.walker as walker

    real_scandir = os.scandir

    def fails_after_three(count, entry):
        if count == 3:
            raise OSError(5, "Input/output error")
        return entry

    def flaky_scandir(target):
        listing = real_scandir(target)
        if isinstance(target, int) and os.readlink(f"/proc/self/fd/{target}").endswith("/big"):
            return _DamagedListing(listing, fails_after_three)
        return listing

    monkeypatch.setattr(walker.os, "scandir", flaky_scandir)
    real_init = scanner_module.Scanner.__init__

    def small_batches(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.batch_size = batch_size

    monkeypatch.setattr(scanner_module.Scanner, "__init__", small_batches)
    (root / "ok/fine.jpg").unlink()
    result = scan(owner, source)
    monkeypatch.undo()
    assert result["status"] == "succeeded"
    after = files_by_path(owner)
    for name in names:
        assert after[name]["state"] == "online", name
        assert after[name]["id"] == before[name]["id"], name
    assert list(files_by_path(owner, state="missing")) == ["ok/fine.jpg"]
    assert any(i["kind"] == "unreadable_folder" for i in result["issues"])
    # The next scan, with a healthy disk, lists the folder whole again.
    again = scan(owner, source)
    assert again["counts"]["missing"] == 0
    assert again["counts"]["files"] == len(names)


def test_scan_keeps_access_times(owner, drive_factory):
    root = drive_factory("atime", {"a/clip.mov": payload("clip"), "b.jpg": payload("b")})
    # An access time before the modification time is one that a plain read
    # updates, even on a filesystem mounted with relatime.
    for name in ("a/clip.mov", "b.jpg"):
        path = root / name
        os.utime(path, ns=(1_000_000_000, path.stat().st_mtime_ns))
    source = connect(owner, root)
    result = run_active_scan(owner, source)
    assert result["counts"]["new"] == 2
    for name in ("a/clip.mov", "b.jpg"):
        assert (root / name).stat().st_atime_ns == 1_000_000_000, name


def test_noatime_refused_falls_back(tmp_path, monkeypatch):
    import errno

    import workers.scan.walker as walker

    (tmp_path / "theirs.jpg").write_bytes(b"x" * 100)
    real_open = os.open
    calls = []

    def not_owner(path, flags, *args, **kwargs):
        calls.append(bool(flags & os.O_NOATIME))
        if flags & os.O_NOATIME:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(walker, "_noatime", os.O_NOATIME)
    monkeypatch.setattr(walker.os, "open", not_owner)
    dir_fd = real_open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(2):
            os.close(walker.open_for_reading("theirs.jpg", dir_fd))
    finally:
        os.close(dir_fd)
    # Refused once, then never asked for again.
    assert calls == [True, False, False]


# 250 files in 10 folders.
FRESH_LAYOUT = {f"d{i:02}/f{j:02}.jpg": payload(f"{i}-{j}") for i in range(10) for j in range(25)}


def interrupted_first_scan(owner, drive_factory, monkeypatch, commit_seconds: int = 10):
    """Connect a drive of FRESH_LAYOUT and run its first scan in batches of 10 files.

    The disk fails once 150 files were listed. Returns the source and the scan.
    """
    import dataclasses

    import workers.tasks.scans as scan_tasks

    settings = dataclasses.replace(
        scan_tasks.get_settings(), scan_batch_size=10, scan_commit_seconds=commit_seconds
    )
    monkeypatch.setattr(scan_tasks, "get_settings", lambda: settings)
    source = connect(owner, drive_factory("fresh", FRESH_LAYOUT))

    def disk_fails(counts):
        if counts.files >= 150:
            raise OSError(5, "Input/output error")

    first = run_active_scan(owner, source, on_batch=disk_fails)
    assert first["status"] == "interrupted"
    return source, first


def test_first_scan_error_keeps_commits(owner, drive_factory, monkeypatch):
    import workers.scan.scanner as scanner_module

    # A commit falls due every tenth batch, in place of every
    # SCAN_COMMIT_SECONDS, so the first scan commits every 100 files.
    due_checks = []

    def every_tenth_batch(new_files):
        due_checks.append(True)
        return len(due_checks) % 10 == 0

    monkeypatch.setattr(scanner_module._NewFiles, "due", every_tenth_batch)
    source, first = interrupted_first_scan(owner, drive_factory, monkeypatch)
    committed = files_by_path(owner)
    # The commits before the error stay, the rows sent after the last one
    # are dropped, and nothing is marked missing.
    assert 100 <= len(committed) < 150
    assert files_by_path(owner, state="missing") == {}
    # The interrupted scan counts the files it kept as new.
    assert first["counts"]["new"] == len(committed)

    again = scan(owner, source)
    assert again["status"] == "succeeded"
    after = files_by_path(owner)
    assert sorted(after) == sorted(FRESH_LAYOUT)
    for path, file in committed.items():
        assert after[path]["id"] == file["id"], path
    assert again["counts"]["unchanged"] == len(committed)
    assert again["counts"]["new"] == len(FRESH_LAYOUT) - len(committed)


def test_first_scan_without_interval_keeps_every_batch(owner, drive_factory, monkeypatch):
    _source, first = interrupted_first_scan(owner, drive_factory, monkeypatch, commit_seconds=0)
    # Each batch was committed as it was sent.
    assert first["counts"]["files"] >= 150
    assert len(files_by_path(owner)) == first["counts"]["files"]
    assert first["counts"]["new"] == first["counts"]["files"]


def test_first_scan_within_interval_keeps_nothing(owner, drive_factory, monkeypatch):
    _source, first = interrupted_first_scan(owner, drive_factory, monkeypatch, commit_seconds=3600)
    assert files_by_path(owner) == {}
    assert first["counts"]["new"] == 0


def test_first_scan_error_survives_failed_rollback(owner, drive_factory, monkeypatch):
    import workers.scan.scanner as scanner_module

    root = drive_factory("shaky", {f"d{i}/f.jpg": payload(str(i)) for i in range(5)})
    source = connect(owner, root)

    real_abort = scanner_module._NewFiles.abort

    def rollback_fails(self):
        real_abort(self)
        raise RuntimeError("connection lost during rollback")

    def disk_fails(counts):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(scanner_module._NewFiles, "abort", rollback_fails)
    result = run_active_scan(owner, source, on_batch=disk_fails)
    # The scan reports the drive's error, not the rollback's.
    assert result["status"] == "interrupted"
    assert "Input/output error" in result["message"]
