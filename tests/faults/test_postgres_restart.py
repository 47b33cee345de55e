"""The catalog service over real HTTP while its PostgreSQL cluster restarts.

Every response during the outage must be a success or a 503 with the JSON
error shape, never a 500 or a dropped connection, and the service must
recover by itself once the cluster is back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests

from core.db import upgrade
from tests.faults.servers import ROOT, free_port, wait_until

CLIENT_THREADS = 2
LOAD_SECONDS = 15
REQUEST_TIMEOUT_S = 10
# Paths the load threads request in turn. Both read the catalog database.
LOAD_PATHS = ("/api/v1/files", "/api/v1/sources")


@pytest.fixture
def catalog_server(postgres_cluster, redis_server, tmp_path):
    """The catalog service under gunicorn, on the private cluster's catalog database."""
    database_url = create_catalog_database(postgres_cluster)
    port = free_port()
    env = dict(
        os.environ,
        CATALOG_DATABASE_URL=database_url,
        REDIS_URL=redis_server.url,
        ARCHIVE_DATA_DIR=str(tmp_path / "data"),
        CATALOG_URL=f"http://127.0.0.1:{port}",
    )
    log_path = tmp_path / "gunicorn.log"
    command = [
        sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
        "--workers", "1", "--threads", "4", "--timeout", "60",
        "services.catalog.app:create_app()",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=str(ROOT),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"

    def healthy():
        assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
        try:
            return requests.get(f"{base}/health", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    wait_until(healthy, 30, "gunicorn to serve /health")
    yield base, process, log_path
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def create_catalog_database(cluster) -> str:
    """Create and migrate the catalog database on ``cluster`` and return its URL."""
    createdb = [
        "runuser", "-u", "postgres", "--", str(cluster.bin / "createdb"),
        "-h", "127.0.0.1", "-p", str(cluster.port), "catalog",
    ]  # fmt: skip
    subprocess.run(createdb, check=True, capture_output=True, timeout=30)
    database_url = cluster.url("catalog")
    upgrade(
        "catalog", database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    )
    return database_url


def worker_pids(master_pid: int) -> set[int]:
    result = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(master_pid)],
        check=False,
        capture_output=True,
        text=True,
    )
    return {int(pid) for pid in result.stdout.split()}


def classify(response: requests.Response) -> str:
    """Return "ok", "unavailable", or a description of a wrong response."""
    if 200 <= response.status_code < 300:
        return "ok"
    if response.status_code == 503:
        try:
            body = response.json()
        except ValueError:
            return f"503 without a JSON body: {response.text[:200]!r}"
        error = body.get("error") if isinstance(body, dict) else None
        if (
            isinstance(error, dict)
            and error.get("code") == "unavailable"
            and error.get("message")
        ):
            return "unavailable"
        return f"503 with an unexpected body: {body!r}"
    return f"{response.status_code}: {response.text[:300]!r}"


