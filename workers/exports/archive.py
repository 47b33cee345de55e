"""Streaming zip assembly: one pass, flat memory, ZIP64 when needed."""

from __future__ import annotations

import queue
import threading
import time
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import BinaryIO, Callable, Iterator

CHUNK = 1 << 20
TEXT_TYPES = ("application/json", "application/xml", "image/svg+xml")


class EntryChanged(Exception):
    """A file's bytes no longer match what the export expected."""


class Cancelled(Exception):
    """The export was cancelled while its archive was being written."""


@dataclass
class ArchiveEntry:
    name: str
    size: int
    mtime_ns: int
    media_type: str
    # Checks the source at once and returns an iterator of its bytes. Raises
    # EntryChanged before any byte when the file is not what was planned,
    # so the entry is skipped; the iterator raises it if the file changes
    # during the read, which aborts the archive.
    open: Callable[[], Iterator[bytes]]


_DONE = object()


def prefetch(chunks: Iterator[bytes], depth: int = 4) -> Iterator[bytes]:
    """Read ``chunks`` on a thread, up to ``depth`` ahead of the consumer.

    Reading (``pread``) and the zip writer's CRC32 both release the GIL, so
    the two overlap on separate cores. Errors reach the consumer in order.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        buffer.put(chunk, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
            item = _DONE
        except BaseException as error:  # handed to the consumer below
            item = error
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    thread = threading.Thread(target=produce, name="export-read", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def compress_type(media_type: str) -> int:
    # Media formats are already compressed; deflating them costs CPU for
    # nothing, so only text-like files are deflated.
    if media_type.startswith("text/") or media_type in TEXT_TYPES:
        return zipfile.ZIP_DEFLATED
    return zipfile.ZIP_STORED


def zip_time(mtime_ns: int) -> tuple:
    moment = datetime.fromtimestamp(mtime_ns / 1e9, tz=timezone.utc)
    if moment.year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    if moment.year > 2107:
        return (2107, 12, 31, 23, 59, 58)
    return moment.timetuple()[:6]


def write_zip(
    out: BinaryIO,
    entries: list[ArchiveEntry],
    extra_files: Callable[[], dict[str, bytes]],
    on_progress: Callable[[int, int], None],
    is_cancelled: Callable[[], bool],
    on_skip: Callable[[ArchiveEntry, str], None],
) -> int:
    """Write ``entries`` (and then ``extra_files()``) as a zip into ``out``.

    ``on_progress(files_done, bytes_done)`` is called about once a second.
    Returns the number of entries written.
    """
    files_done = bytes_done = 0
    last_report = time.monotonic()
    with zipfile.ZipFile(out, "w", allowZip64=True) as archive:
        for entry in entries:
            if is_cancelled():
                raise Cancelled()
            try:
                chunks = entry.open()
            except EntryChanged as error:
                on_skip(entry, str(error))
                continue
            info = zipfile.ZipInfo(entry.name, date_time=zip_time(entry.mtime_ns))
            info.compress_type = compress_type(entry.media_type)
            info.file_size = entry.size
            info.external_attr = 0o644 << 16
            written = 0
            with archive.open(info, "w", force_zip64=entry.size > 0x7FFFFFFF) as target:
                for chunk in prefetch(chunks):
                    target.write(chunk)
                    written += len(chunk)
                    bytes_done += len(chunk)
                    now = time.monotonic()
                    if now - last_report >= 1.0:
                        last_report = now
                        on_progress(files_done, bytes_done)
            if written != entry.size:
                raise EntryChanged(f"{entry.name}: read {written} bytes, expected {entry.size}")
            files_done += 1
        for name, data in extra_files().items():
            archive.writestr(name, data)
    on_progress(files_done, bytes_done)
    return files_done
