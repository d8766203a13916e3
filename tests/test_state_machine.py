"""The store behaves like a dict, whatever the order of operations.

How it is driven
----------------
Hypothesis state machines are synchronous, and ``AioKV`` is only a thin async
shell (each method calls one ``Engine`` method, inline or in the executor). So
the main machine drives the synchronous ``aiokv._engine.Engine`` directly,
waiting on the ``Commit`` that ``set``/``delete`` return at the "fsync" level,
and compares it after every step with a plain dict. It runs once per
durability level ("flush", "fsync", "buffered"), each as its own test class.
Its rules: set, get, delete, clear, compact, flush, get_all, close-and-reopen,
plus two rules checking that values are independent copies (mutating the
object passed to ``set``, and mutating what ``get``/``get_all`` returned, must
not change what is stored). After every step ``get_all()`` equals the model
and ``stats().keys == len(model)``; after a reopen the contents equal the
model exactly. The ``initialize`` rule also draws the flush and fsync
intervals (the defaults, or 1 ms so the background writer runs mid-machine).

The async shell gets a smaller, separate test: a hypothesis ``@given`` test
that draws a list of operations and plays them through ``AioKV`` inside one
``asyncio.run`` per example (a fresh event loop each time), including a
reopen, a batch of concurrent writes gathered on distinct keys (the group
commit path at "fsync"), and the ``set(key)`` default of "now".

Compaction during the machine
-----------------------------
A ``compact`` rule compacts explicitly. Automatic compaction starts only when
dead bytes exceed live bytes by ``aiokv._engine.COMPACT_SLACK`` (640 KiB),
which small examples never reach, so each machine draws a slack in its
``initialize`` rule (0, 16 or 256 bytes, or the real value) and patches the
module constant for the machine's lifetime (``_maybe_compact`` reads it at
call time), together with ``COMPACTION_CHECK_BYTES`` (how often the rule is
checked) where the engine has that constant; ``teardown`` restores both, and
an autouse fixture restores them again should anything escape. An
``overwrite_repeatedly`` rule writes bursts of dead records, so with a tiny
slack background compactions really start (a few hundred per run) and
overlap the writes, clears and closes that follow.

The machine found that ``compact()`` could return without compacting (it
joined a compaction that had already swapped its file in, or one that
``clear()`` had voided). In the machine that depends on thread timing, so
``test_compact_compacts_even_while_another_compaction_runs``, at the end of
this module, reproduces both cases deterministically through the engine's
``FileSystem`` seam.

Values and comparison
---------------------
Values are None, bools, ints over the whole range msgpack stores
(-2**63 .. 2**64-1, edges included), floats *including NaN*, infinities and
-0.0, unicode str, bytes, and nested lists, tuples and str-keyed dicts.
Tuples read back as lists, so the model holds them as lists. NaN is kept
rather than excluded; since NaN != NaN (and ``==`` also confuses True with 1
and 0.0 with -0.0), the model is compared with ``same()``: a strict structural
equality that requires identical types, treats any NaN as equal to any NaN
(the payload bits are not compared), and tells 0.0 from -0.0. Keys come from
a small fixed set (the empty string, ASCII, non-ASCII, one longer than a
msgpack fixstr) so overwrites and deletes of present keys are frequent.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from aiokv import AioKV, _engine
from aiokv._commit import Commit
from aiokv._engine import Engine
from aiokv._files import FileSystem

REAL_COMPACT_SLACK = _engine.COMPACT_SLACK
REAL_THRESHOLDS = {
    name: getattr(_engine, name)
    for name in ("COMPACT_SLACK", "COMPACTION_CHECK_BYTES")
    if hasattr(_engine, name)
}
"""The engine's compaction constants this module patches (those it has)."""

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
INT_EDGES = [
    INT_MIN, INT_MIN + 1, -(2**32), -(2**31) - 1, -(2**31), -129, -128, -33, -32, -1,
    0, 1, 127, 128, 255, 256, 2**16, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, INT_MAX,
]

KEYS = ["", "a", "b", "key", "ключ", "🔑 ключ", "k\x00", "a key longer than thirty-one bytes!"]

_MISSING = object()

# -- values -------------------------------------------------------------------

scalars: st.SearchStrategy[object] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(INT_MIN, INT_MAX),
    st.sampled_from(INT_EDGES),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=20),
)


def _extend(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=6), children, max_size=4),
    )


values: st.SearchStrategy[object] = st.recursive(scalars, _extend, max_leaves=12)

mutable_containers: st.SearchStrategy[object] = st.one_of(
    st.lists(values, max_size=4),
    st.dictionaries(st.text(max_size=6), values, max_size=4),
)

