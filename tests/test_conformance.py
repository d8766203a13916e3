"""One contract, every backend: the API's behaviour on a local log and on a
real Redis server, through both shells.

Each test runs against ``{AioKV, KV} x {local log, Redis}``, the stores
made by ``from_url`` as a program makes them; on the server each test has a
namespace of its own, and ``servers.namespace_on`` checks at
teardown that nothing outside it was touched. Time is the real clock (the server keeps
its own), so the few ttl tests use fractions of a second. Where a backend
documents a difference (docs/redis.md), the test says so.
"""

from __future__ import annotations

import asyncio
import fnmatch
import inspect
import itertools
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from servers import Server, Servers, namespace_on

from aiokv import KV, AioKV, ClosedError, WriteBatch

BACKENDS = ["local", "redis", "valkey", "cluster", "cluster-spread"]
SHELLS = ["AioKV", "KV"]


class Calls:
    """A store's methods as coroutines: ``AioKV``'s awaited, ``KV``'s run in
    a thread (so that many may run at once, as threads would)."""

    def __init__(self, store: Any, backend: str) -> None:
        self.store = store
        self.backend = backend
        self.blocking = not inspect.iscoroutinefunction(store.get)

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self.store, name)
        if not self.blocking:
            return method  # type: ignore[no-any-return]

        async def in_thread(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(method, *args, **kwargs)

        return in_thread


@pytest.fixture(params=[(backend, shell) for backend in BACKENDS for shell in SHELLS],
                ids=lambda param: f"{param[0]}-{param[1]}")
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(the URL or path of a fresh store, the shell) for each combination."""
    backend, shell = request.param
    return location(request, backend, tmp_path), shell


def location(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    """A fresh store's path, or its URL on the session's server of that kind
    (in a namespace checked at teardown, see ``servers.namespace_on``)."""
    if backend == "local":
        return str(tmp_path / "state.kv")
    servers = request.getfixturevalue("servers")
    server = servers.cluster() if backend.startswith("cluster") else servers.get(backend)
    namespace = namespace_on(server)
    prefix = namespace.__enter__()
    request.addfinalizer(lambda: namespace.__exit__(None, None, None))
    spread = "&spread=1" if backend == "cluster-spread" else ""
    return f"{server.url}?prefix={prefix}{spread}"


def make(target: tuple[str, str]) -> Any:
    where, shell = target
    return (AioKV if shell == "AioKV" else KV).from_url(where)


@pytest.fixture
def store(target: tuple[str, str]) -> Iterator[Calls]:
    """A fresh store, as Calls."""
    yield from calls_on(target)


def calls_on(target: tuple[str, str]) -> Iterator[Calls]:
    """A fresh store, as Calls, closed after the test. An async test runs in
    its own event loop: the store's connections there close when that loop
    ends; this closes it."""
    created = make(target)
    yield Calls(created, "local" if "://" not in target[0] else "redis")
    if inspect.iscoroutinefunction(created.close):
        asyncio.run(created.close())
    else:
        created.close()


ONE_SLOT = [(backend, shell) for backend in BACKENDS if backend != "cluster-spread"
            for shell in SHELLS]
"""Where a batch may span any keys: not a cluster whose keys are spread,
where a batch's keys must share a slot (test_a_batch_in_a_spread_cluster...)."""


@pytest.fixture(params=ONE_SLOT, ids=lambda param: f"{param[0]}-{param[1]}")
def batch_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Calls]:
    """``store`` for the tests of atomic batches over any keys."""
    backend, shell = request.param
    yield from calls_on((location(request, backend, tmp_path), shell))


VALUES: list[object] = [
    None, True, False, 0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, -0.0, math.inf,
    "", "text", "ünïcødé ✓", b"", b"\x00\xff bytes", [], [1, "two", [3.0, None]],
    {"a": 1, "nested": {"b": [True, b"x"]}}, {1: "int key", b"k": "bytes key"},
]


