"""Waiting for a group commit at the "fsync" level: waking, failing, cancelling.

docs/guarantees.md: concurrent writers share fsyncs; a failed batch raises
in every writer of it; cancelling a task that waits in ``set()`` does not
cancel the write. The commit itself is tested directly, then through a
store whose fsync can be held back.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scripted_files import PROCEED, Call, ScriptedFiles, store_on

from aiokv import KV, AioKV
from aiokv._commit import Commit
from aiokv._engine import Engine
from aiokv._files import FileSystem
from aiokv._format import HEADER_SIZE
from aiokv._recovery import count_frames

# -- the commit on its own ------------------------------------------------------


def waiting_task(commit: Commit) -> asyncio.Task[None]:
    """A task that awaits the commit, as a writer's set() does."""
    async def wait() -> None:
        await commit.wait_async()
    return asyncio.create_task(wait())


async def test_every_task_waiting_on_a_commit_wakes_when_it_settles() -> None:
    commit = Commit()
    woken: list[int] = []

    async def waiter(number: int) -> None:
        await commit.wait_async()
        woken.append(number)

    tasks = [asyncio.create_task(waiter(n)) for n in range(50)]
    await asyncio.sleep(0)
    assert not woken
    threading.Thread(target=commit.settle).start()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert sorted(woken) == list(range(50))


async def test_a_failed_commit_raises_its_error_in_every_waiting_task() -> None:
    commit = Commit()
    error = OSError(5, "Input/output error")
    tasks = [waiting_task(commit) for _ in range(5)]
    await asyncio.sleep(0)
    commit.settle(error)
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
    assert results == [error] * 5


async def test_waiting_on_a_settled_commit_returns_or_raises_at_once() -> None:
    done, failed = Commit(), Commit()
    done.settle()
    failed.settle(OSError(28, "No space left on device"))
    await done.wait_async()
    with pytest.raises(OSError, match="No space"):
        await failed.wait_async()
    assert done.done and failed.done


async def test_a_cancelled_wait_ends_at_once_and_leaves_the_others_waiting() -> None:
    commit = Commit()
    tasks = [waiting_task(commit) for _ in range(3)]
    await asyncio.sleep(0)
    tasks[1].cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(tasks[1], 10)
    assert not tasks[0].done() and not tasks[2].done()
    commit.settle()
    await asyncio.wait_for(asyncio.gather(tasks[0], tasks[2]), 10)


async def test_a_timeout_around_the_wait_fires_while_the_commit_is_pending() -> None:
    commit = Commit()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(commit.wait_async(), 0.05)
    commit.settle()  # nobody left to wake: settling is harmless
    await commit.wait_async()


