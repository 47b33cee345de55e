"""Where the command line finds the services and its API token.

Flags win over environment variables (``ARCHIVE_URL``, ``ARCHIVE_TOKEN``),
which win over the config file that ``archive init`` writes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


def config_path() -> Path:
    explicit = os.environ.get("ARCHIVE_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "archive" / "config.json"


@dataclass
class ClientConfig:
    catalog_url: str
    collections_url: str
    sharing_url: str
    token: str | None


def load_file() -> dict:
    path = config_path()
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: cannot read the config file {path}: {error}") from None


def save_file(data: dict) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def resolve(url: str | None, token: str | None) -> ClientConfig:
    stored = load_file()
    catalog = url or os.environ.get("ARCHIVE_URL") or stored.get("catalog_url")
    catalog = (catalog or "http://127.0.0.1:5101").rstrip("/")
    return ClientConfig(
        catalog_url=catalog,
        collections_url=(
            os.environ.get("ARCHIVE_COLLECTIONS_URL")
            or stored.get("collections_url")
            or "http://127.0.0.1:5102"
        ).rstrip("/"),
        sharing_url=(
            os.environ.get("ARCHIVE_SHARING_URL")
            or stored.get("sharing_url")
            or "http://127.0.0.1:5103"
        ).rstrip("/"),
        token=token or os.environ.get("ARCHIVE_TOKEN") or stored.get("token"),
    )
