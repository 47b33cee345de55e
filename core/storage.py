"""Object storage for renditions and exports, behind one interface.

Two backends raise the same errors: ``ObjectNotFound`` for a missing key and
``StorageError`` for anything else. ``LocalStore`` keeps objects in a folder
(the embedded default); ``S3Store`` talks to MinIO or any S3-compatible
server through the ``minio`` client.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
import time
import os
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, Iterator

from core.settings import Settings, get_settings


class StorageError(Exception):
    """The object store failed for a reason other than a missing key."""


class ObjectNotFound(StorageError, FileNotFoundError):
    """No object exists under the key."""


def _check_key(key: str) -> str:
    parts = key.split("/")
    control = any(ord(ch) < 32 or ch == "\x7f" for ch in key)
    if not key or control or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"invalid object key {key!r}")
    return key


class ObjectStore:
    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self.put_stream(key, io.BytesIO(data), content_type, length=len(data))

    def put_stream(
        self, key: str, stream: BinaryIO, content_type: str, length: int = -1
    ) -> None:
        raise NotImplementedError

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.iter_chunks(key))

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def size(self, key: str) -> int:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def presigned_get(self, key: str, expires: timedelta) -> str | None:
        """Return a time-limited URL, or None when the backend cannot make one."""
        return None

    def discard_partial_uploads(self, prefix: str, older_than: timedelta) -> int:
        """Delete uploads under ``prefix`` that a killed writer left unfinished.

        S3 backends leave this to a bucket lifecycle rule that aborts
        incomplete multipart uploads.
        """
        return 0

    def sweep_partial_uploads(self, older_than: timedelta) -> int:
        """Delete unfinished uploads anywhere in the store, untouched for ``older_than``.

        A writer killed mid-upload (SIGKILL, power loss) cannot clean up
        after itself. S3 backends leave this to the server: MinIO removes
        multipart uploads left incomplete for 24 hours (its API settings
        ``stale_uploads_expiry`` and ``stale_uploads_cleanup_interval``), and
        AWS S3 needs a bucket lifecycle rule that aborts them.
        """
        return 0

    @contextlib.contextmanager
    def writer(self, key: str, content_type: str):
        """Yield a writable binary file; the object appears only on success.

        The default streams through a pipe into ``put_stream`` on a thread, so
        memory stays flat whatever the object's size.
        """
        read_fd, write_fd = os.pipe()
        aborted = threading.Event()
        reader = _AbortableReader(os.fdopen(read_fd, "rb", buffering=1 << 20), aborted)
        errors: list[BaseException] = []

        def upload():
            try:
                self.put_stream(key, reader, content_type, length=-1)
            except BaseException as error:  # re-raised in the writer's thread
                errors.append(error)
            finally:
                reader.close()

        thread = threading.Thread(target=upload, name=f"upload {key}", daemon=True)
        thread.start()
        out = os.fdopen(write_fd, "wb", buffering=1 << 20)
        try:
            yield out
        except BaseException:
            # The reader raises at end of stream once aborted is set, so the
            # backend abandons the upload instead of storing a partial object.
            aborted.set()
            _abort_pipe(out)
            thread.join()
            raise
        out.close()
        thread.join()
        if errors:
            raise errors[0]


class _AbortedUpload(Exception):
    """The writer failed, so the upload must not complete."""


class _AbortableReader:
    def __init__(self, raw, aborted: threading.Event):
        self.raw = raw
        self.aborted = aborted

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        if not data and self.aborted.is_set():
            raise _AbortedUpload("the upload was abandoned by its writer")
        return data

    def close(self) -> None:
        self.raw.close()


def _abort_pipe(out) -> None:
    try:
        out.close()
    except OSError:
        pass


def _read_chunks(handle, chunk_size: int) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(chunk_size):
            yield chunk


# Temporary files of writes in progress; renamed to their key when complete.
UPLOAD_PREFIX = ".upload-"


def _remove_if_older(path: Path, cutoff: float) -> int:
    """Delete ``path`` if it was last modified before ``cutoff``; return 1 if deleted."""
    try:
        if path.stat().st_mtime >= cutoff:
            return 0
        path.unlink()
    except FileNotFoundError:
        return 0
    return 1


class LocalStore(ObjectStore):
    """Objects as files under one folder; writes are atomic (temp + rename)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put_stream(self, key, stream, content_type, length=-1):
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=UPLOAD_PREFIX)
        except OSError as error:
            raise StorageError(f"failed to write object {key!r}: {error}") from error
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    chunk = stream.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
            os.replace(tmp, path)
        except BaseException as error:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            if isinstance(error, OSError):
                raise StorageError(f"failed to write object {key!r}: {error}") from error
            raise

    def iter_chunks(self, key, chunk_size=1 << 20):
        path = self._path(key)
        try:
            handle = open(path, "rb")
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"object {key!r} not found") from None
        except OSError as error:
            raise StorageError(f"failed to read object {key!r}: {error}") from error
        return _read_chunks(handle, chunk_size)

    @contextlib.contextmanager
    def writer(self, key: str, content_type: str):
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=UPLOAD_PREFIX)
        except OSError as error:
            raise StorageError(f"failed to write object {key!r}: {error}") from error
        try:
            with os.fdopen(fd, "wb", buffering=1 << 20) as out:
                yield out
                # Durable before it becomes visible under its key.
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException as error:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            if isinstance(error, OSError):
                raise StorageError(f"failed to write object {key!r}: {error}") from error
            raise

    def discard_partial_uploads(self, prefix: str, older_than: timedelta) -> int:
        folder = self._path(prefix)
        cutoff = time.time() - older_than.total_seconds()
        try:
            candidates = list(folder.glob(UPLOAD_PREFIX + "*"))
        except OSError:
            return 0
        return sum(_remove_if_older(path, cutoff) for path in candidates)

    def sweep_partial_uploads(self, older_than: timedelta) -> int:
        # A write in progress updates its file's mtime with every chunk.
        cutoff = time.time() - older_than.total_seconds()
        removed = 0
        for folder, _dirs, names in os.walk(self.root):
            for name in names:
                if name.startswith(UPLOAD_PREFIX):
                    removed += _remove_if_older(Path(folder, name), cutoff)
        return removed

    def exists(self, key):
        return self._path(key).is_file()

    def size(self, key):
        try:
            return self._path(key).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"object {key!r} not found") from None

    def delete(self, key):
        try:
            self._path(key).unlink()
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as error:
            raise StorageError(f"failed to delete object {key!r}: {error}") from error


