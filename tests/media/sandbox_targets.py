"""Misbehaving analysis targets that the sandbox tests run in the child process."""

from __future__ import annotations

import os
import time


def sleep_forever(path, **options):
    while True:
        time.sleep(60)


def allocate_without_bound(path, **options):
    blocks = []
    while True:
        blocks.append(bytearray(64 * 1024 * 1024))


def abort(path, **options):
    os.abort()
