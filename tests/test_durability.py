"""The three durability levels keep their promises, seen through the file seam."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scripted_files import ScriptedFiles, store_on

from aiokv._files import OneCallFileSystem
from aiokv._recovery import replay


async def test_at_fsync_level_a_write_returns_only_after_its_record_is_fsynced(
    store_path: str,
) -> None:
    files = ScriptedFiles()
    async with store_on(files, store_path, durability="fsync") as kv:
        for i in range(20):
            files.clear_calls()
            await kv.set("k", i)
            names = files.names()
            assert "write" in names and "fsync" in names[names.index("write"):], names


async def test_at_fsync_level_concurrent_writers_share_one_fsync(store_path: str) -> None:
    files = ScriptedFiles()
    async with store_on(files, store_path, durability="fsync") as kv:
        await kv.set("warm-up", 0)
        gate = files.hold("fsync")  # the next fsync blocks: writers pile up behind it
        files.clear_calls()
        first = asyncio.create_task(kv.set("first", 0))
        while not gate.reached.is_set():  # the first batch is being fsynced
            await asyncio.sleep(0.001)
        others = [asyncio.create_task(kv.set(f"k{i}", i)) for i in range(200)]
        await asyncio.sleep(0.05)
        assert not any(task.done() for task in [first, *others])
        gate.release()
        await asyncio.gather(first, *others)
        assert files.names().count("fsync") == 2  # the 200 waiting writers: one fsync


@pytest.mark.parametrize("mapping", [True, False], ids=["mapped", "write"])
async def test_at_flush_level_a_write_is_handed_to_the_os_before_it_returns(
    store_path: str, mapping: bool,
) -> None:
    files = ScriptedFiles(mapping=mapping)
    async with store_on(files, store_path, fsync_interval=30.0) as kv:
        await kv.set("warm-up", 0)
        files.clear_calls()
        await kv.set("k", 1)
        # Through the map, the record is copied into the page cache with no
        # system call at all; otherwise it takes one write(2).
        assert files.names() == ([] if mapping else ["write"])
        # Either way the OS has it: another descriptor reads it back at once.
        assert replay(Path(store_path).read_bytes()).entries["k"] == 1


async def test_at_flush_level_the_file_is_fsynced_within_fsync_interval(
    store_path: str,
) -> None:
    files = ScriptedFiles()
    async with store_on(files, store_path, fsync_interval=0.2) as kv:
        await kv.set("warm-up", 0)
        await asyncio.sleep(0.3)
        files.clear_calls()
        await kv.set("k", 1)
        written_at = time.monotonic()
        await asyncio.sleep(0.6)
        fsyncs = [call for call in files.calls if call.name == "fsync"]
        assert fsyncs, files.names()
        assert fsyncs[0].time - written_at <= 0.2 + 0.25  # the interval, plus scheduling


async def test_at_buffered_level_records_reach_the_os_within_flush_interval(
    store_path: str,
) -> None:
    files = ScriptedFiles()
    async with store_on(files, store_path, durability="buffered", flush_interval=0.05) as kv:
        await kv.set("warm-up", 0)
        await asyncio.sleep(0.2)
        files.clear_calls()
        await kv.set("k", 1)
        assert files.names() == []  # returned at once
        await asyncio.sleep(0.3)
        assert "write" in files.names()


@pytest.mark.parametrize("durability", ["fsync", "flush", "buffered"])
async def test_flush_returns_once_everything_acknowledged_is_fsynced(
    store_path: str, durability: str
) -> None:
    files = ScriptedFiles()
    async with store_on(files, store_path, durability=durability, fsync_interval=30.0,
                        flush_interval=30.0) as kv:
        for i in range(10):
            await kv.set(f"k{i}", i)
        await kv.flush()
        names = files.names()
        last_write = max(i for i, name in enumerate(names) if name == "write")
        assert "fsync" in names[last_write:]


@pytest.mark.parametrize("durability", ["fsync", "flush", "buffered"])
async def test_close_writes_and_fsyncs_everything(store_path: str, durability: str) -> None:
    files = ScriptedFiles()
    kv = store_on(files, store_path, durability=durability, fsync_interval=30.0,
                  flush_interval=30.0)
    for i in range(10):
        await kv.set(f"k{i}", i)
    await kv.close()
    names = files.names()
    last_write = max(i for i, name in enumerate(names) if name == "write")
    assert "fsync" in names[last_write:]
    async with store_on(ScriptedFiles(), store_path) as reopened:
        assert len(await reopened.get_all()) == 10


async def test_reads_never_touch_the_disk(store_path: str) -> None:
    files = ScriptedFiles()
    async with store_on(files, store_path) as kv:
        await kv.set("k", {"a": 1})
        await kv.flush()
        files.clear_calls()
        for _ in range(100):
            await kv.get("k")
            await kv.get("missing")
        await kv.get_all()
        await kv.stats()
        assert files.names() == []


@pytest.mark.parametrize("durability", ["fsync", "flush", "buffered"])
async def test_the_event_loop_thread_makes_no_file_call_but_the_default_append(
    store_path: str, durability: str
) -> None:
    loop_thread = threading.get_ident()
    files = ScriptedFiles()
    kv = store_on(files, store_path, durability=durability, fsync_interval=0.05,
                  flush_interval=0.02)
    for i in range(3000):
        await kv.set(f"k{i % 100}", "x" * 200)
        if i % 500 == 0:
            await kv.delete(f"k{i % 7}")
    await kv.compact()
    await kv.flush()
    await kv.clear()
    await kv.set("after-clear", 1)
    await asyncio.sleep(0.1)
    await kv.close()
    on_loop = {call.name for call in files.calls if call.thread == loop_thread}
    # The append; and once per reserved window (64 KiB to 8 MiB of appends),
    # reserving and mapping the next one.
    allowed = {"write", "allocate", "map"} if durability == "flush" else set()
    assert on_loop <= allowed, on_loop
    assert "fsync" in {call.name for call in files.calls}


# -- the real file system's one-call group commit --------------------------------

one_call_only = pytest.mark.skipif(not hasattr(os, "RWF_DSYNC"),
                                   reason="pwritev2 with RWF_DSYNC is Linux's")


class PwritevSpy:
    """Stands in for os.pwritev: records the flags, then writes ``part`` bytes
    of the data (all when None) or raises ``error``."""

    def __init__(self, part: int | None = None, error: int | None = None) -> None:
        self.part = part
        self.error = error
        self.flags: list[int] = []
        self.real = os.pwritev

    def __call__(self, fd: int, buffers: list[bytes], offset: int, flags: int = 0) -> int:
        self.flags.append(flags)
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))
        data = b"".join(bytes(buffer) for buffer in buffers)
        if self.part is not None:
            data = data[:self.part]
        return self.real(fd, [data], offset, flags)


@contextlib.contextmanager
def one_call_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 spy: PwritevSpy) -> Iterator[tuple[OneCallFileSystem, Path, int]]:
    """A log holding b"head:", open for appending, with ``spy`` as os.pwritev."""
    files = OneCallFileSystem()
    path = tmp_path / "log"
    path.write_bytes(b"head:")
    fd = files.open_append(str(path))
    monkeypatch.setattr(os, "pwritev", spy)
    try:
        yield files, path, fd
    finally:
        os.close(fd)


@one_call_only
def test_a_batch_is_appended_and_made_durable_by_one_system_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = PwritevSpy()
    with one_call_log(tmp_path, monkeypatch, spy) as (files, path, fd):
        files.write_synced(fd, b"batch one;")
        files.write_synced(fd, memoryview(b"batch two;"))
        os.write(fd, b"plain")  # the file offset moved past both batches
    assert path.read_bytes() == b"head:batch one;batch two;plain"
    assert spy.flags == [os.RWF_DSYNC | os.RWF_APPEND] * 2


@one_call_only
@pytest.mark.parametrize("refusal", [errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS])
def test_a_kernel_that_refuses_the_one_call_gets_write_and_fsync_from_then_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: int,
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    spy = PwritevSpy(error=refusal)
    with one_call_log(tmp_path, monkeypatch, spy) as (files, path, fd):
        files.write_synced(fd, b"first;")
        files.write_synced(fd, b"second;")
    assert path.read_bytes() == b"head:first;second;"
    assert len(spy.flags) == 1 and not files.one_call  # asked once only
    assert synced == [fd, fd]


@one_call_only
def test_other_errors_of_the_one_call_reach_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    full = PwritevSpy(error=errno.ENOSPC)
    with (one_call_log(tmp_path, monkeypatch, full) as (files, path, fd),
          pytest.raises(OSError, match="No space")):
        files.write_synced(fd, b"lost")
    assert files.one_call  # a full disk is no reason to give up the one call
    assert path.read_bytes() == b"head:"


@one_call_only
def test_a_short_one_call_write_is_finished_by_write_and_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with one_call_log(tmp_path, monkeypatch, PwritevSpy(part=3)) as (files, path, fd):
        files.write_synced(fd, b"0123456789")
    assert path.read_bytes() == b"head:0123456789"
