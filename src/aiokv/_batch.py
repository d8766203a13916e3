"""An atomic batch as data: the changes ``batch()``, ``set_many`` and
``delete_many`` hand to a backend, and the end state they come to. No I/O,
no lock: each backend reads what it must and applies the end state in one
step of its own (one BATCH frame locally, one script on a server).

Every change is checked as it is given, with the errors ``set``,
``delete`` and ``incr`` raise, so a bad one fails at its own line and the
batch applies nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final, NamedTuple

from ._arguments import NOW, check_key, check_ttl, prepare
from ._format import Encoded, Value, decode_value
from ._table import MISSING

SET: Final = 1
DELETE: Final = 2
INCR: Final = 3


class _Keep:
    """An incr of a live key keeps its expiry, whatever it is."""

    def __repr__(self) -> str:
        return "<keep the expiry>"


KEEP: Final = _Keep()


ABSENT: Final = MISSING
"""A key's end state "removed", and what ``read`` gives for a missing key."""


class Change(NamedTuple):
    op: int
    key: str
    value: Value | int | None
    """The value prepared for the store (SET), the amount (INCR)."""
    ttl: float | None
    """Seconds (SET, or INCR creating the key), or None: no expiry."""


class End(NamedTuple):
    """What a key holds once the batch is applied."""

    value: object
    """The stored value (``Value``), or ABSENT: removed."""
    ttl: float | _Keep | None
    """Seconds from now, KEEP (the key's expiry as it is), or None: none."""


class WriteBatch:
    """The changes of one atomic batch, applied together or not at all.

    ``set``, ``delete`` and ``incr`` take the arguments of the store's calls
    and check them at once; nothing is visible to anyone until the batch is
    committed (the end of the ``batch()`` block). Changes to one key apply
    in order: ``set`` then ``incr`` adds to the value set. An ``incr`` gives
    no value back (read it after the block). Owned by the task or thread
    that opened the block; it has no lock.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.changes: list[Change] = []
        self.sealed = False
        """Committed or abandoned: no more changes."""

    def __len__(self) -> int:
        return len(self.changes)

    def __repr__(self) -> str:
        return f"<aiokv WriteBatch of {len(self.changes)} change(s)>"

    def _check_open(self) -> None:
        if self.sealed:
            raise RuntimeError("this batch has ended (committed or abandoned): "
                               "open a new one with batch()")

    def set(self, key: str, value: object = NOW, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` (without one, the Unix time as an int)."""
        self._check_open()
        key = check_key(key)
        if value is NOW:
            value = int(self._clock())
        self.changes.append(Change(SET, key, prepare(key, value), check_ttl(ttl)))

    def delete(self, key: str) -> None:
        """Remove ``key`` (absent is fine)."""
        self._check_open()
        self.changes.append(Change(DELETE, check_key(key), None, None))

    def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> None:
        """Add ``amount`` to the int at ``key``, as ``incr`` does: a missing
        key counts as 0 and takes ``ttl``; an existing one keeps its expiry.
        A key holding something else fails the commit (nothing applied)."""
        self._check_open()
        key = check_key(key)
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise TypeError(f"amount must be an int, not {type(amount).__name__}")
        self.changes.append(Change(INCR, key, int(amount), check_ttl(ttl)))

    def set_all(self, mapping: Mapping[str, object] | Iterable[tuple[str, object]],
                ttl: float | None) -> None:
        """``set`` of each pair of ``mapping`` (a mapping, or pairs as dict() takes)."""
        if isinstance(mapping, (str, bytes)):
            raise TypeError("mapping must be a mapping or an iterable of (key, value) "
                            f"pairs, not a {type(mapping).__name__}")
        pairs = mapping.items() if isinstance(mapping, Mapping) else mapping
        seconds = check_ttl(ttl)
        for given, value in pairs:
            self._check_open()
            key = check_key(given)
            self.changes.append(Change(SET, key, prepare(key, value), seconds))

    def delete_all(self, keys: Iterable[str]) -> None:
        """``delete`` of each of ``keys``."""
        if isinstance(keys, (str, bytes)):
            raise TypeError("keys must be an iterable of str keys, not a "
                            f"{type(keys).__name__}")
        for key in keys:
            self.delete(key)

    def seal(self) -> None:
        self.sealed = True

    def keys_to_read(self) -> list[str]:
        """The keys whose value the end state depends on: those an ``incr``
        meets before the batch sets or deletes them."""
        given: set[str] = set()
        read: dict[str, None] = {}
        for change in self.changes:
            if change.op == INCR and change.key not in given:
                read[change.key] = None
            given.add(change.key)
        return list(read)

    def end_state(self, read: Callable[[str], object], highest: int,
                  now: float) -> dict[str, End]:
        """Each key's end state, in the order keys were first changed.

        ``read(key)`` gives what a key of ``keys_to_read`` holds now (a
        stored value, or ABSENT); ``highest`` bounds a counter (exclusive),
        as ``incr`` does on the backend; ``now`` is the batch's instant, at
        which a ttl shorter than the clock can tell (``now + ttl == now``)
        has run out, as for ``set`` then ``incr``. TypeError or ValueError,
        naming the key, for an incr the store would refuse: then nothing
        applies.
        """
        ends: dict[str, End] = {}
        for op, key, value, ttl in self.changes:
            if op == SET:
                ends[key] = End(value, ttl)
            elif op == DELETE:
                ends[key] = End(ABSENT, None)
            else:
                if key in ends:
                    current, kept = ends[key]
                    if type(kept) is float and now + kept <= now:
                        current = ABSENT  # set with a ttl that has run out already
                else:
                    current, kept = read(key), KEEP
                if current is ABSENT:
                    total, kept = value, ttl
                elif type(current) is not int:
                    held = type(decode_value(current)).__name__ if type(
                        current) is Encoded else type(current).__name__
                    raise TypeError(f"key {key!r} holds a {held}, not an int")
                else:
                    total = current + value  # type: ignore[operator]
                if not -(1 << 63) <= total < highest:  # type: ignore[operator]
                    raise ValueError(f"key {key!r}: {total!r} is out of the 64-bit range")
                ends[key] = End(total, kept)
        return ends