def test_threads_and_event_loops_in_other_threads_all_wake() -> None:
    commit = Commit()
    results: list[str] = []
    lock = threading.Lock()
    ready = threading.Barrier(5)

    def in_a_loop(name: str) -> None:
        async def wait() -> None:
            waiting = waiting_task(commit)
            await asyncio.sleep(0)
            ready.wait()
            await waiting
        asyncio.run(wait())
        with lock:
            results.append(name)

    def blocking(name: str) -> None:
        ready.wait()
        commit.wait()
        with lock:
            results.append(name)

    threads = [threading.Thread(target=in_a_loop, args=(f"loop{n}",)) for n in range(2)]
    threads += [threading.Thread(target=blocking, args=(f"thread{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    ready.wait()
    commit.settle()
    for thread in threads:
        thread.join(10)
    assert sorted(results) == ["loop0", "loop1", "thread0", "thread1"]


def test_a_commit_settles_once() -> None:
    commit = Commit()
    commit.settle()
    commit.settle(OSError("too late"))  # ignored: the batch was durable
    commit.wait()


# -- through a store whose fsync is held back --------------------------------------


async def test_cancelling_a_set_waiting_for_its_fsync_keeps_the_write(tmp_path: Path) -> None:
    path = str(tmp_path / "state.kv")
    files = ScriptedFiles(mapping=False)
    kv = store_on(files, path, durability="fsync")
    await kv.open()
    gate = files.hold("fsync", times=None)  # a slow disk, from now on
    try:
        first = asyncio.create_task(kv.set("kept", 1))
        other = asyncio.create_task(kv.set("other", 2))
        await asyncio.get_running_loop().run_in_executor(None, gate.wait_reached)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(first, 10)  # before the fsync ended
        assert not other.done()
        assert await kv.get("kept") == 1  # the write stays in memory...
        gate.release()
        await asyncio.wait_for(other, 10)
    finally:
        gate.release()
        await kv.close()
    async with AioKV(path) as reopened:  # ...and in the log
        assert await reopened.get_all() == {"kept": 1, "other": 2}


async def test_a_timeout_on_a_set_fires_while_its_fsync_is_held(tmp_path: Path) -> None:
    files = ScriptedFiles(mapping=False)
    kv = store_on(files, str(tmp_path / "state.kv"), durability="fsync")
    await kv.open()
    gate = files.hold("fsync", times=None)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(kv.set("slow", 1), 0.1)
        assert await kv.get("slow") == 1
    finally:
        gate.release()
        await kv.close()


# -- the pipeline: a batch cut while its writers are still queueing ---------------


def timed_batches(seconds: float, fail_batch_of: int | None = None
                  ) -> tuple[ScriptedFiles, list[int]]:
    """Files whose fsync takes ``seconds`` (0: no fsync at all), and the
    number of records each group commit wrote, as they come.

    ``fail_batch_of``: a batch of that many records fails with EIO instead.
    """
    files = ScriptedFiles(mapping=False)
    batches: list[int] = []

    def count(call: Call) -> object:
        records = count_frames(bytes(HEADER_SIZE) + bytes(call.args[1]))
        if records:  # not the lone SYNCED frame that close() writes
            batches.append(records)
        if records == fail_batch_of:
            raise OSError(errno.EIO, "Input/output error")
        return PROCEED

    def slow_fsync(call: Call) -> object:
        if not seconds:
            return None  # skipped: far faster than any disk
        time.sleep(seconds)
        return PROCEED

    files.script("write_synced", count)
    files.script("fsync", slow_fsync)
    return files, batches


def queue_in_two_bursts(engine: Engine, pause: float) -> list[Commit]:
    """16 sets, a pause, 24 sets, while the writer thread cannot take a batch.

    Holding the engine's I/O lock keeps the writer thread out, as a busy event
    loop's thread holding the GIL does while it runs the woken writers.
    """
    with engine.io:
        commits = [engine.set(f"k{i}", i) for i in range(16)]
        time.sleep(pause)
        commits += [engine.set(f"k{i}", i) for i in range(16, 40)]
    assert all(commit is not None for commit in commits)
    return commits  # type: ignore[return-value]


@contextlib.contextmanager
def opened_engine(path: Path, files: FileSystem) -> Iterator[Engine]:
    """An open "fsync" engine on ``files``, closed at the end."""
    engine = Engine(str(path), durability="fsync", files=files)
    engine.open()
    try:
        for _ in range(3):  # the writer thread learns how long a batch takes
            commit = engine.set("warm-up", 0)
            assert commit is not None
            commit.wait()
        yield engine
    finally:
        engine.close()


def test_writers_queueing_for_longer_than_an_fsync_get_a_batch_of_their_own(
    tmp_path: Path,
) -> None:
    files, batches = timed_batches(seconds=0.005)
    with opened_engine(tmp_path / "state.kv", files) as engine:
        commits = queue_in_two_bursts(engine, pause=0.05)
        engine.flush()  # returns once both batches are durable
        assert all(commit.done for commit in commits)
    # The 17th set found 17 records queued for longer than a batch takes:
    # they were cut off and committed first, the other 23 by a second fsync.
    assert batches[3:] == [17, 23]
    assert len({id(commit) for commit in commits[:17]}) == 1
    assert len({id(commit) for commit in commits[17:]}) == 1
    assert commits[0] is not commits[17]
    with KV(str(tmp_path / "state.kv")) as reopened:
        assert reopened.get_all() == {"warm-up": 0, **{f"k{i}": i for i in range(40)}}


def test_an_fsync_too_fast_to_overlap_leaves_the_queued_writers_in_one_batch(
    tmp_path: Path,
) -> None:
    files, batches = timed_batches(seconds=0.0)  # no fsync: far under MIN_OVERLAP
    with opened_engine(tmp_path / "state.kv", files) as engine:
        commits = queue_in_two_bursts(engine, pause=0.05)
        engine.flush()
    assert batches[3:] == [40]
    assert len({id(commit) for commit in commits}) == 1


def test_when_a_cut_batch_fails_the_writes_queued_after_it_fail_too(tmp_path: Path) -> None:
    files, batches = timed_batches(seconds=0.005, fail_batch_of=17)
    with opened_engine(tmp_path / "state.kv", files) as engine:
        commits = queue_in_two_bursts(engine, pause=0.05)
        for commit in commits:
            with pytest.raises(OSError, match="Input/output"):
                commit.wait()
        # The 23 later writes assumed the 17 before them: all are undone.
        assert engine.items() == {"warm-up": 0}
        after = engine.set("after", 1)
        assert after is not None
        after.wait()
    assert batches[3] == 17
    with KV(str(tmp_path / "state.kv")) as reopened:
        assert reopened.get_all() == {"warm-up": 0, "after": 1}


def test_a_delete_of_an_absent_key_is_acknowledged_with_the_newest_queued_write(
    tmp_path: Path,
) -> None:
    # Absent may mean "deleted by a write not yet durable": the delete waits
    # for the newest queued write, whether it is in the cut batch or after it.
    files, batches = timed_batches(seconds=0.005)
    with opened_engine(tmp_path / "state.kv", files) as engine:
        with engine.io:
            for i in range(16):
                engine.set(f"k{i}", i)
            time.sleep(0.05)
            cut = engine.set("k16", 16)  # the 17th: these 17 are cut off
            assert engine.delete("absent") is cut
            after = engine.set("k17", 17)
            assert after is not cut
            assert engine.delete("absent") is after
        assert after is not None
        after.wait()
    assert batches[3:] == [17, 1]


async def test_many_writers_at_fsync_find_every_acknowledged_write_after_reopening(
    tmp_path: Path,
) -> None:
    # Enough writers for batches to be cut on a real disk (timing decides
    # whether they are; what must hold either way is checked).
    path = str(tmp_path / "state.kv")
    acknowledged: dict[str, int] = {}

    async def writer(kv: AioKV, number: int) -> None:
        for i in range(100):
            await kv.set(f"t{number}", i)
            acknowledged[f"t{number}"] = i
            if i % 25 == 0:
                assert await kv.delete(f"absent{number}")

    async with AioKV(path, durability="fsync") as kv:
        await asyncio.gather(*(writer(kv, number) for number in range(200)))
        assert await kv.get_all() == acknowledged
    async with AioKV(path) as reopened:
        assert await reopened.get_all() == acknowledged
