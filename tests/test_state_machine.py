"""The store behaves like a dict with expiry times, whatever the order of operations.

How it is driven
----------------
Hypothesis state machines are synchronous, and ``AioKV`` is only a thin async
shell (each method calls one ``Engine`` method, inline or in the executor). So
the main machine drives the synchronous ``aiokv._engine.Engine`` directly,
waiting on the ``Commit`` that ``set``/``delete``/``incr``/``expire`` return
at the "fsync" level, and compares it after every step with a model
(``Model``: a plain dict of the live values plus each key's expiry time). It
runs once per durability level ("flush", "fsync", "buffered"), each as its
own test class. Its rules: set, get, delete, clear, compact, flush, get_all,
close-and-reopen, plus two rules checking that values are independent copies
(mutating the object passed to ``set``, and mutating what ``get``/``get_all``
returned, must not change what is stored), and the expiry, counter and time
rules below, and the pop, update and batch rules after them. After every
step ``get_all()`` equals the model and ``stats().keys == len(model)``; after
a reopen the contents equal the model exactly. The ``initialize`` rule also
draws the flush and fsync intervals (the defaults, or 1 ms so the background
writer runs mid-machine). Each engine is opened as the engine of a ``KV``
(the shell's only state is its engine), so that some rules can call the
shell instead: ``KV.batch()`` blocks and the mapping protocol exist only there.

The async shell gets a smaller, separate test: a hypothesis ``@given`` test
that draws a list of operations and plays them through ``AioKV`` inside one
``asyncio.run`` per example (a fresh event loop each time), including a
reopen, a batch of concurrent writes gathered on distinct keys (the group
commit path at "fsync"), the ``set(key)`` default of "now" (the int time on
the store's clock), and sets with a ttl, ``incr``, ``expire`` and moves of a
fake clock, checking every key's ``ttl`` after each operation; and, as the
machine's rules below do, ``pop``, ``update`` (both forms), ``set_many``,
``delete_many`` and ``async with kv.batch()`` blocks (some raising), with
``async for`` and ``count()``.

Expiry, counters and time
-------------------------
Every engine the machine opens (and every reopen) reads the time from one
``FakeClock`` passed as ``clock=``: it starts at a realistic Unix time
(``fake_clock.START``, 1_700_000_000.0, where a float's resolution is about 0.24 us)
and moves only when a rule moves it. The model keeps absolute expiry times on
that clock, computed with the engine's own float arithmetic
(``now + float(ttl)``), and drops a key the instant ``expiry <= now``: an
expired key is absent for ``get`` (the default comes back), ``get_all``,
``keys``, ``exists``, ``ttl``, ``incr`` and ``stats().keys``. The rules:

* ``set_with_ttl``: a ttl drawn from small positive ints and floats (down to
  the smallest subnormal, which at this clock's magnitude expires at once),
  plus None and 0 (no expiry). A set without a ttl (the other set rules)
  removes an earlier expiry.
* ``incr``: amounts from small ints, the int edges above, just past them, and
  any int; ``incr_to_an_edge`` picks the amount that takes the current value
  to just inside or just outside the range; ``set_counter`` sets an int with a
  ttl for incr to find. A missing or expired key starts from 0 and takes incr's ttl; an
  existing int keeps its expiry (incr's ttl is ignored); a key holding
  anything else (a bool too) raises TypeError and stays as it was; a result
  outside -2**63..2**64-1 raises ValueError and changes nothing.
* ``expire``: sets, or with None/0 removes, the expiry of a live key; returns
  whether the key existed and was live.
* ``ttl`` (-2 missing or expired, -1 no expiry, else the seconds left rounded
  up), ``exists``, and ``keys`` with a few glob patterns (``PATTERNS``).
* ``a_bad_ttl_changes_nothing``: a negative, NaN or infinite ttl raises
  ValueError and a non-number (a bool too) TypeError, for set, incr and
  expire; a non-int incr amount raises TypeError.
* ``advance_clock`` moves the clock by a drawn amount (0, small ints and
  halves, which land exactly on the expiry of keys set with such ttls, or any
  float up to 6 s); ``advance_clock_to_an_expiry`` moves it to exactly a
  key's expiry time (the key must then be gone: expiry is ``when <= now``) or
  to the last float before it (the key must still be live, with ttl 1).
* ``close_and_reopen`` also draws a downtime: the clock moves while the store
  is closed, and the reopened engine must keep the remaining expiry times
  (checked to the float by the rules above) and drop what expired meanwhile.

An invariant reads every key after every step with ``get``, ``exists`` and
``ttl``, and checks ``stats().ttl_keys`` (live keys with an expiry) and that
``stats().held_entries`` counts at most the live keys plus the expired ones
the writer thread's sweep may not have dropped yet (``Model.unswept``); after
a reopen it must count exactly the live keys. When the sweep runs is up to
the writer thread, and it is invisible to reads; the one place the machine
allows for it is ``delete`` at "fsync" of an expired key, which returns a
Commit if the key was still held (a delete record is written) and None if it
was already swept.

Pop, update and atomic batches
------------------------------
Most of these rules draw ``via``: the engine (checking the Commit it returns,
as for ``delete``: at "fsync" one when something is written, and for a key
absent or expired maybe one) or the ``KV`` shell. The model applies a batch
change by change on a copy (``Model.batch``), which it keeps only if no
change raised, and counts the live keys the batch removes.

* ``pop``: the live value (a fresh copy), else the default; an expired key
  stays unswept, as pop writes nothing for it.
* ``update``: fn is an ``Updater`` ("add" an int, "append" in place, "replace",
  "keep", "raise" after mutating its argument, "unstorable"); it must be
  called once, with what the model holds (or the default); the result and
  the expiry follow ``incr``'s rule (kept, or ttl for a new key); whatever
  fn raises, or storing its result raises, changes nothing.
* ``commit_a_batch``: up to five sets (with ttls), deletes and incrs
  (``WriteBatch`` + ``commit_batch``, or a ``KV.batch()`` block): changes to
  one key apply in order; an incr meeting no int, or overflowing, raises
  TypeError/ValueError at the commit and applies nothing.
  ``a_batch_with_a_non_int_incr_changes_nothing`` makes sure of one such
  incr, between other changes; ``a_batch_block_that_raises_changes_nothing``
  raises inside the block (its own exception, or a change refused at its
  line), after which the batch refuses further changes.
* ``set_many`` (a mapping or pairs, a key maybe twice; or ``KV.update``'s
  mapping form, with a keyword), ``delete_many`` (the live keys it removed).
* ``batches_repeatedly``: a burst of up to 20 batches (sets, maybe
  alternating with deletes), dead BATCH frames that start automatic
  compactions whose walk meets queued batches (an undo list per frame);
  maybe closed and reopened before the commits are waited on.
* ``as_a_mutable_mapping``: ``kv[k]``, ``kv[k] = v``, ``del kv[k]`` (KeyError
  for an absent or expired key), ``in``, ``len``/``count``/``bool``,
  iteration and ``dict(kv)``, ``setdefault``.

Compaction during the machine
-----------------------------
A ``compact`` rule compacts explicitly. Automatic compaction starts only when
dead bytes exceed live bytes by ``aiokv._compaction.COMPACT_SLACK`` (640 KiB),
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

The machine found that a batch's incr of a key an earlier change of the same
batch set with a ttl already run out (below the clock's resolution) counted
on the expired value, where separate calls count from 0; fixed (the batch's
end state is worked out at its instant), and kept by
``test_an_incr_counts_from_0_after_a_set_expired_in_the_same_batch``.

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
import copy
import fnmatch
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import hypothesis.strategies as st
import pytest
from engine_invariants import hot_path_is_sound
from fake_clock import FakeClock
from hypothesis import given, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from on_disk import store_files, store_size
from scripted_files import ScriptedFiles, in_thread, nth

from aiokv import KV, AioKV, Durability, WriteBatch, _compaction
from aiokv._commit import Commit
from aiokv._engine import Engine
from aiokv._format import DELETE, FOLLOWS, SYNCED, decode_header
from aiokv._recovery import Frame, read_frame


def only_sweep_records_after_the_compacted_part(path: str) -> bool:
    """Whether a freshly compacted store holds nothing after its base's
    compacted part but delete records (the sweep's, of expired keys), SYNCED
    frames and the FOLLOWS record opening each log file."""
    for name in store_files(path):
        with open(name, "rb") as file:
            data = file.read()
        offset = decode_header(data).compacted_length
        while offset < len(data):
            frame = read_frame(data, offset)
            if not isinstance(frame, Frame) or frame.kind not in (DELETE, SYNCED, FOLLOWS):
                return False
            offset = frame.end
    return True


REAL_COMPACT_SLACK = _compaction.COMPACT_SLACK
REAL_THRESHOLDS = {
    name: getattr(_compaction, name)
    for name in ("COMPACT_SLACK", "COMPACTION_CHECK_BYTES")
    if hasattr(_compaction, name)
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
        setattr(_compaction, name, values.get(name, real))


@pytest.fixture(autouse=True)
def _restore_compaction_thresholds() -> Iterator[None]:
    yield
    set_compaction_thresholds()


# -- changes: the async scripts' operations, and a batch's -------------------


@dataclass(frozen=True)
class Set:
    key: str
    value: object
    ttl: float | None


@dataclass(frozen=True)
class Delete:
    key: str


@dataclass(frozen=True)
class Incr:
    key: str
    amount: int
    ttl: float | None


Change = Set | Delete | Incr
"""A change of an atomic batch (``WriteBatch.set``, ``delete``, ``incr``)."""


def fill(batch: WriteBatch, changes: list[Change]) -> None:
    """Give ``batch`` the ``changes``, in order."""
    for change in changes:
        if isinstance(change, Set):
            batch.set(change.key, change.value, change.ttl)
        elif isinstance(change, Delete):
            batch.delete(change.key)
        else:
            batch.incr(change.key, change.amount, ttl=change.ttl)


def check_storable(value: object) -> None:
    """Raise what storing ``value`` raises: ValueError for an int beyond
    msgpack's 64 bits, TypeError for a type it cannot hold."""
    if type(value) is int:
        if not INT_MIN <= value <= INT_MAX:
            raise ValueError(f"{value} is out of the 64-bit range")
    elif isinstance(value, (list, tuple)):
        for item in value:
            check_storable(item)
    elif isinstance(value, dict):
        for item in value.values():
            check_storable(item)
    elif type(value) not in (type(None), bool, float, str, bytes):
        raise TypeError(f"a {type(value).__name__} cannot be stored")


class Boom(Exception):
    """What an update's fn, or the body of a ``batch()`` block, raises on purpose."""


UPDATES = ["add", "append", "replace", "keep", "raise", "unstorable"]
"""The fns ``update`` is given (see ``updater``)."""


@dataclass
class Updater:
    """An update's fn: ``how`` it changes the value, and what it was given.

    "add" adds ``number`` (a TypeError for what is no number, a ValueError
    from the store past 64 bits), "append" appends ``item`` in place (an
    AttributeError for what is no list), "replace" returns ``item``, "keep"
    returns the value as given, "raise" mutates the value and raises Boom,
    "unstorable" returns a list holding a set (the store's TypeError).
    """

    how: str
    number: int
    item: object
    given: list[object]

    def __call__(self, value: Any) -> Any:
        self.given.append(copy.deepcopy(value))
        if self.how == "add":
            return value + self.number
        if self.how == "append":
            value.append(self.item)
            return value
        if self.how == "replace":
            return self.item
        if self.how == "keep":
            return value
        if self.how == "raise":
            mutate(value)
            raise Boom("fn raised")
        return [value, {1, 2}]


def updater(how: str, number: int, item: object) -> Updater:
    """A fresh fn with its own copy of ``item``, so two never share it."""
    return Updater(how, number, copy.deepcopy(item), [])


# -- time and the model ---------------------------------------------------------

def _seconds(ttl: float | None) -> float | None:
    """How the engine reads a valid ttl: None or 0 is "never expires"."""
    return None if ttl is None or ttl == 0 else float(ttl)


class Model:
    """What the store should hold: the live values and their expiry times.

    A key leaves ``values`` (and ``expiries``) the instant its expiry time is
    reached on ``clock`` (``when <= now``), so ``values`` holds exactly the
    live keys. ``unswept`` holds the keys that expired since the engine last
    dropped them for certain (a set, delete, clear or reopen): its sweep may
    not have removed them from memory yet.
    """

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.values: dict[str, object] = {}
        self.expiries: dict[str, float] = {}
        self.unswept: set[str] = set()

    def _expiry(self, ttl: float | None) -> float | None:
        seconds = _seconds(ttl)
        return None if seconds is None else self.clock.now + seconds

    def _store(self, key: str, value: object, expires: float | None) -> None:
        self.values[key] = value
        self.unswept.discard(key)
        if expires is None:
            self.expiries.pop(key, None)
        else:
            self.expiries[key] = expires
        self.purge()

    def purge(self) -> None:
        """Drop the keys whose expiry time has been reached."""
        now = self.clock.now
        for key in [key for key, when in self.expiries.items() if when <= now]:
            del self.values[key]
            del self.expiries[key]
            self.unswept.add(key)

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        self.purge()

    def set(self, key: str, value: object, ttl: float | None = None) -> None:
        self._store(key, value, self._expiry(ttl))

    def delete(self, key: str) -> None:
        self.values.pop(key, None)
        self.expiries.pop(key, None)
        self.unswept.discard(key)

    def clear(self) -> None:
        self.values.clear()
        self.expiries.clear()
        self.unswept.clear()

    def incr(self, key: str, amount: int, ttl: float | None) -> int:
        """The new value; raises TypeError or ValueError (changing nothing) as
        the engine must."""
        current = self.values.get(key, _MISSING)
        if current is _MISSING:
            value, expires = amount, self._expiry(ttl)
        elif type(current) is not int:
            raise TypeError(f"{key!r} holds a {type(current).__name__}")
        else:
            value, expires = current + amount, self.expiries.get(key)
        if not INT_MIN <= value <= INT_MAX:
            raise ValueError(f"{value} is out of the 64-bit range")
        self._store(key, value, expires)
        return value

    def expire(self, key: str, ttl: float | None) -> bool:
        if key not in self.values:
            return False
        self._store(key, self.values[key], self._expiry(ttl))
        return True

    def pop(self, key: str, default: object) -> object:
        """Remove a live key and return its value, else ``default``.

        An expired key stays unswept: pop writes nothing for it."""
        if key not in self.values:
            return default
        self.expiries.pop(key, None)
        return self.values.pop(key)

    def update(self, key: str, fn: Callable[[object], object], default: object,
               ttl: float | None) -> object:
        """Store ``fn(value)``, ``fn(default)`` for a missing or expired key;
        an existing key keeps its expiry, a new one takes ``ttl``. Raises (and
        changes nothing) what fn raises, or what storing its result would."""
        current = self.values.get(key, _MISSING)
        if current is _MISSING:
            value, expires = fn(default), self._expiry(ttl)
        else:
            value, expires = fn(copy.deepcopy(current)), self.expiries.get(key)
        check_storable(value)
        self._store(key, expected(value), expires)
        return value

    def batch(self, changes: list[Change]) -> int:
        """Apply ``changes`` in order, all or (raising TypeError or ValueError
        as the first failing change does) none; how many of the keys that
        were live the batch removes: those whose last change is a delete."""
        scratch = Model(self.clock)
        scratch.values = dict(self.values)
        scratch.expiries = dict(self.expiries)
        scratch.unswept = set(self.unswept)
        for change in changes:
            if isinstance(change, Set):
                scratch.set(change.key, expected(change.value), change.ttl)
            elif isinstance(change, Delete):
                scratch.delete(change.key)
            else:
                scratch.incr(change.key, change.amount, change.ttl)
        last = {change.key: change for change in changes}
        gone = sum(isinstance(change, Delete) and key in self.values
                   for key, change in last.items())
        self.values, self.expiries, self.unswept = (
            scratch.values, scratch.expiries, scratch.unswept)
        return gone

    def ttl(self, key: str) -> int:
        if key not in self.values:
            return -2
        when = self.expiries.get(key)
        if when is None:
            return -1
        return math.ceil(when - self.clock.now)

    def keys(self, pattern: str) -> list[str]:
        return sorted(key for key in self.values if fnmatch.fnmatchcase(key, pattern))


ttls: st.SearchStrategy[float | None] = st.one_of(
    st.sampled_from([None, 0, 0.0]),
    st.integers(1, 5),
    st.sampled_from([0.5, 1.5, 2.5]),
    st.floats(min_value=0.0, max_value=5.0, exclude_min=True),
)
"""Valid ttls: None and 0 (no expiry), small ints and floats, subnormals too."""

advances: st.SearchStrategy[float] = st.one_of(
    st.sampled_from([0, 0.5, 1, 2, 5]),
    st.floats(min_value=0.0, max_value=6.0),
)
"""Moves of the clock; the ints and halves add up exactly to expiry times."""

amounts: st.SearchStrategy[int] = st.one_of(
    st.integers(-3, 3),
    st.sampled_from(INT_EDGES),
    st.sampled_from([INT_MIN - 1, INT_MAX + 1, -(2**64), 2**65]),
    st.integers(),
)

bad_ttls: st.SearchStrategy[object] = st.sampled_from(
    [-1, -0.5, -5e-324, -math.inf, math.inf, math.nan, True, False, "1", b"1", [1]]
)

PATTERNS = ["*", "?", "a*", "k*", "*ключ", "[ab]", "[!ab]*", "*\x00", "a key *", ""]
"""Globs for ``keys()``: the model matches them with ``fnmatch.fnmatchcase``."""

small_amounts: st.SearchStrategy[int] = st.integers(-3, 3) | amounts

sets: st.SearchStrategy[Change] = st.builds(Set, keys, st.integers(-3, 3) | values, ttls)

changes: st.SearchStrategy[list[Change]] = st.lists(
    st.one_of(sets, st.builds(Delete, keys), st.builds(Incr, keys, small_amounts, ttls)),
    max_size=5,
)
"""A batch: sets (small ints among the values, for the incrs to count on),
deletes, and incrs, which may meet a value that is no int or overflow."""

sets_and_deletes: st.SearchStrategy[list[Change]] = st.lists(
    st.one_of(sets, st.builds(Delete, keys)), max_size=2
)

pairs: st.SearchStrategy[list[tuple[str, object]]] = st.lists(
    st.tuples(keys, values), max_size=4
)
"""``set_many``'s pairs: a key may come twice (the last one wins, as in dict())."""

small_containers: st.SearchStrategy[object] = st.one_of(
    st.lists(scalars, max_size=3),
    st.lists(scalars, max_size=3).map(tuple),
    st.dictionaries(st.text(max_size=4), scalars, max_size=3),
)
"""Containers cheaper to draw than ``values``, for the rules that draw many."""

non_ints: st.SearchStrategy[object] = st.one_of(
    st.none(), st.booleans(), st.floats(), st.text(max_size=5), st.binary(max_size=5),
    small_containers,
)

update_items: st.SearchStrategy[object] = scalars | small_containers
"""What an update appends, or replaces the value with."""

update_defaults: st.SearchStrategy[object] = st.one_of(
    st.none(), st.integers(-3, 3), st.lists(scalars, max_size=2)
)

vias = st.sampled_from(["engine", "kv"])
"""Whether a rule calls the engine (and checks the Commit it returns) or the
``KV`` shell around it (which waits on it)."""


# -- the engine against a dict ------------------------------------------------


class _EngineMatchesADict(RuleBasedStateMachine):
    durability: ClassVar[str] = "flush"

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="aiokv-machine-")
        self.path = os.path.join(self.directory, "state.kv")
        self.clock = FakeClock()
        self.model = Model(self.clock)
        self.flush_interval = 0.1
        self.fsync_interval = 1.0
        self.engine: Engine | None = None
        self.shell: KV | None = None

    @property
    def store(self) -> Engine:
        assert self.engine is not None
        return self.engine

    @property
    def kv(self) -> KV:
        """The ``KV`` shell whose engine ``store`` is."""
        assert self.shell is not None
        assert self.shell._engine is self.engine
        return self.shell

    @property
    def fsync(self) -> bool:
        return self.durability == "fsync"

    def _open(self) -> Engine:
        """A ``KV`` opened on the path; its engine is the one the rules drive
        (the machine closes it, so the shell is never collected open)."""
        self.shell = KV(self.path, durability=self.durability,  # type: ignore[arg-type]
                        flush_interval=self.flush_interval,
                        fsync_interval=self.fsync_interval, clock=self.clock).open()
        return self.shell._engine

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
        check_bytes=st.sampled_from([0, 256]),
    )
    def open_the_store(self, slack: int, flush_interval: float, fsync_interval: float,
                       check_bytes: int) -> None:
        """Short intervals make the background writer and fsyncs run mid-machine."""
        if slack == REAL_COMPACT_SLACK:
            set_compaction_thresholds()
        else:  # and check the rule on every append (or every few sets, which
            # leaves set()'s hot path some room), not every 16 KiB
            set_compaction_thresholds(COMPACT_SLACK=slack, COMPACTION_CHECK_BYTES=check_bytes)
        self.flush_interval = flush_interval
        self.fsync_interval = fsync_interval
        self.engine = self._open()

    @rule(key=keys, value=values)
    def set(self, key: str, value: object) -> None:
        commit = self.store.set(key, value)
        self._wait(commit, expect_commit=self.fsync)
        self.model.set(key, expected(value))

    @rule(key=keys, value=values, times=st.integers(2, 40))
    def overwrite_repeatedly(self, key: str, value: object, times: int) -> None:
        """A burst of dead records, so automatic compactions start."""
        commits = [self.store.set(key, value) for _ in range(times)]
        for commit in commits:
            self._wait(commit, expect_commit=self.fsync)
        self.model.set(key, expected(value))

    @rule(key=keys)
    def get(self, key: str) -> None:
        if key in self.model.values:
            assert_same(self.store.get(key), self.model.values[key])
        else:
            assert self.store.get(key) is None
            assert self.store.get(key, _MISSING) is _MISSING

    @rule(key=keys)
    def delete(self, key: str) -> None:
        present = key in self.model.values
        commit = self.store.delete(key)
        if self.fsync and key in self.model.unswept:
            # Expired: a delete record is written (a Commit) only if the sweep
            # has not dropped the key from memory yet.
            if commit is not None:
                commit.wait()
        elif self.fsync and not present:
            # Engine.delete: an absent key is acknowledged once what is
            # queued is durable: a Commit while the writer thread's sweep has
            # queued the delete of another expired key, else None.
            if commit is not None:
                commit.wait()
        else:
            self._wait(commit, expect_commit=present and self.fsync)
        self.model.delete(key)
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
            # Nothing is waiting to be written: the file holds only live
            # entries, and maybe the delete records the writer thread's
            # sweep logged meanwhile for keys that expired.
            exact = stats.dead_bytes == 0 and stats.file_bytes == store_size(self.path)
            assert exact or only_sweep_records_after_the_compacted_part(self.path)

    @rule()
    def flush(self) -> None:
        self.store.flush()

    @rule()
    def get_all(self) -> None:
        assert_same(self.store.items(), self.model.values)

    @rule(downtime=st.just(0.0) | advances)
    def close_and_reopen(self, downtime: float) -> None:
        """The clock moves by ``downtime`` while the store is closed."""
        compactions = self.store.stats().compactions
        self.store.close()
        assert not self.store.is_open
        self.model.advance(downtime)
        # The header keeps the count of compactions; clear() removes the file
        # (and with it the count) until the next write creates it again.
        had_file = os.path.exists(self.path)
        self.engine = self._open()
        self.model.unswept.clear()  # replay leaves expired entries out
        assert_same(self.store.items(), self.model.values)
        stats = self.store.stats()
        assert stats.keys == len(self.model.values)
        assert stats.held_entries == len(self.model.values)
        assert stats.ttl_keys == len(self.model.expiries)
        assert stats.file_bytes == store_size(self.path)
        if had_file:
            assert stats.compactions >= compactions

    @rule(key=keys, value=mutable_containers)
    def mutating_the_value_after_set_leaves_the_store_alone(
        self, key: str, value: object
    ) -> None:
        commit = self.store.set(key, value)
        self.model.set(key, expected(value))
        mutate(value)
        assert_same(self.store.get(key), self.model.values[key])
        self._wait(commit, expect_commit=self.fsync)
        assert_same(self.store.get(key), self.model.values[key])

    @rule(key=keys)
    def mutating_what_get_returned_leaves_the_store_alone(self, key: str) -> None:
        got = self.store.get(key)
        mutate(got)
        everything = self.store.items()
        for item in everything.values():
            mutate(item)
        everything["mutated"] = "mutated"
        everything.pop(key, None)
        assert_same(self.store.get(key, _MISSING), self.model.values.get(key, _MISSING))

    # -- expiry, counters and time ----------------------------------------------

    @rule(key=keys, value=values, ttl=ttls)
    def set_with_ttl(self, key: str, value: object, ttl: float | None) -> None:
        commit = self.store.set(key, value, ttl=ttl)
        self._wait(commit, expect_commit=self.fsync)
        self.model.set(key, expected(value), ttl)

    @rule(key=keys, edge=st.sampled_from([INT_MIN - 1, INT_MIN, INT_MAX, INT_MAX + 1]),
          ttl=ttls)
    def incr_to_an_edge(self, key: str, edge: int, ttl: float | None) -> None:
        """An amount that takes a live int (or a missing key's 0) to just
        inside or just outside the range."""
        current = self.model.values.get(key, 0)
        amount = edge - current if type(current) is int else edge
        self.incr(key, amount, ttl)

    @rule(key=keys, value=st.integers(-3, 3) | st.sampled_from(INT_EDGES), ttl=ttls)
    def set_counter(self, key: str, value: int, ttl: float | None) -> None:
        """An int with a ttl: what incr then counts on, keeping that expiry."""
        self.set_with_ttl(key, value, ttl)

    @rule(key=keys, amount=amounts, ttl=ttls)
    def incr(self, key: str, amount: int, ttl: float | None) -> None:
        try:
            wanted = self.model.incr(key, amount, ttl)
        except (TypeError, ValueError) as exc:
            with pytest.raises(type(exc)):
                self.store.incr(key, amount, ttl)
            return  # the invariants check that nothing changed
        value, commit = self.store.incr(key, amount, ttl)
        self._wait(commit, expect_commit=self.fsync)
        assert type(value) is int
        assert value == wanted

    @rule(key=keys, ttl=ttls)
    def expire(self, key: str, ttl: float | None) -> None:
        live = self.model.expire(key, ttl)
        existed, commit = self.store.expire(key, ttl)
        assert existed is live
        self._wait(commit, expect_commit=live and self.fsync)

    @rule(key=keys)
    def ttl(self, key: str) -> None:
        assert self.store.ttl(key) == self.model.ttl(key)

    @rule(key=keys)
    def exists(self, key: str) -> None:
        assert self.store.exists(key) is (key in self.model.values)

    @rule(pattern=st.sampled_from(PATTERNS))
    def keys_matching(self, pattern: str) -> None:
        got = self.store.keys(pattern)
        assert len(got) == len(set(got)), f"keys({pattern!r}) repeats a key: {got!r}"
        assert sorted(got) == self.model.keys(pattern)

    @rule(key=keys, ttl=bad_ttls, call=st.sampled_from(["set", "incr", "expire"]))
    def a_bad_ttl_changes_nothing(self, key: str, ttl: Any, call: str) -> None:
        number = isinstance(ttl, (int, float)) and not isinstance(ttl, bool)
        with pytest.raises(ValueError if number else TypeError):
            if call == "set":
                self.store.set(key, "changed", ttl=ttl)
            elif call == "incr":
                self.store.incr(key, 1, ttl=ttl)
            else:
                self.store.expire(key, ttl)

    @rule(key=keys, amount=st.sampled_from([True, 1.0, "1", None]))
    def incr_by_a_non_int_changes_nothing(self, key: str, amount: Any) -> None:
        with pytest.raises(TypeError):
            self.store.incr(key, amount)

    # -- pop, update and atomic batches -----------------------------------------

    def _wait_for_removals(self, commit: Commit | None, *, live: bool) -> None:
        """The Commit of a pop or a batch of deletes: one at "fsync" when a
        live key goes; for an absent or expired key, maybe one (see delete)."""
        if self.fsync and not live:
            if commit is not None:
                commit.wait()
        else:
            self._wait(commit, expect_commit=live and self.fsync)

    @rule(key=keys, default=st.sampled_from([None, _MISSING, "default"]), via=vias)
    def pop(self, key: str, default: object, via: str) -> None:
        live = key in self.model.values
        wanted = self.model.pop(key, default)
        if via == "kv":
            got = self.kv.pop(key, default)
        else:
            got, commit = self.store.pop(key, default)
            self._wait_for_removals(commit, live=live)
        if live:
            assert_same(got, wanted)
            mutate(got)  # a fresh copy: the store had it, and has it no more
        else:
            assert got is default
        assert self.store.get(key, _MISSING) is _MISSING

    @rule(key=keys, how=st.sampled_from(UPDATES), number=small_amounts, item=update_items,
          default=update_defaults, ttl=ttls, via=vias)
    def update(self, *, key: str, how: str, number: int, item: object, default: object,
               ttl: float | None, via: str) -> None:
        """``fn`` is called once, with what the model holds (or ``default``);
        if it raises, or returns what cannot be stored, nothing changes."""
        mine, theirs = updater(how, number, item), updater(how, number, item)
        try:
            wanted = self.model.update(key, mine, copy.deepcopy(default), ttl)
        except Exception as exc:
            with pytest.raises(type(exc)):
                if via == "kv":
                    self.kv.update(key, theirs, copy.deepcopy(default), ttl=ttl)
                else:
                    self.store.update(key, theirs, copy.deepcopy(default), ttl)
        else:
            if via == "kv":
                got = self.kv.update(key, theirs, copy.deepcopy(default), ttl=ttl)
            else:
                got, commit = self.store.update(key, theirs, copy.deepcopy(default), ttl)
                self._wait(commit, expect_commit=self.fsync)
            assert_same(expected(got), expected(wanted))
            mutate(got)  # what fn returned: the store keeps a copy
        assert len(theirs.given) == 1
        assert_same(theirs.given[0], mine.given[0])

    def _commit(self, batch: WriteBatch, changes: list[Change], via: str) -> None:
        """Commit ``batch``, holding ``changes``, as the model applies them;
        ``via`` "kv" gives them inside a ``batch()`` block instead."""
        last = {change.key: change for change in changes}.values()  # each key's end
        live = any(isinstance(change, Delete) and change.key in self.model.values
                   for change in last)
        writes = any(not isinstance(change, Delete) for change in last)
        try:
            gone = self.model.batch(changes)
        except (TypeError, ValueError) as exc:
            with pytest.raises(type(exc)):
                if via == "kv":
                    with self.kv.batch() as block:
                        fill(block, changes)
                else:
                    self.store.commit_batch(batch)
            return  # the invariants check that nothing changed
        if via == "kv":
            with self.kv.batch() as block:
                fill(block, changes)
            with pytest.raises(RuntimeError):  # the block has ended
                block.delete("a")
            return
        removed, commit = self.store.commit_batch(batch)
        assert removed == gone
        if writes:
            self._wait(commit, expect_commit=self.fsync)
        else:
            self._wait_for_removals(commit, live=live)

    @rule(changes=changes, counters=st.booleans(), via=vias)
    def commit_a_batch(self, changes: list[Change], counters: bool, via: str) -> None:
        """Sets, deletes and incrs, applied in order, all or none. With
        ``counters``, the batch first sets to 0 the keys it counts on that
        hold something else, so that more of them commit."""
        if counters:
            held = self.model.values
            changes = [*(Set(key, 0, None) for key in dict.fromkeys(
                change.key for change in changes if isinstance(change, Incr))
                if type(held.get(key, 0)) is not int), *changes]
        batch = WriteBatch(self.store.clock)
        fill(batch, changes)
        assert len(batch) == len(changes)
        self._commit(batch, changes, via)

    @rule(before=sets_and_deletes, key=keys, value=non_ints, plant=st.booleans(),
          after=sets_and_deletes, via=vias)
    def a_batch_with_a_non_int_incr_changes_nothing(
        self, *, before: list[Change], key: str, value: object, plant: bool,
        after: list[Change], via: str
    ) -> None:
        """An incr of a key holding no int: TypeError when the batch is
        committed, and none of its changes applied. The value is set in the
        batch, or (if the model holds one there) already stored."""
        held = self.model.values.get(key, 0)
        if plant or type(held) is int or any(change.key == key for change in before):
            before = [*before, Set(key, value, None)]
        changes = [*before, Incr(key, 1, None), *after]
        with pytest.raises(TypeError):
            self.model.batch(changes)  # which changes nothing either
        if via == "kv":
            with pytest.raises(TypeError), self.kv.batch() as block:
                fill(block, changes)
        else:
            batch = WriteBatch(self.store.clock)
            fill(batch, changes)
            with pytest.raises(TypeError):
                self.store.commit_batch(batch)

    @rule(changes=sets_and_deletes, key=keys,
          how=st.sampled_from(["raise", "bad amount", "bad ttl", "bad value", "bad key"]))
    def a_batch_block_that_raises_changes_nothing(
        self, changes: list[Change], key: str, how: str
    ) -> None:
        """A ``batch()`` block that raises applies nothing: an exception of
        its own, or a change refused at its own line."""
        errors: dict[str, type[Exception]] = {
            "raise": Boom, "bad amount": TypeError, "bad ttl": ValueError,
            "bad value": TypeError, "bad key": TypeError}
        with pytest.raises(errors[how]), self.kv.batch() as batch:
            fill(batch, changes)
            if how == "raise":
                raise Boom("the block raised")
            if how == "bad amount":
                batch.incr(key, 1.0)  # type: ignore[arg-type]
            elif how == "bad ttl":
                batch.set(key, 1, ttl=-1)
            elif how == "bad value":
                batch.set(key, [{1, 2}])
            else:
                batch.delete(1)  # type: ignore[arg-type]
        with pytest.raises(RuntimeError):  # abandoned: no more changes
            batch.set(key, 1)

    @rule(given=pairs, ttl=ttls, as_dict=st.booleans(),
          via=st.sampled_from(["engine", "kv", "kv.update"]))
    def set_many(self, given: list[tuple[str, object]], ttl: float | None, as_dict: bool,
                 via: str) -> None:
        """``via`` "kv.update" is the mapping form of update (no ttl): the
        pairs but the last as a mapping or pairs, the last as a keyword."""
        if via == "kv.update":
            ttl = None
        changes: list[Change] = [Set(key, value, ttl) for key, value in given]
        mapping: dict[str, object] | list[tuple[str, object]] = (
            dict(given) if as_dict else given)
        if via == "kv":
            self.kv.set_many(mapping, ttl)
            self.model.batch(changes)
            return
        if via == "kv.update":
            *first, last = given or [("a", "a")]
            changes = [Set(key, value, None) for key, value in [*first, last]]
            self.kv.update(dict(first) if as_dict else first, **{last[0]: last[1]})
            self.model.batch(changes)
            return
        batch = WriteBatch(self.store.clock)
        batch.set_all(mapping, ttl)
        self._commit(batch, changes, via)

    @rule(given=st.lists(keys, max_size=5), via=vias)
    def delete_many(self, given: list[str], via: str) -> None:
        changes: list[Change] = [Delete(key) for key in given]
        if via == "kv":
            live = len(set(given) & self.model.values.keys())
            assert self.kv.delete_many(given) == live
            assert self.model.batch(changes) == live
            return
        batch = WriteBatch(self.store.clock)
        batch.delete_all(given)
        self._commit(batch, changes, via)

    @rule(given=pairs, times=st.integers(2, 20), with_deletes=st.booleans(),
          then_reopen=st.booleans())
    def batches_repeatedly(self, given: list[tuple[str, object]], times: int,
                           with_deletes: bool, then_reopen: bool) -> None:
        """A burst of batches (dead BATCH frames, so automatic compactions
        start, and walk the queued ones), maybe closed and reopened before
        their commits are waited on."""
        commits: list[Commit | None] = []
        for turn in range(times):
            batch = WriteBatch(self.store.clock)
            if with_deletes and turn % 2:
                batch.delete_all(key for key, _ in given)
                self.model.batch([Delete(key) for key, _ in given])
            else:
                batch.set_all(given, None)
                self.model.batch([Set(key, value, None) for key, value in given])
            commits.append(self.store.commit_batch(batch)[1])
        if then_reopen:
            self.close_and_reopen(0.0)
        for commit in commits:
            if self.fsync and given:
                assert isinstance(commit, Commit)
            if commit is not None:
                assert self.fsync
                commit.wait()

    @rule(op=st.sampled_from(["getitem", "setitem", "delitem", "contains", "len", "iter",
                              "setdefault"]),
          key=keys, value=scalars | small_containers)
    def as_a_mutable_mapping(self, op: str, key: str, value: object) -> None:
        """``KV`` as a ``MutableMapping``: KeyError for an absent or expired
        key. (Its ``update(mapping)`` is in ``set_many``.)"""
        kv, model = self.kv, self.model
        live = key in model.values
        if op == "getitem":
            if live:
                assert_same(kv[key], model.values[key])
            else:
                with pytest.raises(KeyError):
                    kv[key]
        elif op == "setitem":
            kv[key] = value
            model.set(key, expected(value))
        elif op == "delitem":
            if live:
                del kv[key]
            else:
                with pytest.raises(KeyError):
                    del kv[key]
            model.pop(key, None)
        elif op == "contains":
            assert (key in kv) is live
        elif op == "len":
            assert len(kv) == kv.count() == len(model.values)
            assert bool(kv) is bool(model.values)
        elif op == "iter":
            assert sorted(kv) == sorted(model.values)
            assert_same(dict(kv), model.values)
            assert_same(dict(kv.items()), model.values)
        else:
            got = kv.setdefault(key, value)
            if live:
                assert_same(got, model.values[key])
            else:
                assert got is value
                model.set(key, expected(value))

    @rule(seconds=advances)
    def advance_clock(self, seconds: float) -> None:
        self.model.advance(seconds)

    @precondition(lambda self: bool(self.model.expiries))
    @rule(pick=st.integers(0, len(KEYS) - 1), just_before=st.booleans())
    def advance_clock_to_an_expiry(self, pick: int, just_before: bool) -> None:
        """To exactly a key's expiry time (gone), or the float before it (live)."""
        key = sorted(self.model.expiries)[pick % len(self.model.expiries)]
        when = self.model.expiries[key]
        if just_before:
            self.clock.now = math.nextafter(when, -math.inf)  # >= now: the key is live
            self.model.purge()
            assert self.store.exists(key)
            assert self.store.ttl(key) == self.model.ttl(key) == 1
        else:
            self.clock.now = when
            self.model.purge()
            assert key not in self.model.values
            assert not self.store.exists(key)
            assert self.store.ttl(key) == -2
            assert self.store.get(key, _MISSING) is _MISSING

    # -- after every step -------------------------------------------------------

    @invariant()
    def get_all_matches_the_model(self) -> None:
        assert_same(self.store.items(), self.model.values)

    @invariant()
    def hot_path_is_open_only_while_it_does_all_a_set_must(self) -> None:
        assert hot_path_is_sound(self.store)

    @invariant()
    def stats_count_the_models_keys(self) -> None:
        stats = self.store.stats()
        assert stats.keys == len(self.model.values)
        assert stats.ttl_keys == len(self.model.expiries)
        assert stats.keys <= stats.held_entries <= stats.keys + len(self.model.unswept)

    @invariant()
    def every_key_reads_as_the_model_says(self) -> None:
        for key in KEYS:
            assert_same(self.store.get(key, _MISSING), self.model.values.get(key, _MISSING))
            assert self.store.exists(key) is (key in self.model.values)
            assert self.store.ttl(key) == self.model.ttl(key), key

    def teardown(self) -> None:
        try:
            if self.engine is not None:
                self.engine.close()  # and with it the shell's
        finally:
            set_compaction_thresholds()
            shutil.rmtree(self.directory, ignore_errors=True)