def typed(value: object) -> object:
    """A value with its types spelled out, so 1 == 1.0 == True cannot pass."""
    if isinstance(value, dict):
        return ("dict", sorted((repr(k), typed(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", [typed(item) for item in value])
    return (type(value).__name__, repr(value))


async def test_every_kind_of_value_reads_back_as_stored(store: Calls) -> None:
    for i, value in enumerate(VALUES):
        await store.set(f"v{i}", value)
    for i, value in enumerate(VALUES):
        assert typed(await store.get(f"v{i}")) == typed(value), value
    await store.set("tuple", (1, 2))
    assert await store.get("tuple") == [1, 2]
    assert await store.get("absent") is None
    assert await store.get("absent", "fallback") == "fallback"


async def test_reads_are_fresh_copies_and_set_copies_its_argument(store: Calls) -> None:
    value = {"list": [1, 2]}
    await store.set("k", value)
    value["list"].append(3)
    got = await store.get("k")
    assert got == {"list": [1, 2]}
    got["list"].append(4)
    assert await store.get("k") == {"list": [1, 2]}


async def test_set_without_a_value_stores_the_unix_time_as_an_int(store: Calls) -> None:
    before = int(time.time())
    await store.set("seen")
    stamp = await store.get("seen")
    assert type(stamp) is int and before <= stamp <= time.time() + 1


BAD_CALLS: list[tuple[str, tuple[Any, ...], type[Exception]]] = [
    ("set", (5, "v"), TypeError),
    ("set", ("k", object()), TypeError),
    ("set", ("k", {1, 2}), TypeError),
    ("set", ("k", 2**64), ValueError),
    ("set", ("k", [2**64]), ValueError),
    ("set", ("k", "v", -1), ValueError),
    ("set", ("k", "v", math.nan), ValueError),
    ("set", ("k", "v", "60"), TypeError),
    ("get", (b"k",), TypeError),
    ("incr", ("k", 1.5), TypeError),
    ("incr", ("k", True), TypeError),
    ("expire", ("k", -5), ValueError),
    ("keys", (5,), TypeError),
    ("add", ("k", object()), TypeError),
]


@pytest.mark.parametrize(("method", "args", "error"), BAD_CALLS,
                         ids=[f"{m}{a!r}" for m, a, _ in BAD_CALLS])
async def test_bad_input_raises_the_same_error_as_the_local_store_and_changes_nothing(
        store: Calls, tmp_path: Path, method: str, args: tuple[Any, ...],
        error: type[Exception]) -> None:
    with pytest.raises(error) as raised:
        await getattr(store, method)(*args)
    with KV(tmp_path / "reference.kv") as local, pytest.raises(error) as expected:
        getattr(local, method)(*args)
    assert str(raised.value) == str(expected.value)
    assert await store.get_all() == {}


async def test_incr_counts_from_zero_and_keeps_an_existing_expiry(store: Calls) -> None:
    assert await store.incr("n") == 1
    assert await store.incr("n", 10) == 11
    assert await store.incr("n", -12) == -1
    assert await store.ttl("n") == -1
    assert await store.incr("limited", ttl=60) == 1
    assert 59 <= await store.ttl("limited") <= 60
    assert await store.incr("limited", ttl=5) == 2  # the ttl applies only on creation
    assert 59 <= await store.ttl("limited") <= 60


@pytest.mark.parametrize("value", ["3", 1.0, True, None, [1], b"1"])
async def test_incr_of_a_value_that_is_not_an_int_raises_type_error_and_leaves_it(
        store: Calls, value: object) -> None:
    await store.set("k", value)
    with pytest.raises(TypeError, match=f"key 'k' holds a {type(value).__name__}, not an int"):
        await store.incr("k")
    assert typed(await store.get("k")) == typed(value if value != (1,) else [1])


async def test_counters_are_exact_past_2_to_the_53(store: Calls) -> None:
    # Lua's numbers are doubles: a script returning INCRBY's result lost the
    # last bits (found by tests/test_backends_agree.py).
    assert await store.incr("n", 2**53 + 1) == 2**53 + 1
    assert await store.incr("n", 2**62) == 2**62 + 2**53 + 1
    assert await store.get("n") == 2**62 + 2**53 + 1


async def test_incr_past_the_64_bit_range_raises_value_error_and_leaves_the_value(
        store: Calls) -> None:
    # Counters: -2^63 .. 2^64-1 locally, signed 64-bit on a server (docs/redis.md).
    top = 2**64 - 1 if store.backend == "local" else 2**63 - 1
    await store.set("k", top)
    with pytest.raises(ValueError, match="out of the"):
        await store.incr("k")
    assert await store.get("k") == top


async def test_ttl_is_whole_seconds_rounded_up_and_minus_one_and_minus_two(
        store: Calls) -> None:
    await store.set("plain", 1)
    await store.set("long", 1, ttl=1.5)
    await store.set("short", 1, ttl=0.3)
    assert await store.ttl("plain") == -1
    assert await store.ttl("long") == 2
    assert await store.ttl("short") == 1  # Redis's TTL would say 0
    assert await store.ttl("absent") == -2


async def test_sub_second_ttls_are_kept_and_expire_on_time(store: Calls) -> None:
    await store.set("brief", "v", ttl=0.25)
    await store.set("zero", "v", ttl=0)  # 0: no expiry, as None
    assert await store.exists("brief")
    await asyncio.sleep(0.4)
    assert not await store.exists("brief")
    assert await store.get("brief") is None
    assert await store.ttl("brief") == -2
    assert await store.get("zero") == "v" and await store.ttl("zero") == -1


async def test_expire_sets_or_removes_an_expiry_of_an_existing_key_only(store: Calls) -> None:
    await store.set("k", "v")
    assert await store.expire("k", 60)
    assert 59 <= await store.ttl("k") <= 60
    assert await store.expire("k", None)  # removes it; the key stays (Redis's EXPIRE k 0
    assert await store.ttl("k") == -1     # would delete it)
    assert await store.expire("k", 30)
    assert await store.expire("k", 0)
    assert await store.get("k") == "v" and await store.ttl("k") == -1
    assert not await store.expire("absent", 60)
    assert not await store.expire("absent", None)
    await store.set("k", "w", ttl=60)
    await store.set("k", "x")  # a set without ttl removes an earlier expiry
    assert await store.ttl("k") == -1


PATTERN_KEYS = ["a", "b", "ab", "a*b", "a?b", "a[b", "a\\b", "^b", "!b", "é", "éa", "ü!",
                "user:1:name", "user:22", "x-y", "[ab]", "a]b", "caret^"]
PATTERNS = ["*", "a*", "*b", "a?", "?", "[!a]", "[^a]", "[a-c]", "[c-a]", "a\\*b", "a[*]b",
            "a[?]b", "[[]ab]", "a]b", "user:*", "user:?", "é?", "??", "[!é]", "*^*",
            "a\\b", "[]ab]*", "[!]a]"]


async def test_keys_match_exactly_as_fnmatchcase_does(store: Calls) -> None:
    for key in PATTERN_KEYS:
        await store.set(key, 1)
    for pattern in PATTERNS:
        expected = sorted(key for key in PATTERN_KEYS if fnmatch.fnmatchcase(key, pattern))
        assert sorted(await store.keys(pattern)) == expected, pattern


async def test_exists_delete_and_get_default(store: Calls) -> None:
    await store.set("k", "v")
    assert await store.exists("k")
    assert await store.delete("k") is True
    assert await store.delete("k") is True  # absent: still True
    assert not await store.exists("k")
    assert await store.get("k", 7) == 7


async def test_add_stores_only_when_absent_and_exactly_one_of_many_wins(store: Calls) -> None:
    assert await store.add("k", 1)
    assert not await store.add("k", 2)
    assert await store.get("k") == 1
    results = await asyncio.gather(*(store.add("race", i) for i in range(50)))
    assert results.count(True) == 1
    assert await store.get("race") == results.index(True)


async def test_pop_returns_the_value_and_removes_it_and_one_of_many_gets_it(
    store: Calls,
) -> None:
    await store.set("job", {"id": 7, "tags": ["a"]})
    assert await store.pop("job") == {"id": 7, "tags": ["a"]}
    assert not await store.exists("job")
    assert await store.pop("job", "gone") == "gone"
    assert await store.pop("never") is None
    await store.set("once", 42)
    results = await asyncio.gather(*(store.pop("once", None) for _ in range(100)))
    assert sorted(results, key=repr) == [42] + [None] * 99


async def test_pop_of_an_expired_key_gives_the_default(store: Calls) -> None:
    await store.set("short", 1, ttl=0.05)
    await asyncio.sleep(0.2)
    assert await store.pop("short", "expired") == "expired"


async def test_get_many_gives_the_present_keys_only(store: Calls) -> None:
    await store.set("a", 1)
    await store.set("b", [1, 2])
    await store.set("c", "x", ttl=0.05)
    await asyncio.sleep(0.2)
    assert await store.get_many(["a", "b", "c", "missing", "a"]) == {"a": 1, "b": [1, 2]}
    assert await store.get_many([]) == {}
    many = {f"k{i}": i for i in range(1_500)}  # past one MGET page
    for key, value in many.items():
        await store.set(key, value)
    assert await store.get_many(many) == many
    with pytest.raises(TypeError):
        await store.get_many("abc")
    with pytest.raises(TypeError):
        await store.get_many([b"k"])


async def in_batch(store: Calls, fill: Callable[[WriteBatch], None]) -> None:
    """Run ``fill`` inside ``store.batch()``: ``async with`` or, for a
    blocking store, ``with`` in a thread."""
    if store.blocking:
        def blocking() -> None:
            with store.store.batch() as batch:
                fill(batch)

        await asyncio.to_thread(blocking)
        return
    async with store.store.batch() as batch:
        fill(batch)


async def test_set_many_stores_every_pair_with_its_ttl_or_none(batch_store: Calls) -> None:
    await batch_store.set("old", 1, ttl=100)
    await batch_store.set_many({"a": 1, "b": [1, {"x": None}], "old": "new"})
    assert await batch_store.get_all() == {"a": 1, "b": [1, {"x": None}], "old": "new"}
    assert await batch_store.ttl("old") == -1  # a set without a ttl removes the expiry
    await batch_store.set_many([("c", 2.5), ("d", b"x")], ttl=100)
    assert await batch_store.get_many(["c", "d"]) == {"c": 2.5, "d": b"x"}
    assert await batch_store.ttl("c") == 100
    await batch_store.set_many({})
    assert len(await batch_store.keys()) == 5


@pytest.mark.parametrize("bad", [{"ok": 1, "bad": {1, 2}}, [("ok", 1), (7, 2)]],
                         ids=["unstorable value", "key not a str"])
async def test_set_many_with_one_bad_pair_raises_and_stores_none(batch_store: Calls,
                                                                  bad: Any) -> None:
    with pytest.raises(TypeError):
        await batch_store.set_many(bad)
    assert await batch_store.keys() == []
    with pytest.raises(TypeError):
        await batch_store.set_many("ab")
    with pytest.raises(ValueError):
        await batch_store.set_many({"a": 1}, ttl=-1)
    assert await batch_store.keys() == []


async def test_delete_many_removes_the_keys_and_counts_those_that_were_there(
    batch_store: Calls,
) -> None:
    await batch_store.set_many({"a": 1, "b": 2, "c": 3})
    await batch_store.set("gone", 1, ttl=0.05)
    await asyncio.sleep(0.2)
    assert await batch_store.delete_many(["a", "b", "missing", "gone", "a"]) == 2
    assert await batch_store.keys() == ["c"]
    assert await batch_store.delete_many([]) == 0
    with pytest.raises(TypeError):
        await batch_store.delete_many("c")
    assert await batch_store.keys() == ["c"]


async def test_a_batch_applies_sets_deletes_and_incrs_in_order(batch_store: Calls) -> None:
    await batch_store.set("queued:7", {"job": 7})
    await batch_store.set("hits", 10, ttl=100)

    def move(batch: WriteBatch) -> None:
        batch.delete("queued:7")
        batch.set("done:7", {"job": 7})
        batch.incr("hits")
        batch.incr("fresh", 5, ttl=100)
        batch.set("n", 1)
        batch.incr("n", 2)  # adds to the value set above
        batch.set("later", "x")
        batch.delete("later")

    await in_batch(batch_store, move)
    assert await batch_store.get_all() == {"done:7": {"job": 7}, "hits": 11, "fresh": 5, "n": 3}
    assert await batch_store.ttl("hits") == 100  # an incr of a live key keeps its expiry
    assert await batch_store.ttl("fresh") == 100  # and gives a new key its ttl
    assert await batch_store.ttl("n") == -1


async def test_a_batch_whose_block_raises_applies_nothing(batch_store: Calls) -> None:
    await batch_store.set("keep", 1)

    def fail(batch: WriteBatch) -> None:
        batch.set("new", 1)
        batch.delete("keep")
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        await in_batch(batch_store, fail)
    assert await batch_store.get_all() == {"keep": 1}


async def test_a_batch_with_an_incr_the_store_refuses_applies_nothing(batch_store: Calls) -> None:
    await batch_store.set("text", "not a number")

    def mixed(batch: WriteBatch) -> None:
        batch.set("a", 1)
        batch.incr("text")

    with pytest.raises(TypeError, match="not an int"):
        await in_batch(batch_store, mixed)
    assert await batch_store.get_all() == {"text": "not a number"}

    def bad_value(batch: WriteBatch) -> None:
        batch.set("b", 1)
        batch.set("c", object())

    with pytest.raises(TypeError):
        await in_batch(batch_store, bad_value)
    assert await batch_store.get_all() == {"text": "not a number"}


async def test_a_batch_cannot_be_used_once_its_block_has_ended(store: Calls) -> None:
    kept: list[WriteBatch] = []
    await in_batch(store, kept.append)
    with pytest.raises(RuntimeError, match="ended"):
        kept[0].set("late", 1)
    assert await store.keys() == []


async def test_update_stores_what_fn_returns_and_keeps_the_expiry(store: Calls) -> None:
    assert await store.update("n", lambda v: v + 1, 0) == 1
    assert await store.update("n", lambda v: v * 10) == 10
    assert await store.update("tags", lambda v: [*v, "a"], []) == ["a"]
    assert await store.update("tags", lambda v: [*v, "b"], []) == ["a", "b"]
    await store.set("session", {"hits": 1}, ttl=100)
    assert await store.update("session", lambda s: {**s, "hits": s["hits"] + 1}) == {
        "hits": 2}
    assert await store.ttl("session") == 100
    assert await store.update("created", lambda v: v, "x", ttl=50) == "x"
    assert await store.ttl("created") == 50

    def refuse(value: object) -> object:
        raise KeyError("no")

    with pytest.raises(KeyError):
        await store.update("n", refuse)
    assert await store.get("n") == 10
    with pytest.raises(TypeError):
        await store.update("n", lambda v: {1, 2})
    assert await store.get("n") == 10


async def test_update_from_a_thousand_tasks_counts_exactly(store: Calls) -> None:
    await asyncio.gather(*(store.update("count", lambda v: v + 1, 0) for _ in range(1_000)))
    assert await store.get("count") == 1_000


async def test_batches_from_many_tasks_incr_a_shared_counter_exactly(
    batch_store: Calls,
) -> None:
    def bump(i: int) -> Callable[[WriteBatch], None]:
        def changes(batch: WriteBatch) -> None:
            batch.incr("total")
            batch.set(f"done:{i}", i)
        return changes

    await asyncio.gather(*(in_batch(batch_store, bump(i)) for i in range(200)))
    assert await batch_store.get("total") == 200
    assert len(await batch_store.keys("done:*")) == 200


async def test_update_as_a_mapping_stores_the_pairs(batch_store: Calls) -> None:
    await batch_store.update({"a": 1}, b=2)
    await batch_store.update([("c", 3)])
    assert await batch_store.get_all() == {"a": 1, "b": 2, "c": 3}
    assert await batch_store.count() == 3


async def test_readers_never_see_half_of_a_batch(batch_store: Calls) -> None:
    await batch_store.set_many({"a": 0, "b": 0})
    reads, halves = 0, []
    done = False

    async def read() -> None:
        nonlocal reads
        while not done:
            pair = await batch_store.get_many(["a", "b"])
            reads += 1
            if pair["a"] != pair["b"]:
                halves.append(pair)
            await asyncio.sleep(0)  # a local AioKV's reads never suspend

    readers = [asyncio.ensure_future(read()) for _ in range(3)]
    for i in range(1, 150):
        await batch_store.set_many({"a": i, "b": i})
        await asyncio.sleep(0)
    done = True
    await asyncio.gather(*readers)
    assert reads > 10
    assert halves == []


async def test_get_all_keys_and_clear_span_many_pages(store: Calls) -> None:
    # More keys than one SCAN page (or MGET) takes: 2,500.
    items = {f"k{i:05d}": i for i in range(2500)}
    pairs = list(items.items())
    for start in range(0, 2500, 50):  # 50 at a time: tasks are costly in debug mode
        await asyncio.gather(*(store.set(key, value) for key, value in pairs[start:start + 50]))
    assert await store.get_all() == items
    assert sorted(await store.keys()) == sorted(items)
    assert sorted(await store.keys("k0001*")) == [f"k0001{i}" for i in range(10)]
    stats = await store.stats()
    assert (stats.keys, stats.ttl_keys) == (2500, 0)
    assert await store.clear() is True
    assert await store.get_all() == {}
    assert await store.keys() == []
    await store.set("after", 1)
    assert await store.get_all() == {"after": 1}


async def test_stats_count_keys_and_keys_with_an_expiry(store: Calls) -> None:
    await store.set("a", 1)
    await store.set("b", 1, ttl=60)
    await store.incr("c", ttl=60)
    stats = await store.stats()
    assert (stats.keys, stats.ttl_keys) == (3, 2)


async def test_flush_and_compact_return_and_keep_every_entry(store: Calls) -> None:
    await store.set("k", "v")
    await store.flush()
    await store.compact()
    assert await store.get_all() == {"k": "v"}


def test_a_closed_store_raises_closed_error(target: tuple[str, str]) -> None:
    created = make(target)
    if isinstance(created, KV) or not inspect.iscoroutinefunction(created.close):
        created.set("k", 1)
        created.close()
        created.close()  # idempotent
        with pytest.raises(ClosedError):
            created.get("k")
        return

    async def main() -> None:
        await created.set("k", 1)
        await created.close()
        await created.close()
        with pytest.raises(ClosedError):
            await created.get("k")

    asyncio.run(main())


@pytest.fixture(params=BACKENDS)
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL or path of a fresh store on each backend (for one shell's tests)."""
    return location(request, str(request.param), tmp_path)


def test_one_async_store_works_across_successive_event_loops(where: str) -> None:
    created = AioKV.from_url(where)
    for round_ in range(3):
        asyncio.run(created.set(f"round{round_}", round_))
    assert asyncio.run(created.get_all()) == {f"round{i}": i for i in range(3)}
    asyncio.run(created.close())


def in_sixteen_threads(work: Callable[[], None]) -> None:
    """Run ``work`` in 16 threads at once; return when all have ended."""
    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_one_blocking_store_is_safe_from_many_threads(where: str) -> None:
    created = KV.from_url(where)

    def count() -> None:
        for _ in range(200):
            created.incr("hits")

    in_sixteen_threads(count)
    assert created.get("hits") == 3200
    created.close()


def test_update_from_sixteen_threads_counts_exactly(where: str) -> None:
    created = KV.from_url(where)

    def count() -> None:
        for _ in range(100):
            created.update("hits", lambda v: v + 1, 0)

    in_sixteen_threads(count)
    assert created.get("hits") == 1600
    created.close()


@pytest.mark.parametrize("backend", ["redis", "valkey", "cluster"])
def test_an_update_made_on_a_stale_guess_is_made_again_on_what_the_key_holds(
        request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> None:
    """A store on a server remembers what its update() stored, to save the
    read next time: another client's write in between must still count."""
    url = location(request, backend, tmp_path)
    ours, theirs = KV.from_url(url), KV.from_url(url)
    assert ours.update("n", lambda v: v + 1, 0) == 1
    theirs.set("n", 10)
    assert ours.update("n", lambda v: v + 1) == 11
    theirs.set("n", "text")  # ours guesses 11: fn works on it, the script refuses
    with pytest.raises(TypeError):
        ours.update("n", lambda v: v + 1)
    assert theirs.get("n") == "text"
    assert ours.update("s", lambda v: "text", None) == "text"
    theirs.set("s", 5)  # ours guesses "text": fn raises on the guess, then reads
    assert ours.update("s", lambda v: v + 1) == 6
    theirs.delete("s")
    assert ours.update("s", lambda v: (v or 0) + 1, None, ttl=100) == 1
    assert theirs.ttl("s") == 100  # created, as the key was absent: the ttl applies
    ours.close()
    theirs.close()


def test_a_blocking_store_is_a_mutable_mapping(where: str) -> None:
    created = KV.from_url(where)
    assert isinstance(created, MutableMapping)
    created["a"] = 1
    created["b"] = [2]
    assert created["a"] == 1 and "b" in created and "z" not in created and 7 not in created
    assert len(created) == 2 and sorted(created) == ["a", "b"]
    assert dict(created) == {"a": 1, "b": [2]}
    with pytest.raises(KeyError):
        created["z"]
    del created["a"]
    with pytest.raises(KeyError):
        del created["a"]
    assert created.setdefault("c", 3) == 3 and created.setdefault("c", 4) == 3
    other = KV.from_url(where)
    assert created != other and {created: 1}[created] == 1  # equal only to itself: hashable
    other.close()
    created.close()


def test_an_async_store_iterates_and_counts(where: str) -> None:
    async def check() -> None:
        created = AioKV.from_url(where)
        await created.set("x", 1)
        await created.set("y", 2)
        assert sorted([key async for key in created]) == ["x", "y"]
        assert await created.count() == 2
        await created.close()

    asyncio.run(check())


def test_a_batch_in_a_spread_cluster_must_share_a_slot(
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    created = KV.from_url(location(request, "cluster-spread", tmp_path))
    with pytest.raises(ValueError, match="hash tag"):
        created.set_many({"user:1": 1, "user:2": 2, "user:3": 3, "other": 4})
    assert created.keys() == []
    created.set_many({"{user:7}name": "a", "{user:7}mail": "b"})
    assert created.count() == 2
    created.close()


GLOB_ALPHABET = "ab^!-]\\[*?é:"


@st.composite
def glob_patterns(draw: st.DrawFn) -> str:
    return draw(st.text(alphabet=GLOB_ALPHABET, min_size=1, max_size=6))


def test_random_glob_patterns_match_as_fnmatchcase_on_a_server(
        servers: Servers, tmp_path: Path) -> None:
    """The issue's measurement: raw Redis globs differed from fnmatchcase on
    349 of 3,000 random patterns. Here 400 random patterns (every character
    that is special to either dialect), on keys made of the same characters."""
    keys = sorted({"".join(chars) for chars in itertools.product("ab^!]\\[é", repeat=2)}
                  | {"a", "b", "^", "!", "é", "*", "?", "-", ""})
    keys.remove("")
    with namespace_on(servers.get("redis")) as prefix, \
            KV.from_url(f"{servers.get('redis').url}?prefix={prefix}") as kv:
        for key in keys:
            kv.set(key, 1)

        @settings(max_examples=400, deadline=None)
        @given(glob_patterns())
        def matches_like_fnmatchcase(pattern: str) -> None:
            expected = sorted(key for key in keys if fnmatch.fnmatchcase(key, pattern))
            assert sorted(kv.keys(pattern)) == expected

        matches_like_fnmatchcase()


def test_durability_asked_of_a_server_is_checked_against_its_configuration(
        tmp_path: Path) -> None:
    everysec = Server("redis", tmp_path / "everysec").start()
    always = Server("redis", tmp_path / "always", appendfsync="always").start()
    try:
        with pytest.raises(ValueError, match="appendfsync everysec"):
            KV.from_url(f"{everysec.url}?prefix=p:", durability="fsync").open()
        with KV.from_url(f"{everysec.url}?prefix=p:", durability="flush") as kv:
            assert kv.stats().durability == "server: appendfsync everysec"
        with KV.from_url(f"{always.url}?prefix=p:", durability="fsync") as kv:
            kv.set("k", 1)
            kv.flush()
            assert kv.stats().durability == "server: appendfsync always"
    finally:
        everysec.stop()
        always.stop()
