"""A small HTTP client for the services' APIs, with readable errors."""

from __future__ import annotations

from urllib.parse import quote

import click
import requests

from cli.config import ClientConfig


def q(value: str) -> str:
    """Quote a name or id for use as one segment of a URL path."""
    return quote(str(value), safe="")


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
        return f"HTTP {response.status_code}: {response.text[:200]}"
    text = error.get("message", "request failed")
    if response.status_code == 401:
        text += " (run `archive init`, or pass --token / set ARCHIVE_TOKEN)"
    return text
