"""analyze() against the real media corpus described by MANIFEST.tsv."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image, ImageChops, ImageStat

from workers.media.analyze import analyze

# Displayed (width, height) after orientation, checked against the manifest
# description or by viewing the file.
EXPECTED_SIZES = {
    **{
        f"drive-a/Photos/orientation-test/landscape_{n}.jpg": (600, 450)
        for n in range(1, 9)
    },
    "drive-a/Photos/2015/canon_hdr_YES.jpg": (1536, 2048),
    "drive-a/Photos/2023/iphone_15_pro.heic": (3024, 4032),
    "drive-a/Photos/2021/shoot-02/IMG_5195.HEIC": (2566, 3313),
    "drive-b/clients/globex/photos/xiaomi.heic": (2592, 1944),
    "drive-a/Photos/2014/jolla.jpg": (3264, 2448),
    "drive-a/Photos/2001/2001-06-09/canon-ixus.jpg": (640, 480),
    "drive-b/inbox/6720px_white.jpg": (6720, 4480),
    "drive-a/Videos/2023-09-22/quicktime-hvc1.mov": (720, 1280),
    "drive-a/Videos/2020-05-11/blue-go-video.mp4": (270, 480),
    "drive-a/Videos/2020-12-christmas/christmas.mp4": (640, 416),
    "drive-a/Videos/old/earth.avi": (480, 270),
    "drive-b/clients/acme/video/chaplin.mp4": (640, 360),
    "drive-b/clients/acme/video/sample.mkv": (1080, 720),
    "drive-b/clients/acme/video/big_buck_bunny_432_433.webm": (1280, 720),
    "drive-b/clients/acme/web/Screenshot 2019-05-21 at 10.45.52.png": (1189, 849),
    "drive-b/clients/globex/print/exif.png": (512, 512),
    "drive-b/clients/acme/web/iss634.webp": (245, 245),
    "drive-b/clients/acme/web/norway-kjetil-moe.webp": (550, 368),
    "drive-b/clients/acme/web/pythagoras.gif": (591, 639),
    # LibRaw's sensor size. The embedded JPEG preview is 1024x683.
    "drive-a/RAW/2019-06-06/canon_eos_6d.dng": (1224, 816),
    "drive-a/broken/corrupted.jpg": (3648, 2736),
}

# Durations in seconds as the manifest describes the clips.
EXPECTED_DURATIONS = {
    "drive-a/Videos/2020-05-11/blue-go-video.mp4": 2.4,
    "drive-a/Videos/2020-12-christmas/christmas.mp4": 0.8,
    "drive-a/Videos/2023-09-22/quicktime-hvc1.mov": 1.2,
    "drive-a/Videos/old/earth.avi": 30,
    "drive-b/clients/acme/video/big_buck_bunny_432_433.webm": 1.0,
    "drive-b/clients/acme/video/chaplin.mp4": 9.6,
    "drive-b/clients/acme/video/sample.mkv": 1.07,
}

# A size such as "640x480" in a manifest description.
_MANIFEST_SIZE = re.compile(r"\b(\d{2,5})x(\d{2,5})\b")

BROKEN_WITH_ERROR = ("drive-a/broken/truncated_jpeg.jpg", "drive-a/broken/empty.jpg")


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _grey_signature(data: bytes) -> Image.Image:
    """Downscale to a 32x24 greyscale image, enough to tell rotations and mirrors apart."""
    return _open(data).convert("L").resize((32, 24), Image.Resampling.BOX)


def _mean_difference(first: Image.Image, second: Image.Image) -> float:
    return ImageStat.Stat(ImageChops.difference(first, second)).mean[0]


def test_corpus_media_types_match_manifest(corpus_dir, manifest):
    for row in manifest:
        result = analyze(str(corpus_dir / row["path"]))
        assert result.media_type == row["media_type"], row["path"]


def test_corpus_displayed_sizes(corpus_dir, manifest):
    paths = {row["path"] for row in manifest}
    for relative_path, (width, height) in EXPECTED_SIZES.items():
        assert relative_path in paths, relative_path
        result = analyze(str(corpus_dir / relative_path))
        assert (result.info.get("width"), result.info.get("height")) == (
            width,
            height,
        ), relative_path


def test_manifest_sizes_all_checked(manifest):
    # The manifest gives the stored or the displayed size, so either order matches.
    for row in manifest:
        match = _MANIFEST_SIZE.search(row["what_it_exercises"])
        if match is None:
            continue
        listed = (int(match.group(1)), int(match.group(2)))
        assert row["path"] in EXPECTED_SIZES, row["path"]
        assert EXPECTED_SIZES[row["path"]] in (listed, listed[::-1]), row["path"]


def test_corpus_video_durations(corpus_dir):
    for relative_path, seconds in EXPECTED_DURATIONS.items():
        info = analyze(str(corpus_dir / relative_path)).info
        assert info["duration"] == pytest.approx(seconds, rel=0.05, abs=0.05), relative_path


def test_audio_codec_standard_name(corpus_dir):
    info = analyze(str(corpus_dir / "drive-b/clients/acme/video/chaplin.mp4")).info
    assert info["video_codec"] == "h264"
    assert info["audio_codec"] == "mp3"


def test_display_p3_converted_to_srgb(corpus_dir, tmp_path):
    with Image.open(corpus_dir / "drive-a/Photos/2023/iphone_15_pro.heic") as photo:
        display_p3 = photo.info["icc_profile"]
    path = tmp_path / "p3.png"
    Image.new("RGB", (64, 64), (40, 200, 60)).save(path, icc_profile=display_p3)
    result = analyze(str(path))
    assert result.info["colour_space"] == "Display P3"
    red, green, blue = _open(result.thumbnail).convert("RGB").getpixel((32, 32))
    # littleCMS maps Display P3 (40, 200, 60) to sRGB (0, 204, 12).
    assert red < 10
    assert 195 < green < 215
    assert blue < 25


def test_corpus_renditions_fit_and_keep_aspect(corpus_dir):
    for relative_path, (width, height) in EXPECTED_SIZES.items():
        result = analyze(str(corpus_dir / relative_path))
        assert result.thumbnail is not None, relative_path
        thumbnail = _open(result.thumbnail)
        preview = _open(result.preview)
        assert max(thumbnail.size) <= 320, relative_path
        assert max(preview.size) <= 1440, relative_path
        assert (thumbnail.width >= thumbnail.height) == (width >= height), relative_path


def test_orientations_all_upright(corpus_dir):
    folder = corpus_dir / "drive-a/Photos/orientation-test"
    reference = analyze(str(folder / "landscape_1.jpg"))
    reference_signature = _grey_signature(reference.thumbnail)
    # A wrong transform of the reference sets the scale of a real mismatch.
    wrong_transforms = [
        reference_signature.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        reference_signature.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
        reference_signature.transpose(Image.Transpose.ROTATE_180),
    ]
    smallest_wrong = min(
        _mean_difference(reference_signature, wrong) for wrong in wrong_transforms
    )
    assert smallest_wrong > 20

    for orientation in range(2, 9):
        result = analyze(str(folder / f"landscape_{orientation}.jpg"))
        assert result.info["orientation"] == orientation
        signature = _grey_signature(result.thumbnail)
        assert signature.size == reference_signature.size, orientation
        assert _mean_difference(signature, reference_signature) < smallest_wrong / 3, (
            orientation
        )


def test_rotated_video_thumbnail_is_portrait(corpus_dir):
    result = analyze(str(corpus_dir / "drive-a/Videos/2023-09-22/quicktime-hvc1.mov"))
    thumbnail = _open(result.thumbnail)
    assert result.error is None
    assert thumbnail.height > thumbnail.width
    assert result.info["video_codec"] == "hevc"
    assert result.info["captured_at"].startswith("2023-09-22")
    assert result.info["gps"]["latitude"] == pytest.approx(52.4597)


def test_portrait_camera_jpeg_thumbnail_is_portrait(corpus_dir):
    result = analyze(str(corpus_dir / "drive-a/Photos/2015/canon_hdr_YES.jpg"))
    thumbnail = _open(result.thumbnail)
    assert result.info["orientation"] == 6
    assert thumbnail.size == (240, 320)


def test_broken_files_report_errors(corpus_dir):
    for relative_path in BROKEN_WITH_ERROR:
        result = analyze(str(corpus_dir / relative_path))
        assert result.error, relative_path
    truncated = analyze(str(corpus_dir / "drive-a/broken/truncated_jpeg.jpg"))
    assert "truncated" in truncated.error
    assert truncated.thumbnail is not None
    empty = analyze(str(corpus_dir / "drive-a/broken/empty.jpg"))
    assert empty.kind == "other"
    assert empty.thumbnail is None


def test_corrupt_entropy_data_keeps_exif(corpus_dir):
    # libjpeg-turbo decodes this file with only warnings, which Pillow does not
    # surface, so the result has a thumbnail and may have no error.
    result = analyze(str(corpus_dir / "drive-a/broken/corrupted.jpg"))
    assert result.info["camera_make"] == "OLYMPUS IMAGING CORP."
    assert result.info["captured_at"] == "2015-09-08T11:02:17"


def test_camera_metadata_from_corpus(corpus_dir):
    canon = analyze(str(corpus_dir / "drive-a/DCIM/100CANON/Canon_40D.jpg")).info
    assert canon["camera_model"] == "Canon EOS 40D"
    assert canon["captured_at"] == "2008-05-30T15:56:01"
    assert canon["shutter_speed"] == "1/160"
    assert canon["aperture"] == 7.1
    assert canon["iso"] == 100
    gps = analyze(
        str(corpus_dir / "drive-a/Photos/2008/2008-10-22 gps walk/DSCN0010.jpg")
    ).info["gps"]
    assert 43 < gps["latitude"] < 44
    assert 11 < gps["longitude"] < 12
    heic = analyze(str(corpus_dir / "drive-a/Photos/2023/iphone_15_pro.heic")).info
    assert heic["orientation"] == 6
    assert heic["captured_at"] == "2023-10-31T11:44:43+01:00"


def test_pdf_page_count_and_thumbnail(corpus_dir):
    result = analyze(
        str(corpus_dir / "drive-a/Scans/old-documents/pdflatex-4-pages.pdf")
    )
    assert result.kind == "document"
    assert result.info["page_count"] == 4
    assert _open(result.thumbnail).height == 320


def test_raw_preview_is_used(corpus_dir):
    result = analyze(str(corpus_dir / "drive-a/RAW/2019-06-06/canon_eos_6d.dng"))
    assert result.error is None
    assert result.info["camera_model"] == "Canon EOS 6D"
    assert _open(result.thumbnail).size == (320, 213)


def test_non_media_gets_no_renditions(corpus_dir):
    for relative_path in (
        "drive-a/Photos/2008/README.txt",
        "drive-a/.DS_Store",
        "drive-b/notes/example.txt",
    ):
        result = analyze(str(corpus_dir / relative_path))
        assert result.kind == "other", relative_path
        assert result.thumbnail is None, relative_path
        assert result.error is None, relative_path
