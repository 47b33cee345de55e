"""Fixtures for the media analysis tests: the real media corpus and its manifest."""

from __future__ import annotations

import csv
import struct
import sys
import zlib
from pathlib import Path

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
if str(REPOSITORY_ROOT) not in sys.path:
    # Lets `pytest tests/media` import `workers` without an installed package.
    sys.path.insert(0, str(REPOSITORY_ROOT))

from tests.conftest import corpus_dir as configured_corpus_dir  # noqa: E402


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """Folder of the real media corpus: ARCHIVE_CORPUS_DIR, or the tests/conftest.py default."""
    directory = configured_corpus_dir()
    if not (directory / "MANIFEST.tsv").is_file():
        pytest.skip(f"media corpus not found at {directory} (set ARCHIVE_CORPUS_DIR)")
    return directory.resolve()


@pytest.fixture(scope="session")
def manifest(corpus_dir: Path) -> list[dict[str, str]]:
    """Rows of the corpus MANIFEST.tsv, one dict per file."""
    with open(corpus_dir / "MANIFEST.tsv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


@pytest.fixture
def bomb_png(tmp_path: Path) -> Path:
    """A valid PNG of a few KB declaring 50,000 x 50,000 greyscale pixels."""
    width = height = 50_000

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    # Only the first 16 rows are stored, but decoding would allocate 2.5 GB for the declared size.
    rows = zlib.compress(b"\x00" * (width + 1) * 16, 9)
    path = tmp_path / "bomb.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", rows)
        + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture
def archive(catalog_app, tmp_path: Path):
    """The ``archive`` command against the catalog app served over HTTP."""
    from tests.cli.conftest import ArchiveCli
    from tests.collections.conftest import serve

    server, url = serve(catalog_app)
    yield ArchiveCli(url=url, config_path=tmp_path / "cli-config.json")
    server.shutdown()
