"""Start-up checks of the embedded stack that need no running stack."""

from __future__ import annotations

import socket

import pytest

from cli.stack_runner import EmbeddedStack


def test_port_in_use_named_before_start(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as spare:
            spare.bind(("127.0.0.1", 0))
            free = spare.getsockname()[1]
        stack = EmbeddedStack(tmp_path / "data")
        stack.env = {"CATALOG_PORT": str(free), "COLLECTIONS_PORT": str(busy), "SHARING_PORT": str(free)}
        with pytest.raises(RuntimeError) as raised:
            stack._check_ports_free()
    message = str(raised.value)
    assert f"port {busy} for the collections service is in use" in message
    assert "COLLECTIONS_PORT" in message