keys = st.sampled_from(KEYS)


def expected(value: object) -> object:
    """What reading ``value`` back should give: a deep copy, tuples as lists."""
    if isinstance(value, (list, tuple)):
        return [expected(item) for item in value]
    if isinstance(value, dict):
        return {key: expected(item) for key, item in value.items()}
    return value


def same(actual: object, wanted: object) -> bool:
    """Strict structural equality: same types; NaN equals NaN; -0.0 is not 0.0."""
    if type(actual) is not type(wanted):
        return False
    if isinstance(actual, float) and isinstance(wanted, float):
        if math.isnan(wanted):
            return math.isnan(actual)
        return actual == wanted and math.copysign(1.0, actual) == math.copysign(1.0, wanted)
    if isinstance(actual, list) and isinstance(wanted, list):
        return len(actual) == len(wanted) and all(map(same, actual, wanted))
    if isinstance(actual, dict) and isinstance(wanted, dict):
        return actual.keys() == wanted.keys() and all(
            same(actual[key], wanted[key]) for key in wanted
        )
    return actual == wanted


def mutate(value: object) -> None:
    """Change every mutable container inside ``value``, in place."""
    if isinstance(value, list):
        for item in value:
            mutate(item)
        value.append("mutated")
    elif isinstance(value, dict):
        for item in value.values():
            mutate(item)
        value["mutated"] = True


def assert_same(actual: object, wanted: object) -> None:
    assert same(actual, wanted), f"store has {actual!r}, the model {wanted!r}"


def set_compaction_thresholds(**values: int) -> None:
    """Patch the engine's compaction constants; those not given get their real value."""
    for name, real in REAL_THRESHOLDS.items():
        setattr(_engine, name, values.get(name, real))


@pytest.fixture(autouse=True)
def _restore_compaction_thresholds() -> Iterator[None]:
    yield
    set_compaction_thresholds()


# -- the engine against a dict ------------------------------------------------


class _EngineMatchesADict(RuleBasedStateMachine):
    durability: ClassVar[str] = "flush"

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="aiokv-machine-")
        self.path = os.path.join(self.directory, "state.kv")
        self.model: dict[str, object] = {}
        self.flush_interval = 0.1
        self.fsync_interval = 1.0
        self.engine: Engine | None = None

    @property
    def store(self) -> Engine:
        assert self.engine is not None
        return self.engine

    def _open(self) -> Engine:
        engine = Engine(self.path, durability=self.durability,
                        flush_interval=self.flush_interval, fsync_interval=self.fsync_interval)
        engine.open()
        return engine

    def _wait(self, commit: Commit | None, *, expect_commit: bool) -> None:
        if expect_commit:
            assert isinstance(commit, Commit)
            commit.wait()
        else:
            assert commit is None

    @initialize(
        slack=st.sampled_from([0, 16, 256, REAL_COMPACT_SLACK]),
        flush_interval=st.sampled_from([0.1, 0.001]),
        fsync_interval=st.sampled_from([1.0, 0.001]),
    )
    def open_the_store(self, slack: int, flush_interval: float, fsync_interval: float) -> None:
        """Short intervals make the background writer and fsyncs run mid-machine."""
        if slack == REAL_COMPACT_SLACK:
            set_compaction_thresholds()
        else:  # and check the rule on every append, not every few KiB
            set_compaction_thresholds(COMPACT_SLACK=slack, COMPACTION_CHECK_BYTES=0)
        self.flush_interval = flush_interval
        self.fsync_interval = fsync_interval
        self.engine = self._open()

    @rule(key=keys, value=values)
    def set(self, key: str, value: object) -> None:
        commit = self.store.set(key, value)
        self._wait(commit, expect_commit=self.durability == "fsync")
        self.model[key] = expected(value)

    @rule(key=keys, value=values, times=st.integers(2, 40))
    def overwrite_repeatedly(self, key: str, value: object, times: int) -> None:
        """A burst of dead records, so automatic compactions start."""
        commits = [self.store.set(key, value) for _ in range(times)]
        for commit in commits:
            self._wait(commit, expect_commit=self.durability == "fsync")
        self.model[key] = expected(value)

    @rule(key=keys)
    def get(self, key: str) -> None:
        if key in self.model:
            assert_same(self.store.get(key), self.model[key])
        else:
            assert self.store.get(key) is None
            assert self.store.get(key, _MISSING) is _MISSING

    @rule(key=keys)
    def delete(self, key: str) -> None:
        present = key in self.model
        commit = self.store.delete(key)
        self._wait(commit, expect_commit=present and self.durability == "fsync")
        self.model.pop(key, None)
        assert self.store.get(key, _MISSING) is _MISSING

    @rule()
    def clear(self) -> None:
        self.store.clear()
        self.model.clear()

    @rule()
    def compact(self) -> None:
        had_file = os.path.exists(self.path)
        before = self.store.stats().compactions
        self.store.compact()
        stats = self.store.stats()
        if had_file:  # compact() of a cleared store, with no file yet, does nothing
            assert stats.compactions >= before + 1
        if self.durability != "buffered" and had_file:
            # Nothing is waiting to be written: the file holds only live entries.
            assert stats.file_bytes == os.path.getsize(self.path)
            assert stats.dead_bytes == 0

    @rule()
    def flush(self) -> None:
        self.store.flush()

    @rule()
    def get_all(self) -> None:
        assert_same(self.store.items(), self.model)

    @rule()
    def close_and_reopen(self) -> None:
        compactions = self.store.stats().compactions
        self.store.close()
        assert not self.store.is_open
        # The header keeps the count of compactions; clear() removes the file
        # (and with it the count) until the next write creates it again.
        had_file = os.path.exists(self.path)
        self.engine = self._open()
        assert_same(self.store.items(), self.model)
        stats = self.store.stats()
        assert stats.keys == len(self.model)
        assert stats.file_bytes == os.path.getsize(self.path)
        if had_file:
            assert stats.compactions >= compactions

    @rule(key=keys, value=mutable_containers)
    def mutating_the_value_after_set_leaves_the_store_alone(
        self, key: str, value: object
    ) -> None:
        commit = self.store.set(key, value)
        self.model[key] = expected(value)
        mutate(value)
        assert_same(self.store.get(key), self.model[key])
        self._wait(commit, expect_commit=self.durability == "fsync")
        assert_same(self.store.get(key), self.model[key])

    @rule(key=keys)
    def mutating_what_get_returned_leaves_the_store_alone(self, key: str) -> None:
        got = self.store.get(key)
        mutate(got)
        everything = self.store.items()
        for item in everything.values():
            mutate(item)
        everything["mutated"] = "mutated"
        everything.pop(key, None)
        assert_same(self.store.get(key, _MISSING), self.model.get(key, _MISSING))

    @invariant()
    def get_all_matches_the_model(self) -> None:
        assert_same(self.store.items(), self.model)

    @invariant()
    def stats_count_the_models_keys(self) -> None:
        assert self.store.stats().keys == len(self.model)

    def teardown(self) -> None:
        try:
            if self.engine is not None:
                self.engine.close()
        finally:
            set_compaction_thresholds()
            shutil.rmtree(self.directory, ignore_errors=True)


