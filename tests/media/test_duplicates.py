"""Files with equal full-content checksums, listed across drives by the API and the CLI."""

from __future__ import annotations

from tests.catalog.helpers import connect, files_by_path, run_active_scan
from tests.collections.conftest import jpeg_bytes
from workers.tasks.checksums import checksum_source


def scan_and_checksum(owner, drive_factory, name: str, files: dict[str, bytes]) -> None:
    source = connect(owner, drive_factory(name, files), name=name)
    assert run_active_scan(owner, source)["status"] == "succeeded"
    assert checksum_source(source["id"]) == len(files)


def test_duplicates_across_drives(owner, archive, drive_factory):
    photo = jpeg_bytes(80, 60, shade=11)
    other = jpeg_bytes(shade=99)
    scan_and_checksum(
        owner, drive_factory, "SHOOT", {"DCIM/IMG_1.jpg": photo, "DCIM/IMG_2.jpg": other}
    )
    scan_and_checksum(owner, drive_factory, "BACKUP", {"2024/copy of IMG_1.jpg": photo})
    shoot = files_by_path(owner, drive="SHOOT")
    backup = files_by_path(owner, drive="BACKUP")

    groups = owner.get("/api/v1/duplicates").json["items"]
    assert len(groups) == 1
    assert groups[0]["copies"] == 2
    assert groups[0]["size"] == len(photo)
    assert [(f["drive"], f["path"]) for f in groups[0]["files"]] == [
        ("BACKUP", "2024/copy of IMG_1.jpg"),
        ("SHOOT", "DCIM/IMG_1.jpg"),
    ]
    original = owner.get(f"/api/v1/files/{shoot['DCIM/IMG_1.jpg']['id']}").json
    copy = owner.get(f"/api/v1/files/{backup['2024/copy of IMG_1.jpg']['id']}").json
    assert original["checksum"] == copy["checksum"] == groups[0]["checksum"]

    listed = archive.run_json("files", "duplicates", "--json", token=owner.token)
    assert listed["items"] == groups
    table_output = archive.run("files", "duplicates", token=owner.token)
    assert table_output.exit_code == 0, table_output.output
    assert "2 copies" in table_output.output
    assert "BACKUP:2024/copy of IMG_1.jpg" in table_output.output
    assert "SHOOT:DCIM/IMG_1.jpg" in table_output.output
