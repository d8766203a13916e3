"""A fault in each step of the store's background work leaves no waiter hanging.

The writer thread sweeps expired keys (reading the clock), starts
compactions (starting a thread), waits for its next duty, and writes and
fsyncs batches. Each of these may fail: a ``clock=`` that raises, a
container's thread limit ("can't start new thread"), a wait the OS refuses.
Before, one such exception killed the thread, and every "fsync" write after
it waited forever. Now each duty fails on its own, the failure reaches the
callers it concerns, and the store goes on (or, if the thread cannot go
on, refuses writes and still closes cleanly).
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from calls import returns_within

from aiokv import KV, Durability
from aiokv._writer_thread import MAX_INTERVAL

LEVELS = ["fsync", "flush", "buffered"]
WAIT = 10.0
"""Seconds a call may take before the test calls it hung."""


class FailingClock:
    """``time.time``, except that the next reading by a thread whose name
    starts with ``thread`` (the writer thread's, by default) raises ``error``."""

    def __init__(self, thread: str = "aiokv-sync") -> None:
        self.thread = thread
        self.error: BaseException | None = None
        self.raised = threading.Event()

    def __call__(self) -> float:
        error = self.error
        if error is not None and threading.current_thread().name.startswith(self.thread):
            self.error = None
            self.raised.set()
            raise error
        return time.time()


@pytest.fixture
def thread_start_fails(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Make threads whose names start with a prefix in the yielded list fail
    to start, as under a pids limit."""
    failing: list[str] = []
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if any(thread.name.startswith(prefix) for prefix in failing):
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    yield failing


@pytest.mark.parametrize("durability", LEVELS)
def test_a_clock_that_raises_in_the_sweep_stops_neither_writes_nor_later_sweeps(
        tmp_path: Path, durability: Durability, caplog: pytest.LogCaptureFixture) -> None:
    clock = FailingClock()
    kv = KV(tmp_path / "state.kv", durability=durability, clock=clock)
    kv.set("short", 1, ttl=0.3)  # gives the sweep something to look at
    clock.error = ValueError("the clock broke")
    assert clock.raised.wait(WAIT), "the sweep never read the clock"
    for i in range(50):
        returns_within(WAIT, functools.partial(kv.set, f"k{i}", i))
    assert any("the expiry sweep" in record.getMessage() for record in caplog.records)
    time.sleep(0.4)
    # The sweep goes on: the expired key leaves memory without any read.
    deadline = time.monotonic() + WAIT
    while kv.stats().held_entries != 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert kv.stats().held_entries == 50
    returns_within(WAIT, kv.close)
    with KV(tmp_path / "state.kv") as again:
        assert again.get_all() == {f"k{i}": i for i in range(50)}


@pytest.mark.parametrize("durability", LEVELS)
def test_a_round_of_the_writer_thread_that_raises_is_retried(
        tmp_path: Path, durability: Durability) -> None:
    kv = KV(tmp_path / "state.kv", durability=durability).open()
    engine = kv._engine
    real_wait = engine.wake.wait
    failures: list[bool] = []

    def wait(timeout: float | None = None) -> bool:
        if not failures:
            failures.append(True)
            raise OverflowError("timeout value is too large")
        return real_wait(timeout)

    engine.wake.wait = wait  # type: ignore[method-assign]
    engine.wake.set()
    for i in range(20):
        returns_within(WAIT, functools.partial(kv.set, f"k{i}", i))
    returns_within(WAIT, kv.flush)
    returns_within(WAIT, kv.close)
    with KV(tmp_path / "state.kv") as again:
        assert len(again.get_all()) == 20


@pytest.mark.parametrize("durability", LEVELS)
def test_compact_raises_when_no_thread_can_start_and_the_store_goes_on(
        tmp_path: Path, durability: Durability, thread_start_fails: list[str]) -> None:
    kv = KV(tmp_path / "state.kv", durability=durability).open()
    for i in range(100):
        kv.set(f"k{i}", i)
    thread_start_fails.append("aiokv-compact")
    with pytest.raises(RuntimeError, match="can't start new thread"):
        returns_within(WAIT, kv.compact)
    kv.set("after", 1)
    thread_start_fails.clear()
    returns_within(WAIT, kv.compact)
    assert kv.stats().compactions == 1
    kv.close()
    with KV(tmp_path / "state.kv") as again:
        assert again.get("after") == 1 and len(again.get_all()) == 101


@pytest.mark.parametrize("durability", LEVELS)
def test_a_clock_that_raises_in_a_compaction_fails_that_compaction_only(
        tmp_path: Path, durability: Durability) -> None:
    clock = FailingClock(thread="aiokv-compact")
    kv = KV(tmp_path / "state.kv", durability=durability, clock=clock).open()
    for i in range(100):
        kv.set(f"k{i}", i, ttl=3600)  # a key with an expiry: the walk reads the clock
    clock.error = ValueError("the clock broke")
    with pytest.raises(ValueError, match="the clock broke"):
        returns_within(WAIT, kv.compact)
    kv.set("after", 1)
    returns_within(WAIT, kv.compact)
    kv.close()
    with KV(tmp_path / "state.kv") as again:
        assert again.get("after") == 1 and len(again.get_all()) == 101


def test_open_fails_cleanly_when_the_writer_thread_cannot_start(
        tmp_path: Path, thread_start_fails: list[str]) -> None:
    path = tmp_path / "state.kv"
    with KV(path) as kv:
        kv.set("kept", 1)
    before = path.read_bytes()
    thread_start_fails.append("aiokv-sync")
    kv = KV(path)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        kv.open()
    assert not kv._engine.is_open
    assert path.read_bytes() == before
    thread_start_fails.clear()
    with KV(path) as other:  # the lock was released
        assert other.get("kept") == 1
    kv.open()  # and the first instance may try again
    assert kv.get("kept") == 1
    kv.close()


@pytest.mark.parametrize("name", ["fsync_interval", "flush_interval"])
@pytest.mark.parametrize("value", [1e10, math.inf, math.nan, MAX_INTERVAL * 2, 0, -1])
def test_intervals_beyond_a_day_or_not_positive_are_refused_at_construction(
        tmp_path: Path, name: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"{name} must be a positive number of seconds"):
        if name == "fsync_interval":
            KV(tmp_path / "state.kv", fsync_interval=value)
        else:
            KV(tmp_path / "state.kv", flush_interval=value)
    assert list(tmp_path.iterdir()) == []


def test_an_interval_of_a_day_is_accepted_and_works(tmp_path: Path) -> None:
    with KV(tmp_path / "state.kv", fsync_interval=MAX_INTERVAL,
            flush_interval=MAX_INTERVAL, durability="buffered") as kv:
        kv.set("k", 1)
        returns_within(WAIT, kv.flush)
    with KV(tmp_path / "state.kv") as again:
        assert again.get("k") == 1


@pytest.mark.parametrize("durability", LEVELS)
def test_a_writer_thread_that_cannot_go_on_releases_every_waiter_and_refuses_writes(
        tmp_path: Path, durability: Durability, caplog: pytest.LogCaptureFixture) -> None:
    """A ``clock=`` that raises SystemExit (not an Exception) ends the thread:
    whoever waits on it is released with the error, later writes raise a clear
    OSError instead of waiting forever, and the store still closes."""
    clock = FailingClock()
    kv = KV(tmp_path / "state.kv", durability=durability, clock=clock).open()
    kv.set("before", 1)
    kv.flush()
    kv.set("short", 1, ttl=60)
    clock.error = SystemExit("a clock that exits")
    assert clock.raised.wait(WAIT)
    engine = kv._engine
    assert engine.worker.thread is not None
    engine.worker.thread.join(WAIT)
    assert not engine.worker.thread.is_alive()
    with pytest.raises(OSError, match=r"writer thread .* stopped"):
        returns_within(WAIT, lambda: kv.set("after", 1))
    assert kv.get("after") is None
    returns_within(WAIT, kv.close)
    assert any("writer thread" in record.getMessage() for record in caplog.records)
    with KV(tmp_path / "state.kv") as again:
        assert again.get("before") == 1 and again.get("short") == 1


def _a_batch(kv: KV) -> None:
    with kv.batch() as batch:
        batch.incr("hot")
        batch.set("b", [1])
        batch.delete("k2")


WRITES_OF_EVERY_KIND: list[tuple[str, Callable[[KV], object]]] = [
    ("a float", lambda kv: kv.set("f", 1.5)),
    ("an int", lambda kv: kv.set("i", 7)),
    ("the time", lambda kv: kv.set("t")),
    ("a ttl", lambda kv: kv.set("s", "token", ttl=60)),
    ("a dict", lambda kv: kv.set("d", {"user": "bob", "n": 1})),
    ("a nested list", lambda kv: kv.set("l", [1, [2]])),
    ("incr", lambda kv: kv.incr("hot")),
    ("incr with a ttl", lambda kv: kv.incr("rate", ttl=60)),
    ("add", lambda kv: kv.add("new", 1, ttl=60)),
    ("expire", lambda kv: kv.expire("hot", 30)),
    ("a ttl renewed", lambda kv: kv.set("short", 2, ttl=900)),
    ("pop", lambda kv: kv.pop("hot")),
    ("update", lambda kv: kv.update("hot", lambda v: v + 1)),
    ("set_many", lambda kv: kv.set_many({"hot": 1, "m": 2.5})),
    ("delete_many", lambda kv: kv.delete_many(["hot", "k1"])),
    ("a batch", _a_batch),
]
"""One of each write, every one of which (at "flush") the hot path may take."""


@pytest.mark.parametrize(("kind", "write"), WRITES_OF_EVERY_KIND, ids=[
    kind for kind, _ in WRITES_OF_EVERY_KIND])
def test_once_the_writer_thread_has_stopped_every_kind_of_write_is_refused_even_on_the_hot_path(
        tmp_path: Path, kind: str, write: Callable[[KV], object]) -> None:
    """Nothing would fsync what a write appends: each must raise and change
    nothing, though the hot path's room was open when the thread stopped."""
    clock = FailingClock()
    kv = KV(tmp_path / "state.kv", clock=clock, fsync_interval=30.0).open()
    kv.set("short", 1, ttl=600)  # the sweep reads the clock: that is where it stops
    for i in range(20):  # open the hot path: it grants its room on the general path
        kv.set("hot", i)
        kv.set(f"k{i}", float(i))
    engine = kv._engine
    assert engine.log.fast_end > engine.log.end, "the hot path should be open"
    before = kv.get_all()
    clock.error = SystemExit("a clock that exits")
    assert clock.raised.wait(WAIT)
    assert engine.worker.thread is not None
    engine.worker.thread.join(WAIT)
    with pytest.raises(OSError, match=r"writer thread .* stopped"):
        returns_within(WAIT, lambda: write(kv))
    assert kv.get_all() == before, kind
    returns_within(WAIT, kv.close)
    with KV(tmp_path / "state.kv") as again:
        assert again.get_all() == before
