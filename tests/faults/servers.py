"""Private Redis servers, PostgreSQL clusters and Celery workers for fault tests.

The machine's own PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) are
shared with other test runs, so a test that stops or kills a server starts a
private one here and stops it in its fixture's teardown.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import redis

from tests.conftest import stop_process_group

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_BIN_ROOT = Path("/usr/lib/postgresql")
# PostgreSQL refuses to run as root, so the private clusters run as this user.
POSTGRES_OS_USER = "postgres"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, message: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns a truthy value, and return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


class RedisServer:
    """A ``redis-server`` subprocess on a fixed port that can be stopped and restarted."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def start(self) -> None:
        command = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--dir", str(self.workdir),
        ]  # fmt: skip
        with open(self.workdir / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_until(self.ping, 10, f"redis-server on port {self.port} to reply to PING")

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)
            self.process = None


class PostgresCluster:
    """A private PostgreSQL cluster in a temporary folder, run as the postgres user."""

    def __init__(self):
        versions = sorted(POSTGRES_BIN_ROOT.iterdir(), key=lambda p: int(p.name))
        if not versions:
            raise RuntimeError(f"no PostgreSQL server found under {POSTGRES_BIN_ROOT}")
        self.bin = versions[-1] / "bin"
        self.port = free_port()
        # Not under pytest's tmp_path: its parents are private to root, and
        # the postgres user must reach the data folder and the socket.
        self.root = Path(tempfile.mkdtemp(prefix="archive-fault-pg-"))
        shutil.chown(self.root, POSTGRES_OS_USER, POSTGRES_OS_USER)
        self.data = self.root / "data"
        self.log = self.root / "server.log"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = ["runuser", "-u", POSTGRES_OS_USER, "--", *args]
        result = subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed with exit code {result.returncode}: "
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", options, "-w", action, *extra,
        )  # fmt: skip

    def init(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        self._pg_ctl("start")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("stop", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        self._pg_ctl("restart", "-m", mode)

    def destroy(self) -> None:
        """Stop the cluster if it runs and delete its folder."""
        if (self.data / "postmaster.pid").exists():
            try:
                self.stop("immediate")
            except RuntimeError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


class Worker:
    """A Celery worker subprocess on the queue of its own drive host.

    ``queues`` names further queues to consume. The session worker of
    tests/conftest.py may consume the same run's shared queues (default,
    events, exports) at the same time, so a message there reaches one of the
    two workers, either of which handles it correctly.
    """

    def __init__(
        self,
        host: str,
        log_path: Path,
        env: dict,
        concurrency: int = 1,
        queues: tuple[str, ...] = (),
    ):
        self.host = host
        self.log_path = log_path
        self.env = env
        self.concurrency = concurrency
        self.queues = (f"drive.{host}", *queues)
        self.process: subprocess.Popen | None = None

    def start(self) -> Worker:
        from tests.conftest import spawn_celery_worker

        start_offset = self.log_path.stat().st_size
        self.process = spawn_celery_worker(
            ",".join(self.queues),
            f"fault-{uuid.uuid4().hex[:8]}@{self.host}",
            self.concurrency,
            self.env,
            self.log_path,
            extra_args=("--without-heartbeat",),
        )

        def ready():
            if self.process.poll() is not None:
                raise AssertionError(f"the worker exited; see {self.log_path}")
            with open(self.log_path, "rb") as handle:
                handle.seek(start_offset)
                return b" ready." in handle.read()

        wait_until(ready, 60, f"the worker to log 'ready' in {self.log_path}", 0.2)
        return self

    def kill(self) -> None:
        """SIGKILL the worker and every process it started (its process group)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)