class S3Store(ObjectStore):
    """MinIO / S3 backend through the ``minio`` client."""

    PART_SIZE = 16 * 1024 * 1024

    def __init__(self, endpoint, access_key, secret_key, bucket, secure=False):
        from minio import Minio

        self.client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure
        )
        self.bucket = bucket
        self._bucket_checked = False

    def _ensure_bucket(self):
        from minio.error import S3Error

        if self._bucket_checked:
            return
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except S3Error as error:
            if error.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise StorageError(f"bucket {self.bucket!r}: {error.code}") from error
        self._bucket_checked = True

    def _wrap(self, key, error):
        from minio.error import S3Error

        if isinstance(error, S3Error) and error.code in ("NoSuchKey", "NoSuchObject"):
            return ObjectNotFound(f"object {key!r} not found")
        return StorageError(f"object store failed on {key!r}: {error}")

    def put_stream(self, key, stream, content_type, length=-1):
        _check_key(key)
        try:
            self._ensure_bucket()
            part_size = self.PART_SIZE if length < 0 else 0
            self.client.put_object(
                self.bucket,
                key,
                stream,
                length,
                content_type=content_type,
                part_size=part_size,
            )
        except StorageError:
            raise
        except Exception as error:
            raise self._wrap(key, error) from error

    def iter_chunks(self, key, chunk_size=1 << 20):
        _check_key(key)
        try:
            self._ensure_bucket()
            response = self.client.get_object(self.bucket, key)
        except StorageError:
            raise
        except Exception as error:
            raise self._wrap(key, error) from error
        return self._stream(response, chunk_size)

    @staticmethod
    def _stream(response, chunk_size: int) -> Iterator[bytes]:
        try:
            yield from response.stream(chunk_size)
        finally:
            response.close()
            response.release_conn()

    def _stat(self, key):
        _check_key(key)
        try:
            self._ensure_bucket()
            return self.client.stat_object(self.bucket, key)
        except StorageError:
            raise
        except Exception as error:
            raise self._wrap(key, error) from error

    def exists(self, key):
        try:
            self._stat(key)
        except ObjectNotFound:
            return False
        return True

    def size(self, key):
        return self._stat(key).size

    def delete(self, key):
        _check_key(key)
        try:
            self._ensure_bucket()
            self.client.remove_object(self.bucket, key)
        except Exception as error:
            raise self._wrap(key, error) from error

    def presigned_get(self, key, expires):
        _check_key(key)
        try:
            self._ensure_bucket()
            return self.client.presigned_get_object(self.bucket, key, expires=expires)
        except StorageError:
            raise
        except Exception as error:
            raise self._wrap(key, error) from error


def build_store(settings: Settings | None = None) -> ObjectStore:
    settings = settings or get_settings()
    if settings.object_store == "s3":
        missing = [
            name
            for name, value in (
                ("S3_ENDPOINT", settings.s3_endpoint),
                ("S3_ACCESS_KEY", settings.s3_access_key),
                ("S3_SECRET_KEY", settings.s3_secret_key),
            )
            if not value
        ]
        if missing:
            from core.settings import SettingsError

            raise SettingsError(
                f"OBJECT_STORE=s3 requires {', '.join(missing)} to be set"
            )
        return S3Store(
            settings.s3_endpoint,
            settings.s3_access_key,
            settings.s3_secret_key,
            settings.s3_bucket,
            settings.s3_secure,
        )
    return LocalStore(settings.data_dir / "objects")


_store: ObjectStore | None = None


def get_store() -> ObjectStore:
    global _store
    if _store is None:
        _store = build_store()
    return _store


def reset_store() -> None:
    global _store
    _store = None


def content_key(prefix: str, data: bytes, suffix: str) -> str:
    """Return a content-addressed key such as ``thumbs/ab/abcdef....webp``."""
    digest = hashlib.sha256(data).hexdigest()
    return f"{prefix}/{digest[:2]}/{digest}{suffix}"
