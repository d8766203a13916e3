"""The store's writes: set, incr, add, expire, delete, and the hot path's room.

A write changes the table and logs its frame under the engine's ``lock``: at
"flush" it appends the frame at once (copied into the mapped window, or with
``write(2)``); at "buffered" and "fsync" it queues it for the writer thread
(``PendingWrites``), and at "fsync" returns the Commit to wait on.

The hot path: while the log's room allows (``grant_fast_room``), a set
under a str key only copies its frame into the mapped window and updates the
table. ``hot_path_open`` is the one condition for that room; whatever ends
one of its terms revokes it where it happens.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ._arguments import check_key, check_ttl, encode_put, prepare
from ._commit import Commit
from ._format import (
    SET,
    SET_ENCODED,
    UINT32_END,
    UINT32_MIN,
    Encoded,
    Value,
    decode_value,
    encode_delete,
    encode_encoded_set,
    encode_expire,
    encode_float_set,
    encode_record,
    encode_scalar_set,
    encode_uint32_set,
    entry_size,
    size_change,
)
from ._group_commit import FrameUndo
from ._lifecycle import OPEN
from ._table import MISSING, expiry_size

if TYPE_CHECKING:
    from ._engine import Engine

_AS_IS = frozenset({float, str, bytes, bool, type(None)})
"""Value types stored without encoding or checks (int needs a range check)."""
_HOT_TYPES = _AS_IS | {int}
"""Value types set()'s hot path takes: an int out of range fails its encoding."""
_TTL_TYPES = frozenset({int, float})
_HOT_TTL_LIMIT = 1e15
"""set()'s hot path takes a ttl of an exact int or float type in (0, this);
others (0, bool, a negative or enormous one) take the general path, which
checks them (check_ttl)."""


