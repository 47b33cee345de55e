"""A bounded run of mixed team and public traffic against the running stack.

The three services run under gunicorn with a worker and the scheduler, as
`archive up` starts them, on this run's PostgreSQL databases and Redis.
For LOAD_SECONDS (60 by default) several clients search, browse, open
thumbnails, page through a collection and a public link, while a rescan and
an export run. Every request must succeed, the scan and the export must
finish with nothing lost, and the latency percentiles are printed.
"""

from __future__ import annotations

import os
import random
import socket
import statistics
import subprocess
import threading
import time
import uuid
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest
import requests

from cli.stack_runner import EmbeddedStack
from tests.conftest import wait_for
from workers.scan.volume import ensure_volume_id

SECONDS = float(os.environ.get("LOAD_SECONDS", "60"))
CLIENTS = 6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_drive(root: Path, folders: int = 20, per_folder: int = 25) -> None:
    from PIL import Image

    rng = random.Random(3)
    for f in range(folders):
        folder = root / f"day-{f:02}"
        folder.mkdir(parents=True)
        for i in range(per_folder):
            color = tuple(rng.randrange(256) for _ in range(3))
            Image.new("RGB", (64, 48), color).save(folder / f"IMG_{i:04}.jpg", quality=80)


@pytest.fixture
def stack(tmp_path):
    saved = dict(os.environ)
    # Its own drive host and Redis keys, so the session's test worker (with
    # another object store) takes none of the stack's tasks.
    run = uuid.uuid4().hex[:8]
    os.environ["ARCHIVE_HOST"] = f"loadhost-{run}"
    os.environ["REDIS_KEY_PREFIX"] = f"load-{run}:"
    for name in ("CATALOG", "COLLECTIONS", "SHARING"):
        os.environ[f"{name}_PORT"] = str(free_port())
        os.environ.pop(f"{name}_URL", None)
    os.environ.pop("PUBLIC_URL", None)
    running = EmbeddedStack(tmp_path / "stack-data", log=lambda *_: None)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        import redis

        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        keys = list(client.scan_iter(match=f"*load-{run}:*", count=1000))
        if keys:
            client.delete(*keys)
        os.environ.clear()
        os.environ.update(saved)
        from core.remote_auth import clear_cache
        from core.settings import reset_settings

        reset_settings()
        clear_cache()


