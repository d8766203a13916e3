"""What a compaction writes, as functions of the table's entries: the
snapshot frames of a batch as the log holds it, and the pacing of the thread
that writes them. No lock, no file: the engine calls these with its lock held
where the docstrings say so (see Compaction._compact_once).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator, Sequence

from ._format import Encoded, Value, encode_bulk, encode_snapshot
from ._group_commit import FrameUndo, each_undo
from ._table import MISSING

SNAPSHOT_BATCH = 512
"""Entries per snapshot frame: small enough that encoding one batch never
holds the GIL for long, large enough that a snapshot replays at C speed."""
SLICE = 0.0005
MAX_SLICE = 0.002
PAUSE = 0.0001
"""A compaction's thread works for SLICE seconds, then sleeps PAUSE seconds
(only that thread: writers never wait for a compaction). A thread that only
releases the GIL for a system call takes it straight back, and the event
loop's thread then waits out the whole 5 ms switch interval; a real sleep
hands the GIL over at once. When getting the GIL back took long (a busy loop
thread keeps it for a whole switch interval), the next slice is longer, up
to MAX_SLICE."""


def pending_deletions(undo: Sequence[FrameUndo],
                      entries: dict[str, Value]) -> list[tuple[str, object]]:
    """The keys a queued write removed from ``entries``, as a batch for
    ``durable_batch`` (which gives each its value from before the queue)."""
    return [(key, MISSING) for key in dict.fromkeys(key for key, _, _ in each_undo(undo))
            if key not in entries]


def durable_batch(
    batch: Sequence[tuple[str, object]],
    undo: Sequence[FrameUndo],
    expiries: dict[str, float],
    now: float,
) -> tuple[list[tuple[str, Value]], dict[str, float]]:
    """A batch of a compaction's walk as the log holds it, with expiry times.

    ``batch`` is taken from the live entries (tombstones included); ``undo``
    lists the queued "fsync" writes, oldest first, as (key, value before,
    expiry before). Keys with a queued write get their value from before the
    oldest one: those writes may still be rolled back, and their frames reach
    the new log file once written. Keys expired by
    ``now`` are left out; the caller reads the clock with the batch, so a key
    still live at that instant is kept, and a later expire() record that
    extends it finds it on replay.
    """
    undone: dict[str, tuple[object, float | None]] = {}
    for key, old, old_expiry in reversed(list(each_undo(undo))):  # the oldest wins
        undone[key] = (old, old_expiry)
    kept: list[tuple[str, Value]] = []
    kept_expiries: dict[str, float] = {}
    for key, value in batch:
        if key in undone:
            held, when = undone[key]
        else:
            held, when = value, expiries.get(key)
        if held is MISSING or (when is not None and when <= now):
            continue
        kept.append((key, held))  # type: ignore[arg-type]
        if when is not None:
            kept_expiries[key] = when
    return kept, kept_expiries


def snapshot_frames(entries: dict[str, Value], expiries: dict[str, float]) -> Iterable[bytes]:
    """Frames holding ``entries``, SNAPSHOT_BATCH at a time."""
    items = iter(entries.items())
    while True:
        batch = list(itertools.islice(items, SNAPSHOT_BATCH))
        if not batch:
            return
        yield from batch_frames(batch, expiries)


def batch_frames(batch: list[tuple[str, Value]], expiries: dict[str, float]
                  ) -> Iterator[bytes]:
    """Frames holding the entries of ``batch`` and their expiry times.

    Scalars go into a BULK frame (the fastest to replay); encoded lists and
    maps, which a BULK array could not tell from bytes values, into a
    SNAPSHOT frame.
    """
    keys, values = zip(*batch, strict=True)
    if Encoded in set(map(type, values)):
        scalars = [(k, v) for k, v in batch if type(v) is not Encoded]
        encoded: dict[str, bytes] = {k: v for k, v in batch if isinstance(v, Encoded)}
        keys, values = zip(*scalars, strict=True) if scalars else ((), ())
        yield encode_snapshot({}, encoded, expiries_of(encoded, expiries))
    if keys:
        yield encode_bulk(keys, values, expiries_of(keys, expiries))


def expiries_of(keys: Iterable[str], expiries: dict[str, float]) -> dict[str, float]:
    """The expiry times of those of ``keys`` that have one."""
    if not expiries:
        return {}
    return {key: expiries[key] for key in expiries.keys() & keys}


class Pacer:
    """Sleeps PAUSE after each slice of a background thread's work."""

    def __init__(self) -> None:
        self._since = time.perf_counter()
        self._slice = SLICE

    def step(self) -> None:
        now = time.perf_counter()
        if now - self._since >= self._slice:
            time.sleep(PAUSE)
            self._since = time.perf_counter()
            waited = self._since - now  # the sleep, and getting the GIL back
            self._slice = min(MAX_SLICE, max(SLICE, waited / 4))
