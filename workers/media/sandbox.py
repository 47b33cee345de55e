"""Run ``analyze`` in a child process with an address-space limit and a timeout.

Decoders are C libraries fed untrusted files. A file can make one loop, allocate
without bound or crash, so the scan worker calls ``analyze_isolated``, which
always returns a ``MediaResult``. The child process is started with
``subprocess`` running ``python -m workers.media.sandbox``, not with
multiprocessing, so it also works from daemonic Celery prefork workers.

A helper process is kept per caller process and reused between calls, which
saves the interpreter start and the decoder imports (about 0.3 s) per file. It
is replaced after a timeout, a crash, a memory error or ``MAX_REQUESTS``
requests. Requests and results travel as one JSON line each way. Renditions are
base64 in the result.

NOTE: libheif reports a failed allocation as ValueError, so a HEIC file that
exceeds the limit gets an "invalid image/heic file" error, not the memory one.

The child can also be run by hand: it reads one JSON request per line on stdin
and writes one JSON result per line on stdout until stdin closes.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import importlib
import json
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from workers.media.detect import HEAD_BYTES, sniff

ANALYZE_TARGET = "workers.media.analyze:analyze"
# Time allowed for a new helper to import the decoders and report ready.
STARTUP_TIMEOUT_S = 30.0
# Requests served by one helper before it is replaced, so heap fragmentation
# from earlier files does not eat into the next file's memory limit.
MAX_REQUESTS = 200

_REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
_READY_LINE = b"ready\n"

_helpers: dict[int, _Helper] = {}
_helpers_lock = threading.Lock()


class ChildFailure(Exception):
    """Raised when the helper process timed out, died or broke the protocol."""


def analyze_isolated(
    path: str | bytes,
    *,
    timeout_s: float = 60,
    memory_mb: int = 1024,
    thumb_size: int = 320,
    preview_size: int = 1440,
    rendition_format: str = "webp",
    reuse: bool = True,
):
    """Run ``analyze`` on ``path`` in a child process and return its ``MediaResult``.

    ``timeout_s`` is the wall-clock limit for this file in seconds, excluding
    the start of a new helper. ``memory_mb`` is the child's RLIMIT_AS in MiB.
    It bounds address space, not resident memory, and the interpreter with the
    decoder libraries already maps about 300 MiB of it (VmSize measured on
    CPython 3.11, x86-64). With ``reuse=False``
    a fresh child is started and stopped for this call.
    """
    options = {
        "thumb_size": thumb_size,
        "preview_size": preview_size,
        "rendition_format": rendition_format,
    }
    return run_isolated(
        ANALYZE_TARGET,
        path,
        options,
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        reuse=reuse,
    )


def run_isolated(
    target: str,
    path: str | bytes,
    options: dict,
    *,
    timeout_s: float,
    memory_mb: int,
    reuse: bool = True,
):
    """Call ``target(path, **options)`` in a child and return the ``MediaResult`` it returns.

    ``target`` is ``"module:function"``, importable with the caller's
    ``sys.path``, and must return a ``MediaResult``. Timeouts, memory errors
    and crashes come back as a ``MediaResult`` whose media type is sniffed in
    this process and whose ``error`` describes what happened. Raises RuntimeError
    when the target raised any other exception, which is a programming error.
    """
    request = {
        "target": target,
        "path": os.fsdecode(path),
        "options": options,
    }
    try:
        if reuse:
            helper = _shared_helper(memory_mb)
            with helper.lock:
                response = helper.call(request, timeout_s)
        else:
            helper = _Helper(memory_mb)
            try:
                response = helper.call(request, timeout_s)
            finally:
                helper.stop()
    except ChildFailure as failure:
        return failure_result(path, str(failure), options)
    return _result_from_json(response)


def _shared_helper(memory_mb: int) -> _Helper:
    with _helpers_lock:
        helper = _helpers.get(memory_mb)
        # A helper inherited through fork belongs to the parent process.
        if helper is None or helper.owner_pid != os.getpid():
            helper = _Helper(memory_mb)
            _helpers[memory_mb] = helper
        return helper


def failure_result(path: str | bytes, message: str, options: dict | None = None):
    """Return a ``MediaResult`` with ``message`` as its error and a sniffed media type."""
    from workers.media.analyze import MediaResult

    try:
        with open(path, "rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError:
        head = b""
    media_type, kind = sniff(head, os.fsdecode(os.path.basename(path)))
    return MediaResult(
        media_type=media_type,
        kind=kind,
        rendition_format=(options or {}).get("rendition_format", "webp"),
        error=message,
    )


def _result_to_json(result) -> dict:
    payload = dataclasses.asdict(result)
    for key in ("thumbnail", "preview"):
        if payload[key] is not None:
            payload[key] = base64.b64encode(payload[key]).decode("ascii")
    return payload


def _result_from_json(payload: dict):
    from workers.media.analyze import MediaResult

    for key in ("thumbnail", "preview"):
        if payload.get(key) is not None:
            payload[key] = base64.b64decode(payload[key])
    return MediaResult(**payload)


class _Helper:
    """One child process that serves requests until it fails or reaches MAX_REQUESTS."""

    def __init__(self, memory_mb: int) -> None:
        self.memory_mb = memory_mb
        self.owner_pid = os.getpid()
        self.lock = threading.Lock()
        self.requests_served = 0
        self.process: subprocess.Popen | None = None
        self._buffer = b""

    def _start(self) -> None:
        environment = dict(os.environ)
        # The child imports the target with the caller's import path.
        import_path = [str(_REPOSITORY_ROOT)] + [entry for entry in sys.path if entry]
        environment["PYTHONPATH"] = os.pathsep.join(import_path)
        # glibc reserves 64 MiB of address space per thread arena, which would
        # count against RLIMIT_AS for every decoder thread.
        environment["MALLOC_ARENA_MAX"] = "2"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workers.media.sandbox",
                "--memory-mb",
                str(self.memory_mb),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=environment,
            cwd=_REPOSITORY_ROOT,
        )
        self._buffer = b""
        self.requests_served = 0
        line = self._read_line(
            time.monotonic() + STARTUP_TIMEOUT_S, timeout_s=STARTUP_TIMEOUT_S
        )
        if line != _READY_LINE:
            self.stop()
            raise ChildFailure(
                f"analysis process failed to start: unexpected output {line[:80]!r}"
            )

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self.process = None

    def call(self, request: dict, timeout_s: float) -> dict:
        if self.process is None or self.process.poll() is not None:
            self.stop()
            self._start()
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(request).encode("utf-8") + b"\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise self._died() from None
        line = self._read_line(time.monotonic() + timeout_s, timeout_s=timeout_s)
        self.requests_served += 1
        try:
            response = json.loads(line)
        except ValueError:
            self.stop()
            raise ChildFailure("analysis process sent an invalid response") from None
        if response.get("failure") == "memory":
            self.stop()
            raise ChildFailure(f"exceeded the memory limit of {self.memory_mb} MB")
        if response.get("failure") == "exception":
            raise RuntimeError(
                f"analysis target {request['target']} raised {response['message']}"
            )
        if self.requests_served >= MAX_REQUESTS:
            self.stop()
        return response["result"]

    def _read_line(self, deadline: float, *, timeout_s: float) -> bytes:
        assert self.process is not None and self.process.stdout is not None
        descriptor = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise ChildFailure(f"timed out after {timeout_s:g} s")
            readable, _, _ = select.select([descriptor], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(descriptor, 1 << 20)
            if not chunk:
                raise self._died()
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def _died(self) -> ChildFailure:
        assert self.process is not None
        returncode = self.process.wait()
        self.stop()
        if returncode < 0:
            name = signal.Signals(-returncode).name
            return ChildFailure(
                f"analysis process was killed by {name}; decoders abort like this when an "
                f"allocation fails under the memory limit of {self.memory_mb} MB or on a crash"
            )
        return ChildFailure(f"analysis process exited with status {returncode}")


def _load_target(target: str):
    module_name, _, function_name = target.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


def _serve(memory_mb: int) -> None:
    """Serve requests from stdin until it closes. Runs in the child."""
    # Protocol lines go to the original stdout. Anything a library prints goes to stderr.
    protocol = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)

    import workers.media.analyze  # noqa: F401  Imported before the limit so it does not count as decoding.

    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    protocol.write(_READY_LINE)

    for line in sys.stdin.buffer:
        request = json.loads(line)
        try:
            function = _load_target(request["target"])
            result = function(os.fsencode(request["path"]), **request["options"])
            response = {"result": _result_to_json(result)}
        except MemoryError:
            response = {"failure": "memory"}
        except Exception as error:  # noqa: BLE001  Sent to the caller, which raises it.
            response = {
                "failure": "exception",
                "message": f"{type(error).__name__}: {error}",
            }
        protocol.write(json.dumps(response).encode("utf-8") + b"\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--memory-mb",
        type=int,
        default=1024,
        help="address-space limit (RLIMIT_AS) of this process in MiB",
    )
    arguments = parser.parse_args(argv)
    _serve(arguments.memory_mb)


if __name__ == "__main__":
    main()
