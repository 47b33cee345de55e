"""Catalog metadata from EXIF tags read by Pillow.

Every reader here skips a tag that is missing or malformed instead of raising,
because camera firmware writes a wide range of broken values.
"""

from __future__ import annotations

import math
from datetime import datetime
from fractions import Fraction

from PIL import ExifTags, Image

Base = ExifTags.Base
GPS = ExifTags.GPS


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    cleaned = value.replace("\x00", "").strip()
    return cleaned or None


def _number(value: object) -> float | None:
    if isinstance(value, (tuple, list)):
        value = value[0] if value else None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if math.isnan(number) or math.isinf(number):
        return None
    return number


def _rounded(value: float, digits: int = 2) -> float | int:
    rounded = round(value, digits)
    return int(rounded) if rounded == int(rounded) else rounded


def parse_exif_datetime(value: object, offset: object = None) -> str | None:
    """Return an ISO 8601 timestamp from an EXIF "YYYY:MM:DD HH:MM:SS" value.

    ``offset`` is the matching OffsetTime tag ("+02:00"). Without it the result
    has no time zone, because EXIF dates are in the camera's local time.
    """
    text = _text(value)
    if text is None:
        return None
    try:
        moment = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    if moment.year < 1900:
        return None
    iso = moment.isoformat()
    offset_text = _text(offset)
    if (
        offset_text
        and len(offset_text) == 6
        and offset_text[0] in "+-"
        and offset_text[3] == ":"
    ):
        iso += offset_text
    return iso


def format_exposure(seconds: float) -> str:
    """Return an exposure time the way cameras show it: "1/250", "0.8" or "2"."""
    if seconds <= 0:
        return str(_rounded(seconds, 4))
    if seconds < 1:
        denominator = round(1 / seconds)
        if denominator > 0 and abs(1 / denominator - seconds) / seconds < 0.05:
            return f"1/{denominator}"
        return str(Fraction(seconds).limit_denominator(10000))
    return str(_rounded(seconds, 1))


def _gps_coordinate(parts: object, reference: object) -> float | None:
    if not isinstance(parts, (tuple, list)) or len(parts) != 3:
        return None
    degrees, minutes, seconds = (_number(part) for part in parts)
    if degrees is None or minutes is None or seconds is None:
        return None
    coordinate = degrees + minutes / 60 + seconds / 3600
    if _text(reference) in ("S", "W"):
        coordinate = -coordinate
    return round(coordinate, 7)


def read_gps(gps_ifd: dict) -> dict | None:
    """Return ``{"latitude", "longitude", "altitude"?}`` in degrees and metres, or None."""
    latitude = _gps_coordinate(
        gps_ifd.get(GPS.GPSLatitude), gps_ifd.get(GPS.GPSLatitudeRef)
    )
    longitude = _gps_coordinate(
        gps_ifd.get(GPS.GPSLongitude), gps_ifd.get(GPS.GPSLongitudeRef)
    )
    if latitude is None or longitude is None:
        return None
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        return None
    if latitude == 0 and longitude == 0:
        # Cameras without a fix write zeros rather than leaving the tags out.
        return None
    gps: dict = {"latitude": latitude, "longitude": longitude}
    altitude = _number(gps_ifd.get(GPS.GPSAltitude))
    if altitude is not None:
        reference = gps_ifd.get(GPS.GPSAltitudeRef)
        if reference in (1, b"\x01"):
            altitude = -altitude
        gps["altitude"] = _rounded(altitude, 1)
    return gps


def read_exif(exif: Image.Exif) -> dict:
    """Return the catalog metadata keys found in ``exif``. Missing tags are left out."""
    info: dict = {}
    try:
        details = exif.get_ifd(ExifTags.IFD.Exif)
    except (KeyError, ValueError, TypeError, OSError):
        details = {}
    try:
        gps_ifd = exif.get_ifd(ExifTags.IFD.GPSInfo)
    except (KeyError, ValueError, TypeError, OSError):
        gps_ifd = {}

    orientation = exif.get(Base.Orientation)
    if isinstance(orientation, int) and 1 <= orientation <= 8:
        info["orientation"] = orientation

    captured_at = parse_exif_datetime(
        details.get(Base.DateTimeOriginal), details.get(Base.OffsetTimeOriginal)
    ) or parse_exif_datetime(
        details.get(Base.DateTimeDigitized), details.get(Base.OffsetTimeDigitized)
    )
    if captured_at is None:
        captured_at = parse_exif_datetime(
            exif.get(Base.DateTime), details.get(Base.OffsetTime)
        )
    if captured_at:
        info["captured_at"] = captured_at

    for key, tag in (("camera_make", Base.Make), ("camera_model", Base.Model)):
        text = _text(exif.get(tag))
        if text:
            info[key] = text
    lens = _text(details.get(Base.LensModel))
    if lens:
        info["lens"] = lens

    iso = _number(details.get(Base.ISOSpeedRatings))
    if iso is not None and iso > 0:
        info["iso"] = int(iso)
    aperture = _number(details.get(Base.FNumber))
    if aperture is not None and aperture > 0:
        info["aperture"] = _rounded(aperture, 1)
    exposure = _number(details.get(Base.ExposureTime))
    if exposure is not None and exposure > 0:
        info["shutter_speed"] = format_exposure(exposure)
    focal_length = _number(details.get(Base.FocalLength))
    if focal_length is not None and focal_length > 0:
        info["focal_length"] = _rounded(focal_length, 1)

    colour_space = details.get(Base.ColorSpace)
    if colour_space == 1:
        info["colour_space"] = "sRGB"
    elif colour_space == 2:
        info["colour_space"] = "Adobe RGB"

    gps = read_gps(gps_ifd)
    if gps:
        info["gps"] = gps
    return info