class Writes:
    """Every write of the store, and the room of its hot path.

    Guarded by the engine's ``lock``: its own field (``clearing``) and all
    it changes
    in the engine's parts (the table, the log writer, the pending writes).
    It makes the file calls of an append on the caller's thread (see the
    engine's docstring) and none other, but for ``Engine.recreate_base``
    after clear(). The shells call ``set``, ``incr``... directly: the
    engine binds them, so no call of its own comes in between.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._worker = engine.worker  # created first: its failures refuse writes
        self._lock = engine.lock
        self._table = engine.table
        self._log = engine.log
        self._pending = engine.pending
        self._files = engine.files
        self._wake = engine.wake
        self._clock = engine.clock
        self._inline_writes = engine.durability == "flush"
        self._group_commit = engine.durability == "fsync"
        self.clearing: Commit | None = None
        """A clear() whose directory fsync is under way: settled once it is done."""

    # -- set ------------------------------------------------------------------

    def set(self, key: str, value: object, ttl: float | None = None) -> Commit | None:
        """Store ``value``; returns a Commit to wait on at "fsync", else None.

        ``ttl`` (seconds; None or 0 for never) sets when the key expires; a
        set without one removes an earlier expiry, as Redis's SET does.

        The hot path, a set under a str key, is written out here: while
        the log's room allows (see ``grant_fast_room``), such a set copies its
        frame into the mapped window and updates memory, with nothing else to
        check. Without a ttl it changes the entries itself (unless the key
        has an expiry to remove); with one, through the table. Every call
        saved here is a few percent of a set.
        """
        if ttl is None and type(key) is str:
            if type(value) is not float and type(value) not in _HOT_TYPES:
                # A list or a dict: encoded once, and proven to read back.
                value = prepare(key, value)
            try:
                if type(value) is float:  # a timestamp: the most common value by far
                    frame = encode_float_set(key, value)
                elif type(value) is int and UINT32_MIN <= value < UINT32_END:
                    frame = encode_uint32_set(key, value)  # set(key)'s Unix time
                elif type(value) is Encoded:
                    frame = encode_encoded_set(key, value, None)
                else:
                    frame = encode_scalar_set(key, value, None)
            except ValueError as exc:  # e.g. a lone surrogate in the key or the value
                raise ValueError(f"key {key!r}: cannot be stored: {exc}") from None
            except OverflowError:  # an int beyond 64 bits: as prepare() says it
                raise ValueError(f"key {key!r}: int out of the 64-bit range msgpack can "
                                 "store") from None
            size = len(frame)
            log = self._log
            if log.end + size <= log.fast_end:  # read again under the lock
                # acquire() and release() rather than "with": half the cost.
                lock = self._lock
                lock.acquire()
                try:
                    end = log.end + size
                    table = self._table
                    entries = table.entries
                    old_value = entries.get(key, MISSING)
                    # A key with an expiry takes the general path, which
                    # removes it; so does a new key while a compaction walks
                    # (the split state: it goes aside, see Table.put).
                    if (end <= log.fast_end and not (table.expiries and key in table.expiries)
                            and (old_value is not MISSING or not table.split)):
                        log.window.write(frame)  # type: ignore[union-attr]  # room: mapped
                        log.end = end
                        entries[key] = value  # type: ignore[assignment]
                        if old_value is MISSING:
                            table.live_bytes += entry_size(key, value)  # type: ignore[arg-type]
                        elif type(value) is not type(old_value) or (
                                type(value) is not float and (
                                    type(value) is not int
                                    or not UINT32_MIN <= value < UINT32_END
                                    or not UINT32_MIN <= old_value < UINT32_END)):  # type: ignore[operator]
                            # Floats, and uint32 ints (Unix times), keep their size.
                            table.live_bytes += size_change(value, old_value)  # type: ignore[arg-type]
                        return None
                finally:
                    lock.release()
            return self._set_framed(key, value, frame)  # type: ignore[arg-type]
        if (type(key) is str and type(value) in _HOT_TYPES and type(ttl) in _TTL_TYPES
                and 0 < ttl < _HOT_TTL_LIMIT):  # type: ignore[operator]
            # The same with a ttl (a session, a cooldown): memory through the
            # table, since the key gains an expiry. Anything the encoding
            # refuses takes the general path, which says why.
            expires = self._clock() + ttl  # type: ignore[operator]
            try:
                frame = encode_scalar_set(key, value, expires)
            except (ValueError, OverflowError):
                frame = b""
            log = self._log
            if frame and log.end + len(frame) <= log.fast_end:  # read again under the lock
                lock = self._lock
                lock.acquire()
                try:
                    end = log.end + len(frame)
                    if end <= log.fast_end:  # in the room: copied into the window
                        log.window.write(frame)  # type: ignore[union-attr]  # room: mapped
                        log.end = end
                        table = self._table
                        entries = table.entries
                        old_value = entries.get(key, MISSING)
                        expiries = table.expiries
                        old_expiry = expiries.get(key)
                        if (old_value is not MISSING and old_expiry is not None
                                and expires >= old_expiry):
                            # A session renewed: Table.put written out for a key
                            # that keeps an expiry, a later one (no new item in
                            # the sweep's heap: the earlier one stands for it).
                            entries[key] = value  # type: ignore[assignment]
                            expiries[key] = expires
                            if type(value) is not float or type(old_value) is not float:
                                table.live_bytes += size_change(value, old_value)  # type: ignore[arg-type]
                        else:
                            table.put(key, value, expires)  # type: ignore[arg-type]
                        return None
                finally:
                    lock.release()
        if type(key) is not str:
            key = check_key(key)
        if type(value) in _AS_IS:
            stored: Value = value  # type: ignore[assignment]
        else:
            stored = prepare(key, value)
        if ttl is not None:
            return self._set_expiring(key, stored, check_ttl(ttl))
        try:
            if type(stored) is float:
                frame = encode_float_set(key, stored)
            else:
                frame = encode_record(SET_ENCODED if type(stored) is Encoded else SET, key,
                                      stored, None)
        except ValueError as exc:
            raise ValueError(f"key {key!r}: cannot be stored: {exc}") from None
        return self._set_framed(key, stored, frame)

    def _set_framed(self, key: str, stored: Value, frame: bytes) -> Commit | None:
        """set() without a ttl, once its frame is encoded, off the hot path."""
        size = len(frame)
        engine = self._engine
        if engine.state is not OPEN or engine.readonly:  # unlocked: see forsake_after_fork
            raise engine.unusable()
        log = self._log
        with self._lock:
            if engine.state is not OPEN:
                raise engine.unusable()
            if self._worker.write_failure is not None:
                self._worker.refuse_if_failing()
            # append() and Table.put(), written out: no call of theirs on
            # this path, which most sets take when the log is not mapped.
            # A SYNCED frame due, or the split state (where a new key goes
            # aside), takes them.
            detour = log.mark_due() or self._table.split
            window = log.window
            queued = False
            if window is not None and log.end + size <= log.window_end and not detour:
                window.write(frame)
            else:
                fd = log.fd
                if (not self._inline_writes or fd is None or log.tail_dirty or detour
                        or log.map_appends):
                    if self._inline_writes:
                        self.append(frame)  # creates, repairs or maps first
                        self._table.put(key, stored, None)
                        engine.compaction.check()
                        if log.window is not None:
                            self.grant_fast_room()
                        return None
                    if self._table.split:
                        return self.queue(frame, key, self._table.put(key, stored, None))
                    queued = True  # "buffered" or "fsync": memory first, as below
                else:
                    try:
                        written = self._files.write(fd, frame)
                        if written != size:
                            engine.disk.write_all(fd, memoryview(frame)[written:])
                    except OSError:
                        log.cut_tail_after_failure()
                        raise
            table = self._table
            entries = table.entries
            old_value = entries.get(key, MISSING)
            entries[key] = stored
            if old_value is MISSING:
                table.live_bytes += entry_size(key, stored)
            elif type(old_value) is not float or type(stored) is not float:
                table.live_bytes += size_change(stored, old_value)  # type: ignore[arg-type]
            old_expiry = table.expiries.pop(key, None) if table.expiries else None
            if old_expiry is not None:
                table.live_bytes -= expiry_size(key)
            if queued:
                return self.queue(frame, key, (old_value, old_expiry))
            log.end += size
            if not log.unsynced or log.end >= engine.compaction.next_check:
                self._after_append()
            if window is not None:
                self.grant_fast_room()
            return None

    def _set_expiring(self, key: str, stored: Value, ttl: float | None) -> Commit | None:
        check_writable = self._engine.check_writable
        check_writable()  # unlocked first: see forsake_after_fork
        with self._lock:
            check_writable()
            expires = None if ttl is None else self._clock() + ttl
            return self.write_put(key, stored, expires)

    def write_put(self, key: str, stored: Value, expires: float | None,
                  frame: bytes | None = None) -> Commit | None:
        """Log and apply ``key = stored`` expiring at ``expires``. Hold lock."""
        if self._worker.write_failure is not None:
            self._worker.refuse_if_failing()
        if frame is None:
            frame = encode_put(key, stored, expires)
        if self._inline_writes:
            self.append_inline(frame)
            self._table.put(key, stored, expires)
            return None
        return self.queue(frame, key, self._table.put(key, stored, expires))

    def put_framed(self, key: str, stored: Value, expires: float | None, current: object,
                   frame: bytes) -> Commit | None:
        """``write_put`` of an encoded scalar's ``frame``, in the hot path's
        room when it fits there (see grant_fast_room): incr() and update().
        ``current``: what the key held (MISSING if absent), whose expiry
        ``expires`` is. Hold lock. (A call on incr's path: ~1 %, measured.)"""
        log = self._log
        end = log.end + len(frame)
        if end <= log.fast_end:
            log.window.write(frame)  # type: ignore[union-attr]  # room: mapped
            log.end = end
            if current is MISSING:
                self._table.put(key, stored, expires)
            else:
                self._table.overwrite(key, stored, current)  # type: ignore[arg-type]
            return None
        return self.write_put(key, stored, expires, frame)

    def append_inline(self, frame: bytes) -> None:
        """Append ``frame`` now ("flush") and give the hot path its room
        again; the caller then applies it to the table. Hold lock."""
        self.append(frame)
        if self._log.window is not None:
            self.grant_fast_room()

    # -- the other writes -----------------------------------------------------

    def incr(self, key: str, amount: int = 1,
             ttl: float | None = None) -> tuple[int, Commit | None]:
        """Add ``amount`` to the int at ``key`` (a missing or expired key
        counts as 0) and return the new value with the Commit to wait on.

        An existing key keeps its expiry; ``ttl`` applies only when the key
        is created. Atomic: the read and the write happen under one lock.
        """
        if type(key) is not str:
            key = check_key(key)
        if type(amount) is not int:
            if isinstance(amount, bool) or not isinstance(amount, int):
                raise TypeError(f"amount must be an int, not {type(amount).__name__}")
            amount = int(amount)  # an IntEnum would be stored as one, and fail the next incr
        hot_ttl = type(ttl) in _TTL_TYPES and 0 < ttl < _HOT_TTL_LIMIT  # type: ignore[operator]
        seconds = ttl if hot_ttl else check_ttl(ttl)
        engine = self._engine
        if engine.state is not OPEN or engine.readonly:  # unlocked: see forsake_after_fork
            raise engine.unusable()
        # acquire() and release() rather than "with": half the cost (see set()).
        lock = self._lock
        lock.acquire()
        try:
            if engine.state is not OPEN:
                raise engine.unusable()
            # Table.live_value, written out: the lock is held, so one look
            # in the split state's keys is enough.
            table = self._table
            expiries = table.expiries
            when = expiries.get(key) if expiries else None
            if when is not None and when <= self._clock():
                current = MISSING  # expired: counts as absent
            else:
                current = table.entries.get(key, MISSING)
                if current is MISSING and table.split:
                    current = table.added.get(key, MISSING)
            if current is MISSING:
                value = amount
                expires = None if seconds is None else self._clock() + seconds
            elif type(current) is not int:
                # A list or dict, as a read would give it, not an Encoded.
                held = type(decode_value(current)).__name__  # type: ignore[arg-type]
                raise TypeError(f"key {key!r} holds a {held}, not an int")
            else:
                value = current + amount
                expires = when
            if not -(1 << 63) <= value < (1 << 64):
                raise ValueError(f"key {key!r}: {value} is out of the 64-bit range")
            try:
                frame = encode_scalar_set(key, value, expires)
            except ValueError as exc:  # a lone surrogate in the key
                raise ValueError(f"key {key!r}: cannot be stored: {exc}") from None
            return value, self.put_framed(key, value, expires, current, frame)
        finally:
            lock.release()

    def add(self, key: str, value: object,
            ttl: float | None = None) -> tuple[bool, Commit | None]:
        """Store ``value`` only if ``key`` is absent or expired (Redis's SET NX).

        Returns whether it stored, and the Commit to wait on: for a store,
        its own write's; for a refusal at "fsync", the commit that makes the
        writes queued so far durable, since the key may be present only
        through one of them. If that commit fails, the write is undone and
        the refusal was wrong: the caller asks again (see the shells).
        ``ttl`` applies only when this call stores.
        """
        if type(key) is not str:
            key = check_key(key)
        stored: Value = value if type(value) in _AS_IS else prepare(key, value)  # type: ignore[assignment]
        seconds = check_ttl(ttl)
        check_writable = self._engine.check_writable
        check_writable()  # unlocked first: see forsake_after_fork
        with self._lock:
            check_writable()
            if self._table.live_value(key) is not MISSING:
                return False, self.last_commit() if self._group_commit else None
            expires = None if seconds is None else self._clock() + seconds
            return True, self.write_put(key, stored, expires)

    def expire(self, key: str, ttl: float | None) -> tuple[bool, Commit | None]:
        """Set (or with None/0 remove) the expiry of a live key.

        Returns whether the key existed, and the Commit to wait on.
        """
        if type(key) is not str:
            key = check_key(key)
        seconds = check_ttl(ttl)
        check_writable = self._engine.check_writable
        check_writable()  # unlocked first: see forsake_after_fork
        with self._lock:
            check_writable()
            current = self._table.live_value(key)
            if current is MISSING:
                return False, None
            expires = None if seconds is None else self._clock() + seconds
            frame = encode_expire(key, expires)
            return True, self.write_put(key, current, expires, frame)  # type: ignore[arg-type]

    def delete(self, key: str) -> Commit | None:
        """Remove ``key`` (absent is fine); Commit at "fsync", else None."""
        if type(key) is not str:
            key = check_key(key)
        self._engine.check_writable()  # unlocked first: see forsake_after_fork
        with self._lock:
            self.check_can_write()
            if self._table.lookup(key) is MISSING:
                # Nothing to write. But at "fsync" the key may be absent only
                # because of a write not yet durable (an earlier delete):
                # acknowledge once that is durable too.
                return self.last_commit() if self._group_commit else None
            return self._write_removal(key)

    def pop(self, key: str, default: object = None) -> tuple[object, Commit | None]:
        """Remove ``key`` and return what it held (``default`` if it is absent
        or expired), with the Commit to wait on: a get and a delete as one
        step under the lock, so of callers racing for one key, one gets it."""
        if type(key) is not str:
            key = check_key(key)
        self._engine.check_writable()  # unlocked first: see forsake_after_fork
        with self._lock:
            self.check_can_write()
            current = self._table.live_value(key)
            if current is MISSING:
                # Absent maybe only through a write not yet durable: see delete().
                return default, self.last_commit() if self._group_commit else None
            commit = self._write_removal(key)
        return decode_value(current) if type(current) is Encoded else current, commit

    # -- logging a frame ------------------------------------------------------

    def check_can_write(self) -> None:
        """Raise what a write meets now: a store not open (or read-only), or
        writes refused by the writer thread's failure. Hold lock."""
        self._engine.check_writable()
        if self._worker.write_failure is not None:
            self._worker.refuse_if_failing()

    def _write_removal(self, key: str) -> Commit | None:
        """Log the removal of ``key``, which the table holds, and apply it. Hold lock."""
        frame = encode_delete(key)  # the key was stored, so it encodes
        if self._inline_writes:
            self.append(frame)
            self._table.remove(key)
            self._engine.compaction.check()
            return None
        return self.queue(frame, key, self._table.remove(key))

    def queue(self, frame: bytes, key: str,
              old: tuple[object, float | None]) -> Commit | None:
        """Hold a frame for the writer thread ("buffered" and "fsync"). Hold lock.

        The undo, what memory held before, goes with it: a compaction's walk
        takes each key as the log holds it (durable_batch), at "buffered" too.
        """
        return self.queue_undo(frame, (key, *old))

    def queue_undo(self, frame: bytes, undo: FrameUndo) -> Commit | None:
        """``queue`` with the frame's undo as it is: one key's, or a list of
        them (an atomic batch's frame). Hold lock."""
        pending = self._pending
        if not pending.frames:
            # Woken once: the writer looks for more frames after every batch.
            self._wake.set()
        return pending.add(frame, undo)

    def last_commit(self) -> Commit | None:
        """The commit whose settling makes every queued write durable
        ("fsync"; None when nothing is queued or being written), or a clear()
        whose removal of the file is not yet durable. Hold lock."""
        commit = self._pending.last_commit()
        return self.clearing if commit is None else commit

    def append(self, frame: bytes) -> None:
        """Append one frame to the log now ("flush" level). Hold lock."""
        log = self._log
        if log.fd is None:
            self._engine.recreate_base()  # only after clear(); rare
        if log.tail_dirty:
            log.cut_tail()
        mark, previous = log.take_mark()
        if mark:
            try:
                log.write_frame(mark)
            except BaseException:
                log.unmark(previous)
                raise
        log.write_frame(frame)
        self._after_append()

    def _after_append(self) -> None:
        """What an append at the "flush" level sometimes needs. Hold lock."""
        log = self._log
        if not log.unsynced:
            log.unsynced = True
            log.unsynced_since = time.monotonic()
            self._wake.set()
        if log.end >= self._engine.compaction.next_check:
            self._engine.compaction.check()

    # -- the hot path's room ------------------------------------------------------

    def grant_fast_room(self) -> None:
        """Open the hot path for as many bytes as nothing else is due. Hold lock.

        The hot path (set(), incr()) only copies a frame into the window and
        updates the table, so it may run only while hot_path_open() holds
        and the next append stays short of the window's end and of the next
        compaction check. The room is the LogWriter's (``fast_end``, an offset
        in the file: other appends shrink it by moving the end on); whatever
        ends one of the conditions revokes it where it happens: close(),
        the log writer (a SYNCED frame due), every unmap of the
        window (reserve, clear, cut, close), the writer thread's end, a
        compaction's move to a new log file, and the writer thread's fsync
        (unsynced no longer). The next set past it takes the general path,
        which grants the room again. Paths with no window ("fsync",
        "buffered", open) need nothing: the room is only granted with one.
        """
        if self.hot_path_open():
            self._log.grant_room(self._engine.compaction.next_check - 1)
        else:
            self._log.revoke_room()

    def hot_path_open(self) -> bool:
        """Whether the hot path may be given room now (see grant_fast_room). Hold lock."""
        log = self._log
        return (self._engine.state is OPEN and log.window is not None and log.unsynced
                and not log.mark_due() and not log.tail_dirty
                and self._worker.write_failure is None)
