"""At "fsync", nothing that depends on a clear() is acknowledged before the
clear is durable.

A clear() removes the log file; the removal is durable only once the
directory is fsynced. Writes queued before the clear (behind a batch in
flight) are superseded by it: before, their ``set()`` returned as soon as the
clear had emptied memory, before that directory fsync, so a power loss then
could bring back the old file without them. Likewise a delete of a key
absent only because of the clear. These tests hold the directory fsync and
the writer thread at chosen points, so the interleaving is the same on
every run.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aiokv import KV
from aiokv._engine import Engine
from aiokv._files import FileSystem

WAIT = 10.0


class HeldFiles(FileSystem):
    """Holds ``fsync_dir`` once armed, until released; may make it fail."""

    def __init__(self) -> None:
        self.armed = False
        self.held = threading.Event()
        self.release = threading.Event()
        self.error: OSError | None = None
        self.write_started = threading.Event()
        self.write_may_end = threading.Event()
        self.write_may_end.set()

    def fsync_dir(self, directory: str) -> None:
        if self.armed:
            self.armed = False
            self.held.set()
            assert self.release.wait(WAIT)
            if self.error is not None:
                raise self.error
        super().fsync_dir(directory)

    def write_synced(self, fd: int, data: bytes | memoryview) -> None:
        self.write_started.set()
        assert self.write_may_end.wait(WAIT)
        super().write_synced(fd, data)


class Call:
    """A call running in a thread: whether it returned, and what it gave."""

    def __init__(self, function: Callable[[], Any]) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = function()
            except BaseException as exc:
                self.error = exc
            self.done.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def outcome(self) -> Any:
        assert self.done.wait(WAIT), "the call never returned"
        if self.error is not None:
            raise self.error
        return self.result


class Gate:
    """Holds the writer thread before it takes its next batch, once ``closed``."""

    def __init__(self) -> None:
        self.closed = False
        self.opened = threading.Event()

    def close(self) -> None:
        self.closed = True

    def open(self) -> None:
        self.opened.set()


def fsync_store(path: Path, files: HeldFiles) -> tuple[KV, Gate]:
    """A KV at "fsync" on ``files``, with a gate before its writer's batches."""
    kv = KV(path, durability="fsync")
    kv._engine = engine = Engine(path, durability="fsync", files=files)
    kv.open()
    gate = Gate()
    original = engine._commit_pending

    def gated() -> None:
        if gate.closed:
            assert gate.opened.wait(WAIT)
        original()

    engine._commit_pending = gated  # type: ignore[method-assign]
    return kv, gate


def clear_with_a_write_queued_behind_a_batch_in_flight(
        path: Path, files: HeldFiles) -> tuple[KV, Gate, Call, Call, Call, Call]:
    kv, gate = fsync_store(path, files)
    kv.set("old", 0)
    files.write_started.clear()
    files.write_may_end.clear()
    in_flight = Call(lambda: kv.set("a", 1))
    assert files.write_started.wait(WAIT)
    gate.close()  # the writer takes no other batch: the clear comes next
    queued = Call(lambda: kv.set("b", 2))  # behind the batch in flight
    engine = kv._engine
    while engine.stats().pending_writes < 2:  # "a" in flight, "b" queued
        threading.Event().wait(0.001)
    files.armed = True
    clearing = Call(kv.clear)  # waits for the batch in flight
    files.write_may_end.set()
    assert in_flight.outcome() is None  # written and fsynced before the clear
    assert files.held.wait(WAIT), "the clear never reached its directory fsync"
    absent = Call(lambda: kv.delete("old"))  # absent only because of the clear
    return kv, gate, in_flight, queued, clearing, absent


def test_writes_superseded_by_a_clear_return_only_once_the_clear_is_durable(
        tmp_path: Path) -> None:
    files = HeldFiles()
    kv, gate, _, queued, clearing, absent = \
        clear_with_a_write_queued_behind_a_batch_in_flight(tmp_path / "state.kv", files)
    try:
        for call in (queued, clearing, absent):
            assert not call.done.wait(0.2), "answered before the clear was durable"
        files.release.set()
        assert queued.outcome() is None
        assert clearing.outcome() is True
        assert absent.outcome() is True
    finally:
        files.release.set()
        gate.open()
    kv.set("after", 3)
    assert kv.get_all() == {"after": 3}
    kv.close()
    with KV(tmp_path / "state.kv") as again:
        assert again.get_all() == {"after": 3}


def test_when_the_clear_cannot_be_made_durable_the_writes_it_superseded_fail(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = HeldFiles()
    files.error = OSError(errno.EIO, "directory fsync failed")
    kv, gate, _, queued, clearing, absent = \
        clear_with_a_write_queued_behind_a_batch_in_flight(tmp_path / "state.kv", files)
    try:
        files.release.set()
        with pytest.raises(OSError, match="directory fsync failed"):
            queued.outcome()
        # KV.clear and KV.delete log the error and say False.
        assert clearing.outcome() is False
        assert absent.outcome() is False
        assert any("clear()" in record.getMessage() for record in caplog.records)
    finally:
        gate.open()
        kv.close()
