"""A streaming walk of a drive that never follows symlinks.

Directories are opened relative to their parent's file descriptor, so paths
longer than the kernel's PATH_MAX (4096 bytes) still work, and names that are
not valid UTF-8 are kept as their exact bytes.
"""

from __future__ import annotations

import errno
import hashlib
import marshal
import os
from stat import S_ISDIR, S_ISREG
import sys
from dataclasses import dataclass
from typing import Iterator

from workers.media.detect import HEAD_BYTES, sniff
from workers.scan.volume import MARKER_NAME

# Files up to this size are hashed whole; larger ones are sampled.
FULL_HASH_LIMIT = 256 * 1024
SAMPLE = 64 * 1024

SKIPPED_NAMES = {MARKER_NAME, MARKER_NAME + ".tmp"}

# The encoding and error handler of os.fsencode, used directly because the
# walk encodes every name.
FS_ENCODING = sys.getfilesystemencoding()
FS_ERRORS = sys.getfilesystemencodeerrors()


@dataclass(slots=True)
class WalkedEntry:
    path_bytes: bytes
    is_dir: bool
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    inode: int = 0
    name: str = ""


@dataclass(slots=True)
class WalkProblem:
    path_bytes: bytes
    kind: str
    message: str


def display_path(path_bytes: bytes) -> str:
    return path_bytes.decode("utf-8", "replace")


def path_hash(path_bytes: bytes) -> str:
    return hashlib.blake2b(path_bytes, digest_size=16).hexdigest()


