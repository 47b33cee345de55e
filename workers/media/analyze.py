"""Metadata and renditions (thumbnail and preview) for one catalogued file.

``analyze`` is what the scan worker calls for each file. It returns a
``MediaResult`` for every input, including empty, truncated, corrupt and
hostile files, and records the problem in ``MediaResult.error``. Run it through
``workers.media.sandbox.analyze_isolated`` to also bound time and memory.
"""

from __future__ import annotations

import io
import logging
import os
import re
import struct
from dataclasses import dataclass, field

import av
import pillow_heif
import pypdfium2
import rawpy
from PIL import Image, ImageCms, UnidentifiedImageError

from workers.media import documents, exif, images, raw, video
from workers.media.detect import HEAD_BYTES, sniff

logger = logging.getLogger(__name__)

pillow_heif.register_heif_opener()

# Equal to the size at which Pillow raises DecompressionBombError with its
# default MAX_IMAGE_PIXELS (2 x 89,478,485). That admits 100-megapixel camera
# files. Formats without reduced-scale decoding need about 4 bytes per pixel.
DEFAULT_MAX_PIXELS = 178_956_970

RENDITION_FORMATS = ("webp", "jpeg")

RAW_MEDIA_TYPES = frozenset(
    {
        "image/x-adobe-dng",
        "image/x-canon-cr2",
        "image/x-canon-cr3",
        "image/x-nikon-nef",
        "image/x-sony-arw",
        "image/x-fuji-raf",
        "image/x-olympus-orf",
        "image/x-panasonic-rw2",
    }
)

# Exceptions that decoders raise for malformed input. Pillow plugins raise
# SyntaxError, struct.error, IndexError and KeyError on some corrupt headers, so
# those are reported per file too. Each one caught is logged, with its
# traceback at DEBUG level.
DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    ZeroDivisionError,
    av.error.FFmpegError,
    rawpy.LibRawError,
    pypdfium2.PdfiumError,
)

_BOMB_PIXELS = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+) pixels")


@dataclass
class MediaResult:
    """Media type, metadata and renditions that ``analyze`` read from one file.

    ``info`` is JSON-serialisable and contains only the keys that were read:
    width, height (as displayed, after orientation), orientation, captured_at,
    camera_make, camera_model, lens, iso, aperture, shutter_speed,
    focal_length, gps, duration, video_codec, audio_codec, frame_rate,
    page_count, colour_space and frames. ``thumbnail`` and ``preview`` are
    encoded in ``rendition_format``. ``error`` describes why renditions or
    metadata are missing or partial, and is None when the file was read fully.
    """

    media_type: str
    kind: str
    info: dict = field(default_factory=dict)
    thumbnail: bytes | None = None
    preview: bytes | None = None
    rendition_format: str = "webp"
    error: str | None = None


@dataclass(frozen=True)
class _Options:
    thumb_size: int
    preview_size: int
    rendition_format: str
    max_pixels: int


