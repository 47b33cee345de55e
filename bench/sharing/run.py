"""Benchmark the public JSON listing and HTML page of a 200-item share link.

Runs wrk (32 connections, 10 s each, after a 2 s warm-up; three rounds,
medians reported) against the sharing service under
gunicorn, against a bare Flask view that returns the same JSON body under
the same gunicorn settings, and against nginx serving that body as a static
file. Then, under the same load, revokes a link and checks that no request
that started after the revoke call returned succeeded.

Needs PostgreSQL and Redis on 127.0.0.1 (as the tests do), /usr/bin/wrk
and /usr/sbin/nginx. Usage: ``.venv/bin/python bench/sharing/run.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
ITEMS = 200
WARMUP_SECONDS = 2
WORKERS = 2
THREADS = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def configure(data_dir: Path, database: str) -> None:
    os.environ.update(
        ARCHIVE_DATA_DIR=str(data_dir),
        SHARING_DATABASE_URL=f"{PG_URL}/{database}",
        CATALOG_DATABASE_URL=f"{PG_URL}/{database}",
        COLLECTIONS_DATABASE_URL=f"{PG_URL}/{database}",
        REDIS_URL=REDIS_URL,
        LINK_SECRET=uuid.uuid4().hex + uuid.uuid4().hex,
        LOG_LEVEL="WARNING",
    )


def create_database(database: str, drop: bool = False) -> None:
    import psycopg

    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        if not drop:
            conn.execute(f'CREATE DATABASE "{database}"')


def seed() -> list[str]:
    """Create the read model of a 200-item collection and two links; return their tokens."""
    from core.db import session_scope, upgrade, utcnow
    from core.storage import get_store
    from services.sharing import readmodel
    from services.sharing.keys import encrypt_token, new_token, token_digest
    from services.sharing.models import Link

    upgrade("sharing")
    org_id, group_id, source_id, collection_id = (uuid.uuid4().hex for _ in range(4))
    store = get_store()
    now = utcnow().isoformat()
    facts = []
    for index in range(ITEMS):
        file_id = uuid.uuid4().hex
        key = f"thumbs/bench/{file_id}.webp"
        store.put_bytes(key, b"RIFF" + bytes(2000), "image/webp")
        facts.append(
            {
                "id": file_id, "org_id": org_id, "source_id": source_id,
                "source_name": "SHOOT-01", "source_state": "online", "group_id": group_id,
                "path": f"DCIM/IMG_{index:04d}.JPG", "name": f"IMG_{index:04d}.JPG",
                "media_type": "image/jpeg", "kind": "image", "size": 4_000_000 + index,
                "presence": "present", "thumbnail_key": key, "preview_key": key,
                "width": 6000, "height": 4000, "captured_at": now, "updated_at": now,
            }
        )  # fmt: skip
    tokens = []
    with session_scope("sharing") as session:
        readmodel.set_group(session, org_id, group_id, "everyone", [])
        readmodel.upsert_files(session, facts)
        collection = readmodel.set_collection(
            session,
            {"id": collection_id, "name": "Benchmark", "description": "200 items", "updated_at": now},
            org_id,
        )
        readmodel.replace_items(session, collection, [f["id"] for f in facts], utcnow())
        readmodel.set_member(session, org_id, "bench-user", "owner", now)
        for label in ("throughput", "revocation"):
            token = new_token()
            session.add(
                Link(
                    org_id=org_id, collection_id=collection_id, token_digest=token_digest(token),
                    token_ciphertext=encrypt_token(token), label=label, created_by="bench-user",
                    allow_download=True, show_metadata=True,
                )  # fmt: skip
            )
            tokens.append(token)
    return tokens


def start_gunicorn(port: int, app: str, logs: Path) -> subprocess.Popen:
    env = dict(os.environ, BENCH_APP=app, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "bench.sharing.wsgi:app",
            "-b", f"127.0.0.1:{port}", "-w", str(WORKERS), "-k", "gthread",
            "--threads", str(THREADS), "--log-level", "warning",
        ],  # fmt: skip
        cwd=str(ROOT),
        env=env,
        stdout=open(logs / f"gunicorn-{app}.log", "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_port(port)
    return process


def start_nginx(port: int, root: Path, temp: Path) -> subprocess.Popen:
    conf = temp / "nginx.conf"
    conf.write_text(
        f"""