def fingerprint_fd(fd: int, size: int) -> tuple[str, bytes]:
    """Return the identity fingerprint and the first bytes of an open file.

    Small files are hashed whole. Larger files are hashed from their size and
    three 64 KiB samples (start, middle, end), so a drive of large videos is
    fingerprinted without reading every byte. The full-content checksum is
    computed later in the background.
    """
    digest = hashlib.blake2b(digest_size=20)
    digest.update(size.to_bytes(8, "little"))
    if size <= FULL_HASH_LIMIT:
        # Reading size + 1 bytes reaches the end of a file that has not grown
        # since its stat. A read of FULL_HASH_LIMIT + 1 bytes allocates a
        # 256 KiB buffer per call, which made 2 KB files four times slower.
        data = os.read(fd, size + 1)
        digest.update(data)
        return digest.hexdigest(), data[:HEAD_BYTES]
    head = os.pread(fd, SAMPLE, 0)
    middle = os.pread(fd, SAMPLE, size // 2 - SAMPLE // 2)
    tail = os.pread(fd, SAMPLE, size - SAMPLE)
    for chunk in (head, middle, tail):
        digest.update(chunk)
    return digest.hexdigest(), head[:HEAD_BYTES]


# O_NOATIME keeps a scan from changing the files' access times, which also
# spares a metadata write per file. Only the file's owner (or root) may use
# it. For other files the kernel returns EPERM, and this process then stops
# asking for it.
_noatime = getattr(os, "O_NOATIME", 0)


def open_for_reading(name, dir_fd: int) -> int:
    """Open a file of the folder ``dir_fd`` read-only, never following a symlink."""
    global _noatime
    flags = os.O_RDONLY | os.O_NOFOLLOW
    if _noatime:
        try:
            return os.open(name, flags | _noatime, dir_fd=dir_fd)
        except PermissionError as error:
            if error.errno != errno.EPERM:
                raise
            _noatime = 0
    return os.open(name, flags, dir_fd=dir_fd)


def fingerprint_entry(entry: WalkedEntry, dir_fd: int) -> tuple[str, str, str]:
    """Return ``(fingerprint, media_type, kind)`` for a file of the folder ``dir_fd``.

    Raises OSError when the file cannot be opened or read.
    """
    fd = open_for_reading(entry.name, dir_fd)
    try:
        fingerprint, head = fingerprint_fd(fd, entry.size)
    finally:
        os.close(fd)
    media_type, kind = sniff(head, entry.name)
    return fingerprint, media_type, kind


@dataclass(slots=True)
class Listing:
    """Up to ``chunk`` entries of one folder.

    ``stats`` holds one ``(name, size, mtime_ns, ctime_ns, inode)`` tuple per
    regular file, and ``files`` the same files as ``WalkedEntry`` objects,
    made on first use: a rescan needs them only for folders that changed.
    ``dir_fd`` is a descriptor of that folder owned by the receiver, who must
    close it (``close()``) once the files have been read.
    """

    prefix: bytes
    dir_fd: int
    stats: list
    dirs: list
    # True when this listing holds every entry of its folder.
    complete: bool = True
    _files: list | None = None

    @property
    def files(self) -> list:
        if self._files is None:
            prefix = self.prefix
            self._files = [
                WalkedEntry(
                    prefix + name.encode(FS_ENCODING, FS_ERRORS),
                    False, size, mtime_ns, ctime_ns, inode, name,
                )  # fmt: skip
                for name, size, mtime_ns, ctime_ns, inode in self.stats
            ]
        return self._files

    def signature(self) -> str:
        """Digest of the folder's file names and stat fields.

        Two listings of a folder have the same signature when no file was
        added, removed or renamed and no file's size, modification time,
        change time or inode changed.
        """
        # marshal's format 0 writes the same bytes for equal lists of str
        # and int, whatever their identity. Formats 3 and 4 mark shared and
        # interned objects, so equal lists can differ there. A new Python
        # release may change format 0, which only makes one rescan compare
        # every file.
        return hashlib.blake2b(marshal.dumps(sorted(self.stats), 0), digest_size=16).hexdigest()

    def close(self) -> None:
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1


@dataclass(slots=True)
class _Frame:
    fd: int
    prefix: bytes
    pending: list


def _list_folder(frame: _Frame, problems: list, chunk: int) -> Iterator[Listing]:
    files: list = []
    dirs: list = []
    chunked = False
    try:
        with os.scandir(frame.fd) as entries:
            for entry in entries:
                name = entry.name
                # Markers are skipped below the root too: one there was left by
                # connecting a folder inside the drive as a drive of its own.
                if name in SKIPPED_NAMES:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError as error:
                    rel = frame.prefix + name.encode(FS_ENCODING, FS_ERRORS)
                    message = error.strerror or str(error)
                    problems.append(WalkProblem(rel, "stat_failed", message))
                    # The folder was not seen whole: its files that were not
                    # listed must not count as gone.
                    chunked = True
                    continue
                mode = st.st_mode
                if S_ISREG(mode):
                    files.append(
                        (name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
                    )
                elif S_ISDIR(mode):
                    rel = frame.prefix + name.encode(FS_ENCODING, FS_ERRORS)
                    dirs.append(WalkedEntry(rel, True, mtime_ns=st.st_mtime_ns))
                    frame.pending.append(name)
                # Symlinks, sockets, devices and FIFOs are not catalogued.
                if len(files) + len(dirs) >= chunk:
                    yield Listing(frame.prefix, os.dup(frame.fd), files, dirs, False)
                    files, dirs = [], []
                    chunked = True
    except OSError as error:
        message = f"listing failed: {error.strerror or error}"
        problems.append(WalkProblem(frame.prefix.rstrip(b"/"), "unreadable_folder", message))
        # What was listed before the error is only part of the folder: the
        # files not seen must not count as gone.
        chunked = True
    if files or dirs or not chunked:
        yield Listing(frame.prefix, os.dup(frame.fd), files, dirs, not chunked)
    # Visit subfolders in name order, so walks are repeatable.
    frame.pending.sort(reverse=True)


def walk(
    root: str | os.PathLike, problems: list[WalkProblem], chunk: int = 2000
) -> Iterator[Listing]:
    """Yield the regular files and folders under ``root`` folder by folder.

    Symlinks are never followed, so loops cannot occur. A folder that cannot
    be read is added to ``problems`` and its contents are skipped. At most
    one descriptor per folder level is held open by the walk itself.
    """
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    stack = [_Frame(root_fd, b"", [])]
    try:
        yield from _list_folder(stack[0], problems, chunk)
        while stack:
            top = stack[-1]
            if not top.pending:
                os.close(top.fd)
                stack.pop()
                continue
            name = top.pending.pop()
            rel = top.prefix + os.fsencode(name)
            try:
                child_fd = os.open(
                    name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top.fd
                )
            except OSError as error:
                message = error.strerror or str(error)
                problems.append(WalkProblem(rel, "unreadable_folder", message))
                continue
            frame = _Frame(child_fd, rel + b"/", [])
            stack.append(frame)
            yield from _list_folder(frame, problems, chunk)
    finally:
        for frame in stack:
            os.close(frame.fd)


def open_relative(root: str | os.PathLike, path_bytes: bytes) -> int:
    """Open a file below ``root`` one component at a time, never following links.

    Works for relative paths longer than PATH_MAX. Returns a file descriptor.
    """
    parts = path_bytes.split(b"/")
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = next_fd
        return os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