MACHINE_SETTINGS = settings(max_examples=120, stateful_step_count=50, deadline=None)


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
class SetNow:
    key: str


@dataclass(frozen=True)
class Get:
    key: str


@dataclass(frozen=True)
class Expire:
    key: str
    ttl: float | None


@dataclass(frozen=True)
class Advance:
    """Move the fake clock forward."""

    seconds: float


@dataclass(frozen=True)
class Gathered:
    """Concurrent writes on distinct keys: a value to set, or None to delete."""

    writes: dict[str, tuple[object] | None]


@dataclass(frozen=True)
class Simple:
    name: str  # "clear", "compact", "flush", "reopen"


@dataclass(frozen=True)
class Pop:
    key: str


@dataclass(frozen=True)
class UpdateKey:
    """``update(key, fn, default, ttl=ttl)``, fn an ``updater(how, number, item)``."""

    key: str
    how: str
    number: int
    item: object
    default: object
    ttl: float | None


@dataclass(frozen=True)
class SetMany:
    """``set_many(pairs, ttl)``, or with ``form`` "update" ``update(dict(pairs))``."""

    pairs: list[tuple[str, object]]
    ttl: float | None
    form: str


@dataclass(frozen=True)
class DeleteMany:
    keys: list[str]


@dataclass(frozen=True)
class Batch:
    """An ``async with kv.batch()`` block of ``changes``; if ``raises``, the
    block raises after giving them."""

    changes: list[Change]
    raises: bool