MACHINE_SETTINGS = settings(max_examples=100, stateful_step_count=30, deadline=None)


@MACHINE_SETTINGS
class FlushEngineMatchesADict(_EngineMatchesADict):
    durability = "flush"


@MACHINE_SETTINGS
class FsyncEngineMatchesADict(_EngineMatchesADict):
    durability = "fsync"


@MACHINE_SETTINGS
class BufferedEngineMatchesADict(_EngineMatchesADict):
    durability = "buffered"


TestStoreMatchesADictAcrossReopenAtFlush = FlushEngineMatchesADict.TestCase
TestStoreMatchesADictAcrossReopenAtFsync = FsyncEngineMatchesADict.TestCase
TestStoreMatchesADictAcrossReopenAtBuffered = BufferedEngineMatchesADict.TestCase


# -- the async shell against a dict -------------------------------------------


@dataclass(frozen=True)
class Set:
    key: str
    value: object


@dataclass(frozen=True)
class SetNow:
    key: str


@dataclass(frozen=True)
class Get:
    key: str


@dataclass(frozen=True)
class Delete:
    key: str


@dataclass(frozen=True)
class Gathered:
    """Concurrent writes on distinct keys: a value to set, or None to delete."""

    writes: dict[str, tuple[object] | None]


@dataclass(frozen=True)
class Simple:
    name: str  # "clear", "compact", "flush", "reopen"


Operation = Set | SetNow | Get | Delete | Gathered | Simple

operations: st.SearchStrategy[Operation] = st.one_of(
    st.builds(Set, keys, values),
    st.builds(SetNow, keys),
    st.builds(Get, keys),
    st.builds(Delete, keys),
    st.builds(
        Gathered,
        st.dictionaries(keys, st.none() | st.tuples(values), min_size=1, max_size=4),
    ),
    st.builds(Simple, st.sampled_from(["clear", "compact", "flush", "reopen"])),
)


