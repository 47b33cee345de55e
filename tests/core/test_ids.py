"""Ids: 32 hex characters, never repeated, not even across a fork."""

import os
import re

from core.db import new_id


def test_ids_are_hex_and_distinct():
    ids = [new_id() for _ in range(5000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in ids)
    assert len(set(ids)) == len(ids)


def test_forked_child_does_not_repeat_parent_ids():
    new_id()  # the parent now has a stock of ids drawn ahead
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write_end, " ".join(new_id() for _ in range(300)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child_ids = set(pipe.read().decode().split())
    os.waitpid(pid, 0)
    parent_ids = {new_id() for _ in range(300)}
    assert len(child_ids) == 300
    assert not child_ids & parent_ids
