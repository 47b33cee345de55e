"""The production profile's files and the services' health endpoints."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_file_is_valid():
    env = dict(
        os.environ,
        POSTGRES_PASSWORD="pw",
        MINIO_ROOT_USER="admin",
        MINIO_ROOT_PASSWORD="password123",
        INTERNAL_SECRET="secret",
        LINK_SECRET="link-secret",
    )
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_compose_file_requires_secrets():
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose not installed")
    env = {k: v for k, v in os.environ.items() if k != "INTERNAL_SECRET"}
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0


def test_health_ready_and_metrics(catalog):
    assert catalog.get("/health").json["status"] == "ok"
    ready = catalog.get("/ready")
    assert ready.status_code == 200, ready.json
    assert ready.json["checks"] == {"database": "ok", "redis": "ok", "object_store": "ok"}
    catalog.get("/api/v1/files")
    metrics = catalog.get("/metrics")
    assert metrics.status_code == 200
    assert b"archive_http_request_seconds" in metrics.data
