"""analyze() on inputs the tests make themselves, so they run without the corpus."""

from __future__ import annotations

import http.server
import io
import struct
import threading

import av
import numpy
import pytest
from PIL import Image, ImageStat, TiffImagePlugin, TiffTags
from PIL.ExifTags import GPS, IFD, Base

from workers.media.analyze import analyze
from workers.media.detect import sniff
from workers.media.images import PixelLimitError


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _mean_rgb(image: Image.Image) -> tuple[float, ...]:
    return tuple(ImageStat.Stat(image.convert("RGB")).mean)


def _half_white_image(width: int, height: int) -> Image.Image:
    """Return an RGB image whose left half is white and right half black."""
    image = Image.new("RGB", (width, height), "black")
    image.paste((255, 255, 255), (0, 0, width // 2, height))
    return image


def _camera_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[Base.Make] = "TestCam"
    exif[Base.Model] = "Model 7"
    exif[Base.Orientation] = 6
    details = exif.get_ifd(IFD.Exif)
    details[Base.DateTimeOriginal] = "2021:07:04 09:30:15"
    details[Base.OffsetTimeOriginal] = "+02:00"
    details[Base.ExposureTime] = 1 / 250
    details[Base.FNumber] = 2.8
    details[Base.ISOSpeedRatings] = 400
    details[Base.FocalLength] = 35.0
    details[Base.LensModel] = "TestLens 35mm F2"
    gps = exif.get_ifd(IFD.GPSInfo)
    gps[GPS.GPSLatitudeRef] = "S"
    gps[GPS.GPSLatitude] = (33.0, 51.0, 36.0)
    gps[GPS.GPSLongitudeRef] = "E"
    gps[GPS.GPSLongitude] = (151.0, 12.0, 0.0)
    gps[GPS.GPSAltitude] = 12.5
    return exif


def test_jpeg_exif_metadata(tmp_path):
    path = tmp_path / "camera.jpg"
    _half_white_image(400, 300).save(path, exif=_camera_exif())
    result = analyze(str(path))
    assert result.media_type == "image/jpeg"
    assert result.error is None
    assert result.info["camera_make"] == "TestCam"
    assert result.info["camera_model"] == "Model 7"
    assert result.info["captured_at"] == "2021-07-04T09:30:15+02:00"
    assert result.info["shutter_speed"] == "1/250"
    assert result.info["aperture"] == 2.8
    assert result.info["iso"] == 400
    assert result.info["focal_length"] == 35
    assert result.info["lens"] == "TestLens 35mm F2"
    assert result.info["orientation"] == 6
    assert result.info["gps"]["latitude"] == pytest.approx(-33.86)
    assert result.info["gps"]["longitude"] == pytest.approx(151.2)
    assert result.info["gps"]["altitude"] == 12.5


def test_jpeg_orientation_six_is_turned_upright(tmp_path):
    path = tmp_path / "rotated.jpg"
    _half_white_image(400, 300).save(path, exif=_camera_exif())
    result = analyze(str(path))
    thumbnail = _open(result.thumbnail)
    assert (result.info["width"], result.info["height"]) == (300, 400)
    assert thumbnail.size == (240, 320)
    # Orientation 6 means the stored image is turned 90 degrees clockwise to
    # display, so the stored left (white) half ends up on top.
    top = thumbnail.crop((0, 0, 240, 150))
    bottom = thumbnail.crop((0, 170, 240, 320))
    assert _mean_rgb(top)[0] > 200
    assert _mean_rgb(bottom)[0] < 50


def test_large_jpeg_gets_both_sizes(tmp_path):
    path = tmp_path / "large.jpg"
    Image.new("RGB", (4000, 3000), (30, 120, 200)).save(path, quality=90)
    result = analyze(str(path))
    assert _open(result.preview).size == (1440, 1080)
    assert _open(result.thumbnail).size == (320, 240)
    assert result.rendition_format == "webp"
    assert _open(result.thumbnail).format == "WEBP"


def test_jpeg_rendition_format(tmp_path):
    path = tmp_path / "alpha.png"
    Image.new("RGBA", (50, 40), (255, 0, 0, 0)).save(path)
    result = analyze(str(path), rendition_format="jpeg")
    thumbnail = _open(result.thumbnail)
    assert result.rendition_format == "jpeg"
    assert thumbnail.format == "JPEG"
    # Transparent pixels are flattened onto white.
    assert min(_mean_rgb(thumbnail)) > 240


def test_cmyk_jpeg_colours_not_inverted(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("RGB", (200, 100), (220, 30, 30)).convert("CMYK").save(path)
    result = analyze(str(path))
    red, green, blue = _mean_rgb(_open(result.thumbnail))
    assert result.info["colour_space"] == "CMYK"
    assert red > 180
    assert green < 80
    assert blue < 80


def test_sixteen_bit_png_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    gradient = numpy.tile(numpy.linspace(0, 65535, 256, dtype=numpy.uint16), (64, 1))
    Image.fromarray(gradient).save(path)
    result = analyze(str(path))
    thumbnail = _open(result.thumbnail).convert("L")
    assert result.error is None
    left = ImageStat.Stat(thumbnail.crop((0, 0, 32, 64))).mean[0]
    right = ImageStat.Stat(thumbnail.crop((224, 0, 256, 64))).mean[0]
    assert left < 30
    assert right > 225


def test_palette_png_with_transparency(tmp_path):
    path = tmp_path / "palette.png"
    image = Image.new("P", (100, 100), 1)
    image.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    image.info["transparency"] = 0
    image.save(path, transparency=0)
    result = analyze(str(path))
    thumbnail = _open(result.thumbnail)
    assert thumbnail.size == (100, 100)
    assert _mean_rgb(thumbnail)[1] > 150


def test_animated_gif_first_frame(tmp_path):
    path = tmp_path / "animated.gif"
    frames = [
        Image.new("RGB", (60, 40), colour)
        for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))
    ]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    result = analyze(str(path))
    assert result.info["frames"] == 3
    red, green, blue = _mean_rgb(_open(result.thumbnail))
    assert red > 200
    assert green < 50
    assert blue < 50


def test_multipage_tiff_first_page(tmp_path):
    path = tmp_path / "pages.tiff"
    pages = [Image.new("RGB", (80, 60), "white"), Image.new("RGB", (30, 90), "black")]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    result = analyze(str(path))
    assert result.info["page_count"] == 2
    assert (result.info["width"], result.info["height"]) == (80, 60)
    assert _mean_rgb(_open(result.thumbnail))[0] > 240


def test_tiff_pillow_cannot_open_read_by_tifffile():
    from pathlib import Path

    import skimage.data
    import tifffile

    # A two-page RGB TIFF that scikit-image ships: Pillow cannot identify it.
    path = Path(skimage.data.__file__).parent / "multipage_rgb.tif"
    with pytest.raises(Exception):
        Image.open(path)
    with tifffile.TiffFile(path) as tiff:
        first = tiff.pages[0].asarray()
        first_rgb = numpy.moveaxis(first, 0, -1) if tiff.pages[0].axes.startswith("S") else first
    result = analyze(str(path))
    assert result.error is None
    assert result.info["page_count"] == 2
    assert (result.info["width"], result.info["height"]) == (10, 10)
    assert result.thumbnail is not None
    # The samples are floats from 0 to 1.
    assert first_rgb.dtype.kind == "f"
    expected = first_rgb.reshape(-1, 3).mean(axis=0) * 255
    shown = _mean_rgb(_open(result.thumbnail))
    assert all(abs(a - b) < 12 for a, b in zip(shown, expected))


def test_pdf_made_by_pillow(tmp_path):
    path = tmp_path / "two-pages.pdf"
    pages = [Image.new("RGB", (200, 100), "blue"), Image.new("RGB", (200, 100), "red")]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    result = analyze(str(path))
    assert result.kind == "document"
    assert result.info["page_count"] == 2
    red, green, blue = _mean_rgb(_open(result.thumbnail))
    assert blue > 200
    assert red < 50
    assert green < 50


def test_lying_extension_uses_content(tmp_path):
    path = tmp_path / "picture.mp4"
    Image.new("RGB", (64, 48), "green").save(path, format="PNG")
    result = analyze(str(path))
    assert result.media_type == "image/png"
    assert result.kind == "image"
    assert result.thumbnail is not None


def test_bytes_path_not_utf8(tmp_path):
    raw_path = bytes(tmp_path) + b"/name\xff.jpg"
    with open(raw_path, "wb") as handle:
        Image.new("RGB", (64, 48), "green").save(handle, format="JPEG")
    result = analyze(raw_path)
    assert result.media_type == "image/jpeg"
    assert result.thumbnail is not None


def test_decompression_bomb_png_rejected(bomb_png):
    assert bomb_png.stat().st_size < 100_000
    result = analyze(str(bomb_png))
    assert result.media_type == "image/png"
    assert result.error.startswith("decompression bomb:")
    assert result.thumbnail is None


def test_pixel_limit_below_pillow_default(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("L", (3000, 2000)).save(path)
    result = analyze(str(path), max_pixels=1_000_000)
    assert (
        result.error
        == "decompression bomb: 3000x2000 pixels exceeds the limit of 1000000 pixels"
    )
    assert str(PixelLimitError(3000, 2000, 1_000_000)) == result.error


def test_invalid_arguments_raise(tmp_path):
    path = tmp_path / "small.png"
    Image.new("L", (10, 10)).save(path)
    with pytest.raises(ValueError):
        analyze(str(path), rendition_format="gif")
    with pytest.raises(ValueError):
        analyze(str(path), thumb_size=2000)


def test_missing_file_reports_error(tmp_path):
    result = analyze(str(tmp_path / "missing.jpg"))
    assert result.error.startswith("cannot read file")


def test_garbage_after_jpeg_magic(tmp_path):
    path = tmp_path / "garbage.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    result = analyze(str(path))
    assert result.media_type == "image/jpeg"
    assert result.error
    assert result.thumbnail is None


def test_rotated_video_written_by_pyav(tmp_path):
    path = tmp_path / "rotated.mp4"
    _write_video(path, width=64, height=32, frames=20, rotation=90)
    result = analyze(str(path))
    assert result.media_type == "video/mp4"
    assert result.error is None
    assert (result.info["width"], result.info["height"]) == (32, 64)
    assert result.info["video_codec"] == "h264"
    assert result.info["duration"] == pytest.approx(2.0, abs=0.2)
    assert result.info["frame_rate"] == 10
    thumbnail = _open(result.thumbnail)
    assert thumbnail.height > thumbnail.width
    # A 90-degree counter-clockwise turn moves the white left half to the bottom.
    top = thumbnail.crop((0, 0, thumbnail.width, thumbnail.height // 2 - 4))
    bottom = thumbnail.crop(
        (0, thumbnail.height // 2 + 4, thumbnail.width, thumbnail.height)
    )
    assert _mean_rgb(top)[0] < 60
    assert _mean_rgb(bottom)[0] > 190


def test_video_skips_black_opening(tmp_path):
    path = tmp_path / "fade-in.mp4"
    _write_video(path, width=64, height=48, frames=30, rotation=0, black_frames=12)
    result = analyze(str(path))
    assert _mean_rgb(_open(result.thumbnail))[0] > 60


def test_svg_external_reference_not_fetched(tmp_path):
    requests: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *arguments):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        path = tmp_path / "drawing.svg"
        path.write_text(
            '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            'width="120px" height="80">'
            f'<image xlink:href="{url}/image.png" width="10" height="10"/>'
            f'<use href="{url}/sprite.svg#icon"/></svg>'
        )
        result = analyze(str(path))
        entity_path = tmp_path / "entity.svg"
        entity_path.write_text(
            f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "{url}/entity">]>'
            '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">&x;</svg>'
        )
        entity_result = analyze(str(entity_path))
    finally:
        server.shutdown()
        server.server_close()
    assert requests == []
    assert result.media_type == "image/svg+xml"
    assert result.thumbnail is None
    assert result.error is None
    assert (result.info["width"], result.info["height"]) == (120, 80)
    assert entity_result.thumbnail is None
    assert "rejected" in entity_result.error


def test_svg_size_from_view_box(tmp_path):
    path = tmp_path / "icon.svg"
    path.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="100%" viewBox="0 0 48 24"></svg>'
    )
    result = analyze(str(path))
    assert (result.info["width"], result.info["height"]) == (48, 24)


def _psd_bytes(width: int, height: int, composite: tuple, layers: list[tuple]) -> bytes:
    """Encode an uncompressed 8-bit RGB Photoshop file with one solid layer per colour."""

    def planes(colour: tuple) -> list[bytes]:
        return [bytes([value]) * (width * height) for value in colour]

    records, channel_data = b"", b""
    for colour in layers:
        records += struct.pack(">iiiiH", 0, 0, height, width, 3)
        for channel_id, plane in enumerate(planes(colour)):
            records += struct.pack(">hI", channel_id, len(plane) + 2)
            channel_data += struct.pack(">H", 0) + plane
        # No layer mask, no blending ranges, and the name "L" padded to 4 bytes.
        extra = struct.pack(">II", 0, 0) + b"\x01L\x00\x00"
        records += b"8BIMnorm" + bytes([255, 0, 0, 0]) + struct.pack(">I", len(extra)) + extra
    layer_info = struct.pack(">h", len(layers)) + records + channel_data
    layer_info += b"\x00" * (len(layer_info) % 2)
    layer_section = struct.pack(">I", len(layer_info)) + layer_info + struct.pack(">I", 0)
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    return (
        header
        + struct.pack(">II", 0, 0)
        + struct.pack(">I", len(layer_section))
        + layer_section
        + struct.pack(">H", 0)
        + b"".join(planes(composite))
    )


def _save_with_pillow(file_format: str, **options):
    def write(path, image):
        image.save(path, format=file_format, **options)

    return write


def _save_cmyk_tiff(path, image):
    image.convert("CMYK").save(path, format="TIFF")


def _save_animated_webp(path, image):
    blue = Image.new("RGB", image.size, (0, 0, 255))
    image.save(path, format="WEBP", save_all=True, append_images=[blue], duration=100)


def _save_layered_psd(path, image):
    layers = [(0, 0, 255), (0, 255, 0)]
    path.write_bytes(_psd_bytes(*image.size, image.getpixel((0, 0)), layers))


@pytest.mark.parametrize(
    "name, write, media_type",
    [
        ("photo.avif", _save_with_pillow("AVIF"), "image/avif"),
        ("photo.heic", _save_with_pillow("HEIF"), "image/heic"),
        ("photo.bmp", _save_with_pillow("BMP"), "image/bmp"),
        ("photo.webp", _save_with_pillow("WEBP"), "image/webp"),
        ("cmyk.tiff", _save_cmyk_tiff, "image/tiff"),
        ("animated.webp", _save_animated_webp, "image/webp"),
        ("layers.psd", _save_layered_psd, "image/vnd.adobe.photoshop"),
    ],
)
def test_still_format_renditions(tmp_path, name, write, media_type):
    import pillow_heif

    pillow_heif.register_heif_opener()
    path = tmp_path / name
    write(path, Image.new("RGB", (120, 80), (210, 30, 40)))
    result = analyze(str(path))
    assert result.media_type == media_type
    assert result.error is None
    assert (result.info["width"], result.info["height"]) == (120, 80)
    thumbnail = _open(result.thumbnail)
    assert thumbnail.size == (120, 80)
    # The first frame or the flattened composite, in its own colours.
    red, green, blue = _mean_rgb(thumbnail)
    assert red > 170
    assert green < 70
    assert blue < 80


def test_non_video_mov_is_other(tmp_path):
    text = tmp_path / "notes.mov"
    text.write_text("these notes were saved with the wrong extension\n" * 20)
    noise = tmp_path / "noise.mov"
    noise.write_bytes(bytes((index * 97 + 13) % 251 for index in range(6000)))
    for path in (text, noise):
        result = analyze(str(path))
        assert result.kind == "other", path.name
        assert result.thumbnail is None, path.name
        assert result.error is None, path.name


def test_text_with_sync_bytes_is_text(tmp_path):
    # "G" is the MPEG transport stream sync byte, 188 bytes apart in a .ts file.
    path = tmp_path / "README"
    path.write_text("Getting started" + "." * 173 + "Go on" + "." * 300)
    result = analyze(str(path))
    assert result.media_type == "text/plain"
    assert result.kind == "other"


def test_plain_tiff_not_taken_for_dng(tmp_path):
    path = tmp_path / "scan.tif"
    pixels = numpy.zeros((40, 60, 3), dtype=numpy.uint8)
    # The bytes of the DNGVersion tag number (50706) in the pixel data.
    pixels[:, :, 0], pixels[:, :, 1], pixels[:, :, 2] = 0xC6, 0x12, 0x80
    Image.fromarray(pixels).save(path)
    result = analyze(str(path))
    assert result.media_type == "image/tiff"
    assert result.error is None
    assert result.thumbnail is not None


def test_raw_headers_without_extension(tmp_path):
    path = tmp_path / "raw.tif"
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[50706] = b"\x01\x04\x00\x00"
    tags.tagtype[50706] = TiffTags.BYTE
    Image.new("RGB", (16, 16)).save(path, tiffinfo=tags)
    assert sniff(path.read_bytes()[:8192], "IMG_0001") == ("image/x-adobe-dng", "image")
    canon_header = b"II*\x00\x10\x00\x00\x00CR\x02\x00" + bytes(500)
    assert sniff(canon_header, "IMG_0002") == ("image/x-canon-cr2", "image")


@pytest.mark.parametrize("packet_size", [188, 192])
def test_transport_stream_frame(tmp_path, packet_size):
    path = tmp_path / "clip.mts"
    options = {"mpegts_m2ts_mode": "1"} if packet_size == 192 else {}
    with av.open(str(path), "w", format="mpegts", options=options) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(30):
            # Frame i has grey level 8 * i, so the thumbnail's grey level identifies the frame.
            pixels = numpy.full((48, 64, 3), index * 8, dtype=numpy.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert path.read_bytes()[packet_size - 188 :: packet_size][:3] == b"GGG"

    result = analyze(str(path))
    assert result.media_type == "video/mp2t"
    assert result.error is None
    assert result.info["duration"] == pytest.approx(3.0, abs=0.2)
    assert (result.info["width"], result.info["height"]) == (64, 48)
    # 10 % of 3 s is frame 3, grey level 24, counted from the stream's start time.
    luma = ImageStat.Stat(_open(result.thumbnail).convert("L")).mean[0]
    assert 20 < luma < 28


def _write_video(path, *, width, height, frames, rotation, black_frames=0):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        picture = numpy.asarray(_half_white_image(width, height))
        black = numpy.zeros_like(picture)
        for index in range(frames):
            pixels = black if index < black_frames else picture
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(pixels, format="rgb24")
            ):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
