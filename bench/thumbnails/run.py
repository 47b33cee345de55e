"""Benchmark the thumbnail pipeline against Debian's vipsthumbnail on 24-megapixel JPEGs.

Usage: .venv/bin/python bench/thumbnails/run.py [--images 12] [--videos 3]

Generates 6000x4000 JPEGs (noise over gradients, so they do not compress
trivially) and short 1080p H.264 clips in a temporary directory. It then times
``analyze`` (preview, thumbnail and metadata per file) in one single-threaded
process, and ``vipsthumbnail`` making the same two sizes of the same files with
VIPS_CONCURRENCY=1, one process per size. Peak memory is each process's
ru_maxrss, collected with wait4. The benchmark's own process stays small, so
the value that Linux carries over from it across exec does not matter.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
IMAGE_SIZE = (6000, 4000)
THUMB_SIZE = 320
PREVIEW_SIZE = 1440
VIDEO_SECONDS = 3
VIDEO_RATE = 30

_GENERATE_IMAGES = """
import sys
import numpy
from PIL import Image

width, height = {width}, {height}
generator = numpy.random.default_rng(int(sys.argv[2]))
x = numpy.linspace(0, 1, width, dtype=numpy.float32)
y = numpy.linspace(0, 1, height, dtype=numpy.float32)[:, None]
base = numpy.stack([x * 200 + y * 40, (1 - x) * 120 + y * 100, y * 180 + 30 * numpy.sin(x * 20)], axis=-1)
noise = generator.normal(0, 18, size=(height, width, 3)).astype(numpy.float32)
pixels = numpy.clip(base + noise, 0, 255).astype(numpy.uint8)
Image.fromarray(pixels).save(sys.argv[1], quality=90)
"""

_GENERATE_VIDEO = """
import sys
import av
import numpy

