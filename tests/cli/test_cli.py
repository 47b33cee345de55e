"""The ``archive`` command against a catalog on real HTTP and a real worker.

Drives are connected with the host from ARCHIVE_HOST, which tests/conftest.py
sets to the host whose queue the test worker consumes.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image
from sqlalchemy import func, select

from cli.commands import agent as agent_command
from core.db import session_scope
from services.catalog.models import Organization
from tests.cli.conftest import ArchiveCli
from tests.conftest import wait_for


def jpeg(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buffer, "JPEG")
    return buffer.getvalue()


def json_events(output: str) -> list[dict]:
    """Parse a stream of JSON objects, whether one per line or indented."""
    decoder = json.JSONDecoder()
    events, position = [], 0
    text = output.strip()
    while position < len(text):
        event, end = decoder.raw_decode(text, position)
        events.append(event)
        position = end
        while position < len(text) and text[position].isspace():
            position += 1
    return events


def assert_clean_failure(result, expected: str) -> None:
    """Assert a non-zero exit with ``expected`` in the message and no traceback."""
    assert result.exit_code != 0, result.output
    assert expected in result.output, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)


@pytest.fixture
def owner_config(archive) -> dict:
    return archive.run_json(
        "init", "--org", "Studio", "--email", "me@example.com", "--json"
    )


@pytest.fixture
def shoot(drive_factory) -> Path:
    return drive_factory(
        "SHOOT-01",
        {
            "DCIM/beach-01.jpg": jpeg((0, 90, 200)),
            "DCIM/beach-02.jpg": jpeg((0, 120, 230)),
            "notes.txt": b"call sheet\n",
        },
    )


def test_init_writes_config(archive):
    created = archive.run_json(
        "init", "--org", "Studio", "--email", "me@example.com", "--json"
    )
    assert created["token"].startswith("arc_")
    assert created["config_file"] == str(archive.config_path)
    stored = json.loads(archive.config_path.read_text())
    assert stored["token"] == created["token"]
    assert stored["org_id"] == created["org_id"]
    assert stored["catalog_url"] == archive.url
    assert archive.config_path.stat().st_mode & 0o077 == 0



def count_organizations() -> int:
    with session_scope("catalog") as session:
        return session.scalar(select(func.count()).select_from(Organization))


def test_init_keeps_saved_token(archive, owner_config):
    saved = archive.config_path.read_text()
    again = archive.run("init", "--org", "Other", "--email", "you@example.com")
    assert_clean_failure(again, f"the config file {archive.config_path} already contains")
    assert "--force" in again.output
    assert "ARCHIVE_CONFIG" in again.output
    assert archive.config_path.read_text() == saved
    assert count_organizations() == 1


def test_init_force_replaces_token(archive, owner_config):
    # A second organization needs the internal secret, read from INTERNAL_SECRET.
    second = archive.run_json(
        "init", "--org", "Other", "--email", "you@example.com", "--force", "--json"
    )
    assert second["org_id"] != owner_config["org_id"]
    stored = json.loads(archive.config_path.read_text())
    assert stored["token"] == second["token"]
    assert count_organizations() == 2


def test_init_other_config_file(archive, owner_config, tmp_path):
    other_config = tmp_path / "other.json"
    second = archive.run_json(
        "init", "--org", "Other", "--email", "you@example.com", "--json",
        env={"ARCHIVE_CONFIG": str(other_config)},
    )  # fmt: skip
    assert second["config_file"] == str(other_config)
    first = json.loads(archive.config_path.read_text())
    assert first["token"] == owner_config["token"]


def test_init_without_secret_fails_cleanly(archive, owner_config, tmp_path):
    result = archive.run(
        "init",
        "--org",
        "Other",
        "--email",
        "you@example.com",
        "--data-dir",
        str(tmp_path / "no-stack"),
        "--force",
        env={"INTERNAL_SECRET": None},
    )
    assert_clean_failure(result, "X-Internal-Secret")


def test_drive_browse_and_groups(archive, owner_config, shoot, worker):
    connected = archive.run_json("drives", "connect", str(shoot), "--wait", "--json")
    drive, scan = connected["drive"], connected["scan"]
    assert drive["name"] == "SHOOT-01"
    assert drive["state"] == "online"
    assert drive["host"] == "testhost"
    assert drive["file_count"] == 3
    assert scan["status"] == "succeeded"
    assert scan["counts"]["new"] == 3

    listed = archive.run_json("drives", "list", "--json")["items"]
    assert [d["name"] for d in listed] == ["SHOOT-01"]

    everything = archive.run_json("files", "search", "", "--json")["items"]
    assert sorted(item["path"] for item in everything) == [
        "DCIM/beach-01.jpg",
        "DCIM/beach-02.jpg",
        "notes.txt",
    ]
    beach = archive.run_json(
        "files", "search", "beach", "--type", "image", "--state", "online", "--json"
    )["items"]
    assert [item["name"] for item in beach] == ["beach-01.jpg", "beach-02.jpg"]
    assert (
        archive.run_json("files", "search", "beach", "--type", "video", "--json")[
            "items"
        ]
        == []
    )

    details = archive.run_json("files", "show", beach[0]["id"], "--json")
    assert details["id"] == beach[0]["id"]
    assert details["path"] == "DCIM/beach-01.jpg"
    assert details["size"] == (shoot / "DCIM/beach-01.jpg").stat().st_size

    group = archive.run_json("groups", "create", "Clients", "--restricted", "--json")
    assert group["visibility"] == "restricted"
    assert group["members"] == ["me@example.com"]
    granted_viewer = archive.run_json("members", "add", "guest@example.com", "--json")
    other_viewer = archive.run_json("members", "add", "other@example.com", "--json")
    granted = archive.run_json(
        "groups", "grant", "Clients", "guest@example.com", "--json"
    )
    assert granted["members"] == ["guest@example.com", "me@example.com"]
    moved = archive.run_json("groups", "add-drive", "Clients", "SHOOT-01", "--json")
    assert moved["group"] == "Clients"

    seen = archive.run_json(
        "files", "search", "", "--json", token=granted_viewer["token"]
    )
    assert len(seen["items"]) == 3
    hidden = archive.run_json(
        "files", "search", "", "--json", token=other_viewer["token"]
    )
    assert hidden["items"] == []
    rejected = archive.run(
        "drives", "disconnect", "SHOOT-01", token=granted_viewer["token"]
    )
    assert_clean_failure(rejected, "editor role")

    offline = archive.run_json("drives", "disconnect", "SHOOT-01", "--json")
    assert offline["state"] == "offline"
    offline_files = archive.run_json(
        "files", "search", "", "--state", "offline", "--json"
    )
    assert len(offline_files["items"]) == 3
    assert (
        archive.run_json("files", "search", "", "--state", "online", "--json")["items"]
        == []
    )

    rescan_offline = archive.run("drives", "rescan", "SHOOT-01", "--wait", "--json")
    assert_clean_failure(rescan_offline, "offline")

    again = archive.run_json("drives", "connect", str(shoot), "--wait", "--json")
    assert again["drive"]["id"] == drive["id"]
    rescanned = archive.run_json("drives", "rescan", "SHOOT-01", "--wait", "--json")
    assert rescanned["status"] == "succeeded"
    assert rescanned["counts"]["unchanged"] == 3
    assert rescanned["counts"]["new"] == 0


def test_files_ls_lists_folders(archive, owner_config, shoot, worker):
    archive.run_json("drives", "connect", str(shoot), "--wait", "--json")
    root = archive.run_json("files", "ls", "SHOOT-01", "--json")
    assert [f["name"] for f in root["folders"]] == ["DCIM"]
    assert [item["path"] for item in root["items"]] == ["notes.txt"]
    folder = archive.run_json("files", "ls", "SHOOT-01:DCIM", "--json")
    assert [item["path"] for item in folder["items"]] == [
        "DCIM/beach-01.jpg",
        "DCIM/beach-02.jpg",
    ]
    for item in root["items"] + folder["items"]:
        assert set(item) >= {"id", "path", "drive", "state", "media_type"}, item
        assert item["drive"] == "SHOOT-01"
        assert item["state"] == "online"
    assert {item["media_type"] for item in folder["items"]} == {"image/jpeg"}


def test_errors_print_without_traceback(archive, owner_config, tmp_path):
    cases = [
        (
            ("drives", "rescan", "NO-SUCH-DRIVE", "--wait"),
            "drive 'NO-SUCH-DRIVE' not found",
        ),
        (("drives", "disconnect", "NO-SUCH-DRIVE"), "drive 'NO-SUCH-DRIVE' not found"),
        (("drives", "verify", "NO-SUCH-DRIVE"), "drive 'NO-SUCH-DRIVE' not found"),
        (("files", "show", "0" * 32), "not found"),
        (("groups", "grant", "NoGroup", "me@example.com"), "group 'NoGroup' not found"),
        (("files", "search", "", "--state", "lost"), "'lost' is not one of"),
    ]
    for args, expected in cases:
        assert_clean_failure(archive.run(*args), expected)

    empty = tmp_path / "empty-mount"
    empty.mkdir()
    connect_empty = archive.run("drives", "connect", str(empty))
    assert_clean_failure(connect_empty, "is empty")

    no_token = archive.run("drives", "list", token="arc_not-a-real-token")
    assert_clean_failure(no_token, "archive init")


def test_unreachable_service_is_reported(archive, owner_config):
    # Port 9 (discard) is assumed to have no listener on a test machine.
    unreachable = ArchiveCli(url="http://127.0.0.1:9", config_path=archive.config_path)
    result = unreachable.run("drives", "list")
    assert_clean_failure(
        result, "cannot reach the catalog service at http://127.0.0.1:9"
    )


def test_drive_name_with_hash(archive, owner_config, shoot, worker):
    archive.run_json("drives", "connect", str(shoot), "--name", "Tape #7", "--json")
    offline = archive.run_json("drives", "disconnect", "Tape #7", "--json")
    assert offline["name"] == "Tape #7"


def test_agent_once_connects_new_drive(archive, owner_config, tmp_path, worker):
    media = tmp_path / "media"
    (media / "CARD-A" / "DCIM").mkdir(parents=True)
    (media / "CARD-A" / "DCIM" / "one.jpg").write_bytes(jpeg((200, 0, 0)))
    (media / "empty-mount").mkdir()

    result = archive.run("agent", "--watch", str(media), "--once", "--json")
    assert result.exit_code == 0, result.output
    events = json_events(result.stdout)
    assert events == [
        {"event": "connected", "drive": "CARD-A", "path": str(media / "CARD-A")}
    ]
    drives = archive.run_json("drives", "list", "--json")["items"]
    assert [(d["name"], d["state"]) for d in drives] == [("CARD-A", "online")]

    # A second run finds the same drive by its volume marker and connects it again.
    repeat = archive.run("agent", "--watch", str(media), "--once", "--json")
    assert repeat.exit_code == 0, repeat.output
    assert [e["event"] for e in json_events(repeat.stdout)] == ["connected"]
    assert len(archive.run_json("drives", "list", "--json")["items"]) == 1


class AgentStopped(Exception):
    """Raised by the test's sleep to end the agent's endless loop."""


def test_agent_disconnects_removed_drive(
    archive, owner_config, tmp_path, monkeypatch, worker
):
    media = tmp_path / "media"
    card = media / "CARD-B"
    card.mkdir(parents=True)
    (card / "two.jpg").write_bytes(jpeg((0, 200, 0)))
    sleeps = []

    def sleep(seconds):
        # The agent sleeps after each pass: unmount the card after the first
        # pass, and stop after the pass that should notice it is gone.
        sleeps.append(seconds)
        if len(sleeps) == 1:
            shutil.rmtree(card)
        elif len(sleeps) == 3:
            raise AgentStopped

    monkeypatch.setattr(agent_command, "time", SimpleNamespace(sleep=sleep))
    result = archive.run("agent", "--watch", str(media), "--interval", "0.5", "--json")
    assert isinstance(result.exception, AgentStopped), result.output
    assert sleeps == [0.5, 0.5, 0.5]
    events = [(e["event"], e.get("drive")) for e in json_events(result.stdout)]
    assert events == [("connected", "CARD-B"), ("disconnected", "CARD-B")]
    drive = archive.run_json("drives", "list", "--json")["items"][0]
    assert drive["state"] == "offline"

    # The scan queued at connect time stops without marking the files missing.
    def scan_finished():
        listed = archive.run_json("drives", "list", "--json")["items"][0]
        return listed["active_scan"] is None

    wait_for(scan_finished, 30, 0.2, "the connect scan to end")


def test_agent_json_one_line_per_event(archive, owner_config, tmp_path, worker):
    media = tmp_path / "media"
    (media / "CARD-C").mkdir(parents=True)
    (media / "CARD-C" / "three.jpg").write_bytes(jpeg((0, 0, 200)))
    result = archive.run("agent", "--watch", str(media), "--once", "--json")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["event"] == "connected"


def assert_usage_error(result, expected: str) -> None:
    """Assert a usage error (exit code 2) with ``expected`` in the message."""
    assert_clean_failure(result, expected)
    assert result.exit_code == 2, result.output


def test_ids_with_dot_segments_rejected(archive, owner_config):
    member = archive.run_json("members", "add", "guest@example.com", "--json")
    cases = [
        ("files", "show", "../members"),
        ("files", "show", ".."),
        ("files", "open", "../members"),
        ("links", "show", "../links"),
        ("links", "revoke", ".."),
        ("members", "remove", f"../members/{member['user_id']}"),
        ("members", "remove", "."),
        ("exports", "status", "../members"),
        ("exports", "cancel", ".."),
        ("exports", "download", "../exports"),
        ("collections", "rm", "Picks", "../../other"),
        ("collections", "move", "Picks", "..", "0"),
    ]
    for args in cases:
        assert_usage_error(archive.run(*args), "is not a valid id")
    members = archive.run_json("members", "ls", "--json")["items"]
    assert member["user_id"] in [m["user_id"] for m in members]


def test_blank_arguments_rejected(archive, owner_config, tmp_path, monkeypatch):
    # An empty PATH resolves to the working directory, so give it a file to connect.
    workdir = tmp_path / "workdir"
    (workdir / "DCIM").mkdir(parents=True)
    (workdir / "DCIM" / "one.jpg").write_bytes(jpeg((10, 10, 10)))
    monkeypatch.chdir(workdir)
    cases = [
        (("drives", "connect", ""), "the path must not be empty"),
        (("drives", "connect", "  "), "the path must not be empty"),
        (("files", "show", ""), "the id must not be empty"),
        (("files", "show", " "), "the id must not be empty"),
        (("files", "ls", ""), "has no drive name"),
        (("files", "ls", ":"), "':' has no drive name"),
        (("files", "ls", ":DCIM"), "':DCIM' has no drive name"),
        (("drives", "rescan", ""), "the drive name must not be empty"),
        (("drives", "disconnect", " "), "the drive name must not be empty"),
        (("drives", "verify", ".."), "'..' is not a valid drive name"),
        (("groups", "grant", "", "me@example.com"), "the group name must not be empty"),
        (("groups", "revoke", "Clients", ""), "the email must not be empty"),
    ]
    for args, expected in cases:
        assert_usage_error(archive.run(*args), expected)
    assert not (workdir / ".archive-volume.json").exists()
    assert archive.run_json("drives", "list", "--json")["items"] == []


def test_names_print_literally(archive, owner_config, drive_factory, worker):
    names = {
        "[bold]rich[bold].jpg": "[bold]rich[bold].jpg",
        "esc\x1b[31mred.jpg": "esc\\x1b[31mred.jpg",
        "two\nlines.jpg": "two\\nlines.jpg",
    }
    root = drive_factory("CARD", {name: jpeg((0, 0, 90)) for name in names})
    (root / "[i]sub[i]").mkdir()
    (root / "[i]sub[i]" / "inner.jpg").write_bytes(jpeg((90, 0, 0)))
    wide = {"COLUMNS": "200"}
    connected = archive.run(
        "drives", "connect", str(root), "--name", "[red]Tape", "--wait", env=wide
    )
    assert connected.exit_code == 0, connected.output
    assert "drive [red]Tape connected" in connected.output

    listing = archive.run("files", "ls", "[red]Tape", env=wide)
    assert listing.exit_code == 0, listing.output
    assert "[i]sub[i]/" in listing.output
    for shown in names.values():
        assert shown in listing.output
    assert "\x1b" not in listing.output

    drives = archive.run("drives", "list", env=wide)
    assert "[red]Tape" in drives.output

    exact = archive.run_json("files", "search", "", "--json")["items"]
    assert sorted(item["name"] for item in exact) == sorted([*names, "inner.jpg"])
    escaped = next(item for item in exact if item["name"] == "esc\x1b[31mred.jpg")
    details = archive.run("files", "show", escaped["id"], env=wide)
    assert details.exit_code == 0, details.output
    assert "esc\\x1b[31mred.jpg" in details.output
    assert "\x1b" not in details.output