worker_processes {WORKERS};
daemon off;
pid {temp}/nginx.pid;
error_log {temp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    types {{ application/json json; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""
    )
    process = subprocess.Popen(
        ["/usr/sbin/nginx", "-c", str(conf), "-p", str(temp)],
        stdout=subprocess.DEVNULL,
        stderr=open(temp / "nginx-stderr.log", "ab"),
        start_new_session=True,
    )
    wait_port(port)
    return process


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _milliseconds(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, seconds: int, connections: int) -> dict:
    output = subprocess.run(
        ["/usr/bin/wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p99 = _milliseconds(re.search(r"\s99%\s+(\S+)", output).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return {"rps": rate, "p99_ms": p99, "non_2xx": int(non_2xx.group(1)) if non_2xx else 0}


def median_result(results: list[dict]) -> dict:
    """The median requests/s and p99 of several runs, and the sum of their non-2xx responses."""
    return {
        "rps": statistics.median(r["rps"] for r in results),
        "p99_ms": statistics.median(r["p99_ms"] for r in results),
        "worst_p99_ms": max(r["p99_ms"] for r in results),
        "non_2xx": sum(r["non_2xx"] for r in results),
    }


def revoke_under_load(base: str, token: str, seconds: int, connections: int) -> dict:
    """Revoke a link halfway through a wrk run and probe it from a client loop."""
    import requests
    from sqlalchemy import select

    from core.db import session_scope
    from services.sharing import freshness
    from services.sharing.api.links import revoke_link
    from services.sharing.keys import token_digest
    from services.sharing.models import Link

    url = f"{base}/s/{token}/api/items"
    probes: list[tuple[float, int]] = []
    stop_probing = threading.Event()

    def probe():
        session = requests.Session()
        while not stop_probing.is_set():
            started = time.monotonic()
            status = session.get(url, timeout=10).status_code
            probes.append((started, status))

    load = threading.Thread(target=wrk, args=(url, seconds, connections))
    load.start()
    prober = threading.Thread(target=probe)
    prober.start()
    time.sleep(seconds / 2)
    # The same steps and commit as POST /api/v1/links/<id>/revoke; the clock
    # stops when the call would return.
    with session_scope("sharing") as session:
        link = session.scalars(
            select(Link).where(Link.token_digest == token_digest(token)).with_for_update()
        ).one()
        revoke_link(session, link, None, "revoked by the benchmark")
    freshness.wait_for_trust_to_end()
    revoked_at = time.monotonic()
    load.join()
    stop_probing.set()
    prober.join()
    after = [status for started, status in probes if started > revoked_at]
    before = [status for started, status in probes if started <= revoked_at]
    return {
        "probes_before": len(before),
        "ok_before": sum(1 for s in before if s == 200),
        "probes_after": len(after),
        "ok_after": sum(1 for s in after if s == 200),
        "statuses_after": sorted(set(after)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="Length of each wrk run, in seconds.")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections.")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs of each target; medians are reported.")
    args = parser.parse_args()

    temp = Path(tempfile.mkdtemp(prefix="bench-sharing-"))
    # nginx workers run as an unprivileged user and must read the body file.
    temp.chmod(0o755)
    database = f"bench_sharing_{uuid.uuid4().hex[:8]}"
    configure(temp / "data", database)
    create_database(database)
    processes = []
    try:
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        throughput_token, revocation_token = seed()
        sharing_port, bare_port, nginx_port = free_port(), free_port(), free_port()
        processes.append(start_gunicorn(sharing_port, "sharing", temp))
        base = f"http://127.0.0.1:{sharing_port}"

        import requests

        body = requests.get(f"{base}/s/{throughput_token}/api/items", timeout=10).content
        assert len(body) > 10_000, body[:200]
        static_root = temp / "static"
        static_root.mkdir()
        (static_root / "items.json").write_bytes(body)
        os.environ["BENCH_BODY_FILE"] = str(static_root / "items.json")
        processes.append(start_gunicorn(bare_port, "bare", temp))
        processes.append(start_nginx(nginx_port, static_root, temp))

        targets = {
            "sharing JSON listing": f"{base}/s/{throughput_token}/api/items",
            "sharing HTML page": f"{base}/s/{throughput_token}",
            "bare Flask, same body": f"http://127.0.0.1:{bare_port}/items",
            "nginx static file": f"http://127.0.0.1:{nginx_port}/items.json",
        }
        # Each server first gets WARMUP_SECONDS of the same load: every
        # gunicorn worker builds its caches on its first requests.
        for url in targets.values():
            wrk(url, WARMUP_SECONDS, args.connections)
        # Rounds alternate the targets, so a slower stretch of the machine
        # falls on all of them; each figure is the median of its rounds.
        rounds = {name: [] for name in targets}
        for round_number in range(args.rounds):
            for name, url in targets.items():
                result = wrk(url, args.seconds, args.connections)
                rounds[name].append(result)
                print(
                    f"round {round_number + 1}: {name:<24} {result['rps']:>9.0f} req/s "
                    f"p99 {result['p99_ms']:.1f} ms",
                    flush=True,
                )
        results = {name: median_result(found) for name, found in rounds.items()}
        revocation = revoke_under_load(base, revocation_token, args.seconds, args.connections)
    finally:
        for process in processes:
            stop(process)
        create_database(database, drop=True)
        shutil.rmtree(temp, ignore_errors=True)

    bare = results["bare Flask, same body"]["rps"]
    nginx = results["nginx static file"]["rps"]
    print(f"body: {len(body)} bytes, {ITEMS} items; gunicorn -w {WORKERS} -k gthread --threads {THREADS}")
    print(f"medians of {args.rounds} rounds of {args.seconds} s, {args.connections} connections")
    print(
        f"{'target':<24} {'req/s':>9} {'p99 ms':>8} {'worst p99':>10} "
        f"{'vs Flask':>9} {'vs nginx':>9} {'non-2xx':>8}"
    )
    for name, result in results.items():
        print(
            f"{name:<24} {result['rps']:>9.0f} {result['p99_ms']:>8.1f} {result['worst_p99_ms']:>10.1f} "
            f"{result['rps'] / bare:>8.0%} {result['rps'] / nginx:>8.0%} {result['non_2xx']:>8}"
        )
    print(
        f"revocation under load: {revocation['probes_before']} probes before "
        f"({revocation['ok_before']} succeeded), {revocation['probes_after']} after "
        f"({revocation['ok_after']} succeeded, statuses {revocation['statuses_after']})"
    )
    if revocation["ok_after"]:
        sys.exit("FAILED: a request that started after the revocation succeeded")


if __name__ == "__main__":
    main()
