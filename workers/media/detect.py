"""Media type from content, not from the file name.

``sniff`` is called by the scanner for every file with the first bytes it
already read for the fingerprint, so it must be cheap and never raise.
"""

from __future__ import annotations

import functools
import struct

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


# Cached because a scan asks once per file. The media types come from the
# fixed set that sniff returns, so the cache stays small.
@functools.cache
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


# DNGVersion, the TIFF tag that marks a DNG file in its first IFD.
_DNG_VERSION_TAG = 50706


def _first_ifd_tags(head: bytes) -> set[int]:
    """Return the tag numbers of the first IFD's entries that lie within ``head``."""
    order = "<" if head[:2] == b"II" else ">"
    (offset,) = struct.unpack_from(order + "I", head, 4)
    if offset < 8 or offset + 2 > len(head):
        return set()
    (count,) = struct.unpack_from(order + "H", head, offset)
    tags = set()
    for entry in range(offset + 2, min(offset + 2 + 12 * count, len(head) - 1), 12):
        tags.add(struct.unpack_from(order + "H", head, entry)[0])
    return tags


def _tiff_family(head: bytes, name: str) -> str | None:
    if head[:4] not in (b"II*\x00", b"MM\x00*") or len(head) < 8:
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
    if head[8:12] == b"CR\x02\x00":
        return "image/x-canon-cr2"
    if _DNG_VERSION_TAG in _first_ifd_tags(head):
        return "image/x-adobe-dng"
    # NOTE: NEF and ARW files without their extension are catalogued as TIFF,
    # because they start with a plain TIFF header.
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


# Leading bytes of the commonest formats, checked before anything slower.
_MAGIC = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"BM", None),  # BMP needs a second look, see _bmp
    (b"ID3", "audio/mpeg"),
    (b"fLaC", "audio/flac"),
    (b"OggS", "audio/ogg"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"Rar!\x1a\x07", "application/vnd.rar"),
    (b"\x00\x00\x01\xba", "video/mpeg"),
    (b"\x00\x00\x01\xb3", "video/mpeg"),
    (b"FLV\x01", "video/x-flv"),
    (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "video/x-ms-asf"),
    (b"\x00\x00\x01\x00", "image/vnd.microsoft.icon"),
    (b"\xff\x0a", "image/jxl"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "image/jxl"),
    (b"#?RADIANCE", "image/vnd.radiance"),
    (b"gimp xcf", "image/x-xcf"),
)


def _riff(head: bytes) -> str | None:
    if head[:4] != b"RIFF" or len(head) < 12:
        return None
    return {
        b"WEBP": "image/webp",
        b"AVI ": "video/x-msvideo",
        b"WAVE": "audio/wav",
    }.get(head[8:12])


def _bmp(head: bytes) -> str | None:
    # "BM", then a header size of 12, 40, 52, 56, 64, 108 or 124 at offset 14.
    if head[:2] == b"BM" and len(head) > 18:
        header_size = int.from_bytes(head[14:18], "little")
        if header_size in (12, 40, 52, 56, 64, 108, 124):
            return "image/bmp"
    return None


# MPEG transport streams start every packet with the sync byte "G". Packets
# are 188 bytes long in .ts files. In the .m2ts and .mts files of AVCHD
# cameras they are 192 bytes long and begin with a 4-byte time code.
_TS_SYNC = 0x47
_TS_MIN_PACKETS = 3


def _is_transport_stream(head: bytes) -> bool:
    for first_sync, packet_size in ((0, 188), (4, 192)):
        # Most files fail at their first sync byte; only the others are sliced.
        if len(head) <= first_sync or head[first_sync] != _TS_SYNC:
            continue
        sync_bytes = head[first_sync::packet_size]
        if len(sync_bytes) >= _TS_MIN_PACKETS and sync_bytes.count(_TS_SYNC) == len(sync_bytes):
            return True
    return False


# The signatures of _MAGIC by their first byte, so a file is compared only
# with those that can match it.
_MAGIC_BY_FIRST_BYTE: dict[int, tuple] = {}
for _magic, _media_type in _MAGIC:
    _MAGIC_BY_FIRST_BYTE[_magic[0]] = _MAGIC_BY_FIRST_BYTE.get(_magic[0], ()) + ((_magic, _media_type),)


def _fast(head: bytes) -> str | None:
    for magic, media_type in _MAGIC_BY_FIRST_BYTE.get(head[0], ()):
        if head.startswith(magic):
            return media_type or _bmp(head)
    return _riff(head)


def sniff(head: bytes, name: str = "") -> tuple[str, str]:
    """Return ``(media_type, kind)`` for a file whose first bytes are ``head``."""
    if not head:
        return "inode/x-empty", "other"
    media_type = _fast(head) or _ftyp(head) or _tiff_family(head, name)
    if media_type is None:
        first = head[:4]
        if first == b"FUJI" and head[:15] == b"FUJIFILMCCD-RAW":
            media_type = "image/x-fuji-raf"
        elif first in (b"IIRO", b"IIRS", b"MMOR"):
            media_type = "image/x-olympus-orf"
        elif first == b"8BPS":
            media_type = "image/vnd.adobe.photoshop"
        elif first == b"\x1a\x45\xdf\xa3":
            media_type = "video/webm" if b"webm" in head[:64] else "video/x-matroska"
        elif _is_transport_stream(head):
            media_type = "video/mp2t"
    # NOTE: a generic matcher such as the filetype package costs about 80 us
    # per file in pure Python, several times the whole cost of a file in a
    # scan, so the signatures above are checked directly instead.
    if media_type is None:
        media_type = _text_like(head) or "application/octet-stream"
    return media_type, kind_of(media_type)
