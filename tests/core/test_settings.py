"""Tests for ``core.settings.load_settings`` with an explicit environment."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from core.settings import SettingsError, load_settings


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


def test_defaults_are_embedded(data_dir):
    settings = load_settings({"ARCHIVE_DATA_DIR": str(data_dir)})

    assert settings.data_dir == data_dir
    assert settings.catalog_database_url == f"sqlite:///{data_dir}/db/catalog.sqlite3"
    assert (
        settings.collections_database_url
        == f"sqlite:///{data_dir}/db/collections.sqlite3"
    )
    assert settings.sharing_database_url == f"sqlite:///{data_dir}/db/sharing.sqlite3"
    assert settings.redis_url is None
    assert settings.is_embedded_redis
    assert settings.object_store == "local"


def test_defaults_for_other_settings(data_dir):
    settings = load_settings({"ARCHIVE_DATA_DIR": str(data_dir)})

    assert settings.s3_endpoint is None
    assert settings.s3_access_key is None
    assert settings.s3_secret_key is None
    assert settings.s3_bucket == "archive"
    assert settings.s3_secure is False
    assert settings.catalog_url == "http://127.0.0.1:5101"
    assert settings.collections_url == "http://127.0.0.1:5102"
    assert settings.sharing_url == "http://127.0.0.1:5103"
    assert settings.public_url == "http://127.0.0.1:5103"
    assert settings.drive_host == socket.gethostname()
    assert settings.internal_secret is None
    assert settings.log_level == "INFO"
    assert settings.log_format == "console"
    assert settings.scan_batch_size == 2000
    assert settings.auto_migrate is True


def test_default_data_dir_is_in_home():
    settings = load_settings({})

    assert settings.data_dir == Path.home() / ".local/share/archive"


def test_data_dir_expands_home():
    settings = load_settings({"ARCHIVE_DATA_DIR": "~/archive-data"})

    assert settings.data_dir == Path.home() / "archive-data"


def test_empty_value_means_default(data_dir):
    settings = load_settings(
        {
            "ARCHIVE_DATA_DIR": str(data_dir),
            "REDIS_URL": "",
            "OBJECT_STORE": "",
            "CATALOG_PORT": "",
            "S3_SECURE": "",
        }
    )

    assert settings.redis_url is None
    assert settings.object_store == "local"
    assert settings.catalog_url == "http://127.0.0.1:5101"
    assert settings.s3_secure is False


def test_production_values(data_dir):
    env = {
        "ARCHIVE_DATA_DIR": str(data_dir),
        "CATALOG_DATABASE_URL": "postgresql://archive:pw@postgres:5432/catalog",
        "COLLECTIONS_DATABASE_URL": "postgresql+psycopg://archive@postgres/collections",
        "SHARING_DATABASE_URL": "postgresql://archive:pw@postgres:5432/sharing",
        "REDIS_URL": "redis://redis:6379/0",
        "OBJECT_STORE": "s3",
        "S3_ENDPOINT": "minio:9000",
        "S3_ACCESS_KEY": "access",
        "S3_SECRET_KEY": "secret",
        "S3_BUCKET": "media",
        "S3_SECURE": "true",
        "CATALOG_URL": "http://catalog:5101/",
        "COLLECTIONS_URL": "http://collections:5102",
        "SHARING_URL": "http://sharing:5103",
        "PUBLIC_URL": "https://archive.example.org/",
        "ARCHIVE_HOST": "nas1",
        "INTERNAL_SECRET": "shared-secret",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "json",
        "SCAN_BATCH_SIZE": "500",
        "AUTO_MIGRATE": "false",
    }

    settings = load_settings(env)

    assert settings.catalog_database_url == env["CATALOG_DATABASE_URL"]
    assert settings.collections_database_url == env["COLLECTIONS_DATABASE_URL"]
    assert settings.sharing_database_url == env["SHARING_DATABASE_URL"]
    assert settings.redis_url == "redis://redis:6379/0"
    assert not settings.is_embedded_redis
    assert settings.object_store == "s3"
    assert settings.s3_endpoint == "minio:9000"
    assert settings.s3_access_key == "access"
    assert settings.s3_secret_key == "secret"
    assert settings.s3_bucket == "media"
    assert settings.s3_secure is True
    # HTTP URLs lose a trailing slash, so callers can append paths.
    assert settings.catalog_url == "http://catalog:5101"
    assert settings.collections_url == "http://collections:5102"
    assert settings.sharing_url == "http://sharing:5103"
    assert settings.public_url == "https://archive.example.org"
    assert settings.drive_host == "nas1"
    assert settings.internal_secret == "shared-secret"
    assert settings.log_level == "WARNING"
    assert settings.log_format == "json"
    assert settings.scan_batch_size == 500
    assert settings.auto_migrate is False


def test_ports_set_default_urls(data_dir):
    settings = load_settings(
        {
            "ARCHIVE_DATA_DIR": str(data_dir),
            "CATALOG_PORT": "6101",
            "COLLECTIONS_PORT": "6102",
            "SHARING_PORT": "6103",
        }
    )

    assert settings.catalog_url == "http://127.0.0.1:6101"
    assert settings.collections_url == "http://127.0.0.1:6102"
    assert settings.sharing_url == "http://127.0.0.1:6103"
    assert settings.public_url == "http://127.0.0.1:6103"


def test_public_url_follows_sharing_url(data_dir):
    settings = load_settings(
        {"ARCHIVE_DATA_DIR": str(data_dir), "SHARING_URL": "http://share.lan:80"}
    )

    assert settings.public_url == "http://share.lan:80"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("1", True),
        ("true", True),
        ("Yes", True),
        (" on ", True),
        ("0", False),
        ("FALSE", False),
        ("no", False),
        ("off", False),
    ],
)
def test_boolean_spellings(data_dir, raw, expected):
    settings = load_settings({"ARCHIVE_DATA_DIR": str(data_dir), "S3_SECURE": raw})

    assert settings.s3_secure is expected


BAD_VALUES = [
    ("CATALOG_PORT", "abc"),
    ("CATALOG_PORT", "51.01"),
    ("COLLECTIONS_PORT", "0"),
    ("SHARING_PORT", "65536"),
    ("SHARING_PORT", "-1"),
    ("S3_SECURE", "maybe"),
    ("AUTO_MIGRATE", "2"),
    ("OBJECT_STORE", "gcs"),
    ("OBJECT_STORE", "S3"),
    ("CATALOG_DATABASE_URL", "mysql://archive@db/catalog"),
    ("COLLECTIONS_DATABASE_URL", "postgres://archive@db/collections"),
    ("SHARING_DATABASE_URL", "/var/lib/archive/sharing.sqlite3"),
    ("REDIS_URL", "http://redis:6379"),
    ("CATALOG_URL", "ftp://catalog:5101"),
    ("COLLECTIONS_URL", "collections:5102"),
    ("SHARING_URL", "sharing.internal"),
    ("PUBLIC_URL", "ws://archive.example.org"),
    ("LOG_LEVEL", "VERBOSE"),
    ("LOG_FORMAT", "xml"),
    ("SCAN_BATCH_SIZE", "5"),
    ("SCAN_BATCH_SIZE", "100001"),
]


@pytest.mark.parametrize("name, value", BAD_VALUES)
def test_bad_value_raises_settings_error(data_dir, name, value):
    env = {"ARCHIVE_DATA_DIR": str(data_dir), name: value}

    with pytest.raises(SettingsError) as info:
        load_settings(env)

    message = str(info.value)
    assert message.startswith(f"{name}=")
    assert value in message
    assert "invalid" in message


def test_settings_error_is_value_error():
    assert issubclass(SettingsError, ValueError)


# Values that pass the scheme check but cannot work. Each should raise
# SettingsError at start-up instead of failing on first use.
UNCHECKED_BAD_VALUES = [
    # No host: requests later fails with "Invalid URL ... No host supplied".
    ("CATALOG_URL", "http://"),
    ("PUBLIC_URL", "https:///shares"),
    # The minio client takes host:port and raises ValueError on a scheme.
    ("S3_ENDPOINT", "http://minio:9000"),
]


@pytest.mark.parametrize("name, value", UNCHECKED_BAD_VALUES)
def test_unusable_value_raises_settings_error(data_dir, name, value):
    env = {"ARCHIVE_DATA_DIR": str(data_dir), name: value}

    with pytest.raises(SettingsError) as info:
        load_settings(env)

    assert str(info.value).startswith(f"{name}=")
