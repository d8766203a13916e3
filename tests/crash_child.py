"""The child of the kill test: writes from many tasks until it is SIGKILLed.

Usage::

    python tests/crash_child.py PATH DURABILITY SEED

It opens ``AioKV(PATH, durability=DURABILITY)`` and runs ``WRITERS`` tasks that
set and delete keys of a small key space, plus a task that compacts every few
milliseconds. It never stops by itself (short of ``LIFETIME``): the parent
kills it. ``SEED`` seeds its choices and is also the *run* number embedded in
every value it writes, so values of different runs never look alike.

Every line it prints is one JSON object, written with a single ``write(2)``
(atomic on a pipe), so a kill never leaves half a line:

* ``{"e":"opening"}`` before opening the store, ``{"e":"open",...}`` after.
* ``{"e":"intent","op":"set"|"del","key":K,"seq":N}`` just before a write is
  issued. ``seq`` counts up in the order the writes reach the store: nothing
  awaits between printing an intent and handing the write to the store. A
  delete's intent also says whether the key was ``present`` in memory then.
* ``{"e":"ack","seq":N}`` once that write's ``await`` returned.
* ``{"e":"compact-start","n":I}`` / ``{"e":"compact-done","n":I}`` around each
  ``await kv.compact()`` of the compacting task.
* ``{"e":"compaction-begin"}`` / ``{"e":"compaction-end"}`` from the engine's
  compaction thread, around every compaction, the automatic ones included.

The value of a set is ``expected_value(key, run, seq)``: a deterministic value
of one of several types (int, float, str, bytes, nested dict, nested list)
that embeds its key, run and seq, so a value that is torn, mixed with another
or misplaced is detected by ``identify``. The parent imports both functions.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import sys
import zlib

from aiokv import AioKV
from aiokv._engine import Engine

KEY_COUNT = 200
"""The key space: ``key_name(0)`` ... ``key_name(KEY_COUNT - 1)``."""
HOT_KEYS = 4
"""Half the writes go to these few keys, so writes to one key overlap."""
WRITERS = 20
DELETE_RATE = (0.3, 0.1)
"""Share of deletes among the writes to a hot key, and to any other key."""
COMPACT_EVERY = (0.003, 0.03)
"""Seconds the compacting task sleeps between two compactions (uniform)."""
RUN_LIMIT = 1 << 24
"""Runs (the SEED argument) are in ``range(RUN_LIMIT)``."""
SEQ_LIMIT = 1 << 20
"""A run issues fewer writes than this (it is killed long before)."""
LIFETIME = 120.0
"""Seconds after which an unkilled child exits on its own (parent gone)."""

_KEY = re.compile(r"k(\d{3})(?:-ключ)?")
_TAG = re.compile(r"<(k\d{3}(?:-ключ)?)\|(\d+)\|(\d+)>")

_ABSENT = object()

Identity = tuple[str, int, int]
"""What a value says about itself: (key, run, seq)."""


# -- values ---------------------------------------------------------------


def key_name(number: int) -> str:
    """The name of key ``number``; a few names are not ASCII."""
    return f"k{number:03d}" + ("-ключ" if number % 50 == 7 else "")


def key_number(key: str) -> int | None:
    match = _KEY.fullmatch(key)
    if match is None or key_name(int(match.group(1))) != key:
        return None
    return int(match.group(1))


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
        raise ValueError(f"not a key of the crash child: {key!r}")
    if not (0 <= run < RUN_LIMIT and 0 <= seq < SEQ_LIMIT):
        raise ValueError(f"run {run} or seq {seq} out of range")
    kind, size = _shape(run, seq)
    if kind == 0:
        return (number << 56) | (run << 32) | seq
    if kind == 1:  # exact: fewer than 53 significant bits
        return float((run * SEQ_LIMIT + seq) * 256 + number) + 0.5
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
        number, run, seq = value >> 56, (value >> 32) & (RUN_LIMIT - 1), value & 0xFFFFFFFF
    elif type(value) is float:
        whole = int(value - 0.5)
        if whole + 0.5 != value or whole < 0:
            return None
        rest, number = divmod(whole, 256)
        run, seq = divmod(rest, SEQ_LIMIT)
    else:
        return None
    return (key_name(number), run, seq) if 0 <= number < KEY_COUNT else None


def same_value(a: object, b: object) -> bool:
    """Equal with the same types all the way down (1 is not 1.0 nor True)."""
    return type(a) is type(b) and repr(a) == repr(b)


def is_intact(key: str, value: object) -> bool:
    """True if ``value`` is exactly a value the crash child writes to ``key``."""
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
    original = Engine._compact_once

    def traced(self: Engine) -> None:
        emit({"e": "compaction-begin"})
        try:
            original(self)
        finally:
            emit({"e": "compaction-end"})

    Engine._compact_once = traced  # type: ignore[method-assign]


class _Sequence:
    def __init__(self) -> None:
        self.next = 0

    def take(self) -> int:
        seq = self.next
        if seq >= SEQ_LIMIT:
            raise RuntimeError("the crash child ran out of sequence numbers")
        self.next += 1
        return seq


async def _writer(kv: AioKV, run: int, rng: random.Random, sequence: _Sequence) -> None:
    while True:
        hot = rng.random() < 0.5
        key = key_name(rng.randrange(HOT_KEYS if hot else KEY_COUNT))
        if rng.random() < DELETE_RATE[0 if hot else 1]:
            # Whether the key is there (in memory) as the delete is issued: a
            # delete of an absent key is acknowledged without writing anything.
            # kv.get does not suspend on an open store, so nothing runs between.
            present = await kv.get(key, _ABSENT) is not _ABSENT
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


async def _compactor(kv: AioKV, rng: random.Random) -> None:
    number = 0
    while True:
        await asyncio.sleep(rng.uniform(*COMPACT_EVERY))
        number += 1
        emit({"e": "compact-start", "n": number})
        await kv.compact()
        emit({"e": "compact-done", "n": number})


async def _main(path: str, durability: str, run: int) -> None:
    rng = random.Random(run)
    _trace_compactions()
    emit({"e": "opening"})
    kv = AioKV(path, durability=durability)
    await kv.open()
    stats = await kv.stats()
    emit({"e": "open", "keys": stats.keys, "file_bytes": stats.file_bytes,
          "compactions": stats.compactions})
    sequence = _Sequence()
    tasks = [asyncio.create_task(_writer(kv, run, random.Random(rng.random()), sequence))
             for _ in range(WRITERS)]
    tasks.append(asyncio.create_task(_compactor(kv, random.Random(rng.random()))))
    # Any task that fails ends the child with its traceback (the parent then
    # sees it exit before the kill); otherwise only SIGKILL ends it.
    done, _ = await asyncio.wait(tasks, timeout=LIFETIME, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        task.result()
    os._exit(0)  # the parent is gone: leave without closing, like a crash


def main(argv: list[str]) -> None:
    if len(argv) != 4:
        sys.exit(f"usage: {argv[0]} PATH DURABILITY SEED")
    path, durability, seed = argv[1], argv[2], int(argv[3])
    if not 0 <= seed < RUN_LIMIT:
        sys.exit(f"SEED must be in range({RUN_LIMIT})")
    asyncio.run(_main(path, durability, seed))


if __name__ == "__main__":
    main(sys.argv)
