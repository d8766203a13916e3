"""The operations the fault-injection and power-loss tests run, and what each promises.

A workload is a list of ``Step``s. ``perform`` makes one on an ``Engine``
(waiting for its commit, as a caller of the store would); ``expect`` changes
an oracle dict as the step's return promises. A test runs the two in the
order its proof needs: the fault loop updates the oracle only for a step
that returned, the power-loss test for every step issued.

The engine runs on a fixed clock with both background timers at an hour: no
periodic fsync or buffered write happens at a time the scheduler picks, so
the file calls come in the same order in every run.
"""

from __future__ import annotations

from typing import NamedTuple

from aiokv import WriteBatch
from aiokv._engine import Engine
from aiokv._files import FileSystem

HOUR = 3600.0
CLOCK_TIME = 1_700_000_000.0

OPEN, CLOSE, FLUSH, COMPACT, CLEAR = "open", "close", "flush", "compact", "clear"
SET, SET_TTL, DELETE, POP = "set", "set+ttl", "delete", "pop"
BATCH, UPDATE = "batch", "update"
WRITES = (SET, SET_TTL, DELETE, POP, BATCH, UPDATE)
"""The steps that change entries (and return a commit to wait for). A
BATCH step's value is its changes, ("set", key, value), ("delete", key) or
("incr", key, amount), applied as one atomic batch; an UPDATE adds its
value to the int at its key (None counting as 0) with ``update``."""
KINDS = (OPEN, CLOSE, FLUSH, COMPACT, CLEAR, *WRITES)

Typed = dict[str, tuple[str, object]]


class Step(NamedTuple):
    label: str
    """Names the step in messages and in crash points."""
    kind: str
    """One of KINDS (a test may add its own, and run those itself)."""
    key: str = ""
    value: object = None


def fixed_clock() -> float:
    return CLOCK_TIME


def engine(path: str, durability: str, files: FileSystem) -> Engine:
    """A closed Engine at ``path`` whose file calls go through ``files``."""
    return Engine(path, durability=durability, files=files, clock=fixed_clock,
                  fsync_interval=HOUR, flush_interval=HOUR)


def perform(store: Engine, step: Step) -> None:
    """Make ``step``'s call on ``store`` and wait for its commit; touches
    nothing else. Whatever the call raises propagates."""
    kind, key, value = step.kind, step.key, step.value
    commit = None
    if kind == SET:
        commit = store.set(key, value)
    elif kind == SET_TTL:
        commit = store.set(key, value, ttl=HOUR)
    elif kind == DELETE:
        commit = store.delete(key)
    elif kind == POP:
        _, commit = store.pop(key)
    elif kind == BATCH:
        batch = WriteBatch(store.clock)
        for change in value:  # type: ignore[attr-defined]
            getattr(batch, change[0])(*change[1:])
        _, commit = store.commit_batch(batch)
    elif kind == UPDATE:
        _, commit = store.update(key, lambda old: (old or 0) + value)  # type: ignore[operator]
    elif kind == FLUSH:
        store.flush()
    elif kind == COMPACT:
        store.compact()
    elif kind == CLEAR:
        store.clear()
    elif kind == OPEN:
        store.open()
    elif kind == CLOSE:
        store.close()
    else:
        raise AssertionError(f"{step.label!r}: no such step kind {kind!r}")
    if commit is not None:
        commit.wait()


def expect(oracle: dict[str, object], step: Step) -> None:
    """Change ``oracle`` as ``step``'s return promises; touches nothing else.
    (A TTL of an hour never expires on the fixed clock.)"""
    if step.kind in (SET, SET_TTL):
        oracle[step.key] = step.value
    elif step.kind in (DELETE, POP):
        oracle.pop(step.key, None)
    elif step.kind == BATCH:
        for change in step.value:  # type: ignore[attr-defined]
            if change[0] == "set":
                oracle[change[1]] = change[2]
            elif change[0] == "delete":
                oracle.pop(change[1], None)
            else:
                oracle[change[1]] = oracle.get(change[1], 0) + change[2]
    elif step.kind == UPDATE:
        oracle[step.key] = (oracle.get(step.key) or 0) + step.value  # type: ignore[operator]
    elif step.kind == CLEAR:
        oracle.clear()


def typed(entries: dict[str, object]) -> Typed:
    """Entries compared with their types (True == 1 must not pass)."""
    return {key: (type(value).__name__, value) for key, value in entries.items()}
