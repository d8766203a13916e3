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
from scripted_files import Gate as FileGate
from scripted_files import ScriptedFiles

from aiokv import KV
from aiokv._engine import Engine

WAIT = 10.0


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


def fsync_store(path: Path, files: ScriptedFiles) -> tuple[KV, Gate]:
    """A KV at "fsync" on ``files``, with a gate before its writer's batches."""
    kv = KV(path, durability="fsync")
    kv._engine = engine = Engine(path, durability="fsync", files=files)
    kv.open()
    gate = Gate()
    original = engine.worker.commit_pending

    def gated() -> None:
        if gate.closed:
            assert gate.opened.wait(WAIT)
        original()

    engine.worker.commit_pending = gated  # type: ignore[method-assign]
    return kv, gate


def clear_with_a_write_queued_behind_a_batch_in_flight(
        path: Path, files: ScriptedFiles,
) -> tuple[KV, Gate, FileGate, Call, Call, Call, Call]:
    """Returns also the gate holding the clear's directory fsync."""
    kv, gate = fsync_store(path, files)
    kv.set("old", 0)
    batch = files.hold("write_synced")
    in_flight = Call(lambda: kv.set("a", 1))
    batch.wait_reached()
    gate.close()  # the writer takes no other batch: the clear comes next
    queued = Call(lambda: kv.set("b", 2))  # behind the batch in flight
    engine = kv._engine
    while engine.stats().pending_writes < 2:  # "a" in flight, "b" queued
        threading.Event().wait(0.001)
    directory = files.hold("fsync_dir")
    clearing = Call(kv.clear)  # waits for the batch in flight
    batch.release()
    assert in_flight.outcome() is None  # written and fsynced before the clear
    directory.wait_reached()  # the clear is at its directory fsync
    absent = Call(lambda: kv.delete("old"))  # absent only because of the clear
    return kv, gate, directory, in_flight, queued, clearing, absent


def test_writes_superseded_by_a_clear_return_only_once_the_clear_is_durable(
        tmp_path: Path) -> None:
    kv, gate, directory, _, queued, clearing, absent = \
        clear_with_a_write_queued_behind_a_batch_in_flight(tmp_path / "state.kv",
                                                           ScriptedFiles())
    try:
        for call in (queued, clearing, absent):
            assert not call.done.wait(0.2), "answered before the clear was durable"
        directory.release()
        assert queued.outcome() is None
        assert clearing.outcome() is True
        assert absent.outcome() is True
    finally:
        directory.release()
        gate.open()
    kv.set("after", 3)
    assert kv.get_all() == {"after": 3}
    kv.close()
    with KV(tmp_path / "state.kv") as again:
        assert again.get_all() == {"after": 3}


def test_when_the_clear_cannot_be_made_durable_the_writes_it_superseded_fail(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    kv, gate, directory, _, queued, clearing, absent = \
        clear_with_a_write_queued_behind_a_batch_in_flight(tmp_path / "state.kv",
                                                           ScriptedFiles())
    try:
        directory.release(OSError(errno.EIO, "directory fsync failed"))
        with pytest.raises(OSError, match="directory fsync failed"):
            queued.outcome()
        # KV.clear and KV.delete log the error and say False.
        assert clearing.outcome() is False
        assert absent.outcome() is False
        assert any("clear()" in record.getMessage() for record in caplog.records)
    finally:
        gate.open()
        kv.close()
