"""Media type from content, not from the file name.

``sniff`` is called by the scanner for every file with the first bytes it
already read for the fingerprint, so it must be cheap and never raise.
"""

from __future__ import annotations

import filetype

HEAD_BYTES = 8192

# ISO base media brands (ftyp) that libmagic and filetype misreport or miss.
_FTYP_BRANDS = {
    b"qt  ": "video/quicktime",
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"heim": "image/heic",
    b"heis": "image/heic",
    b"hevc": "image/heic",
    b"mif1": "image/heif",
    b"msf1": "image/heif",
    b"avif": "image/avif",
    b"avis": "image/avif",
    b"crx ": "image/x-canon-cr3",
}


def kind_of(media_type: str) -> str:
    if media_type.startswith("image/"):
        return "image"
    if media_type.startswith("video/"):
        return "video"
    if media_type.startswith("audio/"):
        return "audio"
    if media_type == "application/pdf":
        return "document"
    return "other"


def _ftyp(head: bytes) -> str | None:
    if len(head) < 12 or head[4:8] != b"ftyp":
        return None
    brand = head[8:12]
    if brand in _FTYP_BRANDS:
        return _FTYP_BRANDS[brand]
    # Any other ISO base media brand (isom, mp41, mp42, mp4v, avc1, M4V ...).
    return "video/mp4"


def _tiff_family(head: bytes, name: str) -> str | None:
    if head[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    lowered = name.lower()
    raw = {
        ".dng": "image/x-adobe-dng",
        ".cr2": "image/x-canon-cr2",
        ".nef": "image/x-nikon-nef",
        ".arw": "image/x-sony-arw",
        ".orf": "image/x-olympus-orf",
    }
    for suffix, media_type in raw.items():
        if lowered.endswith(suffix):
            return media_type
    if b"\xc6\x12" in head[:4096] or b"\x12\xc6" in head[:4096]:
        # DNGVersion tag (50706) present in the first IFD.
        return "image/x-adobe-dng"
    return "image/tiff"


def _text_like(head: bytes) -> str | None:
    if not head:
        return None
    stripped = head.lstrip()
    if stripped.startswith(b"<?xml") or stripped.startswith(b"<!DOCTYPE plist"):
        if b"<svg" in head:
            return "image/svg+xml"
        return "application/xml"
    if stripped[:4].lower() == b"<svg":
        return "image/svg+xml"
    if b"\x00" in head:
        return None
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        # A multi-byte character cut at the end of the sample is still text.
        if error.start < len(head) - 4:
            return None
    return "text/plain"


def sniff(head: bytes, name: str = "") -> tuple[str, str]:
    """Return ``(media_type, kind)`` for a file whose first bytes are ``head``."""
    if not head:
        return "inode/x-empty", "other"
    media_type = _ftyp(head) or _tiff_family(head, name)
    if media_type is None:
        if head[:4] == b"FUJI" and head[:15] == b"FUJIFILMCCD-RAW":
            media_type = "image/x-fuji-raf"
        elif head[:4] in (b"IIRO", b"IIRS", b"MMOR"):
            media_type = "image/x-olympus-orf"
        elif head[:4] == b"8BPS":
            media_type = "image/vnd.adobe.photoshop"
        elif head[:4] == b"\x1a\x45\xdf\xa3":
            media_type = "video/webm" if b"webm" in head[:64] else "video/x-matroska"
        elif head[:1] == b"G" and len(head) > 188 and head[188:189] == b"G":
            media_type = "video/mp2t"
        elif len(head) > 196 and head[4:5] == b"G" and head[196:197] == b"G":
            media_type = "video/mp2t"
    if media_type is None:
        guess = filetype.guess(head)
        if guess is not None:
            media_type = guess.mime
            if media_type == "image/x-icon":
                media_type = "image/vnd.microsoft.icon"
    if media_type is None:
        media_type = _text_like(head) or "application/octet-stream"
    return media_type, kind_of(media_type)