Operation = (Set | SetNow | Get | Delete | Incr | Expire | Advance | Gathered | Simple
             | Pop | UpdateKey | SetMany | DeleteMany | Batch)

operations: st.SearchStrategy[Operation] = st.one_of(
    st.builds(Set, keys, values, st.none()),
    st.builds(Set, keys, values, ttls),
    st.builds(SetNow, keys),
    st.builds(Get, keys),
    st.builds(Delete, keys),
    st.builds(Incr, keys, amounts, ttls),
    st.builds(Expire, keys, ttls),
    st.builds(Advance, advances),
    st.builds(
        Gathered,
        st.dictionaries(keys, st.none() | st.tuples(values), min_size=1, max_size=4),
    ),
    st.builds(Simple, st.sampled_from(["clear", "compact", "flush", "reopen", "iterate"])),
    st.builds(Pop, keys),
    st.builds(UpdateKey, keys, st.sampled_from(UPDATES), small_amounts, update_items,
              update_defaults, ttls),
    st.builds(SetMany, pairs, ttls, st.sampled_from(["set_many", "update"])),
    st.builds(DeleteMany, st.lists(keys, max_size=4)),
    st.builds(Batch, changes, st.booleans()),
)


async def _play_atomic(kv: AioKV, model: Model,
                       operation: Pop | UpdateKey | SetMany | DeleteMany | Batch) -> None:
    """pop, update, set_many, delete_many and batch(), through ``AioKV``."""
    if isinstance(operation, Pop):
        got = await kv.pop(operation.key, _MISSING)
        assert_same(got, model.pop(operation.key, _MISSING))
    elif isinstance(operation, UpdateKey):
        op = operation
        mine, theirs = (updater(op.how, op.number, op.item),
                        updater(op.how, op.number, op.item))
        try:
            wanted = model.update(op.key, mine, copy.deepcopy(op.default), op.ttl)
        except Exception as exc:
            with pytest.raises(type(exc)):
                await kv.update(op.key, theirs, copy.deepcopy(op.default), ttl=op.ttl)
        else:
            got = await kv.update(op.key, theirs, copy.deepcopy(op.default), ttl=op.ttl)
            assert_same(expected(got), expected(wanted))
            mutate(got)
        assert len(theirs.given) == 1
        assert_same(theirs.given[0], mine.given[0])
    elif isinstance(operation, SetMany):
        if operation.form == "update":
            await kv.update(dict(operation.pairs))
            model.batch([Set(key, value, None) for key, value in operation.pairs])
        else:
            await kv.set_many(operation.pairs, operation.ttl)
            model.batch([Set(key, value, operation.ttl) for key, value in operation.pairs])
    elif isinstance(operation, DeleteMany):
        removed = await kv.delete_many(operation.keys)
        assert removed == model.batch([Delete(key) for key in operation.keys])
    else:
        changes = operation.changes
        if operation.raises:
            with pytest.raises(Boom):
                async with kv.batch() as batch:
                    fill(batch, changes)
                    raise Boom("the block raised")
            return
        try:
            model.batch(changes)
        except (TypeError, ValueError) as exc:
            with pytest.raises(type(exc)):
                async with kv.batch() as batch:
                    fill(batch, changes)
        else:
            async with kv.batch() as batch:
                fill(batch, changes)