@pytest.mark.slow
def test_catalog_rides_out_postgres_restart(catalog_server, postgres_cluster):
    base, process, log_path = catalog_server
    response = requests.post(
        f"{base}/api/v1/orgs",
        json={"name": "Restart", "email": f"owner-{uuid.uuid4().hex[:6]}@example.com"},
        headers={"X-Internal-Secret": os.environ["INTERNAL_SECRET"]},
        timeout=REQUEST_TIMEOUT_S,
    )
    assert response.status_code == 201, response.text
    headers = {"Authorization": f"Bearer {response.json()['token']}"}
    for path in LOAD_PATHS:
        warm = requests.get(f"{base}{path}", headers=headers, timeout=REQUEST_TIMEOUT_S)
        assert warm.status_code == 200, (path, warm.text)
    workers_before = worker_pids(process.pid)
    assert workers_before, "gunicorn started no worker"

    outcomes: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(offset: int) -> None:
        index = offset
        while not stop.is_set():
            path = LOAD_PATHS[index % len(LOAD_PATHS)]
            index += 1
            try:
                # A new connection per request, so a keep-alive connection
                # that the server closed between requests is not mistaken for
                # a reset.
                response = requests.get(
                    f"{base}{path}",
                    headers={**headers, "Connection": "close"},
                    timeout=REQUEST_TIMEOUT_S,
                )
                outcome = classify(response)
            except requests.RequestException as error:
                outcome = f"{path}: {type(error).__name__}: {error}"
            with lock:
                outcomes.append(outcome)
            time.sleep(0.02)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(CLIENT_THREADS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        postgres_cluster.restart("fast")
        time.sleep(2)
        postgres_cluster.stop("fast")
        ready_stopped = requests.get(f"{base}/ready", timeout=REQUEST_TIMEOUT_S)
        time.sleep(3)
        postgres_cluster.start()
        time.sleep(2)
        postgres_cluster.restart("fast")
        time.sleep(max(0.0, LOAD_SECONDS - (time.monotonic() - started)))
    finally:
        stop.set()
        for thread in threads:
            thread.join(REQUEST_TIMEOUT_S + 5)

    wrong = [outcome for outcome in outcomes if outcome not in ("ok", "unavailable")]
    assert outcomes.count("unavailable") > 0, "no request met the stopped database"
    assert wrong == [], (
        f"{len(wrong)} of {len(outcomes)} responses were wrong: {wrong[:5]}"
    )

    assert ready_stopped.status_code == 503, ready_stopped.text
    assert ready_stopped.json()["checks"]["database"].startswith("failed"), (
        ready_stopped.json()
    )

    def recovered():
        responses = [
            requests.get(f"{base}{path}", headers=headers, timeout=REQUEST_TIMEOUT_S)
            for path in LOAD_PATHS
        ]
        return all(response.status_code == 200 for response in responses)

    wait_until(recovered, 30, "the catalog to respond again after the restarts", 0.5)
    for _ in range(10):
        for path in LOAD_PATHS:
            response = requests.get(
                f"{base}{path}", headers=headers, timeout=REQUEST_TIMEOUT_S
            )
            assert response.status_code == 200, (path, response.text)
    ready = requests.get(f"{base}/ready", timeout=REQUEST_TIMEOUT_S)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["database"] == "ok"

    assert process.poll() is None, "gunicorn exited"
    assert worker_pids(process.pid) == workers_before, (
        f"the gunicorn worker was replaced; see {log_path}"
    )


@pytest.fixture
def catalog_on_private_cluster(postgres_cluster, monkeypatch):
    """Point this process's catalog engine at the private cluster for one test."""
    from core.db import dispose_engines
    from core.settings import reset_settings

    monkeypatch.setenv(
        "CATALOG_DATABASE_URL", create_catalog_database(postgres_cluster)
    )
    reset_settings()
    dispose_engines()
    yield postgres_cluster
    dispose_engines()
    monkeypatch.undo()
    reset_settings()


class TeardownErrorEscaped(AssertionError):
    """An exception escaped the catalog app after its response was built."""


def test_teardown_after_lost_connection(catalog_on_private_cluster):
    import psycopg
    from flask import request

    from services.catalog.api.common import db
    from services.catalog.app import create_app

    cluster = catalog_on_private_cluster
    app = create_app()
    armed = {"path": None}

    # Terminates the request's backend after the view has run, so the first
    # statement to fail is the ROLLBACK that close_db issues at teardown.
    def terminate_backend(response):
        if request.path != armed["path"]:
            return response
        pid = db().connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            wait_until(
                lambda: (
                    admin.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)
                    ).fetchone()[0]
                    == 0
                ),
                10,
                f"backend {pid} to exit",
            )
        return response

    app.after_request(terminate_backend)
    client = app.test_client()
    created = client.post(
        "/api/v1/orgs",
        json={"name": "Teardown", "email": f"owner-{uuid.uuid4().hex[:6]}@example.com"},
        headers={"X-Internal-Secret": os.environ["INTERNAL_SECRET"]},
    )
    assert created.status_code == 201, created.json
    headers = {"Authorization": f"Bearer {created.json['token']}"}

    armed["path"] = "/api/v1/sources"
    try:
        response = client.get("/api/v1/sources", headers=headers)
    except Exception as error:
        raise TeardownErrorEscaped(
            f"{type(error).__module__}.{type(error).__name__}: {error}"
        ) from error
    # The view had finished, so either its 200 or a 503 is a correct response.
    assert response.status_code in (200, 503), response.data[:300]
    if response.status_code == 503:
        assert response.json["error"]["code"] == "unavailable", response.json

    armed["path"] = None
    again = client.get("/api/v1/sources", headers=headers)
    assert again.status_code == 200, again.json
