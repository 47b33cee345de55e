"""Settings read from environment variables, with the embedded defaults.

Every variable is parsed by a typed converter. A bad value raises
``SettingsError`` naming the variable, so a service stops at start-up with a
message instead of failing later.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse


class SettingsError(ValueError):
    """An environment variable contains a value that cannot be used."""


def _text(env, name, default):
    value = env.get(name)
    if value is None or value == "":
        return default
    return value


def _int(env, name, default, minimum=None, maximum=None):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is invalid: expected an integer") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name}={value} is invalid: the minimum is {minimum}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name}={value} is invalid: the maximum is {maximum}")
    return value


def _bool(env, name, default):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name}={raw!r} is invalid: expected true or false")


def _choice(env, name, default, choices):
    value = _text(env, name, default)
    if value not in choices:
        allowed = ", ".join(sorted(choices))
        raise SettingsError(f"{name}={value!r} is invalid: expected one of {allowed}")
    return value


def _url(env, name, default, schemes):
    value = _text(env, name, default)
    if value is None:
        return None
    parsed = urlparse(value)
    scheme = parsed.scheme
    if scheme in HTTP_SCHEMES and not parsed.hostname:
        raise SettingsError(f"{name}={value!r} is invalid: the URL has no host")
    if scheme not in schemes:
        allowed = ", ".join(sorted(schemes))
        raise SettingsError(
            f"{name}={value!r} is invalid: the URL scheme must be one of {allowed}"
        )
    return value.rstrip("/") if scheme.startswith("http") else value


def _endpoint(env, name):
    value = _text(env, name, None)
    if value is not None and ("/" in value or not value.strip()):
        raise SettingsError(
            f"{name}={value!r} is invalid: expected host:port without a scheme"
        )
    return value


DATABASE_SCHEMES = {"sqlite", "postgresql", "postgresql+psycopg"}
REDIS_SCHEMES = {"redis", "rediss", "redis+socket", "unix"}
HTTP_SCHEMES = {"http", "https"}


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    catalog_database_url: str
    collections_database_url: str
    sharing_database_url: str
    redis_url: str | None
    object_store: str
    s3_endpoint: str | None
    s3_access_key: str | None
    s3_secret_key: str | None
    s3_bucket: str
    s3_secure: bool
    catalog_url: str
    collections_url: str
    sharing_url: str
    public_url: str
    drive_host: str
    internal_secret: str | None
    log_level: str
    log_format: str
    scan_batch_size: int
    scan_commit_seconds: int
    auto_migrate: bool
    redis_key_prefix: str
    stale_after_seconds: int
    export_retention_hours: int
    # 0 turns the Celery worker's metrics HTTP server off.
    worker_metrics_port: int

    @property
    def is_embedded_redis(self) -> bool:
        return self.redis_url is None


def load_settings(env: dict | None = None) -> Settings:
    """Build settings from ``env`` (``os.environ`` by default)."""
    env = os.environ if env is None else env
    data_dir = Path(
        _text(env, "ARCHIVE_DATA_DIR", str(Path.home() / ".local/share/archive"))
    ).expanduser()

    def sqlite_default(name):
        return f"sqlite:///{data_dir / 'db' / (name + '.sqlite3')}"

    catalog_port = _int(env, "CATALOG_PORT", 5101, 1, 65535)
    collections_port = _int(env, "COLLECTIONS_PORT", 5102, 1, 65535)
    sharing_port = _int(env, "SHARING_PORT", 5103, 1, 65535)
    sharing_url = _url(
        env, "SHARING_URL", f"http://127.0.0.1:{sharing_port}", HTTP_SCHEMES
    )
    return Settings(
        data_dir=data_dir,
        catalog_database_url=_url(
            env, "CATALOG_DATABASE_URL", sqlite_default("catalog"), DATABASE_SCHEMES
        ),
        collections_database_url=_url(
            env,
            "COLLECTIONS_DATABASE_URL",
            sqlite_default("collections"),
            DATABASE_SCHEMES,
        ),
        sharing_database_url=_url(
            env, "SHARING_DATABASE_URL", sqlite_default("sharing"), DATABASE_SCHEMES
        ),
        redis_url=_url(env, "REDIS_URL", None, REDIS_SCHEMES),
        object_store=_choice(env, "OBJECT_STORE", "local", {"local", "s3"}),
        s3_endpoint=_endpoint(env, "S3_ENDPOINT"),
        s3_access_key=_text(env, "S3_ACCESS_KEY", None),
        s3_secret_key=_text(env, "S3_SECRET_KEY", None),
        s3_bucket=_text(env, "S3_BUCKET", "archive"),
        s3_secure=_bool(env, "S3_SECURE", False),
        catalog_url=_url(
            env, "CATALOG_URL", f"http://127.0.0.1:{catalog_port}", HTTP_SCHEMES
        ),
        collections_url=_url(
            env,
            "COLLECTIONS_URL",
            f"http://127.0.0.1:{collections_port}",
            HTTP_SCHEMES,
        ),
        sharing_url=sharing_url,
        public_url=_url(env, "PUBLIC_URL", sharing_url, HTTP_SCHEMES),
        drive_host=_text(env, "ARCHIVE_HOST", socket.gethostname()),
        internal_secret=_text(env, "INTERNAL_SECRET", None),
        log_level=_choice(
            env, "LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR"}
        ),
        log_format=_choice(env, "LOG_FORMAT", "console", {"console", "json"}),
        scan_batch_size=_int(env, "SCAN_BATCH_SIZE", 2000, 10, 100_000),
        scan_commit_seconds=_int(env, "SCAN_COMMIT_SECONDS", 10, 0, 3600),
        auto_migrate=_bool(env, "AUTO_MIGRATE", True),
        redis_key_prefix=_text(env, "REDIS_KEY_PREFIX", ""),
        stale_after_seconds=_int(env, "STALE_AFTER_SECONDS", 120, 2, 86_400),
        export_retention_hours=_int(env, "EXPORT_RETENTION_HOURS", 72, 1, 24 * 365),
        worker_metrics_port=_int(env, "WORKER_METRICS_PORT", 0, 0, 65535),
    )


_settings: Settings | None = None


def get_settings() -> Settings:
    """Return the process-wide settings, loading them on first use."""
    global _settings
    if _settings is None:
        _settings = load_settings()
    return _settings


def reset_settings() -> None:
    """Forget cached settings so the next ``get_settings`` reads the environment."""
    global _settings
    _settings = None