def analyze(
    path: str | bytes,
    *,
    thumb_size: int = 320,
    preview_size: int = 1440,
    rendition_format: str = "webp",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> MediaResult:
    """Detect the media type of ``path`` from its content, read its metadata and make renditions.

    The thumbnail fits in ``thumb_size`` pixels and the preview in
    ``preview_size`` pixels on the long side. Images are never enlarged.
    Files declaring more than ``max_pixels`` pixels get an error result without
    being decoded. Raises ValueError for invalid arguments and MemoryError when
    the process runs out of memory; ``analyze_isolated`` turns the latter into
    an error result.
    """
    if thumb_size <= 0 or preview_size <= 0:
        raise ValueError(
            f"rendition sizes must be positive, got {thumb_size} and {preview_size}"
        )
    if thumb_size > preview_size:
        raise ValueError(
            f"thumb_size {thumb_size} is larger than preview_size {preview_size}"
        )
    if rendition_format not in RENDITION_FORMATS:
        raise ValueError(
            f"rendition_format must be one of {RENDITION_FORMATS}, got {rendition_format!r}"
        )
    options = _Options(thumb_size, preview_size, rendition_format, max_pixels)

    try:
        with open(path, "rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError as error:
        return MediaResult(
            media_type="application/octet-stream",
            kind="other",
            rendition_format=rendition_format,
            error=f"cannot read file: {error.strerror or error}",
        )

    media_type, kind = sniff(head, os.fsdecode(os.path.basename(path)))
    result = MediaResult(
        media_type=media_type, kind=kind, rendition_format=rendition_format
    )
    if not head:
        result.error = "empty file: 0 bytes, nothing to analyse"
        return result

    handler = _pick_handler(media_type, kind)
    if handler is None:
        return result
    try:
        handler(path, result, options)
    except images.PixelLimitError as error:
        result.error = str(error)
    except Image.DecompressionBombError as error:
        result.error = _describe_bomb(error)
    except MemoryError:
        # Some decoders (PyAV) raise MemoryError subclasses that are also decode
        # errors. Running out of memory is a resource condition, not a bad file.
        raise
    except DECODE_ERRORS as error:
        logger.warning(
            "analyze failed for %r (%s): %s",
            path,
            media_type,
            _describe(error),
            exc_info=logger.isEnabledFor(logging.DEBUG),
        )
        result.error = f"invalid {media_type} file: {_describe(error)}"
    _drop_partial_renditions(result)
    return result


def _pick_handler(media_type: str, kind: str):
    if media_type in RAW_MEDIA_TYPES:
        return _analyze_raw
    if media_type == "image/svg+xml":
        return _analyze_svg
    if kind == "image":
        return _analyze_image
    if kind in ("video", "audio"):
        return _analyze_audio_video
    if media_type == "application/pdf":
        return _analyze_pdf
    return None


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _describe_bomb(error: Image.DecompressionBombError) -> str:
    match = _BOMB_PIXELS.search(str(error))
    if match is None:
        return f"decompression bomb: {error}"
    return f"decompression bomb: {match.group(1)} pixels exceeds the limit of {match.group(2)} pixels"


def _drop_partial_renditions(result: MediaResult) -> None:
    """Keep the thumbnail and preview only as a pair."""
    if result.thumbnail is None or result.preview is None:
        result.thumbnail = None
        result.preview = None


def _set_displayed_size(info: dict, width: int, height: int, orientation: int) -> None:
    if images.swaps_axes(orientation):
        width, height = height, width
    info["width"] = width
    info["height"] = height


def _profile_name(icc_profile: bytes | None) -> str | None:
    if not icc_profile:
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        description = ImageCms.getProfileDescription(profile).strip()
    except (ImageCms.PyCMSError, OSError, ValueError):
        return None
    return description or None


def _store_renditions(result: MediaResult, renditions: images.Renditions) -> None:
    result.preview = renditions.preview
    result.thumbnail = renditions.thumbnail


def _open_image(path: str | bytes, result: MediaResult, options: _Options) -> Image.Image:
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        if result.media_type != "image/tiff":
            raise
        return _tiff_first_page(path, result, options)


def _tiff_first_page(path: str | bytes, result: MediaResult, options: _Options) -> Image.Image:
    """Return the first page of a TIFF that Pillow cannot open, read by tifffile.

    Pillow does not read every layout, for example colour planes stored
    apart. Samples wider than 8 bits keep their top 8 bits.
    """
    import numpy
    import tifffile

    with tifffile.TiffFile(os.fsdecode(path)) as tiff:
        page = tiff.pages[0]
        images.check_pixel_limit(page.imagewidth, page.imagelength, options.max_pixels)
        data = page.asarray()
        axes = page.axes
        if len(tiff.pages) > 1:
            result.info["page_count"] = len(tiff.pages)
    if axes.startswith("S"):
        data = numpy.moveaxis(data, 0, -1)
    if data.ndim == 3 and data.shape[-1] not in (3, 4):
        data = data[..., 0] if data.shape[-1] < 3 else data[..., :3]
    if data.dtype.kind == "b":
        data = data * numpy.uint8(255)
    elif data.dtype.kind == "f":
        data = numpy.clip(data, 0.0, 1.0) * 255
    elif data.dtype.itemsize > 1:
        data = data >> (8 * data.dtype.itemsize - 8)
    return Image.fromarray(numpy.ascontiguousarray(data.astype(numpy.uint8)))


def _analyze_image(path: str | bytes, result: MediaResult, options: _Options) -> None:
    with _open_image(path, result, options) as image:
        info = result.info
        width, height = image.size
        images.check_pixel_limit(width, height, options.max_pixels)
        info.update(exif.read_exif(image.getexif()))

        orientation = info.get("orientation", 1)
        if "original_orientation" in image.info:
            # pillow-heif has already applied the HEIF transforms and reset the EXIF tag.
            stored = image.info["original_orientation"]
            if isinstance(stored, int) and 1 <= stored <= 8:
                info["orientation"] = stored
            orientation = 1
        _set_displayed_size(info, width, height, orientation)

        frame_count = getattr(image, "n_frames", 1)
        if getattr(image, "is_animated", False) and image.format in (
            "GIF",
            "WEBP",
            "PNG",
        ):
            info["frames"] = frame_count
        elif image.format == "TIFF" and frame_count > 1:
            info["page_count"] = frame_count
        if frame_count > 1 and image.format != "PSD":
            # Pillow numbers PSD frames from 1 as layers, and the PSD image as
            # opened is the flattened composite, so only other formats rewind.
            image.seek(0)

        icc_profile = image.info.get("icc_profile")
        colour_space = _profile_name(icc_profile)
        if colour_space:
            info["colour_space"] = colour_space
        elif image.mode == "CMYK":
            info["colour_space"] = "CMYK"

        images.request_draft(image, options.preview_size)
        truncation = images.load_image(image)
        renditions = images.make_renditions(
            image,
            orientation=orientation,
            icc_profile=icc_profile,
            thumb_size=options.thumb_size,
            preview_size=options.preview_size,
            rendition_format=options.rendition_format,
        )
        _store_renditions(result, renditions)
        if truncation:
            result.error = truncation


def _read_tiff_container_exif(path: str | bytes) -> dict:
    """Return EXIF metadata of a TIFF-based RAW file without decoding it, or an empty dict."""
    try:
        with Image.open(path) as container:
            return exif.read_exif(container.getexif())
    except DECODE_ERRORS:
        return {}


def _analyze_raw(path: str | bytes, result: MediaResult, options: _Options) -> None:
    info = result.info
    info.update(_read_tiff_container_exif(path))
    info.pop("orientation", None)
    decoded = raw.decode_raw(path, options.preview_size, options.max_pixels)
    for key, value in decoded.info.items():
        info.setdefault(key, value)
    info["orientation"] = decoded.orientation
    info["width"] = decoded.width
    info["height"] = decoded.height
    renditions = images.make_renditions(
        decoded.image,
        orientation=decoded.orientation,
        icc_profile=decoded.image.info.get("icc_profile"),
        thumb_size=options.thumb_size,
        preview_size=options.preview_size,
        rendition_format=options.rendition_format,
    )
    _store_renditions(result, renditions)


def _analyze_audio_video(
    path: str | bytes, result: MediaResult, options: _Options
) -> None:
    with av.open(os.fsdecode(path), metadata_errors="ignore") as container:
        info = result.info
        info.update(video.read_container_info(container))
        if not container.streams.video or result.kind == "audio":
            if result.kind == "video" and container.streams.audio:
                result.kind = "audio"
                if result.media_type == "video/mp4":
                    result.media_type = "audio/mp4"
            return

        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width and height:
            images.check_pixel_limit(width, height, options.max_pixels)
            info["width"], info["height"] = width, height
        frame = video.grab_frame(container, options.preview_size)
        if frame is None:
            result.error = f"no decodable video frame in {result.media_type}"
            return
        if frame.rotation in (90, 270) and width and height:
            info["width"], info["height"] = height, width
        renditions = images.make_renditions(
            frame.image,
            orientation=1,
            icc_profile=None,
            thumb_size=options.thumb_size,
            preview_size=options.preview_size,
            rendition_format=options.rendition_format,
        )
        _store_renditions(result, renditions)


def _analyze_pdf(path: str | bytes, result: MediaResult, options: _Options) -> None:
    image, page_count = documents.render_pdf_first_page(
        os.fsdecode(path), options.preview_size
    )
    result.info["page_count"] = page_count
    if image is None:
        result.error = "PDF has no pages"
        return
    renditions = images.make_renditions(
        image,
        orientation=1,
        icc_profile=None,
        thumb_size=options.thumb_size,
        preview_size=options.preview_size,
        rendition_format=options.rendition_format,
    )
    _store_renditions(result, renditions)


def _analyze_svg(path: str | bytes, result: MediaResult, options: _Options) -> None:
    # No renditions: rendering SVG could fetch external resources.
    result.info.update(documents.read_svg_size(path))
