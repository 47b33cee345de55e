"""Camera RAW files via rawpy (LibRaw): embedded preview first, demosaicing as fallback."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

import rawpy
from PIL import Image

from workers.media import exif as exif_reader
from workers.media.images import PixelLimitError

# LibRaw's ``sizes.flip`` -> EXIF Orientation value.
_FLIP_TO_ORIENTATION = {0: 1, 3: 3, 5: 8, 6: 6}


@dataclass
class RawImage:
    """A decoded RAW picture in stored orientation, and what was read about it."""

    image: Image.Image
    orientation: int
    width: int
    height: int
    info: dict = field(default_factory=dict)
    from_preview: bool = True


def _open_embedded_preview(
    thumb: rawpy._rawpy.Thumbnail, max_side: int
) -> tuple[Image.Image, dict]:
    if thumb.format == rawpy.ThumbFormat.JPEG:
        image = Image.open(io.BytesIO(thumb.data))
        info = exif_reader.read_exif(image.getexif())
        if image.format == "JPEG":
            image.draft("RGB", (max_side, max_side))
        image.load()
        return image, info
    return Image.fromarray(thumb.data), {}


def decode_raw(path: str | bytes, max_side: int, pixel_limit: int) -> RawImage:
    """Decode the embedded preview, or demosaic at half size when there is none.

    The embedded preview is stored in sensor orientation, so the returned
    ``orientation`` comes from LibRaw's flip value and is applied by the caller.
    ``width`` and ``height`` are the sensor image's size as displayed.
    Raises ``rawpy.LibRawError`` for a file LibRaw cannot read.
    """
    with rawpy.imread(os.fsdecode(path)) as raw:
        sizes = raw.sizes
        orientation = _FLIP_TO_ORIENTATION.get(sizes.flip, 1)
        width, height = sizes.width, sizes.height
        if orientation in (6, 8):
            width, height = height, width
        info: dict = {}
        try:
            thumb = raw.extract_thumb()
        except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
            thumb = None
        if thumb is not None:
            try:
                image, info = _open_embedded_preview(thumb, max_side)
                info.pop("orientation", None)
                return RawImage(image, orientation, width, height, info)
            except (OSError, ValueError, SyntaxError):
                pass
        if sizes.width * sizes.height > pixel_limit:
            raise PixelLimitError(sizes.width, sizes.height, pixel_limit)
        # user_flip=0 keeps the stored orientation so the caller rotates both paths alike.
        pixels = raw.postprocess(
            half_size=True, use_camera_wb=True, output_bps=8, user_flip=0
        )
        return RawImage(
            Image.fromarray(pixels),
            orientation,
            width,
            height,
            info,
            from_preview=False,
        )
