"""Fixtures for the media analysis tests: the real media corpus and its manifest."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
if str(REPOSITORY_ROOT) not in sys.path:
    # Lets `pytest tests/media` import `workers` without an installed package.
    sys.path.insert(0, str(REPOSITORY_ROOT))

DEFAULT_CORPUS_DIR = REPOSITORY_ROOT / ".." / "shared" / "corpus"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """Directory of the real media corpus, from ARCHIVE_CORPUS_DIR or next to the repository."""
    directory = Path(os.environ.get("ARCHIVE_CORPUS_DIR", DEFAULT_CORPUS_DIR))
    if not (directory / "MANIFEST.tsv").is_file():
        pytest.skip(f"media corpus not found at {directory} (set ARCHIVE_CORPUS_DIR)")
    return directory.resolve()


@pytest.fixture(scope="session")
def manifest(corpus_dir: Path) -> list[dict[str, str]]:
    """Rows of the corpus MANIFEST.tsv, one dict per file."""
    with open(corpus_dir / "MANIFEST.tsv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))
