"""Run the ``archive`` command against the catalog served over real HTTP."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from werkzeug.serving import make_server

from cli.main import cli
from tests.catalog.test_worker_flow import wait_for_idle_worker


@pytest.fixture
def catalog_url(catalog_app):
    """Serve the catalog app on a free port of 127.0.0.1 for one test."""
    server = make_server("127.0.0.1", 0, catalog_app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, name="catalog-http", daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)
    server.server_close()


@dataclass
class ArchiveCli:
    """Invoke ``cli.main.cli`` with ``--url`` and a config file of its own."""

    url: str
    config_path: Path

    def run(
        self, *args: str, token: str | None = None, env: dict | None = None
    ) -> Result:
        options = ["--url", self.url]
        if token is not None:
            options += ["--token", token]
        base_env = {
            "ARCHIVE_CONFIG": str(self.config_path),
            "ARCHIVE_URL": None,
            "ARCHIVE_TOKEN": None,
        }
        return CliRunner().invoke(
            cli, [*options, *args], env={**base_env, **(env or {})}
        )

    def run_json(self, *args: str, token: str | None = None, env: dict | None = None):
        """Run a command that ends in ``--json``, check it succeeded and parse its output."""
        result = self.run(*args, token=token, env=env)
        assert result.exit_code == 0, (args, result.output, result.exception)
        return json.loads(result.stdout)


@pytest.fixture
def archive(catalog_url, tmp_path) -> ArchiveCli:
    return ArchiveCli(url=catalog_url, config_path=tmp_path / "config" / "archive.json")


@pytest.fixture
def worker(celery_worker_process):
    """The test worker, idle again before the next test truncates the tables."""
    assert celery_worker_process.poll() is None, "the test worker exited"
    yield celery_worker_process
    wait_for_idle_worker()
