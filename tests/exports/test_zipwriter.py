"""The export's zip writer and reading pipeline, checked with zipfile and unzip."""

from __future__ import annotations

import io
import os
import subprocess
import threading
import zipfile
import zlib
from pathlib import Path

import pytest

from workers.exports import zipwriter
from workers.exports.archive import CHUNK, EntryChanged, prefetch
from workers.exports.zipwriter import ZIP_DEFLATED, ZIP_STORED, ZipWriter

WHEN = (2024, 5, 17, 13, 45, 30)


class PipeLike:
    """A write-only output that cannot seek or tell, like the upload pipe."""

    def __init__(self):
        self.buffer = io.BytesIO()

    def write(self, data) -> int:
        return self.buffer.write(data)

    def flush(self) -> None:
        pass


def write_archive(out, members: dict[str, tuple[bytes, int]], planned=None) -> None:
    archive = ZipWriter(out)
    for name, (data, method) in members.items():
        size = planned if planned is not None else len(data)
        with archive.open_entry(name, WHEN, method, size) as member:
            crc = 0
            # Several writes per member, as the export makes them.
            for start in range(0, len(data), 1000):
                piece = data[start : start + 1000]
                crc = zlib.crc32(piece, crc)
                member.write(memoryview(piece), crc)
    archive.close()