width, height, frames, rate = 1920, 1080, {frames}, {rate}
generator = numpy.random.default_rng(int(sys.argv[2]))
x = numpy.linspace(0, 255, width, dtype=numpy.float32)
with av.open(sys.argv[1], "w") as container:
    stream = container.add_stream("libx264", rate=rate, options={{"preset": "veryfast"}})
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    for index in range(frames):
        row = numpy.roll(x, index * 16)
        plane = numpy.broadcast_to(row, (height, width))
        noise = generator.normal(0, 10, size=(height // 4, width // 4)).repeat(4, 0).repeat(4, 1)
        pixels = numpy.stack([plane, plane[::-1] * 0.5, plane * 0 + 90], axis=-1) + noise[..., None]
        frame = av.VideoFrame.from_ndarray(numpy.clip(pixels, 0, 255).astype(numpy.uint8), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
"""

# Runs in a fresh interpreter so that its peak memory is the pipeline's alone.
_PRODUCT_WORKER = """
import json, sys, time
from workers.media.analyze import analyze

paths = sys.argv[1:]
analyze(paths[0])  # Warm up imports and the first-call setup outside the timing.
started = time.perf_counter()
for path in paths:
    result = analyze(path, thumb_size={thumb}, preview_size={preview})
    if result.error or result.thumbnail is None:
        raise SystemExit(f"analyze failed for {{path}}: {{result.error}}")
elapsed = time.perf_counter() - started
print(json.dumps({{"seconds": elapsed}}))
"""


def _run_measured(
    command: list[str], environment: dict | None = None
) -> tuple[float, int, bytes]:
    """Run ``command`` and return wall seconds, the child's peak RSS in KiB and its stdout."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, env=environment, cwd=REPOSITORY_ROOT
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{command[0]} failed with status {process.returncode}")
    return elapsed, usage.ru_maxrss, output


def _generate(directory: Path, images: int, videos: int) -> tuple[list[str], list[str]]:
    image_paths, video_paths = [], []
    image_script = _GENERATE_IMAGES.format(width=IMAGE_SIZE[0], height=IMAGE_SIZE[1])
    for index in range(images):
        path = directory / f"photo-{index:02d}.jpg"
        subprocess.run(
            [sys.executable, "-c", image_script, str(path), str(index)], check=True
        )
        image_paths.append(str(path))
    video_script = _GENERATE_VIDEO.format(
        frames=VIDEO_SECONDS * VIDEO_RATE, rate=VIDEO_RATE
    )
    for index in range(videos):
        path = directory / f"clip-{index:02d}.mp4"
        subprocess.run(
            [sys.executable, "-c", video_script, str(path), str(index)], check=True
        )
        video_paths.append(str(path))
    return image_paths, video_paths


def _time_product(paths: list[str]) -> tuple[float, int]:
    script = _PRODUCT_WORKER.format(thumb=THUMB_SIZE, preview=PREVIEW_SIZE)
    environment = dict(os.environ)
    environment["PYTHONPATH"] = str(REPOSITORY_ROOT)
    _, peak_kb, output = _run_measured(
        [sys.executable, "-c", script, *paths], environment
    )
    return json.loads(output)["seconds"], peak_kb


def _time_vipsthumbnail(
    vipsthumbnail: str, paths: list[str], output_directory: Path
) -> tuple[float, int]:
    environment = dict(os.environ)
    environment["VIPS_CONCURRENCY"] = "1"
    total_seconds = 0.0
    peak_kb = 0
    for size in (PREVIEW_SIZE, THUMB_SIZE):
        command = [
            vipsthumbnail,
            "--size",
            str(size),
            "--output",
            f"{output_directory}/%s_{size}.webp[Q=80]",
            *paths,
        ]
        seconds, child_peak_kb, _ = _run_measured(command, environment)
        total_seconds += seconds
        peak_kb = max(peak_kb, child_peak_kb)
    return total_seconds, peak_kb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=int, default=12, help="number of 6000x4000 JPEGs to generate"
    )
    parser.add_argument(
        "--videos",
        type=int,
        default=3,
        help="number of 3 s 1080p H.264 clips to generate",
    )
    arguments = parser.parse_args()

    vipsthumbnail = shutil.which("vipsthumbnail")
    with tempfile.TemporaryDirectory(prefix="thumbnail-bench-") as temporary:
        directory = Path(temporary)
        print(
            f"generating {arguments.images} JPEGs of {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} "
            f"and {arguments.videos} 1080p clips in {directory}",
            flush=True,
        )
        image_paths, video_paths = _generate(
            directory, arguments.images, arguments.videos
        )
        megabytes = (
            sum(os.path.getsize(path) for path in image_paths) / len(image_paths) / 1e6
        )
        print(f"mean JPEG size: {megabytes:.1f} MB")

        product_seconds, product_peak_kb = _time_product(image_paths)
        product_rate = len(image_paths) / product_seconds
        print(
            f"analyze (preview {PREVIEW_SIZE} + thumbnail {THUMB_SIZE} + metadata): "
            f"{product_rate:.2f} images/s per core, peak RSS {product_peak_kb / 1024:.0f} MiB"
        )

        if vipsthumbnail is None:
            print("vipsthumbnail not found: install Debian's libvips-tools to compare")
        else:
            output_directory = directory / "vips"
            output_directory.mkdir()
            vips_seconds, vips_peak_kb = _time_vipsthumbnail(
                vipsthumbnail, image_paths, output_directory
            )
            vips_rate = len(image_paths) / vips_seconds
            print(
                f"vipsthumbnail (sizes {PREVIEW_SIZE} and {THUMB_SIZE}, VIPS_CONCURRENCY=1): "
                f"{vips_rate:.2f} images/s per core, peak RSS {vips_peak_kb / 1024:.0f} MiB"
            )
            print(f"ratio analyze / vipsthumbnail: {product_rate / vips_rate:.2f}x")

        if video_paths:
            video_seconds, video_peak_kb = _time_product(video_paths)
            print(
                f"analyze on 1080p H.264 clips: {len(video_paths) / video_seconds:.2f} videos/s per core, "
                f"peak RSS {video_peak_kb / 1024:.0f} MiB"
            )


if __name__ == "__main__":
    main()
