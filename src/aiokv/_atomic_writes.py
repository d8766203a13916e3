"""The writes that read before they write, or change many keys at once:
an atomic batch (``set_many``, ``delete_many``, ``batch()``) and ``update``.

A batch is worked out under the engine's ``lock`` into its end state
(``WriteBatch.end_state``), encoded as one BATCH frame, and only then
applied: a change the store refuses, or a frame too large, raises before
anything changed. The frame is then logged as any write's is (appended at
"flush", queued at "buffered" and "fsync", where it is one frame of the
group commit, so one fsync), with the undo of every key it changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ._arguments import check_key, check_ttl, prepare
from ._batch import ABSENT, KEEP, WriteBatch
from ._commit import Commit
from ._format import (
    Encoded,
    Value,
    batch_sets_size,
    decode_value,
    encode_batch,
    encode_scalar_set,
    entries_size,
)
from ._group_commit import Undo
from ._table import MISSING, expiry_size

if TYPE_CHECKING:
    from ._engine import Engine

_LOCAL_COUNTER_END = 1 << 64
"""A counter of the local store is a signed or unsigned 64-bit int (msgpack's)."""
_STR = frozenset({str})
_SCALARS = frozenset({float, int, str, bytes, bool, type(None)})
"""Values ``set_many``'s fast path stores as they are (an int out of msgpack's
range fails the encoding, and takes the general path, which says why)."""


class AtomicWrites:
    """Batches and read-modify-writes on the local store.

    Guarded by the engine's ``lock``, which every method holds while it
    reads the table, encodes and applies; it has no field of its own to
    guard. It changes the table, and logs through ``Writes`` (``append``,
    ``queue``), so its file calls are those of an append.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = engine.lock
        self._table = engine.table
        self._writes = engine.writes
        self._clock = engine.clock
        self._inline_writes = engine.durability == "flush"
        self._group_commit = engine.durability == "fsync"

    def set_many(self, mapping: object, ttl: float | None) -> Commit | None:
        """``set_many``: one batch of sets. A dict of str keys and scalar
        values, without a ttl, at "flush", outside a compaction's walk, is
        logged and applied at C speed (one pack, one ``dict.update``);
        anything else is a WriteBatch."""
        if (ttl is None and self._inline_writes and type(mapping) is dict and mapping
                and set(map(type, mapping)) <= _STR
                and set(map(type, mapping.values())) <= _SCALARS):
            try:
                frame = encode_batch(mapping, {}, {}, [])
            except (ValueError, OverflowError):  # a lone surrogate, an int past 64 bits
                frame = b""
            if frame and self._set_all_at_once(mapping, frame):
                return None
        batch = WriteBatch(self._clock)
        batch.set_all(mapping, ttl)  # type: ignore[arg-type]
        return self.commit(batch)[1]

    def _set_all_at_once(self, mapping: dict[str, Value], frame: bytes) -> bool:
        """Log and apply the sets of ``frame`` (``mapping``'s); False, with
        nothing done, in a compaction's walk (the split state)."""
        engine = self._engine
        engine.check_writable()  # unlocked first: see forsake_after_fork
        writes = self._writes
        with self._lock:
            writes.check_can_write()
            table = self._table
            if table.split:
                return False
            entries = table.entries
            overwritten = entries.keys() & mapping.keys()
            old = entries_size({key: entries[key] for key in overwritten}) if overwritten else 0
            writes.append_inline(frame)  # first: a failed append changed nothing
            entries.update(mapping)
            live = table.live_bytes + batch_sets_size(frame, len(mapping)) - old
            expiries = table.expiries
            if expiries:
                for key in expiries.keys() & mapping.keys():
                    del expiries[key]  # its heap item goes stale: see Table.heap
                    live -= expiry_size(key)
            table.live_bytes = live
        return True

    def commit(self, batch: WriteBatch) -> tuple[int, Commit | None]:
        """Apply ``batch`` as one step: returns how many keys it removed that
        were there, and the Commit to wait on ("fsync").

        An empty batch writes nothing; at "fsync" it is acknowledged once
        the writes queued before it are durable, as a delete of an absent
        key is.
        """
        batch.seal()
        engine = self._engine
        engine.check_writable()  # unlocked first: see forsake_after_fork
        writes = self._writes
        with self._lock:
            writes.check_can_write()
            table = self._table
            now = self._clock()
            ends = batch.end_state(table.live_value, _LOCAL_COUNTER_END, now)
            scalars: dict[str, Value] = {}
            encoded: dict[str, Encoded] = {}
            expiries: dict[str, float] = {}
            removed: list[str] = []
            gone = 0
            for key, (value, ttl) in ends.items():
                if value is ABSENT:
                    if table.lookup(key) is not MISSING:
                        removed.append(key)
                        gone += table.live_value(key) is not MISSING
                    continue
                if type(value) is Encoded:
                    encoded[key] = value
                else:
                    scalars[key] = value  # type: ignore[assignment]
                if ttl is KEEP:
                    when = table.expiries.get(key)
                    if when is not None:
                        expiries[key] = when
                elif ttl is not None:
                    expiries[key] = now + ttl  # type: ignore[operator]
            if not scalars and not encoded and not removed:
                return 0, writes.last_commit() if self._group_commit else None
            try:
                frame = encode_batch(scalars, encoded, expiries, removed)
            except ValueError as exc:  # too large, or a lone surrogate in a key
                raise ValueError(f"the batch cannot be stored: {exc}") from None
            if self._inline_writes:
                writes.append_inline(frame)  # first: a failed append changed nothing
                self._apply(scalars, encoded, expiries, removed)
                return gone, None
            undo = self._apply(scalars, encoded, expiries, removed)
            return gone, writes.queue_undo(frame, undo)

    def _apply(self, scalars: dict[str, Value], encoded: dict[str, Encoded],
               expiries: dict[str, float], removed: list[str]) -> list[Undo]:
        """Change the table to the batch's end state; the undo of each key. Hold lock."""
        table = self._table
        undo: list[Undo] = [(key, *table.remove(key)) for key in removed]
        for changed in (scalars, encoded):
            for key, value in changed.items():
                undo.append((key, *table.put(key, value, expiries.get(key))))
        return undo

    def update(self, key: str, fn: Callable[[object], object], default: object = None,
               ttl: float | None = None) -> tuple[object, Commit | None]:
        """Store ``fn(value)`` where ``value`` is what ``key`` holds (a fresh
        copy; ``default`` if absent or expired), as one step under the lock:
        returns the new value and the Commit to wait on.

        An existing key keeps its expiry; ``ttl`` applies when this creates
        the key (as incr). ``fn`` runs under the engine's lock: it must not
        call the store (that would wait for itself). If it raises, nothing
        changes.
        """
        if type(key) is not str:
            key = check_key(key)
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        seconds = check_ttl(ttl)
        engine = self._engine
        engine.check_writable()  # unlocked first: see forsake_after_fork
        writes = self._writes
        with self._lock:
            writes.check_can_write()
            table = self._table
            current = table.live_value(key)
            if current is MISSING:
                value = fn(default)
                expires = None if seconds is None else self._clock() + seconds
            else:
                value = fn(decode_value(current))  # type: ignore[arg-type]
                expires = table.expiries.get(key)
            stored = prepare(key, value)
            engine.check_writable()  # fn may have closed the store (from another thread)
            if type(stored) is Encoded:
                return value, writes.write_put(key, stored, expires)
            try:
                frame = encode_scalar_set(key, stored, expires)
            except ValueError as exc:  # a lone surrogate in the key
                raise ValueError(f"key {key!r}: cannot be stored: {exc}") from None
            return value, writes.put_framed(key, stored, expires, current, frame)
