"""``KV``, the blocking shell: the same store as ``AioKV`` for threads and scripts.

(The TTL, counter and key-pattern scenarios run on both shells in
test_ttl_and_counters.py; this file is about what is particular to ``KV``.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest
from fake_clock import START, FakeClock
from on_disk import store_size

import aiokv
from aiokv import KV, AioKV, ClosedError, Durability, LockedError, Stats

DURABILITY_LEVELS = ["flush", "fsync", "buffered"]


def run_in_threads(count: int, work: Callable[[int], None]) -> None:
    """Run ``work(0)`` ... ``work(count - 1)`` in threads started together;
    re-raise the first error any of them met."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def target(number: int) -> None:
        try:
            barrier.wait()
            work(number)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


# -- the API mirrors AioKV -------------------------------------------------------

METHODS = ["open", "close", "get", "get_many", "set", "add", "delete", "pop", "get_all", "clear",
           "incr", "keys", "set_many", "delete_many", "update", "count",
           "exists", "ttl", "expire", "flush", "compact", "stats"]
MAPPING_ONLY = {"items", "values", "popitem", "setdefault"}
"""KV's MutableMapping methods, which an AioKV, whose calls are awaited, has not."""


def test_kv_is_exported_and_has_the_public_names_of_aiokv() -> None:
    assert aiokv.KV is KV

    def public(cls: type) -> set[str]:
        return {name for name in dir(cls) if not name.startswith("_")}

    assert public(KV) - MAPPING_ONLY == public(AioKV) == {
        *METHODS, "batch", "path", "durability", "from_url", "readonly"}


@pytest.mark.parametrize("name", METHODS)
def test_each_kv_method_blocks_and_takes_the_parameters_of_its_aiokv_twin(name: str) -> None:
    blocking, coroutine = getattr(KV, name), getattr(AioKV, name)
    assert inspect.iscoroutinefunction(coroutine)
    assert not inspect.iscoroutinefunction(blocking)
    ours = inspect.signature(blocking).parameters
    theirs = inspect.signature(coroutine).parameters
    assert [(p.name, p.kind) for p in ours.values()] == [
        (p.name, p.kind) for p in theirs.values()]
    for parameter in ours.values():  # set(key) alone stores the time in both
        assert parameter.default == theirs[parameter.name].default, parameter.name