async def _play(path: str, durability: str, interval: float, script: list[Operation]) -> None:
    model: dict[str, object] = {}
    kv = AioKV(path, durability=durability, flush_interval=interval, fsync_interval=interval)
    try:
        for operation in script:
            if isinstance(operation, Set):
                await kv.set(operation.key, operation.value)
                model[operation.key] = expected(operation.value)
            elif isinstance(operation, SetNow):
                start = int(time.time())
                await kv.set(operation.key)
                now = await kv.get(operation.key)
                assert isinstance(now, int)
                assert start <= now <= int(time.time())
                model[operation.key] = now
            elif isinstance(operation, Get):
                got = await kv.get(operation.key, _MISSING)
                assert_same(got, model.get(operation.key, _MISSING))
                mutate(got)
            elif isinstance(operation, Delete):
                assert await kv.delete(operation.key) is True
                model.pop(operation.key, None)
            elif isinstance(operation, Gathered):
                writes = [
                    kv.delete(key) if write is None else kv.set(key, write[0])
                    for key, write in operation.writes.items()
                ]
                await asyncio.gather(*writes)
                for key, write in operation.writes.items():
                    if write is None:
                        model.pop(key, None)
                    else:
                        model[key] = expected(write[0])
            elif operation.name == "clear":
                assert await kv.clear() is True
                model.clear()
            elif operation.name == "compact":
                await kv.compact()
            elif operation.name == "flush":
                await kv.flush()
            else:
                await kv.close()
                kv = AioKV(path, durability=durability, flush_interval=interval,
                           fsync_interval=interval)
                await kv.open()
            assert_same(await kv.get_all(), model)
            assert (await kv.stats()).keys == len(model)
    finally:
        await kv.close()
    async with AioKV(path, durability=durability) as reopened:
        assert_same(await reopened.get_all(), model)


class TestAioKVMatchesADictAcrossReopen:
    @pytest.mark.parametrize("durability", ["flush", "fsync", "buffered"])
    @settings(max_examples=40, deadline=None)
    @given(script=st.lists(operations, max_size=20), interval=st.sampled_from([1.0, 0.001]))
    def test_every_script_leaves_the_store_equal_to_a_dict(
        self, durability: str, script: list[Operation], interval: float
    ) -> None:
        directory = tempfile.mkdtemp(prefix="aiokv-async-")
        path = os.path.join(directory, "state.kv")
        try:
            asyncio.run(_play(path, durability, interval, script))
        finally:
            shutil.rmtree(directory, ignore_errors=True)


# -- found by the machine: compact() returned without compacting --------------


class _GatedFiles(FileSystem):
    """The compaction thread waits at its first call to ``gate`` (a slow disk)."""

    def __init__(self, gate: str) -> None:
        self.gate = gate
        self.reached = threading.Event()
        self.release = threading.Event()

    def _maybe_wait(self, call: str) -> None:
        if call == self.gate and threading.current_thread().name.startswith("aiokv-compact"):
            self.reached.set()
            self.release.wait(10)

    def create(self, path: str) -> int:
        self._maybe_wait("create")
        return super().create(path)

    def fsync_dir(self, directory: str) -> None:
        self._maybe_wait("fsync_dir")
        super().fsync_dir(directory)


@pytest.mark.parametrize(
    ("gate", "clear_first"),
    [
        pytest.param("fsync_dir", False, id="the-running-one-has-already-swapped-its-file"),
        pytest.param("create", True, id="clear-voided-the-running-one"),
    ],
)
def test_compact_compacts_even_while_another_compaction_runs(
    gate: str, clear_first: bool
) -> None:
    """docs/api.md: compact() "rewrites the log with only the live entries, now".

    Found by the machine: compact() used to join a compaction already running,
    whose snapshot predated the call (or which clear() had voided), and so
    returned leaving the dead records of the writes made since.
    """
    directory = tempfile.mkdtemp(prefix="aiokv-compact-")
    files = _GatedFiles(gate)
    engine = Engine(os.path.join(directory, "state.kv"), files=files)
    engine.open()
    first = threading.Thread(target=engine.compact)  # stands for an automatic one
    try:
        engine.set("k", 0)
        first.start()
        assert files.reached.wait(10)
        if clear_first:
            engine.clear()
        for i in range(100):
            engine.set("k", i)
        before = engine.stats()
        threading.Timer(0.1, files.release.set).start()
        engine.compact()
        after = engine.stats()
        assert after.compactions == before.compactions + 1
        assert after.dead_bytes == 0
        assert after.file_bytes == os.path.getsize(engine.path)
    finally:
        files.release.set()
        first.join()
        engine.close()
        shutil.rmtree(directory, ignore_errors=True)
