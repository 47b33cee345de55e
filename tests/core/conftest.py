"""Fixtures for the shared ``core`` package: an in-process S3 server (moto)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Lets `pytest tests/core` import `core` without an installed package.
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(scope="session")
def s3_endpoint():
    """Run moto's S3 server on a free 127.0.0.1 port and yield ``host:port``.

    The server runs in a thread of the test process and keeps buckets in
    memory until the session ends. It accepts any access key and secret.
    """
    from moto.server import ThreadedMotoServer

    # Port 0 lets the OS choose a free port.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"{host}:{port}"
    server.stop()