async def _play(path: str, durability: Durability, interval: float,
                script: list[Operation]) -> None:
    clock = FakeClock()
    model = Model(clock)
    kv = AioKV(path, durability=durability, flush_interval=interval, fsync_interval=interval,
               clock=clock)
    try:
        for operation in script:
            if isinstance(operation, Set):
                await kv.set(operation.key, operation.value, operation.ttl)
                model.set(operation.key, expected(operation.value), operation.ttl)
            elif isinstance(operation, SetNow):  # the time on the store's clock
                await kv.set(operation.key)
                now = await kv.get(operation.key)
                assert type(now) is int
                assert now == int(clock.now)
                model.set(operation.key, now)
            elif isinstance(operation, Get):
                got = await kv.get(operation.key, _MISSING)
                assert_same(got, model.values.get(operation.key, _MISSING))
                mutate(got)
            elif isinstance(operation, Delete):
                assert await kv.delete(operation.key) is True
                model.delete(operation.key)
            elif isinstance(operation, Incr):
                key, amount, ttl = operation.key, operation.amount, operation.ttl
                try:
                    wanted = model.incr(key, amount, ttl)
                except (TypeError, ValueError) as exc:
                    with pytest.raises(type(exc)):
                        await kv.incr(key, amount, ttl=ttl)
                else:
                    assert await kv.incr(key, amount, ttl=ttl) == wanted
            elif isinstance(operation, Expire):
                live = model.expire(operation.key, operation.ttl)
                assert await kv.expire(operation.key, operation.ttl) is live
            elif isinstance(operation, Advance):
                model.advance(operation.seconds)
            elif isinstance(operation, Gathered):
                writes = [
                    kv.delete(key) if write is None else kv.set(key, write[0])
                    for key, write in operation.writes.items()
                ]
                await asyncio.gather(*writes)
                for key, write in operation.writes.items():
                    if write is None:
                        model.delete(key)
                    else:
                        model.set(key, expected(write[0]))
            elif isinstance(operation, Pop | UpdateKey | SetMany | DeleteMany | Batch):
                await _play_atomic(kv, model, operation)
            elif operation.name == "iterate":  # async for, and count()
                assert sorted([key async for key in kv]) == sorted(model.values)
                assert await kv.count() == len(model.values)
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
                           fsync_interval=interval, clock=clock)
                await kv.open()
            assert_same(await kv.get_all(), model.values)
            stats = await kv.stats()
            assert stats.keys == len(model.values)
            assert stats.ttl_keys == len(model.expiries)
            for key in KEYS:
                assert await kv.ttl(key) == model.ttl(key), key
    finally:
        await kv.close()
    async with AioKV(path, durability=durability, clock=clock) as reopened:
        assert_same(await reopened.get_all(), model.values)
        for key in KEYS:
            assert await reopened.ttl(key) == model.ttl(key), key


