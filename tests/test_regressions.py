"""Regression tests, each named after the bug it pins down."""

from __future__ import annotations

import asyncio
import threading

import pytest
from recording_files import RecordingFiles, store_on

from aiokv import KV


class GatedFsyncFiles(RecordingFiles):
    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()

    def fsync(self, fd: int) -> None:
        self.gate.wait()
        super().fsync(fd)


async def test_a_delete_of_a_key_whose_delete_is_not_yet_fsynced_waits_for_that_fsync(
    store_path: str,
) -> None:
    # Found by the kill test: at "fsync", a second delete of a key returned
    # at once because the key was already gone from memory, although the
    # first delete was not durable yet; a kill then brought the key back.
    files = GatedFsyncFiles()
    async with store_on(files, store_path, durability="fsync") as kv:
        await kv.set("k", "v")
        files.gate.clear()
        first = asyncio.create_task(kv.delete("k"))
        await asyncio.sleep(0.02)
        second = asyncio.create_task(kv.delete("k"))
        await asyncio.sleep(0.05)
        assert not first.done() and not second.done()
        files.gate.set()
        assert await first is True and await second is True


def test_a_ttl_too_large_for_a_float_raises_value_error(store_path: str) -> None:
    # Found by the TTL tests: float(10**400) raised OverflowError.
    with KV(store_path) as kv:
        for call in (lambda: kv.set("k", 1, ttl=10**400), lambda: kv.incr("n", ttl=10**400)):
            with pytest.raises(ValueError, match="ttl"):
                call()
        assert kv.get_all() == {}
