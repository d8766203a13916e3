"""Waiting for a group commit at the "fsync" level: waking, failing, cancelling.

docs/guarantees.md: concurrent writers share fsyncs; a failed batch raises
in every writer of it; cancelling a task that waits in ``set()`` does not
cancel the write. The commit itself is tested directly, then through a
store whose fsync can be held back.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from recording_files import store_on

from aiokv import AioKV
from aiokv._commit import Commit
from aiokv._files import FileSystem

# -- the commit on its own ------------------------------------------------------


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
    tasks = [asyncio.create_task(commit.wait_async()) for _ in range(5)]
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
    tasks = [asyncio.create_task(commit.wait_async()) for _ in range(3)]
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
            waiting = asyncio.create_task(commit.wait_async())
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


class HeldFsync(FileSystem):
    """Once ``hold`` is set, every fsync waits until ``release`` is (a slow disk)."""

    def __init__(self) -> None:
        self.hold = False
        self.release = threading.Event()
        self.holding = threading.Event()

    def can_map(self, path: str) -> bool:
        return False

    def fsync(self, fd: int) -> None:
        if self.hold:
            self.holding.set()
            if not self.release.wait(10):
                raise TimeoutError("the test never released the fsync")
        super().fsync(fd)


async def test_cancelling_a_set_waiting_for_its_fsync_keeps_the_write(tmp_path: Path) -> None:
    path = str(tmp_path / "state.kv")
    files = HeldFsync()
    kv = store_on(files, path, durability="fsync")
    await kv.open()
    files.hold = True
    try:
        first = asyncio.create_task(kv.set("kept", 1))
        other = asyncio.create_task(kv.set("other", 2))
        await asyncio.get_running_loop().run_in_executor(None, files.holding.wait, 10)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(first, 10)  # before the fsync ended
        assert not other.done()
        assert await kv.get("kept") == 1  # the write stays in memory...
        files.release.set()
        await asyncio.wait_for(other, 10)
    finally:
        files.release.set()
        await kv.close()
    async with AioKV(path) as reopened:  # ...and in the log
        assert await reopened.get_all() == {"kept": 1, "other": 2}


async def test_a_timeout_on_a_set_fires_while_its_fsync_is_held(tmp_path: Path) -> None:
    files = HeldFsync()
    kv = store_on(files, str(tmp_path / "state.kv"), durability="fsync")
    await kv.open()
    files.hold = True
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(kv.set("slow", 1), 0.1)
        assert await kv.get("slow") == 1
    finally:
        files.release.set()
        await kv.close()
