"""``archive links`` against the sharing service over real HTTP."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cli.main import cli
from tests.sharing.conftest import serve


def test_links_commands(world, sharing_app, services, tmp_path):
    server, sharing_url = serve(sharing_app)
    env = {
        "ARCHIVE_CONFIG": str(tmp_path / "archive.json"),
        "ARCHIVE_URL": services["catalog"],
        "ARCHIVE_COLLECTIONS_URL": services["collections"],
        "ARCHIVE_SHARING_URL": sharing_url,
        "ARCHIVE_TOKEN": world["owner"].token,
    }

    def run(*args, input=None):
        result = CliRunner().invoke(cli, list(args), env=env, input=input)
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result

    try:
        output = run(
            "links", "create", "Summer shoot", "--label", "Agency", "--expires", "7d",
            "--password", "--allow-download", "--json",
            input="correct horse battery\ncorrect horse battery\n",
        ).stdout  # fmt: skip
        # The hidden password prompts come first on stdout.
        created = json.loads(output[output.index("{") :])
        assert created["label"] == "Agency"
        assert created["has_password"] is True
        assert created["allow_download"] is True
        assert created["expires_at"] is not None
        assert "/s/" in created["url"]

        listed = json.loads(run("links", "ls", world["collection"]["id"], "--json").stdout)
        assert created["id"] in [item["id"] for item in listed["items"]]
        human = run("links", "show", created["id"]).stdout
        assert created["url"] in human
        revoked = json.loads(run("links", "revoke", created["id"], "--json").stdout)
        assert revoked["state"] == "revoked"

        weak = CliRunner().invoke(
            cli, ["links", "create", "Summer shoot", "--label", "x", "--password"],
            env=env, input="short\nshort\n",
        )  # fmt: skip
        assert weak.exit_code != 0
        assert "too short" in weak.output
    finally:
        server.shutdown()