class TestAioKVMatchesADictAcrossReopen:
    @pytest.mark.parametrize("durability", ["flush", "fsync", "buffered"])
    @settings(max_examples=40, deadline=None)
    @given(script=st.lists(operations, max_size=20), interval=st.sampled_from([1.0, 0.001]))
    def test_every_script_leaves_the_store_equal_to_a_dict(
        self, durability: Durability, script: list[Operation], interval: float
    ) -> None:
        directory = tempfile.mkdtemp(prefix="aiokv-async-")
        path = os.path.join(directory, "state.kv")
        try:
            asyncio.run(_play(path, durability, interval, script))
        finally:
            shutil.rmtree(directory, ignore_errors=True)


# -- found by the machine: compact() returned without compacting --------------


@pytest.mark.parametrize(
    ("gate", "count", "clear_first"),
    [
        # Its second fsync_dir: after the new base is in place (the first
        # made the log file appends moved to durable).
        pytest.param("fsync_dir", 2, False, id="the-running-one-has-already-swapped-its-file"),
        pytest.param("create", 1, True, id="clear-voided-the-running-one"),
    ],
)
def test_compact_compacts_even_while_another_compaction_runs(
    gate: str, count: int, clear_first: bool
) -> None:
    """docs/api.md: compact() "rewrites the log with only the live entries, now".

    Found by the machine: compact() used to join a compaction already running,
    whose snapshot predated the call (or which clear() had voided), and so
    returned leaving the dead records of the writes made since.
    """
    directory = tempfile.mkdtemp(prefix="aiokv-compact-")
    files = ScriptedFiles()  # the compaction thread waits at its first ``gate`` call
    held = files.hold(gate, when=nth(count, in_thread("aiokv-compact")))
    engine = Engine(os.path.join(directory, "state.kv"), files=files)
    engine.open()
    first = threading.Thread(target=engine.compact)  # stands for an automatic one
    try:
        engine.set("k", 0)
        first.start()
        held.wait_reached()
        if clear_first:
            engine.clear()
        for i in range(100):
            engine.set("k", i)
        before = engine.stats()
        threading.Timer(0.1, held.release).start()
        engine.compact()
        after = engine.stats()
        assert after.compactions == before.compactions + 1
        assert after.dead_bytes == 0
        assert after.file_bytes == store_size(engine.path)
    finally:
        held.release()
        first.join()
        engine.close()
        shutil.rmtree(directory, ignore_errors=True)


