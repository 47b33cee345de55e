"""Volume identity: how a drive is recognised whatever its mount path.

A drive gets a marker file at its root holding a random volume id, written
the first time it is connected. The marker travels with the drive, so the
same drive mounted at another path or on another host is the same Source.
A read-only drive that is a mount point is recognised by its filesystem
UUID instead.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

MARKER_NAME = ".archive-volume.json"


class VolumeError(Exception):
    """The folder cannot be used as a drive."""


def _filesystem_uuid(path: Path) -> str | None:
    """Return the UUID of the filesystem mounted exactly at ``path``, if any."""
    if not os.path.ismount(path):
        return None
    try:
        device = os.stat(path).st_dev
        by_uuid = Path("/dev/disk/by-uuid")
        for link in by_uuid.iterdir():
            if os.stat(link).st_rdev == device:
                return link.name
    except OSError:
        return None
    return None


def read_volume_id(path: str | os.PathLike) -> str | None:
    """Return the volume id of the drive at ``path``, or None if it has none."""
    root = Path(path)
    try:
        with open(root / MARKER_NAME, "rb") as handle:
            data = json.loads(handle.read(4096))
        volume_id = data.get("volume_id")
        if isinstance(volume_id, str) and volume_id:
            return volume_id
    except (OSError, ValueError, AttributeError):
        pass
    fs_uuid = _filesystem_uuid(root)
    if fs_uuid:
        return f"fs:{fs_uuid}"
    if not os.access(root, os.W_OK) and root.is_dir() and not is_empty_dir(root):
        return path_volume_id(root)
    return None


def is_empty_dir(path: Path) -> bool:
    with os.scandir(path) as entries:
        return next(iter(entries), None) is None


def ensure_volume_id(path: str | os.PathLike, label: str = "") -> str:
    """Return the drive's volume id, writing a marker on first connect.

    Raises ``VolumeError`` for a path that is not a readable folder, and for
    an empty folder, which is taken to be a mount point with no drive in it.
    """
    root = Path(path)
    if not root.is_dir():
        raise VolumeError(f"{root} is not a folder")
    try:
        empty = is_empty_dir(root)
    except OSError as error:
        raise VolumeError(f"cannot read {root}: {error.strerror}") from error
    if empty:
        raise VolumeError(
            f"{root} is empty: it looks like a mount point with no drive mounted"
        )
    existing = read_volume_id(root)
    if existing:
        return existing
    volume_id = uuid.uuid4().hex
    marker = {"volume_id": volume_id, "label": label}
    tmp = root / (MARKER_NAME + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(marker, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, root / MARKER_NAME)
    except OSError:
        # NOTE: a read-only folder that is not a mount point has nothing
        # that travels with it, so it is known by host and path alone and is
        # not recognised when mounted elsewhere.
        return path_volume_id(root)
    return volume_id


def path_volume_id(root: Path) -> str:
    import socket

    return f"path:{socket.gethostname()}:{root.resolve()}"
