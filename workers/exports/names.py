"""Safe, unique names for entries inside an export archive."""

from __future__ import annotations

import posixpath
import unicodedata

MAX_COMPONENT = 200
MAX_NAME = 1000
MAX_EXTENSION = 20


def _clean_component(part: str) -> str:
    cleaned = "".join(
        "_" if unicodedata.category(ch) in ("Cc", "Cf", "Cs") or ch in '\\:*?"<>|' else ch
        for ch in part
    )
    cleaned = cleaned.strip().rstrip(".")
    if cleaned in ("", ".", ".."):
        cleaned = "_"
    if len(cleaned) <= MAX_COMPONENT:
        return cleaned
    # Shortened from the middle, so that the extension stays.
    stem, ext = posixpath.splitext(cleaned)
    if not ext or len(ext) > MAX_EXTENSION:
        return cleaned[:MAX_COMPONENT]
    return stem[: MAX_COMPONENT - len(ext)] + ext


def safe_name(path: str) -> str:
    """Return a relative archive path with no absolute part, ``..`` or control
    characters.

    ``path`` is separated by ``/``. A backslash is part of a name on the
    drive, and becomes ``_`` like the other characters Windows rejects.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    cleaned = [_clean_component(p) for p in parts if p != ".."]
    name = "/".join(cleaned) or "file"
    return name[-MAX_NAME:].lstrip("/") or "file"


class NameAllocator:
    """Hand out archive names, adding `` (2)``, `` (3)``... on clashes.

    Clashes are found case-insensitively, because archives are often
    unpacked on case-insensitive filesystems.
    """

    def __init__(self):
        self.taken: set[str] = set()

    def allocate(self, wanted: str) -> str:
        name = safe_name(wanted)
        stem, ext = posixpath.splitext(name)
        candidate, n = name, 2
        while candidate.lower() in self.taken:
            candidate = f"{stem} ({n}){ext}"
            n += 1
        self.taken.add(candidate.lower())
        return candidate
