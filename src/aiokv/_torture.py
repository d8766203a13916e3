"""Crash torture: SIGKILL a writing process at random instants, then reopen.

``torture()`` (and ``aiokv torture DIR``) runs trials. Each trial starts a
child process that writes from many tasks (while others compact, flush and
clear the store; at "buffered" it first fills the store with more keys than
a compaction takes in one batch: ``WORKLOADS``) and prints each write's
intent before issuing it and its acknowledgement once the ``await``
returned. The parent kills the child with SIGKILL at a random instant (while
Python starts, while the store opens, while it writes, right after a
compaction began or ended, right after a clear began), reopens the store and
checks it against the printed lines.

The child is forked from a server process that imported aiokv once and
never opens a store (``ForkServer``): it opens the store after the fork, as
a new process would, without an interpreter's start-up every trial. To be
killed while Python starts, it is a new interpreter instead
(``python -m aiokv._torture child PATH DURABILITY RUN``).

Which writes must survive depends on the level. At "flush" and "fsync",
every acknowledged one. At "buffered" a write is acknowledged before it
reaches the OS, so a kill may lose any suffix of the writes, acknowledged
ones included, but not past the floor: an acknowledged ``clear()`` (it
removes the file before it returns), and every write acknowledged before an
acknowledged ``flush()`` began. Every rule below holds at every level:

* every key holds the value of its last write that must survive, or of a
  write to it issued after that one (in flight at the kill, or lost with it
  at "buffered"); a key whose last such write was a delete is absent or holds
  such a later value; a key with none keeps its value from before the child
  started, or holds one of the child's values for it. A ``clear()`` counts as
  a delete of every key at its place in the issued order, so after an
  acknowledged clear a key holds the value of a write issued after it, or is
  absent;
* no value is torn: each is exactly a value the child wrote to that key;
* an atomic batch (``set_many``, ``batch()``: a few keys set, one of them
  maybe deleted) is one write: whole or absent, never partial. Once a key
  holds the value the batch set, every key of the batch holds what the
  batch or a later write left there. To the rule above it is a write to
  each of its keys, so an acknowledged batch survives as any write does;
* more strongly, the store holds the state after one prefix of the writes
  (and clears), in the order they were issued, that includes every one that
  must survive: at "buffered", a state that never existed (a write kept, an
  earlier one lost) is caught here. No prefix ends inside a batch;
* reopening never raises (a kill between a clear and the next write leaves
  no log file at all: that opens as an empty store), leaves no temporary file
  behind, and a write made after reopening survives another reopen.

Each broken rule is reported as a violation. Trials share a store (a fresh one
every ``FRESH_EVERY`` trials, or after a violation), so later children start
from a recovered log.

The child's protocol: every line it prints is one JSON object, written with a
single ``write(2)`` (atomic on a pipe), so a kill never leaves half a line:

* ``{"e":"opening"}`` before opening the store, ``{"e":"open",...}`` after.
* ``{"e":"intent","op":"set"|"del","key":K,"seq":N}`` just before a write is
  issued. ``seq`` counts up in the order the writes reach the store: nothing
  awaits between printing an intent and handing the write to the store. A
  delete's intent also says whether the key was ``present`` in memory then.
* ``{"e":"intent","op":"batch","key":"","seq":N,"writes":[["set",K],...]}``
  just before an atomic batch is issued: one line, one seq for all the keys
  it sets (``"set"``) or deletes (``"del"``), each once. It sets each to
  ``expected_value(K, run, N)``.
* ``{"e":"intent","op":"clear","key":"","seq":N}`` just before the clearing
  task's ``await kv.clear()``. No write is issued while a clear runs (the
  writers wait for it), so the clear takes effect exactly at its place in
  the order; writes issued before it may still be in flight.
* ``{"e":"ack","seq":N}`` once that write's (or clear's) ``await`` returned.
* ``{"e":"compact-start","n":I}`` / ``{"e":"compact-done","n":I}`` around each
  ``await kv.compact()`` of the compacting task.
* ``{"e":"compaction-begin"}`` / ``{"e":"compaction-end"}`` from the engine's
  compaction thread, around every compaction, the automatic ones included.
* ``{"e":"flush-start","n":I}`` / ``{"e":"flush-done","n":I}`` around each
  ``await kv.flush()`` of the flushing task. The writes acknowledged before
  a flush starts are durable once it is done.

The value of a set is ``expected_value(key, run, seq)``: a deterministic value
of one of several types (int, float, str, bytes, nested dict, nested list)
that embeds its key, run and seq, so a value that is torn, mixed with another
or misplaced is detected by ``identify``. The run number differs between the
trials on one store, so values of different runs never look alike.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NoReturn, TypeVar, cast

from . import _engine
from ._arguments import as_durability
from ._async_kv import AioKV
from ._chain import log_numbers, log_path
from ._compaction import Compaction

DURABILITIES = ("flush", "fsync", "buffered")
ACKS_SURVIVE_A_KILL = ("flush", "fsync")
"""The levels whose every acknowledged write must survive a kill of the
process. "buffered" acknowledges before the write reaches the OS: see
``ChildRun.floor`` for what it keeps."""

KEY_LIMIT = 1 << 11
"""Key numbers are below this: values embed them in 11 bits."""


@dataclass(frozen=True)
class Workload:
    """What the child does at one level, besides what it does at every level."""

    keys: int
    """The key space: ``key_name(0)`` ... ``key_name(keys - 1)``."""
    fill: bool
    """Write each key the store lacks, one after the other, once open and
    after each clear; only then start writing at random. With more keys than
    a compaction's walk takes per batch (SNAPSHOT_BATCH), writes then land
    on keys the walk has passed and on keys it has yet to take."""


WORKLOADS = {
    "flush": Workload(keys=200, fill=False),
    "fsync": Workload(keys=200, fill=False),
    # At "buffered" a compaction's snapshot is where a lost write could
    # surface as a state that never existed (issue 18): walk several batches.
    # A set is not waited for there, so filling takes milliseconds, not the
    # hundreds of fsyncs it would at "fsync".
    "buffered": Workload(keys=1500, fill=True),
}
HOT_KEYS = 4
"""Half the writes go to these few keys, so writes to one key overlap."""
WRITERS = 20
DELETE_RATE = (0.3, 0.1)
"""Share of deletes among the writes to a hot key, and to any other key."""
BATCH_RATE = 0.1
"""Share of the writes that are an atomic batch (``_write_batch``)."""
BATCH_KEYS = (1, 4)
"""A batch changes a hot key and this many (uniform) other keys, fewer if
they coincide."""
COMPACT_EVERY = (0.003, 0.03)
"""Seconds the compacting task sleeps between two compactions (uniform)."""
CLEAR_EVERY = (0.05, 0.3)
"""Seconds the clearing task sleeps between two clears (uniform)."""
FLUSH_EVERY = (0.01, 0.08)
"""Seconds the flushing task sleeps between two flushes (uniform)."""
RUN_LIMIT = 1 << 20
"""Runs (the RUN argument of the child) are in ``range(RUN_LIMIT)``."""
SEQ_LIMIT = 1 << 20
"""A run issues fewer writes than this (it is killed long before)."""
LIFETIME = 120.0
"""Seconds after which an unkilled child exits on its own (parent gone)."""

_KEY = re.compile(r"k(\d{3,4})(?:-ключ)?")
_TAG = re.compile(r"<(k\d{3,4}(?:-ключ)?)\|(\d+)\|(\d+)>")

_ABSENT = object()

Identity = tuple[str, int, int]
"""What a value says about itself: (key, run, seq)."""


# -- values ---------------------------------------------------------------


def key_name(number: int) -> str:
    """The name of key ``number``; a few names are not ASCII."""
    return f"k{number:03d}" + ("-ключ" if number % 50 == 7 else "")


def key_number(key: str) -> int | None:
    match = _KEY.fullmatch(key)
    if match is None:
        return None
    number = int(match.group(1))
    return number if number < KEY_LIMIT and key_name(number) == key else None


def _shape(run: int, seq: int) -> tuple[int, int]:
    """The kind (0-7) and size of the value written by ``seq`` of ``run``."""
    mix = zlib.crc32(f"{run}:{seq}".encode())
    kind = mix % 8
    roll = (mix >> 8) % 100
    spread = mix >> 16
    if roll < 4:
        size = 24_000 + spread % 16_000  # large: compactions copy a lot
    elif roll < 35:
        size = 1_500 + spread % 4_000
    else:
        size = spread % 300
    return kind, size


def _text(key: str, run: int, seq: int, size: int) -> str:
    tag = f"<{key}|{run}|{seq}>"
    unit = f"{seq:x}.{key}.{run:x}·"
    body = (unit * (size // len(unit) + 1))[:size]
    return tag + body + tag


def expected_value(key: str, run: int, seq: int) -> object:
    """The value that write ``seq`` of run ``run`` stores under ``key``."""
    number = key_number(key)
    if number is None:
        raise ValueError(f"not a key of the torture child: {key!r}")
    if not (0 <= run < RUN_LIMIT and 0 <= seq < SEQ_LIMIT):
        raise ValueError(f"run {run} or seq {seq} out of range")
    kind, size = _shape(run, seq)
    if kind == 0:
        # The low byte of the key number on top, so that half the keys reach
        # the 64th bit (beyond a signed int64); its 3 high bits below it.
        return (number & 0xFF) << 56 | (number >> 8) << 53 | run << 32 | seq
    if kind == 1:  # exact: fewer than 53 significant bits
        return float((run * SEQ_LIMIT + seq) * KEY_LIMIT + number) + 0.5
    if kind in (2, 3):
        return _text(key, run, seq, size)
    if kind == 4:
        return _text(key, run, seq, size).encode() + b"\x00\xff" + seq.to_bytes(4, "big")
    if kind in (5, 6):
        return {
            "key": key,
            "run": run,
            "seq": seq,
            "payload": {
                "numbers": [seq, run, number, -seq],
                "text": _text(key, run, seq, size),
                "ratio": seq + 0.25,
                "none": None,
                "even": seq % 2 == 0,
                "deep": [[key, [seq, {"seq": seq}]]],
            },
            "tail": [key, run, seq],
        }
    return [key, run, seq, _text(key, run, seq, size), [seq, [run, [number]]],
            {"key": key, "seq": seq}, key, run, seq]


def identify(value: object) -> Identity | None:
    """The (key, run, seq) ``value`` claims to come from, None if unreadable.

    A value is intact when ``expected_value(*identify(value))`` equals it
    exactly (see ``is_intact``).
    """
    if type(value) in (int, float):
        return _identify_number(value)
    if type(value) is bytes:
        value = value.decode("utf-8", "replace")
    if type(value) is str:
        match = _TAG.match(value)
        return None if match is None else (match[1], int(match[2]), int(match[3]))
    found: tuple[object, ...] = ()
    if type(value) is dict:
        found = (value.get("key"), value.get("run"), value.get("seq"))
    elif type(value) is list and len(value) >= 3:
        found = (value[0], value[1], value[2])
    if len(found) == 3:
        key, run, seq = found
        if type(key) is str and type(run) is int and type(seq) is int:
            return (key, run, seq)
    return None


def _identify_number(value: object) -> Identity | None:
    if type(value) is int:
        number = value >> 56 | (value >> 53 & 7) << 8
        run, seq = (value >> 32) & (RUN_LIMIT - 1), value & 0xFFFFFFFF
    elif type(value) is float:
        whole = int(value - 0.5)
        if whole + 0.5 != value or whole < 0:
            return None
        rest, number = divmod(whole, KEY_LIMIT)
        run, seq = divmod(rest, SEQ_LIMIT)
    else:
        return None
    return (key_name(number), run, seq) if 0 <= number < KEY_LIMIT else None


_PLAIN = frozenset({str, bytes, int, bool, type(None)})
"""The types ``same_value`` compares with ``==``."""


def same_value(a: object, b: object) -> bool:
    """Equal with the same types all the way down (1 is not 1.0 nor True),
    dict keys in the same order; floats by their repr (-0.0 is not 0.0)."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind in _PLAIN:
        return a == b
    if kind is float and isinstance(a, float) and isinstance(b, float):
        return _same_float(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return (len(a) == len(b) and _same_in_order(a.keys(), b.keys())
                and _same_in_order(a.values(), b.values()))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and _same_in_order(a, b)
    return repr(a) == repr(b)  # anything unexpected


def _same_in_order(a: Iterable[object], b: Iterable[object]) -> bool:
    """``same_value`` of each pair (``a`` and ``b`` are as long); a plain pair
    is compared here, without a call: the parent checks thousands of values
    after each kill."""
    for item_a, item_b in zip(a, b, strict=True):
        kind = type(item_a)
        if kind is not type(item_b):
            return False
        if kind in _PLAIN:
            if item_a != item_b:
                return False
        elif kind is float:
            if not _same_float(cast(float, item_a), cast(float, item_b)):
                return False
        elif not same_value(item_a, item_b):
            return False
    return True


def _same_float(a: float, b: float) -> bool:
    """Equal reprs, ~40 times faster: the same double (-0.0 is not 0.0), or both NaN."""
    if a == b:
        return a != 0.0 or math.copysign(1.0, a) == math.copysign(1.0, b)
    return math.isnan(a) and math.isnan(b)


def same_contents(a: dict[str, object], b: dict[str, object]) -> bool:
    """The same keys, each with the same value (``same_value``), in any order.

    A store does not keep the order of its keys across a compaction (it
    writes scalars and containers in separate frames), and promises none.
    """
    return a.keys() == b.keys() and all(same_value(a[key], b[key]) for key in a)


def is_intact(key: str, value: object) -> bool:
    """True if ``value`` is exactly a value the torture child writes to ``key``."""
    found = identify(value)
    if found is None or found[0] != key:
        return False
    try:
        return same_value(value, expected_value(*found))
    except ValueError:
        return False


# -- the child ------------------------------------------------------------


def emit(event: dict[str, object]) -> None:
    """Print one line with one write(2); exit at once if the parent is gone."""
    line = (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    try:
        written = os.write(1, line)
    except OSError:
        os._exit(3)
    if written != len(line):  # cannot happen for a line this short on a pipe
        os._exit(4)


def _trace_compactions() -> None:
    """Report every compaction the engine runs, automatic ones included."""
    original = Compaction._compact_once

    def traced(self: Compaction) -> None:
        emit({"e": "compaction-begin"})
        try:
            original(self)
        finally:
            emit({"e": "compaction-end"})

    Compaction._compact_once = traced  # type: ignore[method-assign]


class _Sequence:
    def __init__(self) -> None:
        self.next = 0

    def take(self) -> int:
        seq = self.next
        if seq >= SEQ_LIMIT:
            raise RuntimeError("the torture child ran out of sequence numbers")
        self.next += 1
        return seq


@dataclass
class _Child:
    """What the child's tasks share."""

    kv: AioKV
    run: int
    workload: Workload
    sequence: _Sequence = field(default_factory=_Sequence)
    may_write: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while the writers may issue writes: not while a clear (or a fill) runs."""


async def _writer(child: _Child, rng: random.Random) -> None:
    kv, run, sequence, may_write = child.kv, child.run, child.sequence, child.may_write
    while True:
        # No write is issued while a clear runs (nor while the store is
        # filled): the clear happens at its place.
        await may_write.wait()
        hot = rng.random() < 0.5
        key = key_name(rng.randrange(HOT_KEYS if hot else child.workload.keys))
        if rng.random() < BATCH_RATE:
            seq = await _write_batch(child, rng)
        elif rng.random() < DELETE_RATE[0 if hot else 1]:
            # Whether the key is there (in memory) as the delete is issued: a
            # delete of an absent key is acknowledged without writing anything.
            # kv.get may yield once after reading (every YIELD_EVERY calls):
            # if a clear began meanwhile, ``present`` is stale, so start over.
            present = await kv.get(key, _ABSENT) is not _ABSENT
            if not may_write.is_set():
                continue
            seq = sequence.take()
            emit({"e": "intent", "op": "del", "key": key, "seq": seq, "present": present})
            if not await kv.delete(key):
                raise RuntimeError(f"delete({key!r}) failed (see the log above)")
        else:
            seq = sequence.take()
            value = expected_value(key, run, seq)
            emit({"e": "intent", "op": "set", "key": key, "seq": seq})
            await kv.set(key, value)
        emit({"e": "ack", "seq": seq})
        # At "flush" a write never suspends the task: yield so the others run.
        if rng.random() < 0.1:
            await asyncio.sleep(rng.uniform(0, 0.002))
        else:
            await asyncio.sleep(0)


async def _write_batch(child: _Child, rng: random.Random) -> int:
    """Issue one atomic batch; its seq once acknowledged.

    It sets a hot key and a few others, each to its value for the batch's
    seq: one seq for the whole batch, which each of its values embeds. Half
    the time it deletes the last of them instead (with ``batch()``), else
    it is a ``set_many``.
    """
    numbers = [rng.randrange(HOT_KEYS),
               *rng.sample(range(child.workload.keys), rng.randint(*BATCH_KEYS))]
    keys = [key_name(number) for number in dict.fromkeys(numbers)]
    deleted = keys.pop() if len(keys) > 1 and rng.random() < 0.5 else None
    seq = child.sequence.take()
    writes = [["set", key] for key in keys] + ([["del", deleted]] if deleted else [])
    emit({"e": "intent", "op": "batch", "key": "", "seq": seq, "writes": writes})
    if deleted is None:
        await child.kv.set_many({key: expected_value(key, child.run, seq) for key in keys})
        return seq
    async with child.kv.batch() as batch:
        for key in keys:
            batch.set(key, expected_value(key, child.run, seq))
        batch.delete(deleted)
    return seq


async def _now_and_then(call: Callable[[], Awaitable[None]], name: str,
                        every: tuple[float, float], rng: random.Random) -> None:
    """Await ``call()`` every ``every`` seconds (uniform), announced as
    ``{name}-start`` / ``{name}-done`` events numbered from 1."""
    number = 0
    while True:
        await asyncio.sleep(rng.uniform(*every))
        number += 1
        emit({"e": f"{name}-start", "n": number})
        await call()
        emit({"e": f"{name}-done", "n": number})


async def _compactor(kv: AioKV, rng: random.Random) -> None:
    await _now_and_then(kv.compact, "compact", COMPACT_EVERY, rng)


async def _flusher(kv: AioKV, rng: random.Random) -> None:
    await _now_and_then(kv.flush, "flush", FLUSH_EVERY, rng)


async def _set_alone(child: _Child, key: str) -> None:
    seq = child.sequence.take()
    emit({"e": "intent", "op": "set", "key": key, "seq": seq})
    await child.kv.set(key, expected_value(key, child.run, seq))
    emit({"e": "ack", "seq": seq})


async def _fill(child: _Child) -> None:
    """Set each key of the key space the store lacks, one after the other."""
    for number in range(child.workload.keys):
        key = key_name(number)
        if await child.kv.get(key, _ABSENT) is _ABSENT:
            await _set_alone(child, key)


async def _clearer(child: _Child, rng: random.Random) -> None:
    """Clear now and then while the writers wait; fill first (``Workload.fill``)."""
    fill = child.workload.fill
    if fill:
        try:
            await _fill(child)
        finally:
            child.may_write.set()
    while True:
        await asyncio.sleep(rng.uniform(*CLEAR_EVERY))
        child.may_write.clear()  # the writers wait from their next write on
        try:
            seq = child.sequence.take()
            emit({"e": "intent", "op": "clear", "key": "", "seq": seq})
            if not await child.kv.clear():
                raise RuntimeError("clear() failed (see the log above)")
            emit({"e": "ack", "seq": seq})
            # The first write after a clear creates the log file again in a
            # thread, after its intent. Made by many writers at once, those
            # writes could reach the store out of order: make it alone.
            if fill:
                await _fill(child)
            else:
                await _set_alone(child, key_name(rng.randrange(child.workload.keys)))
        finally:
            child.may_write.set()


async def _child_main(path: str, durability: str, run: int) -> None:
    rng = random.Random(run)
    _trace_compactions()
    emit({"e": "opening"})
    kv = AioKV(path, durability=as_durability(durability))
    await kv.open()
    stats = await kv.stats()
    emit({"e": "open", "keys": stats.keys, "file_bytes": stats.file_bytes,
          "compactions": stats.compactions})
    child = _Child(kv, run, WORKLOADS[durability])
    if not child.workload.fill:
        child.may_write.set()
    tasks = [asyncio.create_task(_writer(child, random.Random(rng.random())))
             for _ in range(WRITERS)]
    tasks.append(asyncio.create_task(_compactor(kv, random.Random(rng.random()))))
    tasks.append(asyncio.create_task(_clearer(child, random.Random(rng.random()))))
    tasks.append(asyncio.create_task(_flusher(kv, random.Random(rng.random()))))
    # Any task that fails ends the child with its traceback (the parent then
    # sees it exit before the kill); otherwise only SIGKILL ends it.
    done, _ = await asyncio.wait(tasks, timeout=LIFETIME, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        task.result()
    os._exit(0)  # the parent is gone: leave without closing, like a crash


# -- the parent: run, kill, parse ----------------------------------------------

FRESH_EVERY = 8
"""Trials that share one store before the next starts from no file at all."""
WAIT_LIMIT = 60.0
"""Seconds to wait for the child to reach a point (a busy machine)."""
MARKER_KEY = "written after reopening"

KILL_MODES = {
    # mode: weight
    "starting": 2,  # 0-60 ms after spawning: mostly inside Python's start-up
    "opening": 3,  # 0-4 ms after it began opening (replay, torn-tail cut)
    "writing": 17,  # 5-150 ms after its first acknowledged write
    "compacting": 6,  # 0-4 ms after a compaction began, once writes flow
    "compacted": 6,  # 0-4 ms after a compaction ended, once writes flow
    "clearing": 4,  # 0-4 ms after the first clear was announced
}

Report = Callable[[str], None]
"""Receives each violation as soon as it is found."""


@dataclass
class ChildRun:
    """What one killed child printed, and how its run went wrong if it did."""

    mode: str
    delay: float
    run: int
    durability: str
    intents: list[tuple[int, str, str]] = field(default_factory=list)
    """(seq, op, key) in the order the writes were issued; op "set", "del" or
    "clear" (whose key is ""). A batch is one entry per key it changes, all
    with its seq."""
    batches: set[int] = field(default_factory=set)
    """The seqs of the atomic batches."""
    acked: set[int] = field(default_factory=set)
    absent_deletes: set[int] = field(default_factory=set)
    """Deletes of a key already absent from memory: nothing to write."""
    flush_floor: int = 0
    """The writes before this seq survive at every level: each was issued no
    later than a write (or clear) acknowledged before an acknowledged
    ``flush()`` was called."""
    flushes_started: int = 0
    flushes_done: int = 0
    began_opening: bool = False
    opened: bool = False
    compactions_begun: int = 0
    compactions_ended: int = 0
    explicit_started: int = 0
    explicit_done: int = 0
    stderr: str = ""
    problems: list[str] = field(default_factory=list)
    """The child misbehaved: exited by itself, hung, printed garbage."""

    @property
    def killed_while_compacting(self) -> bool:
        return self.compactions_begun > self.compactions_ended

    @property
    def clears(self) -> list[int]:
        """The seq of each clear issued, in order."""
        return [seq for seq, op, _ in self.intents if op == "clear"]

    @property
    def floor(self) -> int:
        """The reopened store is the state after the writes 0..P-1, for a P >= floor.

        At "flush" and "fsync", every acknowledged write is before the floor.
        At "buffered", what is lost may be any suffix of the writes, but not
        past an acknowledged clear (it removes the file before it returns)
        or what an acknowledged ``flush()`` made durable (``flush_floor``).
        """
        if self.durability in ACKS_SURVIVE_A_KILL:
            return max(self.acked, default=-1) + 1
        return max([self.flush_floor, *(seq + 1 for seq in self.clears if seq in self.acked)])

    @property
    def must_survive(self) -> set[int]:
        """The seqs of the acknowledged writes and clears the reopened store holds:
        every one at "flush" and "fsync", those before the floor at "buffered"."""
        if self.durability in ACKS_SURVIVE_A_KILL:
            return self.acked
        floor = self.floor
        return {seq for seq in self.acked if seq < floor}

    @property
    def killed_while_clearing(self) -> bool:
        return any(seq not in self.acked for seq in self.clears)

    def describe(self) -> str:
        clears = self.clears
        issued = len({seq for seq, _, _ in self.intents})
        return (f"run {self.run}, killed while {self.mode} after {self.delay * 1000:.1f} ms: "
                f"{issued - len(clears)} writes issued, "
                f"{len(self.acked - set(clears))} acknowledged, "
                f"{len(self.batches)} of them batches, "
                f"{len(self.acked & self.batches)} acknowledged, "
                f"{len(clears)} clears issued, {len(self.acked & set(clears))} acknowledged, "
                f"{self.flushes_started} flushes issued, {self.flushes_done} acknowledged, "
                f"{self.compactions_begun} compactions begun, {self.compactions_ended} ended")


class _Reader(threading.Thread):
    """Collects the child's stdout lines and signals the points it reaches."""

    def __init__(self, stdout: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.stdout = stdout
        self.events: list[dict[str, object]] = []
        self.garbage: list[bytes] = []
        self.opening = threading.Event()
        self.acked = threading.Event()
        self.compacting = threading.Event()
        self.compacted = threading.Event()
        self.clearing = threading.Event()

    def run(self) -> None:
        for line in self.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if not isinstance(event, dict) or not line.endswith(b"\n"):
                self.garbage.append(line)
                continue
            self.events.append(event)
            kind = event.get("e")
            if kind == "opening":
                self.opening.set()
            elif kind == "ack":
                self.acked.set()
            elif kind == "compaction-begin" and self.acked.is_set():
                self.compacting.set()
            elif kind == "compaction-end" and self.acked.is_set():
                self.compacted.set()
            elif kind == "intent" and event.get("op") == "clear":
                self.clearing.set()
        # The child is gone: no point can be reached any more, stop the waits.
        for point in (self.opening, self.acked, self.compacting, self.compacted, self.clearing):
            point.set()


def _child_command(path: Path, durability: str, run: int) -> list[str]:
    return [sys.executable, "-m", "aiokv._torture", "child", str(path), durability, str(run)]


def _package_root() -> str:
    """The directory holding this ``aiokv`` package.

    The child runs from there with it first on its path, so it imports the
    very code the parent tests, not another installed copy.
    """
    return str(Path(__file__).resolve().parent.parent)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([_package_root(), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _choose_kill(rng: random.Random) -> tuple[str, float]:
    """A kill mode and the delay after its point, in seconds."""
    mode = rng.choices(list(KILL_MODES), weights=list(KILL_MODES.values()))[0]
    if mode == "starting":
        return mode, rng.uniform(0, 0.06)
    if mode == "writing":
        return mode, rng.uniform(0.005, 0.15)
    return mode, rng.uniform(0, 0.004)


class _Spawned:
    """A child started as a new interpreter: ``python -m aiokv._torture child``."""

    def __init__(self, path: Path, durability: str, run: int, stderr: IO[bytes]) -> None:
        self._process = subprocess.Popen(
            _child_command(path, durability, run),
            stdout=subprocess.PIPE, stderr=stderr, env=_child_env(), cwd=_package_root(),
        )
        assert self._process.stdout is not None
        self.stdout: IO[bytes] = self._process.stdout

    def stop(self) -> tuple[int, bool]:
        """SIGKILL it unless it exited already, and reap it: its status (as
        ``Popen.returncode``) and whether it had exited by itself."""
        exited = self._process.poll() is not None
        if not exited:
            # kill() polls first: a child that died meanwhile is reaped, not
            # signalled, so the signal never reaches a stranger given its pid.
            self._process.kill()
        return self._process.wait(), exited


class _Forked:
    """A child the fork server forked, writing its lines into a pipe of ours."""

    def __init__(self, server: ForkServer, path: Path, durability: str, run: int,
                 stderr: IO[bytes]) -> None:
        read, write = os.pipe()
        try:
            self._pid = server.start(path, durability, run, write, stderr.fileno())
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)  # the child holds the only write end: EOF when it dies
        self._server = server
        self.stdout: IO[bytes] = open(read, "rb")  # noqa: SIM115 (closed by run_and_kill)

    def stop(self) -> tuple[int, bool]:
        """As ``_Spawned.stop``: the server kills and reaps its child."""
        return self._server.stop(self._pid)


def _start_child(path: Path, durability: str, run: int, stderr: IO[bytes], *,
                 server: ForkServer | None, mode: str) -> _Spawned | _Forked:
    """A forked child, or a new interpreter without a server or to kill
    while starting: only a new interpreter has a start-up to kill it in."""
    if server is None or mode == "starting":
        return _Spawned(path, durability, run, stderr)
    return _Forked(server, path, durability, run, stderr)


def run_and_kill(path: Path, durability: str, run: int, rng: random.Random,
                 server: ForkServer | None = None) -> ChildRun:
    """Start the child on ``path``, SIGKILL it at a random instant, parse its output.

    With a ``server``, the child is forked from it (except to kill it while
    Python starts); without one, it is a new interpreter.
    """
    mode, delay = _choose_kill(rng)
    result = ChildRun(mode=mode, delay=delay, run=run, durability=durability)
    stderr_path = path.with_name(f"child-{run}.stderr")
    with open(stderr_path, "wb") as stderr:
        child = _start_child(path, durability, run, stderr, server=server, mode=mode)
    reader = _Reader(child.stdout)
    reader.start()
    try:
        point = {"opening": reader.opening, "writing": reader.acked,
                 "compacting": reader.compacting, "compacted": reader.compacted,
                 "clearing": reader.clearing}.get(mode)
        # The reader sets every point once the child is gone (end of its output).
        if point is not None and not point.wait(WAIT_LIMIT):
            result.problems.append(f"the child was not {mode} after {WAIT_LIMIT:.0f} s")
        time.sleep(delay)
    finally:
        try:
            status, exited = child.stop()
        finally:
            reader.join(WAIT_LIMIT)
            child.stdout.close()
    result.stderr = stderr_path.read_text(errors="replace")
    if exited or status != -signal.SIGKILL:
        result.problems.append(f"the child exited by itself (status {status}):\n"
                               f"{result.stderr[-3000:]}")
    if reader.garbage:
        result.problems.append(f"the child printed unexpected lines: {reader.garbage[:3]}")
    _parse_events(reader.events, result)
    return result


def _parse_events(events: list[dict[str, object]], result: ChildRun) -> None:
    """Fill ``result`` from the child's lines; note any break of the protocol."""
    counters = {"compaction-begin": "compactions_begun", "compaction-end": "compactions_ended",
                "compact-start": "explicit_started", "compact-done": "explicit_done"}
    acked_through = 0  # 1 + the last seq acknowledged so far
    flush_floors: dict[object, int] = {}  # flush number: acked_through as it began
    for event in events:
        kind = event["e"]
        if kind == "intent":
            seq, op = event["seq"], event["op"]
            writes = _announced(op, event["key"], event.get("writes"))
            if not (isinstance(seq, int) and writes):
                result.problems.append(f"the child printed a malformed intent: {event}")
                continue
            if result.intents and seq != result.intents[-1][0] + 1:
                result.problems.append(f"intent #{seq} follows #{result.intents[-1][0]}")
            result.intents += [(seq, write, key) for write, key in writes]
            if op == "batch":
                result.batches.add(seq)
            elif op == "del" and event.get("present") is False:
                result.absent_deletes.add(seq)
        elif kind == "ack" and isinstance(event["seq"], int):
            seq = event["seq"]
            result.acked.add(seq)
            acked_through = max(acked_through, seq + 1)
        elif kind == "flush-start":
            result.flushes_started += 1
            flush_floors[event.get("n")] = acked_through
        elif kind == "flush-done":
            result.flushes_done += 1
            if event.get("n") not in flush_floors:
                result.problems.append(f"the child finished a flush it never began: {event}")
            result.flush_floor = max(result.flush_floor, flush_floors.get(event.get("n"), 0))
        elif kind == "opening":
            result.began_opening = True
        elif kind == "open":
            result.opened = True
        elif isinstance(kind, str) and kind in counters:
            name = counters[kind]
            setattr(result, name, getattr(result, name) + 1)
    issued = {seq for seq, _, _ in result.intents}
    if not result.acked <= issued:
        result.problems.append("the child acknowledged a write it never announced")


def _announced(op: object, key: object, writes: object) -> list[tuple[str, str]]:
    """The (op, key) of each write an intent announces: its own, or each of a
    batch's ``writes`` (a set or delete of a key, each key once); [] if malformed."""
    if op in ("set", "del", "clear") and isinstance(op, str) and isinstance(key, str):
        return [(op, key)] if (key == "") == (op == "clear") else []
    if op != "batch" or key != "" or not isinstance(writes, list) or not writes:
        return []
    found = [(write[0], write[1]) for write in writes
             if isinstance(write, list) and len(write) == 2 and write[0] in ("set", "del")
             and isinstance(write[1], str) and write[1]]
    if len(found) != len(writes) or len({key for _, key in found}) != len(found):
        return []
    return found


# -- the parent: the fork server ------------------------------------------------

_Value = TypeVar("_Value")


class ForkServer:
    """A process that imported aiokv once and forks a fresh child per trial.

    Starting an interpreter and importing aiokv took most of a trial. On a
    shared 2-core machine, a trial took 240-320 ms: 170-200 to start and
    import, 5-10 to open the store, about 40 (on average over the kill
    modes) of writing until the kill, 20-70 to reopen and check. A forked
    child prints its first line within about 3 ms.

    The server never opens a store (before each fork it checks that it has
    no engine and no thread to hand down), so a child opens the store after
    the fork, as one started anew would. It reaps a child only when asked to
    stop it: until then the pid stays that child's.

    Requests and replies are lines of JSON on a Unix socket; a start passes
    the child's stdout and stderr along (SCM_RIGHTS).
    """

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            self._process = subprocess.Popen(
                _serve_command(theirs.fileno()), pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=_child_env(),
                cwd=_package_root(),
            )
        self._control = ours

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self, path: Path, durability: str, run: int, stdout: int, stderr: int) -> int:
        """Fork a child that runs ``_child_main`` on ``path``, writing to the
        descriptors ``stdout`` and ``stderr``: its pid."""
        reply = self._ask({"op": "start", "path": str(path), "durability": durability,
                           "run": run}, [stdout, stderr])
        return _field(reply, "pid", int)

    def stop(self, pid: int) -> tuple[int, bool]:
        """SIGKILL the child unless it exited already, and reap it: its status
        (as ``Popen.returncode``) and whether it had exited by itself."""
        reply = self._ask({"op": "stop", "pid": pid})
        return _field(reply, "status", int), _field(reply, "exited", bool)

    def close(self) -> None:
        """End the server (it kills a child still running) and reap it."""
        self._control.close()
        try:
            self._process.wait(WAIT_LIMIT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _ask(self, request: dict[str, object], fds: Sequence[int] = ()) -> dict[str, object]:
        _send(self._control, request, fds)
        reply, _ = _receive(self._control)
        if reply is None:
            raise RuntimeError(f"the torture fork server is gone (status {self._process.poll()})")
        if "error" in reply:
            raise RuntimeError(f"the torture fork server failed: {reply['error']}")
        return reply


def _serve_command(fd: int) -> list[str]:
    return [sys.executable, "-m", "aiokv._torture", "serve", str(fd)]


def _field(message: dict[str, object], name: str, kind: type[_Value]) -> _Value:
    """``message[name]``, which must be a ``kind``."""
    value = message.get(name)
    if not isinstance(value, kind):
        raise ValueError(f"{name!r} is not a {kind.__name__}: {message}")
    return value


def _send(control: socket.socket, message: dict[str, object], fds: Sequence[int] = ()) -> None:
    """Send ``message`` as one line of JSON, with the descriptors ``fds``."""
    data = json.dumps(message).encode() + b"\n"
    sent = socket.send_fds(control, [data], list(fds)) if fds else 0
    control.sendall(data[sent:])


def _receive(control: socket.socket) -> tuple[dict[str, object] | None, list[int]]:
    """The next line of JSON and the descriptors sent with it; None once the
    other side closed. Requests and replies alternate, so what arrives never
    runs past the end of one line."""
    data, fds, _, _ = socket.recv_fds(control, 1 << 16, 2)
    while data and not data.endswith(b"\n"):
        more = control.recv(1 << 16)
        if not more:
            break
        data += more
    if not data.endswith(b"\n"):
        for fd in fds:
            os.close(fd)
        return None, []
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError(f"not a JSON object: {data!r}")
    return message, fds


def _serve(fd: int) -> None:
    """The fork server (``python -m aiokv._torture serve FD``): start and stop
    children as the parent asks on the socket ``fd``, until it closes it."""
    # Ctrl-C reaches the whole process group: the parent ends us by closing.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    unreaped: list[int] = []
    try:
        with socket.socket(fileno=fd) as control:
            _answer(control, unreaped)
    finally:
        for pid in unreaped:
            _stop_child(pid)


def _answer(control: socket.socket, unreaped: list[int]) -> None:
    """Answer each request on ``control`` until the parent closes it."""
    while True:
        request, fds = _receive(control)
        if request is None:
            return
        try:
            reply = _serve_one(control, request, fds, unreaped)
        except Exception as exc:
            reply = {"error": repr(exc)}
        _send(control, reply)


def _serve_one(control: socket.socket, request: dict[str, object], fds: list[int],
               unreaped: list[int]) -> dict[str, object]:
    """Carry out one request; ``unreaped`` holds the child started and not yet stopped."""
    if request.get("op") == "start":
        try:
            if unreaped or len(fds) != 2:
                raise ValueError(f"cannot start a child: {len(unreaped)} running, {fds=}")
            pid = _fork_child(control, request, fds[0], fds[1])
        finally:
            for fd in fds:
                os.close(fd)
        unreaped.append(pid)
        return {"pid": pid}
    if request.get("op") == "stop":
        pid = _field(request, "pid", int)
        if pid not in unreaped:
            raise ValueError(f"not a child of this server: {pid}")
        unreaped.remove(pid)
        status, exited = _stop_child(pid)
        return {"status": status, "exited": exited}
    raise ValueError(f"unknown request: {request}")


def _stop_child(pid: int) -> tuple[int, bool]:
    """SIGKILL our child ``pid`` unless it exited, and reap it: (status, exited)."""
    done, wait_status = os.waitpid(pid, os.WNOHANG)
    exited = done != 0
    if not exited:
        # Not reaped yet: the pid is still our child's, alive or not.
        os.kill(pid, signal.SIGKILL)
        _, wait_status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(wait_status), exited


def _check_nothing_to_inherit() -> None:
    """A child must start as a new process would: no store engine (the server
    opens none), no thread but ours (a fork copies locks a thread holds)."""
    if len(_engine._open_engines) or threading.active_count() != 1:
        raise RuntimeError(f"the fork server has {len(_engine._open_engines)} engines and "
                           f"{threading.active_count()} threads: it cannot fork a fresh child")


def _fork_child(control: socket.socket, request: dict[str, object], stdout: int,
                stderr: int) -> int:
    """Fork a child that runs ``_child_main`` on what ``request`` names: its pid."""
    path = _field(request, "path", str)
    durability = _field(request, "durability", str)
    run = _field(request, "run", int)
    _check_nothing_to_inherit()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _be_the_child(control, stdout, stderr, (path, durability, run))
    return pid


def _be_the_child(control: socket.socket, stdout: int, stderr: int,
                  arguments: tuple[str, str, int]) -> NoReturn:
    """In the forked child: write to ``stdout`` and ``stderr``, run the child's
    work until the kill, and never return into the server's loop."""
    try:
        control.close()
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        os.close(stdout)
        os.close(stderr)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _run_child(*arguments)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
    os._exit(1)


def _run_child(path: str, durability: str, run: int) -> None:
    """The child's work: write until killed (it exits at once if its parent
    is gone, or after ``LIFETIME``)."""
    asyncio.run(_child_main(path, durability, run))


# -- the parent: check ------------------------------------------------------------


def _written(key: str, run: int, seq: int, op: str) -> object:
    return expected_value(key, run, seq) if op == "set" else _ABSENT


def _same(a: object, b: object) -> bool:
    return a is b or (a is not _ABSENT and b is not _ABSENT and same_value(a, b))


def _written_by_one_of(got: object, key: str, run: int, ops: list[tuple[int, str]]) -> bool:
    """``got`` is what one of ``ops`` left: absent after a delete or clear, or
    the value of a set. ``got`` is intact (``is_intact``) if ``key`` is a
    child's key, so it says which write it comes from: no need to build the
    value of every write to a hot key to compare it.
    """
    if got is _ABSENT:
        return any(op != "set" for _, op in ops)
    found = identify(got)
    if found is None or found[:2] != (key, run):
        return False
    return (found[2], "set") in ops


def _show(value: object) -> str:
    text = "<absent>" if value is _ABSENT else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def check_per_key(before: dict[str, object], child: ChildRun,
                  after: dict[str, object]) -> list[str]:
    """Each key: its last write that must survive, or one issued later; nothing torn.

    A clear is a write (a delete) to every key. The writes that must survive
    depend on the level (``ChildRun.must_survive``): at "buffered" only those
    before an acknowledged clear or flush.
    """
    problems: list[str] = []
    must_survive = child.must_survive
    writes: dict[str, list[tuple[int, str]]] = {}
    clears: list[tuple[int, str]] = []
    for seq, op, key in child.intents:
        if op == "clear":
            clears.append((seq, op))
        else:
            writes.setdefault(key, []).append((seq, op))
    for key in sorted(before.keys() | after.keys() | writes.keys()):
        got = after.get(key, _ABSENT)
        if got is not _ABSENT and key_number(key) is not None and not is_intact(key, got):
            problems.append(f"{key!r} holds a torn or foreign value: {_show(got)}")
            continue
        ops = sorted(writes.get(key, []) + clears) if clears else writes.get(key, [])
        kept = [i for i, (seq, _) in enumerate(ops) if seq in must_survive]
        last = kept[-1] if kept else -1
        if last < 0 and _same(got, before.get(key, _ABSENT)):
            continue
        if _written_by_one_of(got, key, child.run, ops[max(last, 0):]):
            continue
        if last >= 0:
            seq, op = ops[last]
            if op == "clear":
                problems.append(
                    f"{key!r} survived the acknowledged clear #{seq}: it holds {_show(got)},"
                    f" not <absent> nor one of the {len(ops) - last - 1} writes issued after it")
                continue
            why = (" (a delete of a key already absent from memory)"
                   if seq in child.absent_deletes else "")
            if child.durability not in ACKS_SURVIVE_A_KILL:
                why += f" (before #{child.floor}, the floor an acknowledged flush or clear set)"
            problems.append(
                f"{key!r} lost its acknowledged write #{seq} ({op}){why}: it holds "
                f"{_show(got)}, not {_show(_written(key, child.run, seq, op))}"
                f" nor one of the {len(ops) - last - 1} writes issued after it")
        else:
            problems.append(f"{key!r} holds {_show(got)}: neither its value before the run,"
                            f" {_show(before.get(key, _ABSENT))}, nor one of the"
                            f" {len(ops)} writes (and clears) issued to it")
    return problems


def check_prefix(before: dict[str, object], child: ChildRun,
                 after: dict[str, object]) -> list[str]:
    """The store holds the state after writes 0..P-1, for a P >= ``child.floor``:
    past every acknowledged write at "flush" and "fsync", past the last
    acknowledged clear or flush at "buffered".

    A delete of a key already absent from memory counts like any write: it
    writes nothing, but at "fsync" it returns only once the writes queued
    before it are durable (the key may be absent because of one of them),
    and at the other levels those writes were handed over as they were issued.
    A batch is one write: no prefix ends inside it, so a store that holds
    part of one matches none.
    """
    floor = child.floor
    intents = child.intents
    tokens = {key: _token(key, value, child.run, before) for key, value in after.items()}
    state = {key: _token(key, value, child.run, before) for key, value in before.items()}
    differ = {key for key in state.keys() | tokens.keys() if state.get(key) != tokens.get(key)}
    prefixes: list[int] = [0] if not differ else []
    # The prefix at or past the floor where the fewest keys differ (the last
    # of those), to say how the store differs from it.
    closest = (len(differ), 0) if floor == 0 else (len(tokens) + len(state) + 1, -1)
    for i, (seq, op, key) in enumerate(intents):
        if op == "clear":
            state = {}
            differ = set(tokens)
        else:
            if op == "del":
                state.pop(key, None)
            else:
                state[key] = seq
            if state.get(key) == tokens.get(key):
                differ.discard(key)
            else:
                differ.add(key)
        if i + 1 < len(intents) and intents[i + 1][0] == seq:
            continue  # inside a batch
        if not differ:
            prefixes.append(seq + 1)
        elif seq + 1 >= floor and len(differ) <= closest[0]:
            closest = (len(differ), seq + 1)
    if any(p >= floor for p in prefixes):
        return []
    problem = "the store is not the state after any prefix of the writes"
    if floor:
        problem += f" that includes the {floor} first"
    problem += f" (the prefixes that match: {prefixes[-5:]})"
    if closest[1] >= 0:
        nearest = _differences(before, child, after, closest[1])
        problem += f"; the nearest, after the {closest[1]} first, {nearest}"
    return [problem]


def check_batches(before: dict[str, object], child: ChildRun,
                  after: dict[str, object]) -> list[str]:
    """Each batch is whole or absent: once a key holds the value a batch set
    it to, every key of the batch holds what the batch left there (its value,
    or <absent> for its delete) or what a write issued after it left.

    ``check_prefix`` proves the same (and catches the half batch that holds
    only deletes, which this check does not see); this one names the batch.
    """
    changes: dict[int, list[tuple[str, str]]] = {}
    removed: dict[str, int] = {}  # key: the seq of its last delete
    last_clear = -1
    for seq, op, key in child.intents:
        if seq in child.batches:
            changes.setdefault(seq, []).append((op, key))
        if op == "clear":
            last_clear = seq
        elif op == "del":
            removed[key] = seq
    problems = []
    for batch, writes in changes.items():
        seen = [key for op, key in writes
                if op == "set" and _write_of(key, after.get(key, _ABSENT), child.run) == batch]
        if not seen:
            continue  # absent, or each of its keys written again since
        for _, key in writes:
            value = after.get(key, _ABSENT)
            if value is _ABSENT:
                whole = max(removed.get(key, -1), last_clear) >= batch
            else:
                written = _write_of(key, value, child.run)
                whole = written is not None and written >= batch
            if not whole:
                problems.append(
                    f"batch #{batch} is partial: {seen[0]!r} holds its value, but {key!r}"
                    f" holds {_origin(before, child, key, value)}, not what the batch or a"
                    f" later write left")
    return problems


def _write_of(key: str, value: object, run: int) -> int | None:
    """The seq of the write of ``run`` to ``key`` that ``value`` is exactly, if any."""
    found = identify(value)
    if found is not None and found[:2] == (key, run) and is_intact(key, value):
        return found[2]
    return None


_BEFORE = "its value before the run"


def _token(key: str, value: object, run: int, before: dict[str, object]) -> object:
    """What ``check_prefix`` compares for ``key``: the seq of the write of
    ``run`` that ``value`` is; else ``_BEFORE`` if it is the key's value
    ``before`` the run; else a token equal to no other. (Not a repr: that of
    a large value took most of the check.)"""
    seq = _write_of(key, value, run)
    if seq is not None:
        return seq
    was = before.get(key, _ABSENT)
    if was is value or (was is not _ABSENT and same_value(value, was)):
        return _BEFORE
    return object()


def _differences(before: dict[str, object], child: ChildRun, after: dict[str, object],
                 prefix: int) -> str:
    """How ``after`` differs from the state after the ``prefix`` first writes, key by key."""
    source: dict[str, str] = dict.fromkeys(before, "its value before the run")
    for seq, op, key in child.intents:
        if seq >= prefix:
            break
        if op == "clear":
            source = {}
        elif op == "del":
            source.pop(key, None)
        else:
            source[key] = f"write #{seq}"
    differ = []
    for key in sorted(source.keys() | after.keys()):
        want = source.get(key, "<absent>")
        got = _origin(before, child, key, after.get(key, _ABSENT))
        if got != want:
            differ.append(f"{key!r} holds {got}, not {want}")
    keys = "1 key" if len(differ) == 1 else f"{len(differ)} keys"
    return f"differs in {keys}: " + "; ".join(differ[:4])


def _origin(before: dict[str, object], child: ChildRun, key: str, value: object) -> str:
    """Which write ``value`` comes from, in the words of ``_differences``."""
    if value is _ABSENT:
        return "<absent>"
    seq = _write_of(key, value, child.run)
    if seq is not None:
        return f"write #{seq}"
    if key in before and same_value(value, before[key]):
        return "its value before the run"
    return _show(value)


@dataclass
class _Reopened:
    """What reopening the store after a kill found."""

    recovered: dict[str, object]
    compactions: int
    """The header's compaction counter."""
    again: dict[str, object]
    """The contents after writing the marker and reopening once more."""
    torn_tail_cut: bool


class _LogRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname}: {record.getMessage()}")


async def _reopen_twice(path: Path, durability: str, marker: object
                        ) -> tuple[dict[str, object], int, dict[str, object]]:
    async with AioKV(path, durability=as_durability(durability)) as kv:
        recovered = await kv.get_all()
        compactions = (await kv.stats()).compactions
        await kv.set(MARKER_KEY, marker)
    async with AioKV(path, durability=as_durability(durability)) as kv:
        again = await kv.get_all()
    return recovered, compactions, again


def reopen(path: Path, durability: str, marker: object) -> _Reopened:
    """Reopen after the kill; write ``marker``; reopen again.

    The store logs a warning when it cuts a torn tail: listen for it to count
    the kills that left a record half written.
    """
    log = _LogRecorder()
    logger = logging.getLogger("aiokv")
    logger.addHandler(log)
    try:
        recovered, compactions, again = asyncio.run(_reopen_twice(path, durability, marker))
    finally:
        logger.removeHandler(log)
    torn = any("torn record" in message for message in log.messages)
    return _Reopened(recovered, compactions, again, torn)


# -- the parent: trials -------------------------------------------------------------


@dataclass
class TortureResult:
    """The counts of a torture run and the violations it found."""

    seed: int
    durability: str
    trials: int = 0
    kills: int = 0
    writes_checked: int = 0
    """Acknowledged writes (and clears) whose survival was checked: at
    "buffered", those before an acknowledged clear or flush."""
    compactions_interrupted: int = 0
    """Kills that landed while a compaction ran (automatic or explicit)."""
    killed_while_starting: int = 0
    killed_while_opening: int = 0
    compact_calls_interrupted: int = 0
    """Kills that landed while an ``await kv.compact()`` had not returned."""
    clears_interrupted: int = 0
    """Kills that landed while an ``await kv.clear()`` had not returned."""
    killed_without_log: int = 0
    """Kills that left no log file (between a clear and the next write)."""
    compactions_completed: int = 0
    torn_tails_cut: int = 0
    seconds: float = 0.0
    violations: list[str] = field(default_factory=list)
    """One entry per trial that broke a rule: where, how the kill landed, what broke."""
    kept: list[Path] = field(default_factory=list)
    """The stores a violation was found in, left on disk to inspect."""

    def count(self, child: ChildRun, reopened: _Reopened | None) -> None:
        self.trials += 1
        self.kills += 1
        self.writes_checked += len(child.must_survive)
        self.compactions_interrupted += child.killed_while_compacting
        self.killed_while_starting += not child.began_opening
        self.killed_while_opening += child.began_opening and not child.opened
        self.compact_calls_interrupted += child.explicit_started > child.explicit_done
        self.clears_interrupted += child.killed_while_clearing
        self.compactions_completed += child.compactions_ended
        self.torn_tails_cut += reopened is not None and reopened.torn_tail_cut


@dataclass
class _Store:
    """One store the trials share, and what it held after the last trial."""

    directory: Path
    contents: dict[str, object] = field(default_factory=dict)
    compactions: int = 0
    trials: int = 0

    @property
    def path(self) -> Path:
        return self.directory / "state.kv"

    @property
    def as_killed(self) -> Path:
        """A copy of the store's base file as the last kill left it, before
        reopening changed it; its log files are copied beside it as
        ``state.kv.as-killed.log-N``, so that the copy is a store of its own."""
        return self.directory / "state.kv.as-killed"

    def keep_as_killed(self) -> None:
        """Copy every file of the store (base and log files) to ``as_killed``."""
        self.forget_as_killed()
        shutil.copyfile(self.path, self.as_killed)
        names = [entry.name for entry in self.directory.iterdir()]
        for number in log_numbers(self.path.name, names):
            shutil.copyfile(log_path(str(self.path), number), log_path(str(self.as_killed), number))

    def forget_as_killed(self) -> None:
        """Remove the copy of an earlier kill, its log files included."""
        self.as_killed.unlink(missing_ok=True)
        names = [entry.name for entry in self.directory.iterdir()]
        for number in log_numbers(self.as_killed.name, names):
            Path(log_path(str(self.as_killed), number)).unlink(missing_ok=True)


def _check_reopened(store: _Store, child: ChildRun, reopened: _Reopened,
                    marker: object, *, had_log: bool, log_left: bool) -> list[str]:
    """Every rule a reopened store must keep after ``child`` was killed on it.

    ``had_log``: a log file was there when the child started; ``log_left``:
    one was there after the kill.
    """
    recovered = reopened.recovered
    problems = (check_per_key(store.contents, child, recovered)
                or check_batches(store.contents, child, recovered)
                or check_prefix(store.contents, child, recovered))
    if not same_contents(reopened.again, {**recovered, MARKER_KEY: marker}):
        problems.append("the write after reopening (or the rest) did not survive a reopen")
    if had_log and not log_left and not child.clears:
        problems.append("the log file vanished, yet the child issued no clear")
    if not log_left:
        # The file clear() removed took its header's counter with it: the
        # store reopened from no file starts a new one.
        if reopened.compactions != 0:
            problems.append(f"a store reopened from no file counts {reopened.compactions}"
                            f" compactions")
    elif reopened.compactions < store.compactions:
        problems.append(f"the header's compaction counter went back from "
                        f"{store.compactions} to {reopened.compactions}")
    leftovers = sorted(name.name for name in store.directory.iterdir() if ".tmp-" in name.name)
    if leftovers:
        problems.append(f"temporary files left after reopening: {leftovers}")
    return problems


def _trial(store: _Store, durability: str, run: int, rng: random.Random,
           result: TortureResult, *, server: ForkServer) -> list[str]:
    """Kill one child on ``store``, reopen it and check it; the violations found."""
    had_log = store.path.exists()
    child = run_and_kill(store.path, durability, run, rng, server)
    problems = list(child.problems)
    marker = {"trial": result.trials, "run": run}
    log_left = store.path.exists()
    if log_left:  # kept so that a violation can be replayed on it
        store.keep_as_killed()
    else:  # killed after a clear, before the next write (or before the first open)
        store.forget_as_killed()
        result.killed_without_log += had_log
    reopened: _Reopened | None = None
    try:
        reopened = reopen(store.path, durability, marker)
    except Exception as exc:  # any failure to reopen is what we look for
        problems.append(f"reopening failed: {exc!r}")
    if reopened is not None:
        problems += _check_reopened(store, child, reopened, marker, had_log=had_log,
                                    log_left=log_left)
        store.contents = reopened.again
        store.compactions = reopened.compactions
    store.trials += 1
    result.count(child, reopened)
    where = f"seed {result.seed}, {durability}, trial {result.trials - 1}, {store.path}: "
    return [f"{where}{child.describe()}\n" + "\n".join(problems[:20])] if problems else []


def _retire(store: _Store, result: TortureResult, damaged: bool) -> None:
    """Delete a store that passed; keep a damaged one for inspection."""
    if damaged:
        result.kept.append(store.directory)
    else:
        shutil.rmtree(store.directory)


@dataclass(frozen=True)
class _Budget:
    """How long a torture run goes on: ``seconds`` from ``started``, at most
    ``trials`` trials (no limit if None)."""

    started: float
    seconds: float
    trials: int | None

    def allows_another(self, result: TortureResult) -> bool:
        return (time.monotonic() - self.started < self.seconds
                and (self.trials is None or result.trials < self.trials))


def _run_trials(run_directory: Path, durability: str, budget: _Budget, rng: random.Random,
                result: TortureResult, *, report: Report, server: ForkServer) -> None:
    """Run trials on stores in ``run_directory`` while ``budget`` allows another."""
    # Consecutive run numbers: values of two trials on one store never match.
    first_run = rng.randrange(RUN_LIMIT)
    store: _Store | None = None
    while budget.allows_another(result):
        if store is None:
            store = _Store(run_directory / f"store-{result.trials}")
            store.directory.mkdir()
        violations = _trial(store, durability, (first_run + result.trials) % RUN_LIMIT, rng,
                            result, server=server)
        for violation in violations:
            report(violation)
        result.violations += violations
        # After a violation the store's contents are no longer a trusted start.
        if violations or store.trials == FRESH_EVERY:
            _retire(store, result, damaged=bool(violations))
            store = None
    if store is not None:
        _retire(store, result, damaged=False)


def torture(directory: str | os.PathLike[str], seconds: float, durability: str, seed: int,
            report: Report, *, trials: int | None = None) -> TortureResult:
    """Kill writing children for ``seconds`` (or ``trials`` trials, if fewer).

    The stores live in a new subdirectory of ``directory``; those a violation
    was found in are kept there (``result.kept``, with the store as the kill
    left it in ``state.kv.as-killed`` and its ``.log-N`` files), the others
    are deleted.
    ``seed`` replays the random choices (not the timing) of an earlier run.
    Call it outside any running event loop: it reopens stores with
    ``asyncio.run``.
    """
    if durability not in DURABILITIES:
        raise ValueError(f"durability must be one of {DURABILITIES}, not {durability!r}")
    # Absolute: the children run from the package's directory, not from ours.
    run_directory = Path(tempfile.mkdtemp(prefix=f"torture-{durability}-{seed}-",
                                          dir=Path(directory).resolve()))
    rng = random.Random(f"{seed}-{durability}")
    result = TortureResult(seed=seed, durability=durability)
    started = time.monotonic()
    with ForkServer() as server:
        _run_trials(run_directory, durability, _Budget(started, seconds, trials), rng, result,
                    report=report, server=server)
    if not result.kept:
        run_directory.rmdir()
    result.seconds = time.monotonic() - started
    return result


# -- entry point --------------------------------------------------------------------


def main(argv: list[str]) -> None:
    """``python -m aiokv._torture child PATH DURABILITY RUN``: the child;
    ``python -m aiokv._torture serve FD``: the fork server."""
    if len(argv) == 3 and argv[1] == "serve":
        _serve(int(argv[2]))
        return
    if len(argv) != 5 or argv[1] != "child":
        sys.exit(f"usage: python -m aiokv._torture child PATH DURABILITY RUN"
                 f" | serve FD ({argv!r})")
    path, durability, run = argv[2], argv[3], int(argv[4])
    if not 0 <= run < RUN_LIMIT:
        sys.exit(f"RUN must be in range({RUN_LIMIT})")
    _run_child(path, durability, run)


if __name__ == "__main__":
    main(sys.argv)
