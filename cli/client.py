"""A small HTTP client for the services' APIs, with readable errors."""

from __future__ import annotations

from urllib.parse import quote, unquote

import click
import requests

from cli.config import ClientConfig
from cli.output import escape_controls

DOT_SEGMENTS = (".", "..")


def q(value: str) -> str:
    """Quote a name or id for use as one segment of a URL path.

    Dots are unreserved characters, so ``q("..")`` is still ``..``:
    ``ApiClient.request`` rejects a path with such a segment.
    """
    return quote(str(value), safe="")


def validate_path(path: str) -> None:
    """Raise click.UsageError unless every segment of ``path`` names one resource.

    A segment must not be empty, ``.`` or ``..``, before or after
    percent-decoding. requests 2.34 resolves ``..`` segments and decodes
    ``%2e`` to ``.`` before it sends a request, and a server may treat a
    decoded ``%2F`` as a separator. Such a segment could reach another
    endpoint than the one the command built.
    """
    route = path.split("?", 1)[0]
    segments = route.split("/")
    if segments[0] != "":
        raise click.UsageError(f"invalid request path {path!r}: it must start with '/'")
    for segment in segments[1:]:
        decoded_parts = unquote(segment).split("/")
        if segment == "" or any(part in DOT_SEGMENTS for part in decoded_parts):
            raise click.UsageError(
                f"invalid id or name {unquote(segment)!r} in request path {path!r}: "
                "a path segment must not be empty, '.' or '..'"
            )


class ApiClient:
    def __init__(self, config: ClientConfig, timeout: float = 30.0):
        self.config = config
        self.timeout = timeout
        self.session = requests.Session()
        if config.token:
            self.session.headers["Authorization"] = f"Bearer {config.token}"

    def _base(self, service: str) -> str:
        return getattr(self.config, f"{service}_url")

    def request(self, method: str, path: str, service: str = "catalog", **kwargs):
        validate_path(path)
        url = self._base(service) + path
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.ConnectionError:
            raise click.ClickException(
                f"cannot reach the {service} service at {self._base(service)}; "
                "is `archive up` running, or is --url right?"
            ) from None
        except requests.Timeout:
            raise click.ClickException(f"the {service} service timed out on {path}") from None
        if response.status_code >= 400:
            raise click.ClickException(_error_text(response))
        return response

    def get(self, path, /, service="catalog", **params):
        params = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, service, params=params).json()

    def post(self, path, body=None, service="catalog", **kwargs):
        response = self.request("POST", path, service, json=body, **kwargs)
        return response.json() if response.content else {}

    def patch(self, path, body, service="catalog"):
        return self.request("PATCH", path, service, json=body).json()

    def delete(self, path, service="catalog"):
        response = self.request("DELETE", path, service)
        return response.json() if response.content else {}


def _error_text(response) -> str:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {escape_controls(response.text[:200])}"
    text = escape_controls(error.get("message", "request failed"))
    if response.status_code == 401:
        text += " (run `archive init`, or pass --token / set ARCHIVE_TOKEN)"
    return text