class Recorder:
    def __init__(self):
        self.latencies = defaultdict(list)
        self.failures = []
        self.lock = threading.Lock()

    def call(self, session, kind, method, url, **kwargs):
        started = time.perf_counter()
        try:
            response = session.request(method, url, timeout=30, **kwargs)
            ok = response.status_code < 400
            detail = f"{response.status_code} {response.text[:200]}"
        except requests.RequestException as error:
            ok, detail = False, repr(error)
            response = None
        elapsed = time.perf_counter() - started
        with self.lock:
            self.latencies[kind].append(elapsed)
            if not ok:
                self.failures.append((kind, url, detail))
        return response


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@pytest.mark.slow
def test_mixed_load(stack, tmp_path):
    env = stack.env
    catalog = f"http://127.0.0.1:{env['CATALOG_PORT']}"
    collections = f"http://127.0.0.1:{env['COLLECTIONS_PORT']}"
    sharing = f"http://127.0.0.1:{env['SHARING_PORT']}"

    # Set up: an organization, a drive of 500 photos, a collection and a link.
    created = requests.post(
        f"{catalog}/api/v1/orgs",
        json={"name": "Load", "email": "load@example.com"},
        headers={"X-Internal-Secret": env["INTERNAL_SECRET"]},
        timeout=30,
    ).json()
    team = requests.Session()
    team.headers["Authorization"] = f"Bearer {created['token']}"
    root = tmp_path / "drive"
    make_drive(root)
    host = env.get("ARCHIVE_HOST") or socket.gethostname()
    source = team.post(
        f"{catalog}/api/v1/sources",
        json={"volume_id": ensure_volume_id(root), "mount_path": str(root), "host": host},
        timeout=30,
    ).json()
    wait_for(
        lambda: team.get(f"{catalog}/api/v1/sources/{source['id']}", timeout=30).json()["renditions_pending"] == 0
        and team.get(f"{catalog}/api/v1/sources/{source['id']}", timeout=30).json()["file_count"] == 500,
        timeout=240, interval=1, message="the first scan and its renditions",
    )  # fmt: skip
    collection = team.post(f"{collections}/api/v1/collections", json={"name": "Load"}, timeout=30).json()
    added = team.post(
        f"{collections}/api/v1/collections/{collection['id']}/items",
        json={"query": {"q": "", "drive": source["id"]}}, timeout=60,
    ).json()  # fmt: skip
    assert added["item_count"] == 500
    link = team.post(
        f"{sharing}/api/v1/links",
        json={"collection_id": collection["id"], "label": "load", "allow_download": True},
        timeout=30,
    ).json()
    assert "url" in link, link
    public = link["url"]
    items = requests.get(f"{public}/api/items", params={"limit": 500}, timeout=30).json()["items"]
    file_ids = [item["id"] for item in items]
    assert len(file_ids) == 500

    recorder = Recorder()
    deadline = time.monotonic() + SECONDS

    def team_client(seed):
        rng = random.Random(seed)
        session = requests.Session()
        session.headers.update(team.headers)
        while time.monotonic() < deadline:
            choice = rng.random()
            file_id = rng.choice(file_ids)
            if choice < 0.25:
                recorder.call(session, "catalog search", "GET", f"{catalog}/api/v1/files",
                              params={"q": f"img_{rng.randrange(25):04}", "limit": 50})
            elif choice < 0.4:
                recorder.call(session, "catalog folder", "GET",
                              f"{catalog}/api/v1/sources/{source['id']}/folder",
                              params={"path": f"day-{rng.randrange(20):02}"})
            elif choice < 0.6:
                recorder.call(session, "catalog file", "GET", f"{catalog}/api/v1/files/{file_id}")
            elif choice < 0.8:
                recorder.call(session, "catalog thumbnail", "GET",
                              f"{catalog}/api/v1/files/{file_id}/thumbnail")
            else:
                recorder.call(session, "collection page", "GET",
                              f"{collections}/api/v1/collections/{collection['id']}/items",
                              params={"limit": 100})  # fmt: skip

    def public_client(seed):
        rng = random.Random(seed)
        session = requests.Session()
        while time.monotonic() < deadline:
            choice = rng.random()
            if choice < 0.4:
                recorder.call(session, "link JSON page", "GET", f"{public}/api/items",
                              params={"limit": 100})
            elif choice < 0.55:
                recorder.call(session, "link HTML page", "GET", public)
            else:
                recorder.call(session, "link thumbnail", "GET",
                              f"{public}/thumb/{rng.choice(file_ids)}")

    threads = [threading.Thread(target=team_client, args=(i,)) for i in range(CLIENTS // 2)]
    threads += [threading.Thread(target=public_client, args=(100 + i,)) for i in range(CLIENTS // 2)]
    for thread in threads:
        thread.start()

    # Background work while the clients run: a rescan and an export.
    time.sleep(min(5, SECONDS / 4))
    rescan = team.post(f"{catalog}/api/v1/sources/{source['id']}/scans", timeout=30).json()
    export = team.post(f"{catalog}/api/v1/exports", json={"file_ids": file_ids, "name": "load"}, timeout=60).json()
    for thread in threads:
        thread.join()

    scan = wait_for(
        lambda: (s := team.get(f"{catalog}/api/v1/scans/{rescan['id']}", timeout=30).json())["status"]
        in ("succeeded", "failed", "interrupted") and s,
        timeout=120, message="the rescan",
    )  # fmt: skip
    done = wait_for(
        lambda: (e := team.get(f"{catalog}/api/v1/exports/{export['id']}", timeout=30).json())["status"]
        in ("succeeded", "failed", "cancelled") and e,
        timeout=180, message="the export",
    )  # fmt: skip
    archive = tmp_path / "load.zip"
    with team.get(f"{catalog}/api/v1/exports/{export['id']}/archive", stream=True, timeout=60) as response:
        with open(archive, "wb") as out:
            for chunk in response.iter_content(1 << 20):
                out.write(chunk)

    print(f"\nmixed load for {SECONDS:.0f} s, {CLIENTS} clients, rescan and export running")
    print(f"{'request':20} {'count':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for kind, values in sorted(recorder.latencies.items()):
        print(f"{kind:20} {len(values):7} {statistics.median(values) * 1000:8.1f} "
              f"{percentile(values, 0.95) * 1000:8.1f} {percentile(values, 0.99) * 1000:8.1f}")  # fmt: skip

    assert recorder.failures == []
    assert sum(len(v) for v in recorder.latencies.values()) > 0
    assert scan["status"] == "succeeded", scan
    assert scan["counts"]["missing"] == 0
    assert scan["counts"]["files"] == 500
    assert done["status"] == "succeeded", done
    result = subprocess.run(["unzip", "-t", str(archive)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-1000:]
    with zipfile.ZipFile(archive) as opened:
        assert len(opened.namelist()) == 500
