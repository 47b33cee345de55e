"""Metadata and a representative frame from video and audio files, via PyAV."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

import av
from PIL import Image, ImageStat

# Position of the representative frame, as a fraction of the duration.
FRAME_POSITION = 0.10
# Frames decoded after the seek point while looking for the target time or for a
# frame that is not almost black. Bounds the cost on long GOPs.
MAX_DECODED_FRAMES = 90
# Mean luma (0-255) under which a frame counts as almost black.
BLACK_FRAME_LUMA = 18

# ISO 6709 location as QuickTime and Android write it: "+52.4597+013.3220+051.178/".
_ISO6709 = re.compile(r"^([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)?/?$")
_LOCATION_KEYS = ("com.apple.quicktime.location.ISO6709", "location", "location-eng")

# Placeholder dates that muxers write when the real time is unknown:
# the QuickTime epoch and the Unix epoch.
_EPOCH_PLACEHOLDERS = ("1904-01-01", "1970-01-01")


@dataclass
class VideoFrame:
    """A decoded frame already turned upright, plus the rotation that was applied."""

    image: Image.Image
    rotation: int


def _parse_creation_time(value: str | None) -> str | None:
    if not value:
        return None
    text = value.strip()
    if text.startswith(_EPOCH_PLACEHOLDERS):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    # The offset is kept as written, so local capture time stays readable.
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_iso6709(value: str) -> dict | None:
    """Return ``{"latitude", "longitude", "altitude"?}`` from an ISO 6709 string, or None."""
    match = _ISO6709.match(value.strip())
    if match is None:
        return None
    latitude = float(match.group(1))
    longitude = float(match.group(2))
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        return None
    gps: dict = {"latitude": latitude, "longitude": longitude}
    if match.group(3):
        gps["altitude"] = round(float(match.group(3)), 1)
    return gps


def _normalised_rotation(degrees: float) -> int:
    """Return the counter-clockwise rotation, one of 0, 90, 180 or 270."""
    return round(degrees / 90.0) * 90 % 360


def _stream_rotation(stream: av.video.stream.VideoStream) -> int:
    """Return the rotation from the legacy ``rotate`` tag (clockwise degrees) as counter-clockwise degrees."""
    tag = stream.metadata.get("rotate")
    try:
        return _normalised_rotation(-float(tag)) if tag else 0
    except ValueError:
        return 0


def _codec_name(stream: av.stream.Stream) -> str:
    """Return the codec's standard name ("mp3"), not its decoder's ("mp3float")."""
    return stream.codec_context.codec.canonical_name


def read_container_info(container: av.container.InputContainer) -> dict:
    """Return duration, codecs, frame rate, creation time and location of a media file."""
    info: dict = {}
    if container.duration is not None and container.duration > 0:
        info["duration"] = round(container.duration / av.time_base, 3)

    video = container.streams.video[0] if container.streams.video else None
    audio = container.streams.audio[0] if container.streams.audio else None
    if video is not None:
        info["video_codec"] = _codec_name(video)
        rate = video.average_rate or video.guessed_rate
        if rate and video.guessed_rate and rate > 1.5 * video.guessed_rate:
            # Matroska streams with a 1 ms time base report an average of 1000 fps.
            rate = video.guessed_rate
        if rate:
            info["frame_rate"] = round(float(rate), 3)
        if "duration" not in info and video.duration and video.time_base:
            info["duration"] = round(float(video.duration * video.time_base), 3)
    if audio is not None:
        info["audio_codec"] = _codec_name(audio)
        if "duration" not in info and audio.duration and audio.time_base:
            info["duration"] = round(float(audio.duration * audio.time_base), 3)

    metadata = dict(container.metadata)
    captured_at = _parse_creation_time(metadata.get("com.apple.quicktime.creationdate"))
    if captured_at is None:
        captured_at = _parse_creation_time(metadata.get("creation_time"))
    if captured_at is None and video is not None:
        captured_at = _parse_creation_time(video.metadata.get("creation_time"))
    if captured_at:
        info["captured_at"] = captured_at

    make = metadata.get("com.apple.quicktime.make") or metadata.get("make")
    model = metadata.get("com.apple.quicktime.model") or metadata.get("model")
    if make:
        info["camera_make"] = make.strip()
    if model:
        info["camera_model"] = model.strip()

    for key in _LOCATION_KEYS:
        if key in metadata:
            gps = parse_iso6709(metadata[key])
            if gps:
                info["gps"] = gps
                break
    return info


def _mean_luma(image: Image.Image) -> float:
    return ImageStat.Stat(image.convert("L")).mean[0]


def _to_image(frame: av.VideoFrame, max_side: int) -> Image.Image:
    """Convert to RGB and scale to fit ``max_side`` in one swscale pass."""
    width, height = frame.width, frame.height
    scale = min(1.0, max_side / max(width, height))
    target_width = max(2, round(width * scale))
    target_height = max(2, round(height * scale))
    return frame.reformat(
        width=target_width, height=target_height, format="rgb24", interpolation="AREA"
    ).to_image()


def grab_frame(
    container: av.container.InputContainer, max_side: int
) -> VideoFrame | None:
    """Decode a representative frame near ``FRAME_POSITION`` of the duration.

    The decoder seeks to the keyframe before the target and decodes forward to
    the target time. When that frame is almost black (fade-ins, lens caps) it
    keeps decoding, up to ``MAX_DECODED_FRAMES`` frames, for a brighter one.
    When the seek leaves no frame to decode, decoding starts again from the
    beginning. Returns None when the file has no decodable video frame.
    """
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    # One thread per decoder, because scan workers already run one process per core.
    stream.codec_context.thread_count = 1

    time_base = stream.time_base or Fraction(1, av.time_base)
    # Frame times count from the stream's start time, which is not zero in
    # MPEG transport streams.
    start_seconds = float(stream.start_time * time_base) if stream.start_time else 0.0
    target_seconds = start_seconds
    if container.duration and container.duration > 0:
        target_seconds += container.duration / av.time_base * FRAME_POSITION
    sought = target_seconds > start_seconds
    if sought:
        try:
            container.seek(
                int(target_seconds / time_base), stream=stream, backward=True
            )
        except av.error.FFmpegError:
            container.seek(0)

    chosen, chosen_image = _decode_near(container, stream, target_seconds, max_side)
    if chosen is None and sought:
        # FFmpeg's seek in MPEG transport streams without an index can land
        # past the last keyframe of a short file.
        container.seek(0)
        chosen, chosen_image = _decode_near(
            container, stream, target_seconds, max_side
        )
    if chosen is None or chosen_image is None:
        return None

    rotation = (
        _normalised_rotation(chosen.rotation)
        if chosen.rotation
        else _stream_rotation(stream)
    )
    if rotation:
        # Pillow's rotate() turns counter-clockwise, as the display matrix angle does.
        # NOTE: mirroring in the display matrix is not applied.
        chosen_image = chosen_image.rotate(rotation, expand=True)
    return VideoFrame(image=chosen_image, rotation=rotation)


def _decode_near(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    target_seconds: float,
    max_side: int,
) -> tuple[av.VideoFrame | None, Image.Image | None]:
    """Decode forward to the first frame from ``target_seconds`` on that is not almost black.

    Returns that frame and its image scaled to ``max_side``. When the stream
    ends first, returns the last frame decoded, and ``(None, None)`` when no
    frame decodes. Raises the decoder's error when it fails before the first
    frame.
    """
    time_base = stream.time_base or Fraction(1, av.time_base)
    passed_frame: av.VideoFrame | None = None
    chosen: av.VideoFrame | None = None
    chosen_image: Image.Image | None = None
    decoded = 0
    try:
        for frame in container.decode(stream):
            decoded += 1
            passed_frame = frame
            frame_seconds = (
                float(frame.pts * time_base)
                if frame.pts is not None
                else target_seconds
            )
            reached_target = frame_seconds >= target_seconds - 1e-3
            if not reached_target and decoded < MAX_DECODED_FRAMES:
                continue
            chosen, chosen_image = frame, _to_image(frame, max_side)
            if (
                _mean_luma(chosen_image) >= BLACK_FRAME_LUMA
                or decoded >= MAX_DECODED_FRAMES
            ):
                break
            # Look further ahead for a frame that is not almost black.
            target_seconds = frame_seconds + 0.5
    except (av.error.FFmpegError, ValueError):
        if passed_frame is None:
            raise
    if chosen is None and passed_frame is not None:
        # The stream ended before the target time: use the last frame decoded.
        chosen, chosen_image = passed_frame, _to_image(passed_frame, max_side)
    return chosen, chosen_image
