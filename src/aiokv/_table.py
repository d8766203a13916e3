"""The entries a store holds in memory: values, expiry times, and the split
state a compaction's walk needs.

A compaction walks the live dict a batch at a time instead of copying it. While
it walks, the dict's layout must not change, so for that time (the "split"
state) a new key goes into ``added`` and a deleted key's value is replaced by
the ``MISSING`` tombstone (its key noted in ``gone``); afterwards both are
folded back, a batch at a time (``fold_batch``).

Nothing here does I/O or knows about the log: the engine writes a record,
then changes the table, and undoes the change if the record fails.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator

from . import _format
from ._format import HEADER_SIZE, Value, entry_size, size_change
from ._recovery import new_entries

MISSING: object = object()
"""Absent; also the tombstone of a key deleted while a snapshot walks."""

FOLD_BATCH = 4096
"""Keys folded back into the entries per call of ``fold_batch``."""


def expiry_size(key: str) -> int:
    """What an expiry time adds to a key's size in a compacted log."""
    return len(key) + _format.EXPIRY_ENTRY_EXTRA + 1


class Table:
    """The store's entries and expiry times, and an estimate of their size on disk.

    Guarded by the engine's ``lock``: every method that changes the table
    runs holding it, and so does every read but ``lookup`` (which ``get`` and
    ``exists`` call without it; see ``lookup_aside``). The hot path of the
    engine's ``set()`` changes ``entries`` and ``live_bytes`` itself, under
    the same lock, when no expiry and no split are in the way.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.entries: dict[str, Value] = new_entries()
        self.added: dict[str, Value] = {}
        """Keys created while a snapshot walks ``entries`` (split state)."""
        self.gone: set[str] = set()
        """Keys given a tombstone in ``entries`` while a snapshot walks."""
        self.frozen = False
        """``entries`` must not gain or lose a key: a snapshot walks it."""
        self.split = False
        """``added`` or ``gone`` may be non-empty."""
        self.expiries: dict[str, float] = {}
        self.heap: list[tuple[float, str]] = []
        """(time, key) items for the sweep: every key with an expiry has an
        item at or before its expiry time. A key given a later expiry keeps
        its earlier item (no push per set: a key re-set with a ttl again and
        again costs no heap growth); the sweep, popping it, pushes the key's
        current time instead (``pop_expired``'s caller). An item whose key has
        no expiry any more is stale and dropped."""
        self.live_bytes = HEADER_SIZE
        """Estimated size of a freshly compacted log holding these entries."""

    # -- reads --------------------------------------------------------------

    def is_expired(self, key: str) -> bool:
        when = self.expiries.get(key)
        return when is not None and when <= self._clock()

    def lookup(self, key: str) -> object:
        """The value held for ``key``, expired or not, or MISSING. No lock needed."""
        value = self.entries.get(key, MISSING)
        if value is MISSING:
            return self.lookup_aside(key)
        return value

    def lookup_aside(self, key: str) -> object:
        """After ``entries`` missed ``key``: look in ``added``, then ``entries`` again.

        Readers take no lock, and a split may end between their lookups: the
        fold puts a key into ``entries`` before it takes it out of ``added``
        (as ``put`` does), so a key missed in ``entries`` and then in
        ``added`` has moved, and is in ``entries`` now. Keys never move the
        other way. Whether a split is on cannot be asked instead: it may have
        ended since the first lookup. Costs a miss two lookups.

        Why reads may skip the lock at all: each look is one ``dict.get``,
        which the GIL makes atomic (a reader sees a dict before or after a
        writer's change, never halfway), and writers order their changes so
        that every moment between two of them holds the key somewhere a
        reader looks. A free-threaded build (PEP 703) keeps ``dict.get``
        atomic through per-object locks, but not the order in which one
        thread's changes become visible to another: there, reads would need
        the lock (or writes that publish with a release the reads acquire).
        aiokv is built and tested for a build with the GIL (docs/guarantees.md).
        """
        value = self.added.get(key, MISSING)
        if value is MISSING:
            return self.entries.get(key, MISSING)
        return value

    def live_value(self, key: str) -> object:
        """The value held for ``key`` unless it has expired; else MISSING."""
        if self.expiries and self.is_expired(key):
            return MISSING
        return self.lookup(key)

    def live_items(self) -> list[tuple[str, Value]]:
        """Every entry that has not expired (a copy)."""
        items = list(self.entries.items())
        if self.split:
            items = [item for item in items if item[1] is not MISSING]
            items.extend(self.added.items())
        if not self.expiries:
            return items
        now = self._clock()
        expiries = self.expiries
        return [(key, value) for key, value in items
                if (when := expiries.get(key)) is None or when > now]

    @property
    def held(self) -> int:
        """Entries held, expired ones not yet swept included."""
        return len(self.entries) - len(self.gone) + len(self.added)

    def count_expired(self) -> int:
        """Entries held whose time has come (not swept yet)."""
        now = self._clock()
        return sum(1 for when in self.expiries.values() if when <= now)

    # -- changes ------------------------------------------------------------

    def put(self, key: str, stored: Value, expires: float | None) -> tuple[object, float | None]:
        """Hold ``key = stored`` expiring at ``expires``; returns the undo
        (the value before, or MISSING, and the expiry before)."""
        entries = self.entries
        old = entries.get(key, MISSING)
        if old is MISSING and self.split:
            if self.frozen and key not in entries:
                old = self.added.get(key, MISSING)
                self.added[key] = stored
            else:  # a tombstone, or a key to take back from added
                old = self.added.get(key, MISSING)
                entries[key] = stored  # before it leaves added: see lookup_aside
                if old is not MISSING:
                    del self.added[key]
                self.gone.discard(key)
        else:
            entries[key] = stored
        if old is MISSING:
            live = self.live_bytes + entry_size(key, stored)
        else:
            live = self.live_bytes + size_change(stored, old)  # type: ignore[arg-type]
        old_expiry = None
        if expires is not None:
            old_expiry = self.expiries.get(key)
            if old_expiry != expires:  # incr keeps an expiry: no new heap item
                self.expiries[key] = expires
                if old_expiry is None or expires < old_expiry:
                    heapq.heappush(self.heap, (expires, key))
                # A later one: the earlier item stands for it (see ``heap``).
            if old_expiry is None:
                live += expiry_size(key)
        elif self.expiries:
            old_expiry = self.expiries.pop(key, None)
            if old_expiry is not None:
                live -= expiry_size(key)
        self.live_bytes = live
        return old, old_expiry

    def overwrite(self, key: str, stored: Value, old: Value) -> None:
        """Hold ``key = stored`` in place of the live ``old``, its expiry kept
        (incr): ``put`` without the expiry's bookkeeping."""
        if self.split and key not in self.entries:
            self.added[key] = stored
        else:
            self.entries[key] = stored
        self.live_bytes += size_change(stored, old)

    def remove(self, key: str) -> tuple[object, float | None]:
        """Drop ``key`` (absent is fine); returns the undo, as ``put`` does."""
        if not self.split:
            old = self.entries.pop(key, MISSING)
        elif self.frozen:
            old = self.entries.get(key, MISSING)
            if old is not MISSING:
                self.entries[key] = MISSING  # type: ignore[assignment]
                self.gone.add(key)
            else:
                old = self.added.pop(key, MISSING)
        else:
            old = self.entries.pop(key, MISSING)
            if old is MISSING:
                self.gone.discard(key)
                old = self.added.pop(key, MISSING)
        if old is not MISSING:
            self.live_bytes -= entry_size(key, old)  # type: ignore[arg-type]
        old_expiry = self.expiries.pop(key, None) if self.expiries else None
        if old_expiry is not None:
            self.live_bytes -= expiry_size(key)
        return old, old_expiry

    def restore(self, key: str, old: object, old_expiry: float | None) -> None:
        """Undo a ``put`` or ``remove`` with what it returned."""
        if old is MISSING:
            self.remove(key)
        else:
            self.put(key, old, old_expiry)  # type: ignore[arg-type]

    def take(self, entries: dict[str, Value], expiries: dict[str, float]) -> list[str]:
        """Hold these entries (a replayed log's), minus the expired ones.

        Returns the keys of the expired entries dropped. ``live_bytes`` is
        left for the caller to set (it may know the exact figure).
        """
        expired = []
        if expiries:
            now = self._clock()
            expired = [k for k, when in expiries.items() if when <= now]
            for key in expired:
                del entries[key]
                del expiries[key]
        self.entries, self.expiries = entries, expiries
        self.added, self.gone = {}, set()
        self.frozen = self.split = False
        self.heap = [(when, key) for key, when in expiries.items()]
        heapq.heapify(self.heap)
        return expired

    def empty(self) -> None:
        """Hold nothing (clear())."""
        self.entries = new_entries()
        self.added, self.gone = {}, set()
        self.frozen = self.split = False
        self.expiries, self.heap = {}, []
        self.live_bytes = HEADER_SIZE

    def estimate_live_bytes(self) -> int:
        """Size of a compacted log, from a sample of at most ~1,000 entries."""
        count = len(self.entries)
        if not count:
            return HEADER_SIZE
        step = max(1, count // 1000)
        sample = list(itertools.islice(self.entries.items(), 0, None, step))
        sampled = sum(entry_size(key, value) for key, value in sample)
        expiring = sum(expiry_size(key) for key in self.expiries) if len(
            self.expiries) <= 1000 else len(self.expiries) * 24
        return HEADER_SIZE + sampled * count // len(sample) + expiring

    # -- the sweep ----------------------------------------------------------

    def pop_expired(self, now: float) -> tuple[float, str] | None:
        """The next (time, key) due by ``now`` in the heap, taken off it, or
        None. A stale or early item comes out too: the caller checks
        ``expiries``, and gives a key whose expiry is later back to
        ``push_expiry`` with that time."""
        heap = self.heap
        if heap and heap[0][0] <= now:
            return heapq.heappop(heap)
        return None

    def push_expiry(self, when: float, key: str) -> None:
        """Put an item back: popped, but the key's expiry is later (or its
        removal failed)."""
        heapq.heappush(self.heap, (when, key))

    def prune_heap(self) -> None:
        """Rebuild the heap when stale items make up most of it."""
        if len(self.heap) > 2 * len(self.expiries) + 1000:
            self.heap = [(when, key) for key, when in self.expiries.items()]
            heapq.heapify(self.heap)

    # -- the split state ----------------------------------------------------

    def start_split(self) -> Iterator[tuple[str, Value]]:
        """Freeze the layout of ``entries`` and return a walk over it."""
        self.frozen = self.split = True
        return iter(self.entries.items())

    def fold_batch(self) -> bool:
        """Fold FOLD_BATCH keys of the split state back; True once it has ended.

        The first call ends the walk (``entries`` may change layout again).
        """
        self.frozen = False
        entries, added, gone = self.entries, self.added, self.gone
        # Into entries first, out of added after: a reader without the lock
        # finds each key in one or the other (lookup_aside).
        moving = list(itertools.islice(added.items(), FOLD_BATCH))
        entries.update(moving)
        for key, _ in moving:
            del added[key]
        for _ in range(min(FOLD_BATCH, len(gone))):
            entries.pop(gone.pop(), None)
        if added or gone:
            return False
        self.split = False
        return True