def unzip_test(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "test.zip"
    path.write_bytes(data)
    result = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


MEMBERS = {
    "clips/raw.mov": (os.urandom(5000), ZIP_STORED),
    "notes/readme.txt": (b"line of text\n" * 400, ZIP_DEFLATED),
    "empty.bin": (b"", ZIP_STORED),
    "fotos/Ærø ✓.jpg": (os.urandom(1234), ZIP_STORED),
}


@pytest.mark.parametrize("seekable", [True, False], ids=["seekable", "pipe"])
def test_zipwriter_round_trip(seekable, tmp_path):
    out = io.BytesIO() if seekable else PipeLike()
    write_archive(out, MEMBERS)
    data = (out if seekable else out.buffer).getvalue()
    unzip_test(data, tmp_path)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == list(MEMBERS)
        for name, (content, method) in MEMBERS.items():
            info = archive.getinfo(name)
            assert archive.read(name) == content, name
            assert info.compress_type == method, name
            assert info.date_time == WHEN, name
            assert info.external_attr >> 16 == 0o644, name
            assert bool(info.flag_bits & 0x08) == (not seekable), name
            assert bool(info.flag_bits & 0x800) == (not name.isascii()), name


@pytest.mark.parametrize("seekable", [True, False], ids=["seekable", "pipe"])
def test_zipwriter_zip64_records(seekable, monkeypatch, tmp_path):
    # A low limit sends every size and offset path through the ZIP64 records
    # without writing gigabytes; the 4.5 GB export test covers the real one.
    monkeypatch.setattr(zipwriter, "ZIP64_LIMIT", 3000)
    members = {f"part{i}.bin": (os.urandom(4000), ZIP_STORED) for i in range(3)}
    out = io.BytesIO() if seekable else PipeLike()
    write_archive(out, members)
    data = (out if seekable else out.buffer).getvalue()
    assert b"PK\x06\x06" in data
    assert b"PK\x06\x07" in data
    unzip_test(data, tmp_path)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name, (content, _) in members.items():
            assert archive.read(name) == content, name


def test_zipwriter_planned_zip64_local_header(tmp_path):
    out = io.BytesIO()
    write_archive(out, {"big.bin": (b"x" * 100, ZIP_STORED)}, planned=5 << 30)
    data = out.getvalue()
    assert data[4:6] == (45).to_bytes(2, "little")
    unzip_test(data, tmp_path)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read("big.bin") == b"x" * 100


def test_zipwriter_many_entries(tmp_path):
    out = io.BytesIO()
    archive = ZipWriter(out)
    for index in range(0x10000 + 5):
        with archive.open_entry(f"f{index}", WHEN, ZIP_STORED, 0):
            pass
    archive.close()
    data = out.getvalue()
    assert b"PK\x06\x06" in data
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert len(archive.namelist()) == 0x10000 + 5


def test_zipwriter_oversize_without_zip64(monkeypatch):
    monkeypatch.setattr(zipwriter, "ZIP64_LIMIT", 100)
    archive = ZipWriter(io.BytesIO())
    member = archive.open_entry("small.bin", WHEN, ZIP_STORED, 10)
    member.write(b"x" * 200, zlib.crc32(b"x" * 200))
    with pytest.raises(ValueError, match="without ZIP64"):
        member.close()


def test_zipwriter_entry_still_open():
    archive = ZipWriter(io.BytesIO())
    archive.open_entry("a.bin", WHEN, ZIP_STORED, 0)
    with pytest.raises(ValueError, match="still open"):
        archive.open_entry("b.bin", WHEN, ZIP_STORED, 0)
    with pytest.raises(ValueError, match="still open"):
        archive.close()


# -- prefetch -------------------------------------------------------------------------


class BytesReader:
    """A ChunkReader over bytes that records its reads and its close."""

    def __init__(self, data: bytes, fail_after: int | None = None):
        self.data = data
        self.offset = 0
        self.fail_after = fail_after
        self.buffers: set[int] = set()
        self.closed = threading.Event()

    def readinto(self, buffer) -> int:
        if self.fail_after is not None and self.offset >= self.fail_after:
            raise EntryChanged("changed while read")
        self.buffers.add(id(buffer))
        count = min(len(buffer), len(self.data) - self.offset)
        buffer[:count] = self.data[self.offset : self.offset + count]
        self.offset += count
        return count

    def close(self) -> None:
        self.closed.set()


def test_prefetch_reuses_buffers_and_computes_crc():
    data = os.urandom(10 * CHUNK + 123)
    reader = BytesReader(data)
    received = bytearray()
    crc = None
    for chunk, crc in prefetch(reader, depth=3):
        received += chunk
    assert bytes(received) == data
    assert crc == zlib.crc32(data)
    assert len(reader.buffers) <= 3
    assert reader.closed.is_set()


def test_prefetch_iterable_source():
    chunks = [os.urandom(1000) for _ in range(20)]
    results = list(prefetch(iter(chunks), depth=2))
    assert [chunk for chunk, _ in results] == chunks
    assert results[-1][1] == zlib.crc32(b"".join(chunks))


def test_prefetch_raises_reader_error():
    reader = BytesReader(os.urandom(5 * CHUNK), fail_after=2 * CHUNK)
    received = 0
    with pytest.raises(EntryChanged):
        for chunk, _ in prefetch(reader):
            received += len(chunk)
    assert received == 2 * CHUNK
    assert reader.closed.is_set()


def test_prefetch_consumer_stops_early():
    reader = BytesReader(os.urandom(20 * CHUNK))
    chunks = prefetch(reader, depth=2)
    next(chunks)
    chunks.close()
    assert reader.closed.wait(5)
    assert reader.offset < 20 * CHUNK


# -- reading drive files --------------------------------------------------------------


def open_reader(path: Path, size: int):
    from workers.tasks.exports import DriveFileReader

    fd = os.open(path, os.O_RDONLY)
    return DriveFileReader(fd, os.fstat(fd), size, "drive")


def test_drive_reader_readinto_and_iteration(tmp_path):
    path = tmp_path / "clip.mov"
    data = os.urandom(2 * CHUNK + 77)
    path.write_bytes(data)
    reader = open_reader(path, len(data))
    buffer = bytearray(CHUNK)
    received = bytearray()
    while count := reader.readinto(buffer):
        received += buffer[:count]
    assert bytes(received) == data
    assert reader.readinto(buffer) == 0
    assert b"".join(open_reader(path, len(data))) == data


def test_drive_reader_file_changed_while_read(tmp_path):
    path = tmp_path / "clip.mov"
    path.write_bytes(os.urandom(3 * CHUNK))
    reader = open_reader(path, 3 * CHUNK)
    buffer = bytearray(CHUNK)
    assert reader.readinto(buffer) == CHUNK
    with open(path, "ab") as handle:
        handle.write(b"more")
    with pytest.raises(EntryChanged, match="changed while it was being read"):
        while reader.readinto(buffer):
            pass


def test_write_zip_mixes_direct_and_buffered(tmp_path):
    from workers.exports.archive import ArchiveEntry, write_zip

    stored = os.urandom(3 * CHUNK + 5)
    text = b"caption line\n" * 5000
    (tmp_path / "clip.mov").write_bytes(stored)
    (tmp_path / "notes.txt").write_bytes(text)
    entries = [
        ArchiveEntry("clip.mov", len(stored), 0, "video/quicktime",
                     lambda: open_reader(tmp_path / "clip.mov", len(stored))),
        ArchiveEntry("notes.txt", len(text), 0, "text/plain",
                     lambda: open_reader(tmp_path / "notes.txt", len(text))),
        ArchiveEntry("staged.mov", len(stored), 0, "video/quicktime",
                     lambda: iter([stored[:1000], stored[1000:]])),
    ]  # fmt: skip
    path = tmp_path / "out.zip"
    # Buffered like the local object store's writer, so the stored drive
    # file goes through the descriptor and the others through the buffer.
    with open(path, "wb", buffering=1 << 20) as out:
        written = write_zip(out, entries, lambda: {"MANIFEST.json": b"{}"},
                            lambda files, size: None, lambda: False, None)  # fmt: skip
    assert written == 3
    unzip_test(path.read_bytes(), tmp_path)
    with zipfile.ZipFile(path) as archive:
        assert archive.read("clip.mov") == stored
        assert archive.read("notes.txt") == text
        assert archive.read("staged.mov") == stored
        assert archive.read("MANIFEST.json") == b"{}"
        assert archive.getinfo("notes.txt").compress_type == ZIP_DEFLATED
        assert archive.getinfo("clip.mov").compress_type == ZIP_STORED
