"""``archive collections`` against live catalog and collections servers."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli.main import cli
from core.db import session_scope
from services.catalog.models import Export
from tests.catalog.helpers import connect, files_by_path, run_active_scan
from tests.catalog.test_worker_flow import wait_for_idle_worker
from tests.collections.conftest import serve


@pytest.fixture
def run_cli(owner, catalog_url, collections_app, tmp_path, monkeypatch):
    server, collections_url = serve(collections_app)
    monkeypatch.setenv("ARCHIVE_CONFIG", str(tmp_path / "cli-config.json"))
    monkeypatch.setenv("ARCHIVE_URL", catalog_url)
    monkeypatch.setenv("ARCHIVE_COLLECTIONS_URL", collections_url)
    monkeypatch.setenv("ARCHIVE_TOKEN", owner.token)

    def run(*args):
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        return result

    yield run
    server.shutdown()


def test_cli_round_trip(owner, run_cli, drive_factory):
    root = drive_factory("CLI", {"dir/a.txt": b"a" * 100, "dir/b.txt": b"b" * 100, "c.txt": b"c"})
    run_active_scan(owner, connect(owner, root, name="CLI"))
    files = files_by_path(owner)

    created = run_cli("collections", "create", "Picks", "--description", "from the CLI", "--json")
    assert created.exit_code == 0, created.output
    collection_id = json.loads(created.output)["id"]

    added = run_cli("collections", "add", "Picks", "--folder", "CLI:dir", "--json")
    assert added.exit_code == 0, added.output
    assert len(json.loads(added.output)["added"]) == 2
    added = run_cli("collections", "add", collection_id, files["c.txt"]["id"])
    assert added.exit_code == 0, added.output
    assert "added 1 files" in added.output

    moved = run_cli("collections", "move", "Picks", files["c.txt"]["id"], "0")
    assert moved.exit_code == 0, moved.output
    shown = json.loads(run_cli("collections", "show", "Picks", "--json").output)
    assert [i["path"] for i in shown["items"]] == ["c.txt", "dir/a.txt", "dir/b.txt"]
    assert shown["description"] == "from the CLI"

    removed = run_cli("collections", "rm", "Picks", files["dir/a.txt"]["id"])
    assert removed.exit_code == 0, removed.output
    listed = json.loads(run_cli("collections", "ls", "--json").output)["items"]
    assert [(c["name"], c["item_count"]) for c in listed] == [("Picks", 2)]

    both = run_cli("collections", "add", "Picks", "--query", "a", "--folder", "CLI:dir")
    assert both.exit_code != 0
    assert "pass FILE_IDS" in both.output

    run_cli("collections", "create", "Picks")
    ambiguous = run_cli("collections", "show", "Picks")
    assert ambiguous.exit_code != 0
    assert "more than one collection" in ambiguous.output

    deleted = run_cli("collections", "delete", collection_id)
    assert deleted.exit_code == 0, deleted.output
    missing = run_cli("collections", "show", collection_id)
    assert missing.exit_code != 0
    assert "not found" in missing.output


def test_cli_query_and_json_output(owner, run_cli, drive_factory):
    root = drive_factory(
        "JSON", {"beach-1.txt": b"1" * 10, "beach-2.txt": b"2" * 20, "city.txt": b"3"}
    )
    run_active_scan(owner, connect(owner, root, name="JSON"))
    files = files_by_path(owner)
    beach = [files["beach-1.txt"]["id"], files["beach-2.txt"]["id"]]
    run_cli("collections", "create", "Beach", "--json")

    added = run_cli(
        "collections", "add", "Beach", "--query", "beach", "--drive", "JSON", "--json"
    )
    assert added.exit_code == 0, added.output
    assert sorted(json.loads(added.output)["added"]) == sorted(beach)

    moved = run_cli("collections", "move", "Beach", beach[1], "0", "--json")
    assert moved.exit_code == 0, moved.output
    assert json.loads(moved.output)["position"] == 0
    details = json.loads(run_cli("collections", "show", "Beach", "--json").output)
    assert [i["file_id"] for i in details["items"]] == [beach[1], beach[0]]
    assert [i["drive"] for i in details["items"]] == ["JSON", "JSON"]

    removed = run_cli("collections", "rm", "Beach", beach[0], "--json")
    assert removed.exit_code == 0, removed.output
    assert json.loads(removed.output)["removed"] == [beach[0]]
    listed = json.loads(run_cli("collections", "ls", "--json").output)["items"]
    assert [(c["name"], c["item_count"]) for c in listed] == [("Beach", 1)]

    deleted = run_cli("collections", "delete", "Beach", "--json")
    assert deleted.exit_code == 0, deleted.output
    assert json.loads(deleted.output)["deleted"] == details["id"]
    assert json.loads(run_cli("collections", "ls", "--json").output)["items"] == []


def test_cli_rm_rejects_dot_segment_id(owner, run_cli, drive_factory):
    root = drive_factory("DOTS", {"a.txt": b"a", "b.txt": b"b"})
    run_active_scan(owner, connect(owner, root, name="DOTS"))
    files = files_by_path(owner)
    run_cli("collections", "create", "Spring campaign")
    other = json.loads(run_cli("collections", "create", "Other", "--json").output)
    run_cli("collections", "add", "Spring campaign", files["a.txt"]["id"])

    removed = run_cli("collections", "rm", "Spring campaign", f"../../{other['id']}")
    assert removed.exit_code == 2, removed.output
    assert "is not a valid id" in removed.output
    moved = run_cli("collections", "move", "Spring campaign", f"../../{other['id']}", "0")
    assert moved.exit_code == 2, moved.output
    assert "is not a valid id" in moved.output

    for ref in ("..", f"../{other['id']}", "."):
        shown = run_cli("collections", "show", ref)
        assert shown.exit_code == 2, shown.output
        assert "is not a valid collection id" in shown.output

    listed = json.loads(run_cli("collections", "ls", "--json").output)["items"]
    assert sorted((c["name"], c["item_count"]) for c in listed) == [
        ("Other", 0),
        ("Spring campaign", 1),
    ]


def test_cli_move_past_end_reports_last(owner, run_cli, drive_factory):
    root = drive_factory("LAST", {"a.txt": b"a", "b.txt": b"b", "c.txt": b"c"})
    run_active_scan(owner, connect(owner, root, name="LAST"))
    files = files_by_path(owner)
    run_cli("collections", "create", "Order")
    run_cli("collections", "add", "Order", "--folder", "LAST")
    first = files["a.txt"]["id"]

    moved = run_cli("collections", "move", "Order", first, "99999999999")
    assert moved.exit_code == 0, moved.output
    assert f"moved {first} to position 2 in 'Order'" in moved.output
    shown = json.loads(run_cli("collections", "show", "Order", "--json").output)
    assert [i["path"] for i in shown["items"]] == ["b.txt", "c.txt", "a.txt"]

    moved = run_cli("collections", "move", "Order", first, "1", "--json")
    assert moved.exit_code == 0, moved.output
    assert json.loads(moved.output)["position"] == 1
    moved = run_cli("collections", "move", "Order", first, "3", "--json")
    assert json.loads(moved.output)["position"] == 2


def test_cli_export_by_collection_name(owner, run_cli, drive_factory, celery_worker_process):
    root = drive_factory("EXPORT", {"a.txt": b"a", "b.txt": b"b", "c.txt": b"c"})
    run_active_scan(owner, connect(owner, root, name="EXPORT"))
    files = files_by_path(owner)
    run_cli("collections", "create", "Spring campaign")
    picked = [files["c.txt"]["id"], files["a.txt"]["id"]]
    run_cli("collections", "add", "Spring campaign", *picked)

    created = run_cli("exports", "create", "Spring campaign", "--json")
    assert created.exit_code == 0, created.output
    export_id = json.loads(created.output)["id"]
    with session_scope("catalog") as session:
        assert session.get(Export, export_id).file_ids == picked

    cancelled = run_cli("exports", "cancel", export_id, "--json")
    assert cancelled.exit_code == 0, cancelled.output
    missing = run_cli("exports", "create", "No such collection")
    assert missing.exit_code != 0
    assert "collection 'No such collection' not found" in missing.output
    wait_for_idle_worker()


def test_cli_show_prints_names_literally(owner, run_cli, drive_factory, monkeypatch):
    root = drive_factory("MARKUP", {"[bold]rich[bold].txt": b"r", "esc\x1b[2J.txt": b"e"})
    run_active_scan(owner, connect(owner, root, name="MARKUP"))
    monkeypatch.setenv("COLUMNS", "200")
    name = "[red]Picks\x1b[2J"
    run_cli("collections", "create", name, "--description", "line one\n[bold]two[bold]")
    run_cli("collections", "add", name, "--folder", "MARKUP")

    shown = run_cli("collections", "show", name)
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("[red]Picks\\x1b[2J (")
    assert "line one\\n[bold]two[bold]" in shown.output
    assert "[bold]rich[bold].txt" in shown.output
    assert "esc\\x1b[2J.txt" in shown.output
    assert "\x1b" not in shown.output
    listed = run_cli("collections", "ls")
    assert "[red]Picks\\x1b[2J" in listed.output
    exact = json.loads(run_cli("collections", "show", name, "--json").output)
    assert exact["name"] == name
    assert sorted(i["name"] for i in exact["items"]) == ["[bold]rich[bold].txt", "esc\x1b[2J.txt"]
