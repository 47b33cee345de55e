"""Export benchmark: zip assembly into the local object store against ``cat``.

For each size it writes files of that total size, flushes them to disk with
``sync``, reads them once so that every timed run starts from a warm page
cache, and scans them into a new PostgreSQL database. It then alternates
timed runs of ``cat`` and of an export of the same files. Both write into
the object store's folder and call ``fsync`` before the clock stops, so the
flush of their dirty pages is part of both timings. ``sync`` runs before
each timed run so that neither pays for the other's writes. Each export
runs in a new child process (plan and assembly, as a worker runs them,
without the scan). The table gives the median rate of each command, the
ratio of the two medians and the largest peak RSS of the export children.

    .venv/bin/python bench/exports/run.py [--sizes-gb 1 4] [--rounds 5]
    .venv/bin/python bench/exports/run.py --sizes-gb 1 --rounds 1 --profile export.prof
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PG = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
DB_NAME = "archive_bench_exports"
FILE_SIZE = 256 * 1024 * 1024


# -- child processes (run with the catalog's environment) ----------------------


def child_scan(root: str) -> None:
    """Scan ``root`` into the bench database and print the ids an export needs."""
    from sqlalchemy import select

    from core.db import session_scope, upgrade
    from services.catalog.models import (
        File, Membership, Organization, Scan, Source, SourceGroup, User,
    )  # fmt: skip
    from workers.scan.scanner import Scanner, discard_staging
    from workers.scan.volume import ensure_volume_id

    upgrade("catalog")
    with session_scope("catalog") as session:
        org = Organization(name="bench")
        session.add(org)
        session.flush()
        user = User(email="bench@example.com")
        session.add(user)
        session.flush()
        session.add(Membership(org_id=org.id, user_id=user.id, role="owner"))
        group = SourceGroup(org_id=org.id, name="Everyone")
        session.add(group)
        session.flush()
        source = Source(
            org_id=org.id, group_id=group.id, name="bench", state="online",
            volume_id=ensure_volume_id(root), mount_path=root, host="bench",
        )  # fmt: skip
        session.add(source)
        session.flush()
        scan = Scan(org_id=org.id, source_id=source.id, counts={})
        session.add(scan)
        session.flush()
        session.expunge(source)
        org_id, user_id, scan_id = org.id, user.id, scan.id
    Scanner(scan_id, source, root, 2000).run()
    discard_staging(scan_id)
    with session_scope("catalog") as session:
        files = session.execute(select(File.id, File.fingerprint).order_by(File.path)).all()
    print(json.dumps({
        "org_id": org_id,
        "user_id": user_id,
        "fingerprints": {file_id: fingerprint for file_id, fingerprint in files},
    }))  # fmt: skip


def child_export(setup_json: str, profile_path: str | None) -> None:
    """Create one export of the scanned files, run it and print its timing."""
    import resource

    from core.db import session_scope
    from services.catalog.models import Export
    from workers.tasks.exports import assemble_export, plan_export

    setup = json.loads(setup_json)
    with session_scope("catalog") as session:
        export = Export(
            org_id=setup["org_id"], user_id=setup["user_id"], name="bench",
            file_ids=list(setup["fingerprints"]), fingerprints=setup["fingerprints"],
        )  # fmt: skip
        session.add(export)
        session.flush()
        export_id = export.id
    profiler = None
    if profile_path:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started = time.perf_counter()
    plan_export(export_id)
    assemble_export(export_id, "bench")
    elapsed = time.perf_counter() - started
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile_path)
    with session_scope("catalog") as session:
        export = session.get(Export, export_id)
        status, size, key = export.status, export.archive_size, export.archive_key
    print(json.dumps({
        "seconds": elapsed,
        "status": status,
        "archive_bytes": size,
        "archive_key": key,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))  # fmt: skip


# -- the benchmark -------------------------------------------------------------


def make_files(root: Path, total: int) -> list[Path]:
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
    return sorted(root.glob("clip-*.mov"))


def read_once(files: list[Path]) -> None:
    """Read every file so that both timed commands find them in the page cache."""
    buffer = bytearray(1 << 20)
    for path in files:
        with open(path, "rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass


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
    """Time ``cat`` of ``files`` into ``target``, including its ``fsync``."""
    os.sync()
    started = time.perf_counter()
    with open(target, "wb") as out:
        subprocess.run(["cat", *map(str, files)], stdout=out, check=True)
        os.fsync(out.fileno())
    elapsed = time.perf_counter() - started
    target.unlink()
    return elapsed


def child_env(data_dir: Path) -> dict:
    env = dict(os.environ)
    env.update(
        ARCHIVE_DATA_DIR=str(data_dir),
        CATALOG_DATABASE_URL=f"{PG}/{DB_NAME}",
        REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"),
        ARCHIVE_HOST="bench",
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    return env


def run_child(data_dir: Path, *args: str) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        env=child_env(data_dir), cwd=str(ROOT), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_export(data_dir: Path, setup: dict, profile_path: str | None) -> dict:
    """Time one export in a child process, then delete its archive."""
    os.sync()
    args = ["export", json.dumps(setup)]
    if profile_path:
        args.append(profile_path)
    result = run_child(data_dir, *args)
    if result["status"] != "succeeded":
        raise SystemExit(f"the export did not succeed: {result}")
    (data_dir / "objects" / result["archive_key"]).unlink()
    return result


def bench_size(size_gb: float, rounds: int, profile_path: str | None) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-export-", dir=os.environ.get("BENCH_DIR")))
    try:
        total = int(size_gb * 1024**3)
        files = make_files(work / "drive", total)
        data_dir = work / "data"
        (data_dir / "objects").mkdir(parents=True)
        os.sync()
        read_once(files)
        reset_database()
        setup = run_child(data_dir, "scan", str(work / "drive"))
        assert len(setup["fingerprints"]) == len(files), setup
        cat_seconds, export_seconds, peak_rss = [], [], []
        for round_index in range(rounds):
            # Alternate which command goes first, so neither always follows
            # the other's writes.
            order = ("cat", "export") if round_index % 2 == 0 else ("export", "cat")
            for command in order:
                if command == "cat":
                    cat_seconds.append(run_cat(files, data_dir / "objects" / "cat.out"))
                else:
                    result = run_export(data_dir, setup, profile_path)
                    export_seconds.append(result["seconds"])
                    peak_rss.append(result["peak_rss_mb"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
        drop_database()
    mb = total / 1e6
    return {
        "cat_rates": [mb / seconds for seconds in cat_seconds],
        "export_rates": [mb / seconds for seconds in export_seconds],
        "peak_rss_mb": max(peak_rss),
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        sys.path.insert(0, str(ROOT))
        if sys.argv[2] == "scan":
            child_scan(sys.argv[3])
        else:
            child_export(sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes-gb", type=float, nargs="+", default=[1, 4], help="total export sizes in GiB"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="timed runs of each command per size"
    )
    parser.add_argument(
        "--profile", metavar="FILE", help="write the last export's cProfile stats to FILE"
    )
    args = parser.parse_args()
    print(
        f"{'size':>6} {'cat MB/s':>9} {'export MB/s':>12} {'ratio':>6} {'peak RSS MB':>12}"
        "   cat runs | export runs (MB/s)"
    )
    for size_gb in args.sizes_gb:
        result = bench_size(size_gb, args.rounds, args.profile)
        cat_rate = statistics.median(result["cat_rates"])
        export_rate = statistics.median(result["export_rates"])
        runs = " ".join(f"{rate:.0f}" for rate in result["cat_rates"])
        runs += " | " + " ".join(f"{rate:.0f}" for rate in result["export_rates"])
        print(
            f"{size_gb:5.1f}G {cat_rate:9.0f} {export_rate:12.0f} {export_rate / cat_rate:6.2f} "
            f"{result['peak_rss_mb']:12.0f}   {runs}",
            flush=True,
        )


if __name__ == "__main__":
    main()