# -- found by the machine: an incr after a set that expired in the same batch --


@pytest.mark.parametrize("via", ["separate calls", "batch"])
@pytest.mark.parametrize("stored", [5, "text"])
def test_an_incr_counts_from_0_after_a_set_expired_in_the_same_batch(
    via: str, stored: object
) -> None:
    """docs/api.md: within a batch, changes to one key apply in order; an
    incr of an expired key counts from 0 and takes incr's ttl.

    A ttl shorter than the clock's resolution (at a Unix time of 1.7e9,
    below about 1.2e-7 s) expires the key as it is set: ``now + ttl ==
    now``. Separate calls then give ``incr`` = 1 with no expiry; the batch
    once counted on the expired value (6, expiring at once: the key was
    gone) or, for a str, refused the whole batch with TypeError.
    """
    directory = tempfile.mkdtemp(prefix="aiokv-batch-")
    try:
        with KV(os.path.join(directory, "state.kv"), clock=FakeClock()) as kv:
            if via == "batch":
                with kv.batch() as batch:
                    batch.set("n", stored, ttl=1e-9)
                    batch.incr("n", 1)
            else:
                kv.set("n", stored, ttl=1e-9)
                kv.incr("n", 1)
            assert (kv.get("n"), kv.ttl("n")) == (1, -1)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
