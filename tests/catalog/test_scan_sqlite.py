"""Drive scans on SQLite, the embedded profile's catalog database.

The test session's settings point at PostgreSQL and engines are cached per
process, so the scans run in a child process with an SQLite catalog.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys
from sqlalchemy import select
from core.db import session_scope, upgrade
from services.catalog.models import File, Organization, Scan, Source, SourceGroup
from workers.scan.scanner import Scanner, discard_staging
from workers.scan.volume import ensure_volume_id

root = sys.argv[1]
upgrade("catalog")
with session_scope("catalog") as session:
    source = session.scalars(select(Source)).first()
    if source is None:
        org = Organization(name="embedded")
        session.add(org)
        session.flush()
        group = SourceGroup(org_id=org.id, name="Everyone")
        session.add(group)
        session.flush()
        source = Source(org_id=org.id, group_id=group.id, name="drive", state="online",
                        volume_id=ensure_volume_id(root), mount_path=root, host="embedded")
        session.add(source)
        session.flush()
    session.expunge(source)
    scan = Scan(org_id=source.org_id, source_id=source.id, counts={}, status="running")
    session.add(scan)
    session.flush()
    scan_id = scan.id
counts = Scanner(scan_id, source, root, batch_size=10).run()
discard_staging(scan_id)
with session_scope("catalog") as session:
    files = {f.path: [f.id, f.presence] for f in session.scalars(select(File))}
print(json.dumps({"counts": counts.as_dict(), "files": files}))
"""


def scan_sqlite(root: Path, database: Path) -> dict:
    env = dict(os.environ)
    env.update(CATALOG_DATABASE_URL=f"sqlite:///{database}", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(root)],
        env=env, cwd=str(ROOT), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_sqlite_scan_moves_and_missing(drive_factory, tmp_path):
    # With chunks of 10 entries, folder a (12 files) is listed in chunks and
    # the others whole.
    sizes = {"a": 12, "b": 5, "c": 5}
    files = {f"{folder}/{index:02}.jpg": f"{folder}-{index}".encode() * 50
             for folder, count in sizes.items() for index in range(count)}  # fmt: skip
    files["top.txt"] = b"top"
    root = drive_factory("embedded", files)
    database = tmp_path / "catalog.db"

    cold = scan_sqlite(root, database)
    assert cold["counts"]["new"] == 23
    assert all(presence == "present" for _, presence in cold["files"].values())

    unchanged = scan_sqlite(root, database)
    assert unchanged["counts"]["unchanged"] == 23
    assert unchanged["counts"]["new"] == 0

    os.rename(root / "a/03.jpg", root / "b/moved.jpg")
    os.rename(root / "c", root / "renamed")
    (root / "a/07.jpg").unlink()
    (root / "b/02.jpg").unlink()
    (root / "top.txt").unlink()
    (root / "added.jpg").write_bytes(b"added" * 20)
    rescan = scan_sqlite(root, database)
    counts = rescan["counts"]
    assert counts["moved"] == 6
    assert counts["missing"] == 3
    assert counts["new"] == 1
    before, after = cold["files"], rescan["files"]
    assert after["b/moved.jpg"][0] == before["a/03.jpg"][0]
    for index in range(5):
        assert after[f"renamed/{index:02}.jpg"][0] == before[f"c/{index:02}.jpg"][0]
    missing = {path for path, (_, presence) in after.items() if presence == "missing"}
    assert missing == {"a/07.jpg", "b/02.jpg", "top.txt"}
    assert after["added.jpg"][1] == "present"
