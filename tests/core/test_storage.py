"""Tests for the object-store backends in ``core.storage``.

Every shared case runs on both backends: ``LocalStore`` on a temporary
folder, and ``S3Store`` against moto's S3 server over HTTP through the minio
client, so signing, streaming and multipart uploads run as against MinIO.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import time
import uuid
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from core.storage import LocalStore, ObjectNotFound, S3Store, StorageError

MIB = 1024 * 1024
ACCESS_KEY = "testing"
SECRET_KEY = "testing"

# One byte over a single part, so an upload of unknown length needs a second
# part and S3Store takes the multipart path.
UNSIZED_UPLOAD_SIZE = S3Store.PART_SIZE + MIB

INVALID_KEYS = ["../x", "/abs", "a//b", "", "a/../b", "a/./b", "dir/"]


class UnsizedStream:
    """A readable stream with no length and no seek, like a pipe.

    With ``fail_after`` set, a read at that byte offset raises ``OSError``,
    as a read from a drive that was unplugged mid-copy does.
    """

    def __init__(self, data: bytes, fail_after: int | None = None):
        self._buffer = io.BytesIO(data)
        self._fail_after = fail_after

    def read(self, size: int = -1) -> bytes:
        position = self._buffer.tell()
        if self._fail_after is None:
            return self._buffer.read(size)
        if position >= self._fail_after:
            raise OSError("simulated read error")
        remaining = self._fail_after - position
        size = remaining if size < 0 else min(size, remaining)
        return self._buffer.read(size)


def new_bucket_name() -> str:
    return f"test-{uuid.uuid4().hex[:16]}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def s3_store(s3_endpoint):
    # A bucket per test keeps tests independent on the shared server.
    return S3Store(s3_endpoint, ACCESS_KEY, SECRET_KEY, new_bucket_name())


@pytest.fixture
def local_store(tmp_path):
    return LocalStore(tmp_path / "objects")


@pytest.fixture(params=["local", "s3"])
def store(request):
    # getfixturevalue starts moto only when an S3 case runs.
    return request.getfixturevalue(f"{request.param}_store")


# Shared cases: both backends must behave the same.


def test_put_bytes_get_bytes(store):
    store.put_bytes("thumbs/ab/abcd.webp", b"image bytes", "image/webp")

    assert store.get_bytes("thumbs/ab/abcd.webp") == b"image bytes"


def test_put_bytes_empty_object(store):
    store.put_bytes("empty.bin", b"", "application/octet-stream")

    assert store.get_bytes("empty.bin") == b""
    assert store.size("empty.bin") == 0
    assert store.exists("empty.bin")


def test_put_bytes_overwrites(store):
    store.put_bytes("doc.txt", b"first version", "text/plain")
    store.put_bytes("doc.txt", b"second", "text/plain")

    assert store.get_bytes("doc.txt") == b"second"
    assert store.size("doc.txt") == len(b"second")


def test_put_stream_unknown_length(store):
    data = os.urandom(UNSIZED_UPLOAD_SIZE)

    store.put_stream("exports/big.zip", UnsizedStream(data), "application/zip")

    stored = store.get_bytes("exports/big.zip")
    assert len(stored) == len(data)
    assert sha256(stored) == sha256(data)
    assert store.size("exports/big.zip") == len(data)


def test_put_stream_known_length(store):
    data = os.urandom(3 * MIB)

    store.put_stream(
        "exports/known.bin", io.BytesIO(data), "application/zip", length=len(data)
    )

    assert sha256(store.get_bytes("exports/known.bin")) == sha256(data)


def test_iter_chunks(store):
    data = os.urandom(200_000)
    chunk_size = 64 * 1024
    store.put_bytes("chunks.bin", data, "application/octet-stream")

    chunks = list(store.iter_chunks("chunks.bin", chunk_size=chunk_size))

    assert b"".join(chunks) == data
    assert len(chunks) >= 4
    assert all(0 < len(chunk) <= chunk_size for chunk in chunks)


def test_exists(store):
    assert not store.exists("a/b.txt")

    store.put_bytes("a/b.txt", b"x", "text/plain")

    assert store.exists("a/b.txt")
    assert not store.exists("a")
    assert not store.exists("a/b.txt.bak")


def test_size(store):
    store.put_bytes("sized.bin", b"12345", "application/octet-stream")

    assert store.size("sized.bin") == 5


def test_delete(store):
    store.put_bytes("gone.txt", b"x", "text/plain")

    store.delete("gone.txt")

    assert not store.exists("gone.txt")
    with pytest.raises(ObjectNotFound):
        store.get_bytes("gone.txt")


def test_delete_missing_key(store):
    store.delete("never/written.txt")

    assert not store.exists("never/written.txt")


MISSING_KEY_READS = {
    "get_bytes": lambda store, key: store.get_bytes(key),
    "iter_chunks": lambda store, key: list(store.iter_chunks(key)),
    "size": lambda store, key: store.size(key),
}


@pytest.mark.parametrize("operation", sorted(MISSING_KEY_READS))
def test_missing_key_raises_not_found(store, operation):
    read = MISSING_KEY_READS[operation]

    with pytest.raises(ObjectNotFound) as info:
        read(store, "missing/key.bin")

    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, StorageError)
    assert "missing/key.bin" in str(info.value)


def test_iter_chunks_missing_raises_on_call(store):
    with pytest.raises(ObjectNotFound):
        store.iter_chunks("missing/key.bin")


@pytest.mark.parametrize("operation", ["get_bytes", "size", "exists", "delete"])
def test_key_below_object_is_missing(store, operation, request):
    # On S3 "a/b" is just another key, so LocalStore must not expose that "a"
    # is a file on disk.
    store.put_bytes("parent", b"x", "text/plain")
    key = "parent/child"

    if operation == "exists":
        assert not store.exists(key)
    elif operation == "delete":
        store.delete(key)
        assert store.get_bytes("parent") == b"x"
    else:
        with pytest.raises(ObjectNotFound):
            getattr(store, operation)(key)


KEY_OPERATIONS = {
    "put_bytes": lambda store, key: store.put_bytes(key, b"x", "text/plain"),
    "put_stream": lambda store, key: store.put_stream(
        key, UnsizedStream(b"x"), "text/plain"
    ),
    "get_bytes": lambda store, key: store.get_bytes(key),
    "iter_chunks": lambda store, key: list(store.iter_chunks(key)),
    "exists": lambda store, key: store.exists(key),
    "size": lambda store, key: store.size(key),
    "delete": lambda store, key: store.delete(key),
}


@pytest.mark.parametrize("operation", sorted(KEY_OPERATIONS))
@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_key_raises_storage_error(store, key, operation):
    call = KEY_OPERATIONS[operation]

    with pytest.raises(StorageError) as info:
        call(store, key)

    # An invalid key is a caller error, not a missing object.
    assert not isinstance(info.value, ObjectNotFound)
    assert "invalid object key" in str(info.value)


@pytest.mark.parametrize("operation", sorted(KEY_OPERATIONS))
def test_key_with_nul_byte_is_invalid(store, operation):
    call = KEY_OPERATIONS[operation]

    with pytest.raises(StorageError) as info:
        call(store, "a\x00b")

    assert "invalid object key" in str(info.value)


def test_failed_stream_creates_no_object(store):
    data = os.urandom(UNSIZED_UPLOAD_SIZE + MIB)
    # Fail after the first part, so S3Store has started a multipart upload.
    stream = UnsizedStream(data, fail_after=UNSIZED_UPLOAD_SIZE)

    with pytest.raises(StorageError):
        store.put_stream("exports/partial.zip", stream, "application/zip")

    assert not store.exists("exports/partial.zip")
    with pytest.raises(ObjectNotFound):
        store.get_bytes("exports/partial.zip")


def test_failed_stream_keeps_previous_object(store):
    store.put_bytes("doc.txt", b"previous version", "text/plain")
    stream = UnsizedStream(os.urandom(3 * MIB), fail_after=2 * MIB)

    with pytest.raises(StorageError):
        store.put_stream("doc.txt", stream, "text/plain")

    assert store.get_bytes("doc.txt") == b"previous version"


# LocalStore only.


def test_local_failed_stream_removes_temp_file(local_store):
    local_store.put_bytes("doc.txt", b"previous version", "text/plain")
    stream = UnsizedStream(os.urandom(3 * MIB), fail_after=2 * MIB)

    with pytest.raises(StorageError):
        local_store.put_stream("doc.txt", stream, "text/plain")

    files = sorted(
        str(path.relative_to(local_store.root))
        for path in local_store.root.rglob("*")
        if path.is_file()
    )
    assert files == ["doc.txt"]


def test_local_stores_files_under_root(local_store):
    local_store.put_bytes("thumbs/ab/abcd.webp", b"image bytes", "image/webp")

    path = local_store.root / "thumbs" / "ab" / "abcd.webp"
    assert path.read_bytes() == b"image bytes"


def test_local_presigned_get_returns_none(local_store):
    local_store.put_bytes("doc.txt", b"x", "text/plain")

    assert local_store.presigned_get("doc.txt", timedelta(seconds=60)) is None


# S3Store only.


def test_s3_unsized_stream_uses_multipart(s3_store):
    data = os.urandom(UNSIZED_UPLOAD_SIZE)

    s3_store.put_stream("exports/big.zip", UnsizedStream(data), "application/zip")

    stat = s3_store.client.stat_object(s3_store.bucket, "exports/big.zip")
    # S3 gives a multipart object the ETag "<MD5 of the part MD5s>-<part count>".
    assert stat.etag.endswith("-2")
    assert stat.size == len(data)


def test_s3_stores_content_type(s3_store):
    s3_store.put_bytes("thumbs/ab/abcd.webp", b"image bytes", "image/webp")

    stat = s3_store.client.stat_object(s3_store.bucket, "thumbs/ab/abcd.webp")
    assert stat.content_type == "image/webp"


def test_s3_presigned_get_fetches_object(s3_store):
    s3_store.put_bytes("shared/photo.jpg", b"jpeg bytes", "image/jpeg")

    url = s3_store.presigned_get("shared/photo.jpg", timedelta(seconds=60))

    query = parse_qs(urlparse(url).query)
    assert urlparse(url).hostname == "127.0.0.1"
    assert query["X-Amz-Expires"] == ["60"]
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == b"jpeg bytes"
    assert response.headers["Content-Type"] == "image/jpeg"


def test_s3_presigned_get_before_first_write(s3_store):
    url = s3_store.presigned_get("not/yet/written.jpg", timedelta(seconds=60))

    assert url.startswith("http://127.0.0.1:")


def test_s3_presigned_get_invalid_key(s3_store):
    with pytest.raises(StorageError, match="invalid object key"):
        s3_store.presigned_get("../x", timedelta(seconds=60))


def test_s3_unreachable_server_raises_storage_error():
    # Bind a port and close it again, so nothing listens there.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = S3Store(f"127.0.0.1:{port}", ACCESS_KEY, SECRET_KEY, new_bucket_name())
    # minio 7.2's HTTP client retries a refused connection 5 times with
    # exponential backoff (factor 0.2 s), so this test takes about 6 s.

    with pytest.raises(StorageError) as info:
        store.put_bytes("doc.txt", b"x", "text/plain")

    assert not isinstance(info.value, ObjectNotFound)


def test_writer_publishes_only_on_success(store):
    with store.writer("exports/ok.bin", "application/zip") as out:
        for _ in range(3):
            out.write(b"x" * (1 << 20))
    assert store.size("exports/ok.bin") == 3 << 20

    with pytest.raises(RuntimeError):
        with store.writer("exports/broken.bin", "application/zip") as out:
            out.write(b"partial")
            raise RuntimeError("writer failed midway")
    assert not store.exists("exports/broken.bin")


def test_sweep_removes_stale_partial_uploads(local_store):
    local_store.put_bytes("thumbs/ab/cd/kept.webp", b"done", "image/webp")
    root = local_store.root
    stale = [root / "thumbs/ab/.upload-killed1", root / "exports/e1/.upload-killed2", root / ".upload-top"]
    fresh = root / "thumbs/ab/cd/.upload-writing"
    for path in stale + [fresh]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    two_days_ago = time.time() - 2 * 86400
    for path in stale:
        os.utime(path, (two_days_ago, two_days_ago))

    assert local_store.sweep_partial_uploads(timedelta(days=1)) == 3
    for path in stale:
        assert not path.exists(), path
    assert fresh.exists()
    assert local_store.get_bytes("thumbs/ab/cd/kept.webp") == b"done"
    assert local_store.sweep_partial_uploads(timedelta(days=1)) == 0


def test_sweep_task_uses_configured_store(tmp_path, monkeypatch):
    from core.celery_app import celery_app
    from workers.tasks import storage as storage_tasks

    store = LocalStore(tmp_path / "objects")
    old = store.root / "renditions/.upload-old"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"x")
    os.utime(old, (0, 0))
    monkeypatch.setattr(storage_tasks, "get_store", lambda: store)
    assert storage_tasks.sweep_uploads() == 1
    assert not old.exists()
    schedule = celery_app.conf.beat_schedule
    assert any(entry["task"] == "storage.sweep_uploads" for entry in schedule.values())


def test_sweep_on_s3_left_to_lifecycle(s3_store):
    assert s3_store.sweep_partial_uploads(timedelta(0)) == 0