def test_kv_takes_the_options_of_aiokv(store_path: str) -> None:
    assert inspect.signature(KV).parameters.keys() == inspect.signature(AioKV).parameters.keys()
    kv = KV(Path(store_path), durability="buffered", fsync_interval=0.5, flush_interval=0.05,
            recovery="salvage", clock=FakeClock())
    assert kv.path == store_path
    assert kv.durability == "buffered"
    assert repr(kv) == f"KV({store_path!r}, durability='buffered')"
    assert not os.path.exists(store_path)  # constructing does no I/O
    kv.close()
    with pytest.raises(ValueError, match="durability"):
        KV(store_path, durability="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="recovery"):
        KV(store_path, recovery="hope")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        KV(12345)  # type: ignore[arg-type]


# A script of calls, each made on a KV and on an AioKV with the same fake clock:
# (method, args, kwargs); "advance" moves the clock.
SCRIPT: list[tuple[str, tuple[object, ...], dict[str, object]]] = [
    ("set", ("a", 1), {}),
    ("set", ("b", {"x": [1, 2.5, None], "y": b"\x00"}), {"ttl": 30}),
    ("set", ("s", "text"), {"ttl": 0}),
    ("incr", ("c",), {"ttl": 10}),
    ("incr", ("c", 5), {"ttl": 99}),
    ("incr", ("b",), {}),
    ("incr", ("a", 1.5), {}),
    ("set", ("d", "text"), {"ttl": -1}),
    ("set", ("d", "text"), {"ttl": "10"}),
    ("set", ("d", {1, 2}), {}),
    ("get", (5,), {}),
    ("keys", ("*",), {}),
    ("keys", ("[ab]",), {}),
    ("ttl", ("b",), {}),
    ("ttl", ("a",), {}),
    ("ttl", ("nope",), {}),
    ("exists", ("c",), {}),
    ("advance", (10,), {}),
    ("exists", ("c",), {}),
    ("get", ("c", "default"), {}),
    ("incr", ("c", 2), {}),
    ("expire", ("b", 100.5), {}),
    ("expire", ("nope", 100), {}),
    ("ttl", ("b",), {}),
    ("get_all", (), {}),
    ("stats", (), {}),
    ("delete", ("a",), {}),
    ("delete", ("nope",), {}),
    ("compact", (), {}),
    ("stats", (), {}),
    ("set", ("e", [1, [2, [3]]]), {}),
    ("expire", ("e", 5), {}),
    ("expire", ("e", None), {}),
    ("advance", (0.25,), {}),
    ("flush", (), {}),
    ("get_all", (), {}),
    ("stats", (), {}),
    ("clear", (), {}),
    ("get_all", (), {}),
    ("set", ("f", 1), {"ttl": 7}),
    ("incr", ("f",), {}),
    ("stats", (), {}),
]


def _outcome(call: Callable[[], object]) -> object:
    try:
        result = call()
    except Exception as exc:  # the error's type is part of the contract
        return type(exc)
    if isinstance(result, Stats):
        return dataclasses.replace(result, path="")
    return result


async def test_kv_and_aiokv_given_the_same_calls_return_the_same_and_write_the_same_bytes(
    tmp_path: Path,
) -> None:
    sync_path, async_path = str(tmp_path / "sync.kv"), str(tmp_path / "async.kv")

    def run_kv() -> list[object]:
        clock = FakeClock()
        outcomes: list[object] = []
        with KV(sync_path, clock=clock) as kv:
            for name, args, kwargs in SCRIPT:
                if name == "advance":
                    clock.advance(args[0])  # type: ignore[arg-type]
                    continue
                method = getattr(kv, name)
                outcomes.append(_outcome(lambda: method(*args, **kwargs)))  # noqa: B023
        return outcomes

    clock = FakeClock()
    async_outcomes: list[object] = []
    async with AioKV(async_path, clock=clock) as kv:
        for name, args, kwargs in SCRIPT:
            if name == "advance":
                clock.advance(args[0])  # type: ignore[arg-type]
                continue
            try:
                result: Any = await getattr(kv, name)(*args, **kwargs)
            except Exception as exc:
                result = type(exc)
            async_outcomes.append(
                dataclasses.replace(result, path="") if isinstance(result, Stats) else result)
    sync_outcomes = await asyncio.to_thread(run_kv)

    assert sync_outcomes == async_outcomes
    # A few of the outcomes, to show the script exercised what it meant to.
    assert TypeError in sync_outcomes and ValueError in sync_outcomes
    assert {"a": 1, "b": {"x": [1, 2.5, None], "y": b"\x00"}, "s": "text", "c": 2} in (
        sync_outcomes)
    last = sync_outcomes[-1]
    assert isinstance(last, Stats)
    assert dataclasses.replace(last, file_bytes=0, live_bytes=0, dead_bytes=0) == Stats(
        path="", keys=1, file_bytes=0, live_bytes=0, dead_bytes=0, compactions=1,
        last_compaction=START + 10, durability="flush", pending_writes=0, ttl_keys=1,
        held_entries=1)
    assert Path(sync_path).read_bytes() == Path(async_path).read_bytes()


# -- opening, closing, locking ---------------------------------------------------


def test_a_with_block_opens_kv_and_closes_it_on_exit_even_after_an_error(
    store_path: str,
) -> None:
    with KV(store_path) as kv:
        assert isinstance(kv, KV)
        kv.set("k", 1)
        assert os.path.exists(store_path)
    with pytest.raises(ClosedError):
        kv.get("k")
    with pytest.raises(RuntimeError, match="boom"), KV(store_path) as kv:
        kv.set("k", 2)
        raise RuntimeError("boom")
    with pytest.raises(ClosedError):
        kv.set("k", 3)
    with KV(store_path) as again:  # closed means unlocked, and everything is there
        assert again.get_all() == {"k": 2}


def test_open_returns_the_kv_and_a_first_call_opens_it_too(store_path: str) -> None:
    kv = KV(store_path)
    assert kv.open() is kv
    assert kv.open() is kv  # idempotent
    kv.set("k", 1)
    kv.close()
    lazy = KV(store_path)
    assert lazy.get("k") == 1  # no open() needed
    lazy.close()


def test_every_kv_operation_after_close_but_open_raises_closed_error(store_path: str) -> None:
    kv = KV(store_path)
    kv.set("k", 1, ttl=100)
    kv.close()
    kv.close()  # a second close does nothing
    operations: list[Callable[[], object]] = [
        kv.get_all, kv.clear, kv.keys, kv.flush, kv.compact, kv.stats,
        lambda: kv.get("k"), lambda: kv.set("k", 2), lambda: kv.set("k", 2, ttl=5),
        lambda: kv.delete("k"), lambda: kv.incr("k"), lambda: kv.exists("k"),
        lambda: kv.ttl("k"), lambda: kv.expire("k", 10),
    ]
    for operation in operations:
        with pytest.raises(ClosedError) as raised:
            operation()
        assert raised.value.path == store_path
    with KV(store_path) as again:
        assert again.get_all() == {"k": 1}
        assert 99 <= again.ttl("k") <= 100
    with kv.open():  # only open() opens a closed store again
        assert kv.get_all() == {"k": 1}


def test_a_kv_closed_before_it_was_ever_opened_stays_closed(store_path: str) -> None:
    kv = KV(store_path)
    kv.close()
    with pytest.raises(ClosedError):
        kv.set("k", 1)
    assert not os.path.exists(store_path)


async def test_kv_raises_locked_error_while_an_aiokv_has_the_path_open(
    store_path: str,
) -> None:
    other = KV(store_path)
    async with AioKV(store_path) as owner:
        await owner.set("k", 1)
        for call in (other.open, lambda: other.get("k"), lambda: other.set("k", 2),
                     lambda: other.incr("k")):
            with pytest.raises(LockedError) as raised:
                await asyncio.to_thread(call)
            assert raised.value.path == store_path
        assert await owner.get("k") == 1  # the owner is not affected
        await owner.set("k", 3)
    # The owner's close released the lock: the same KV may try again.
    assert await asyncio.to_thread(other.get, "k") == 3
    await asyncio.to_thread(other.close)


async def test_aiokv_raises_locked_error_while_a_kv_has_the_path_open(store_path: str) -> None:
    owner = KV(store_path)
    await asyncio.to_thread(owner.set, "k", 1)
    other = AioKV(store_path)
    with pytest.raises(LockedError) as raised:
        await other.get("k")
    assert raised.value.path == store_path
    with pytest.raises(LockedError):
        await other.incr("k")
    assert await asyncio.to_thread(owner.incr, "k") == 2
    await asyncio.to_thread(owner.close)
    async with other:  # the same AioKV, now that the lock is free
        assert await other.get("k") == 2


def test_two_kvs_on_one_path_exclude_each_other(store_path: str) -> None:
    with KV(store_path) as first:
        first.set("k", 1)
        second = KV(store_path)
        with pytest.raises(LockedError):
            second.get("k")
        first.set("k", 2)
    assert second.get("k") == 2
    second.close()


# -- one file format ----------------------------------------------------------------

VALUES: dict[str, object] = {
    "none": None, "bool": True, "int": -(2**63), "big": 2**64 - 1, "float": 1.5,
    "str": "héllo", "bytes": b"\x00\xff", "list": [1, "two", [3.0]],
    "dict": {"nested": {"a": [None, False]}},
}


async def test_a_file_written_by_kv_opens_in_aiokv_with_the_same_data_and_ttls(
    store_path: str,
) -> None:
    clock = FakeClock()

    def write() -> None:
        with KV(store_path, clock=clock) as kv:
            for key, value in VALUES.items():
                kv.set(key, value)
            kv.set("session:1", {"user": 1}, ttl=60)
            kv.set("session:2", {"user": 2}, ttl=30)
            kv.set("session:2", {"user": 2})  # its ttl is removed
            kv.incr("hits", 7, ttl=45)
            kv.set("gone", 1)
            kv.delete("gone")
            kv.set("temp", 1, ttl=5)
            kv.expire("temp", 120)

    await asyncio.to_thread(write)
    clock.advance(20)
    async with AioKV(store_path, clock=clock) as kv:
        assert await kv.get_all() == {**VALUES, "session:1": {"user": 1},
                                      "session:2": {"user": 2}, "hits": 7, "temp": 1}
        assert await kv.ttl("session:1") == 40
        assert await kv.ttl("session:2") == -1
        assert await kv.ttl("hits") == 25
        assert await kv.ttl("temp") == 100
        assert await kv.incr("hits") == 8
        clock.advance(25)
        assert await kv.exists("hits") is False
        assert sorted(await kv.keys("session:*")) == ["session:1", "session:2"]
        clock.advance(15)
        assert await kv.keys("session:*") == ["session:2"]


async def test_a_file_written_by_aiokv_opens_in_kv_with_the_same_data_and_ttls(
    store_path: str,
) -> None:
    clock = FakeClock()
    async with AioKV(store_path, clock=clock, durability="buffered") as kv:
        for key, value in VALUES.items():
            await kv.set(key, value)
        await kv.set("session:1", {"user": 1}, ttl=60)
        await kv.incr("hits", 7, ttl=45)
        await kv.set("permanent", "p", ttl=10)
        await kv.expire("permanent", None)
        await kv.compact()  # the expiries go through a snapshot as well
        await kv.set("after", [1], ttl=15)
    clock.advance(10)

    def read() -> None:
        with KV(store_path, clock=clock) as kv:
            assert kv.get_all() == {**VALUES, "session:1": {"user": 1}, "hits": 7,
                                    "permanent": "p", "after": [1]}
            assert (kv.ttl("session:1"), kv.ttl("hits"), kv.ttl("after")) == (50, 35, 5)
            assert kv.ttl("permanent") == -1
            assert kv.stats().ttl_keys == 3
            clock.advance(5)
            assert kv.get("after") is None
            assert kv.incr("hits") == 8
            assert kv.ttl("hits") == 30

    await asyncio.to_thread(read)


# -- threads --------------------------------------------------------------------------


@pytest.mark.parametrize("durability", DURABILITY_LEVELS)
def test_8_threads_of_1000_incr_each_give_exactly_8000_also_after_reopen(
    store_path: str, durability: Durability
) -> None:
    seen: list[list[int]] = [[] for _ in range(8)]
    with KV(store_path, durability=durability) as kv:

        def count(thread: int) -> None:
            for _ in range(1000):
                seen[thread].append(kv.incr("n"))

        run_in_threads(8, count)
        assert kv.get("n") == 8000
    assert sorted(value for values in seen for value in values) == list(range(1, 8001))
    assert all(values == sorted(values) for values in seen)
    with KV(store_path) as kv:
        assert kv.get("n") == 8000


def test_mixed_set_get_delete_incr_from_8_threads_leave_a_consistent_state(
    store_path: str,
) -> None:
    rounds = 300
    clock = FakeClock()
    with KV(store_path, clock=clock) as kv:

        def work(thread: int) -> None:
            for i in range(rounds):
                key = f"t{thread}:{i}"
                kv.set(key, {"thread": thread, "i": i, "tags": [i] * (i % 4)})
                assert kv.get(key) == {"thread": thread, "i": i, "tags": [i] * (i % 4)}
                if i % 3 == 0:
                    assert kv.delete(key) is True
                    assert kv.exists(key) is False
                kv.incr("shared")
                assert kv.incr(f"count:{thread}") == i + 1  # nobody else touches it
                kv.set("last", [thread, i])
                kv.set(f"temp:{thread}", i, ttl=100)
                if i % 2:
                    assert kv.expire(f"temp:{thread}", None) is True
                if i % 25 == 0:  # readers see whole values, whatever runs meanwhile
                    for name, value in kv.get_all().items():
                        if name.startswith("t") and ":" in name and name[1].isdigit():
                            number, index = name[1:].split(":")
                            assert isinstance(value, dict)
                            assert (value["thread"], value["i"]) == (int(number), int(index))
                    assert all(name.startswith(f"t{thread}:")
                               for name in kv.keys(f"t{thread}:*"))

        run_in_threads(8, work)
        final = kv.get_all()
        assert final["shared"] == 8 * rounds
        for thread in range(8):
            assert final[f"count:{thread}"] == rounds
            assert final[f"temp:{thread}"] == rounds - 1
            assert kv.ttl(f"temp:{thread}") == -1  # the last call (odd i) removed it
            kept = {name for name in final if name.startswith(f"t{thread}:")}
            assert kept == {f"t{thread}:{i}" for i in range(rounds) if i % 3}
        last = final["last"]
        assert isinstance(last, list) and last[1] == rounds - 1 and 0 <= last[0] < 8
        assert len(final) == 8 * (rounds - rounds // 3) + 1 + 8 + 1 + 8
        assert kv.stats().keys == len(final)
    with KV(store_path, clock=clock) as kv:
        assert kv.get_all() == final


def test_calls_made_while_another_thread_closes_either_complete_or_raise_closed_error(
    store_path: str,
) -> None:
    kv = KV(store_path)
    kv.set("n", 0)
    done: list[int] = []

    def work(thread: int) -> None:
        if thread == 0:
            kv.close()
            return
        try:
            for _ in range(2000):
                done.append(kv.incr("n"))
        except ClosedError:
            pass

    run_in_threads(4, work)
    with KV(store_path) as again:
        # Every increment acknowledged before the close is in the file.
        assert again.get("n") == max(done, default=0) == len(done)


# -- no event loop -------------------------------------------------------------------


def _no_event_loop(*args: object, **kwargs: object) -> NoReturn:
    raise AssertionError("KV touched asyncio")


@pytest.mark.parametrize("durability", DURABILITY_LEVELS)
def test_kv_works_with_no_event_loop_at_all(
    store_path: str, durability: Durability, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    for name in ("get_running_loop", "get_event_loop", "new_event_loop", "run",
                 "run_coroutine_threadsafe"):
        monkeypatch.setattr(asyncio, name, _no_event_loop)
    clock = FakeClock()

    def use() -> None:
        with KV(store_path, durability=durability, clock=clock) as kv:
            kv.set("a", [1, 2], ttl=10)
            kv.set("b", "x")
            assert kv.incr("n", ttl=10) == 1
            assert kv.incr("n") == 2
            assert kv.expire("b", 30) is True
            assert sorted(kv.keys()) == ["a", "b", "n"]
            assert kv.get("a") == [1, 2]
            assert kv.exists("b") is True
            assert kv.ttl("b") == 30
            assert kv.delete("a") is True
            kv.flush()
            kv.compact()
            assert kv.stats().compactions == 1
        with KV(store_path, durability=durability, clock=clock) as kv:
            assert kv.get_all() == {"b": "x", "n": 2}
            assert kv.clear() is True
            kv.set("c", 3)
        with KV(store_path, clock=clock) as kv:
            assert kv.get_all() == {"c": 3}

    use()  # on the main thread
    os.remove(store_path)
    worker_errors: list[BaseException] = []

    def in_a_new_thread() -> None:  # a thread that never had an event loop
        try:
            use()
        except BaseException as exc:
            worker_errors.append(exc)

    thread = threading.Thread(target=in_a_new_thread)
    thread.start()
    thread.join()
    assert worker_errors == []


# -- the rest of the API -------------------------------------------------------------


def test_kv_flush_compact_and_stats(store_path: str) -> None:
    with KV(store_path, durability="buffered") as kv:
        for i in range(200):
            kv.set("overwritten", i)
        kv.set("kept", "k", ttl=1000)
        kv.flush()  # written and fsynced: the file holds all 201 records now
        before = kv.stats()
        assert before.file_bytes == store_size(store_path)
        assert (before.keys, before.ttl_keys, before.compactions) == (2, 1, 0)
        assert before.dead_bytes > 0
        assert before.durability == "buffered"
        assert before.path == store_path
        kv.compact()
        after = kv.stats()
        assert after.compactions == 1
        assert after.last_compaction is not None
        assert after.file_bytes < before.file_bytes
        assert after.file_bytes == store_size(store_path)
    with KV(store_path) as kv:
        assert kv.get_all() == {"overwritten": 199, "kept": "k"}
        assert kv.stats().compactions == 1
        assert 999 <= kv.ttl("kept") <= 1000


def test_kv_clear_removes_the_file_and_a_later_set_creates_it_again(store_path: str) -> None:
    with KV(store_path) as kv:
        kv.set("a", 1, ttl=50)
        kv.incr("b")
        assert kv.clear() is True
        assert not os.path.exists(store_path)
        assert kv.get_all() == {}
        assert kv.keys() == []
        kv.set("c", 1)
        assert os.path.exists(store_path)
    with KV(store_path) as kv:
        assert kv.get_all() == {"c": 1}


def test_kv_refuses_bad_keys_and_values_naming_the_key_and_changes_nothing(
    store_path: str,
) -> None:
    with KV(store_path) as kv:
        kv.set("k", "before")
        before = Path(store_path).read_bytes()
        with pytest.raises(TypeError, match="'k'"):
            kv.set("k", {1, 2})
        with pytest.raises(ValueError, match="'k'"):
            kv.set("k", 2**64)
        with pytest.raises(TypeError):
            kv.set(1, "v")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            kv.get(b"k")  # type: ignore[call-overload]
        with pytest.raises(TypeError):
            kv.keys(1)  # type: ignore[arg-type]
        assert kv.get_all() == {"k": "before"}
        assert Path(store_path).read_bytes() == before


def test_kv_values_are_independent_copies(store_path: str) -> None:
    with KV(store_path) as kv:
        value: dict[str, list[int]] = {"list": [1, 2]}
        kv.set("k", value)
        value["list"].append(3)
        got = kv.get("k")
        assert got == {"list": [1, 2]}
        assert isinstance(got, dict)
        got["list"].append(4)
        assert kv.get("k") == {"list": [1, 2]}


def test_kv_set_without_a_value_stores_the_clock_as_an_int(store_path: str) -> None:
    with KV(store_path, clock=lambda: 1_700_000_123.75) as kv:
        kv.set("seen")
        assert kv.get("seen") == 1_700_000_123
