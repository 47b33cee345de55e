"""Decoding and rendition building for still images opened with Pillow.

Renditions are made in this order: decode at a reduced scale where the format
allows it (JPEG DCT scaling via ``Image.draft``), resize to the preview, turn
upright, convert to sRGB, then resize the preview down to the thumbnail. The
orientation and colour steps run on the small preview, not the full image.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageFile

# EXIF Orientation value -> the Pillow transpose that makes the image upright.
ORIENTATION_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

WEBP_QUALITY = 80
JPEG_QUALITY = 85
# libwebp effort from 0 (fastest) to 6 (smallest files). 4 is libwebp's default.
WEBP_METHOD = 4

_SRGB_PROFILE = ImageCms.createProfile("sRGB")


class PixelLimitError(Exception):
    """Raised when an image declares more pixels than the caller allows."""

    def __init__(self, width: int, height: int, limit: int) -> None:
        super().__init__(
            f"decompression bomb: {width}x{height} pixels exceeds the limit of {limit} pixels"
        )


@dataclass
class Renditions:
    preview: bytes
    thumbnail: bytes


def check_pixel_limit(width: int, height: int, limit: int) -> None:
    if width * height > limit:
        raise PixelLimitError(width, height, limit)


def swaps_axes(orientation: int) -> bool:
    """Return True when the orientation turns the image by 90 or 270 degrees."""
    return orientation in (5, 6, 7, 8)


def fit_within(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Return the size of ``width`` x ``height`` scaled down so its long side is at most ``max_side``."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def request_draft(image: Image.Image, max_side: int) -> None:
    """Ask the JPEG decoder to decode at the smallest DCT scale that still covers ``max_side``.

    ``draft`` picks a scale of 1/2, 1/4 or 1/8 that keeps both sides at or above
    the requested size, so the request is the final size with the image's own
    aspect ratio. Other formats ignore the request.
    """
    if image.format != "JPEG":
        return
    image.draft(
        "RGB" if image.mode == "RGB" else None, fit_within(*image.size, max_side)
    )


def load_image(image: Image.Image) -> str | None:
    """Decode the pixel data, keeping what decoded if the file ends early.

    Returns None for a complete decode, or a message describing the truncation.
    Raises OSError or ValueError when nothing usable could be decoded.
    """
    try:
        image.load()
        return None
    except OSError as error:
        if "truncated" not in str(error):
            raise
        truncation = str(error)
    # NOTE: LOAD_TRUNCATED_IMAGES is a Pillow module global, so the retry is not
    # thread-safe. Scan workers analyse one file per process at a time.
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        image.load()
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    file_format = image.format or "image"
    return (
        f"truncated {file_format}: image data ends early ({truncation}); "
        "thumbnail made from the part that decoded"
    )


def normalise_mode(image: Image.Image) -> Image.Image:
    """Convert to a mode that resizing and colour management handle: RGB, RGBA, L or CMYK."""
    mode = image.mode
    if mode in ("RGB", "RGBA", "L", "CMYK"):
        return image
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        return image.convert("RGBA" if has_alpha else "RGB")
    if mode in ("LA", "La", "RGBa"):
        return image.convert("RGBA")
    if mode == "1":
        return image.convert("L")
    if mode.startswith("I;16") or mode == "I":
        # Pillow's I;16 -> L conversion (checked on 13.0) clips at 255 instead
        # of scaling, which turns 16-bit greyscale pictures almost white.
        integer = image if mode == "I" else image.convert("I")
        maximum = integer.getextrema()[1]
        if mode == "I" and maximum <= 255:
            return integer.convert("L")
        return integer.point(lambda value: value * (1 / 256)).convert("L")
    if mode == "F":
        return image.convert("L")
    return image.convert("RGB")


@functools.lru_cache(maxsize=16)
def _srgb_transform(
    icc_profile: bytes, input_mode: str, output_mode: str
) -> ImageCms.ImageCmsTransform:
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
    return ImageCms.buildTransform(
        source,
        _SRGB_PROFILE,
        input_mode,
        output_mode,
        renderingIntent=ImageCms.Intent.PERCEPTUAL,
    )


def to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """Convert to 8-bit sRGB (RGB or RGBA), using the embedded ICC profile when there is one.

    A profile that littleCMS cannot parse or that does not match the image mode
    is ignored and Pillow's plain conversion is used instead.
    """
    has_alpha = image.mode == "RGBA"
    output_mode = "RGBA" if has_alpha else "RGB"
    if icc_profile and image.mode in ("RGB", "RGBA", "L", "CMYK"):
        try:
            transform = _srgb_transform(icc_profile, image.mode, output_mode)
            return ImageCms.applyTransform(image, transform)
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass
    if image.mode == output_mode:
        return image
    return image.convert(output_mode)


def encode(image: Image.Image, rendition_format: str) -> bytes:
    buffer = io.BytesIO()
    if rendition_format == "webp":
        image.save(buffer, "WEBP", quality=WEBP_QUALITY, method=WEBP_METHOD)
    else:
        if image.mode == "RGBA":
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(image, mask=image.getchannel("A"))
            image = background
        image.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=False)
    return buffer.getvalue()


def make_renditions(
    image: Image.Image,
    *,
    orientation: int,
    icc_profile: bytes | None,
    thumb_size: int,
    preview_size: int,
    rendition_format: str,
) -> Renditions:
    """Build the preview and thumbnail from a decoded image.

    ``image`` is in stored orientation and may be modified. The preview is made
    first and the thumbnail is scaled from the preview, so the large image is
    resampled only once.
    """
    image = normalise_mode(image)
    if max(image.size) > preview_size:
        image.thumbnail(
            (preview_size, preview_size), Image.Resampling.LANCZOS, reducing_gap=3.0
        )
    transpose = ORIENTATION_TRANSPOSES.get(orientation)
    if transpose is not None:
        image = image.transpose(transpose)
    preview = to_srgb(image, icc_profile)
    thumbnail = preview.copy()
    thumbnail.thumbnail(
        (thumb_size, thumb_size), Image.Resampling.LANCZOS, reducing_gap=3.0
    )
    return Renditions(
        preview=encode(preview, rendition_format),
        thumbnail=encode(thumbnail, rendition_format),
    )
