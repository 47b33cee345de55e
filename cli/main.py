"""Entry point of the ``archive`` command."""

from __future__ import annotations

import click

from cli import config as cli_config
from cli.client import ApiClient


class Context:
    def __init__(self, url: str | None, token: str | None):
        self.url = url
        self.token = token
        self._client: ApiClient | None = None

    @property
    def client(self) -> ApiClient:
        if self._client is None:
            self._client = ApiClient(cli_config.resolve(self.url, self.token))
        return self._client


@click.group()
@click.option("--url", envvar="ARCHIVE_URL", help="Catalog service URL.")
@click.option("--token", envvar="ARCHIVE_TOKEN", help="API token.")
@click.pass_context
def cli(ctx, url, token):
    """Catalog media drives, curate collections and share them."""
    ctx.obj = Context(url, token)


def _register() -> None:
    from cli.commands import (
        agent,
        collections,
        drives,
        exports,
        files,
        groups,
        links,
        org,
        stack,
    )

    for module in (stack, org, drives, files, groups, collections, links, exports, agent):
        module.register(cli)


_register()


def main() -> None:
    cli(prog_name="archive")
