"""Export benchmark: zip assembly into the local object store against ``cat``.

For each size it writes files of that total size, copies them once with
``cat`` into the same filesystem as the object store, then runs an export
of the same files in a child process (plan and assembly, as the worker
does), and prints throughput and the child's peak RSS.

    .venv/bin/python bench/exports/run.py [--sizes-gb 1 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PG = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
DB_NAME = "archive_bench_exports"
FILE_SIZE = 256 * 1024 * 1024

CHILD = r"""
import json, resource, sys, time
from sqlalchemy import select
from core.db import session_scope, upgrade
from services.catalog.models import Export, File, Membership, Organization, Scan, Source, SourceGroup, User
from workers.scan.scanner import Scanner, discard_staging
from workers.scan.volume import ensure_volume_id
from workers.tasks.exports import assemble_export, plan_export

root = sys.argv[1]
upgrade("catalog")
with session_scope("catalog") as s:
    org = Organization(name="bench"); s.add(org); s.flush()
    user = User(email="bench@example.com"); s.add(user); s.flush()
    s.add(Membership(org_id=org.id, user_id=user.id, role="owner"))
    group = SourceGroup(org_id=org.id, name="Everyone"); s.add(group); s.flush()
    source = Source(org_id=org.id, group_id=group.id, name="bench", state="online",
                    volume_id=ensure_volume_id(root), mount_path=root, host="bench")
    s.add(source); s.flush()
    scan = Scan(org_id=org.id, source_id=source.id, counts={}); s.add(scan); s.flush()
    s.expunge(source)
    ids = (org.id, user.id, scan.id)
Scanner(ids[2], source, root, 2000).run()
discard_staging(ids[2])
with session_scope("catalog") as s:
    files = s.execute(select(File.id, File.fingerprint).order_by(File.path)).all()
    export = Export(org_id=ids[0], user_id=ids[1], name="bench",
                    file_ids=[f.id for f in files],
                    fingerprints={f.id: f.fingerprint for f in files})
    s.add(export); s.flush()
    export_id = export.id
started = time.perf_counter()
plan_export(export_id)
assemble_export(export_id, "bench")
elapsed = time.perf_counter() - started
with session_scope("catalog") as s:
    export = s.get(Export, export_id)
    status, size = export.status, export.archive_size
print(json.dumps({"seconds": elapsed, "status": status, "archive_bytes": size,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_files(root: Path, total: int) -> None:
    root.mkdir(parents=True)
    block = os.urandom(1 << 20)
    written, index = 0, 0
    while written < total:
        size = min(FILE_SIZE, total - written)
        with open(root / f"clip-{index:03}.mov", "wb") as handle:
            for _ in range(size // len(block)):
                # Vary each block so the data does not repeat exactly.
                handle.write(index.to_bytes(4, "little") + block[4:])
        written += size
        index += 1


def reset_database() -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def drop_database() -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


def run_cat(files: list[Path], target: Path) -> float:
    started = time.perf_counter()
    with open(target, "wb") as out:
        subprocess.run(["cat", *map(str, files)], stdout=out, check=True)
        os.fsync(out.fileno())
    return time.perf_counter() - started


def run_export(root: Path, data_dir: Path) -> dict:
    env = dict(os.environ)
    env.update(
        ARCHIVE_DATA_DIR=str(data_dir),
        CATALOG_DATABASE_URL=f"{PG}/{DB_NAME}",
        REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"),
        ARCHIVE_HOST="bench",
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(root)],
        env=env, cwd=str(ROOT), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-gb", type=float, nargs="+", default=[1, 4])
    args = parser.parse_args()
    print(f"{'size':>6} {'cat MB/s':>9} {'export MB/s':>12} {'ratio':>6} {'peak RSS MB':>12}")
    for size_gb in args.sizes_gb:
        work = Path(tempfile.mkdtemp(prefix="bench-export-", dir=os.environ.get("BENCH_DIR")))
        try:
            total = int(size_gb * 1024**3)
            make_files(work / "drive", total)
            files = sorted((work / "drive").glob("clip-*.mov"))
            (work / "data" / "objects").mkdir(parents=True)
            cat_seconds = run_cat(files, work / "data" / "objects" / "cat.out")
            (work / "data" / "objects" / "cat.out").unlink()
            reset_database()
            result = run_export(work / "drive", work / "data")
            assert result["status"] == "succeeded", result
            mb = total / 1e6
            cat_rate, export_rate = mb / cat_seconds, mb / result["seconds"]
            print(f"{size_gb:5.1f}G {cat_rate:9.0f} {export_rate:12.0f} "
                  f"{export_rate / cat_rate:6.2f} {result['peak_rss_mb']:12.0f}")  # fmt: skip
        finally:
            shutil.rmtree(work, ignore_errors=True)
            drop_database()


if __name__ == "__main__":
    main()
