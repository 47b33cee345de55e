"""``archive collections`` against live catalog and collections servers."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli.main import cli
from tests.catalog.helpers import connect, files_by_path, run_active_scan
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
