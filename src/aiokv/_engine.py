"""The engine: one synchronous, thread-safe store that both shells drive.

It keeps every entry in memory and appends each change to the log. Reads never
touch the disk. Work that blocks (open and replay, fsync, compaction, clear,
close) runs on the caller's thread or the engine's own threads; the async
shell runs those calls in an executor.

The engine opens, closes and clears the store, answers reads, and
coordinates the parts that do the rest, each in a file of its own:

* ``Table`` (_table.py): the entries, their expiry times, the split state.
* ``LogWriter`` (_log_writer.py): the end of the file appended to, its
  mapped window, its SYNCED frames, and the hot path's room.
* ``StoreFiles`` (_store_files.py): the chain of files the store is made of.
* ``PendingWrites`` (_group_commit.py): frames not yet written, and how
  "fsync" batches them.
* ``Writes`` (_writes.py): set, incr, add, expire, delete, and when the hot
  path may run.
* ``AtomicWrites`` (_atomic_writes.py): atomic batches (one BATCH frame
  each) and update(), the read-modify-write.
* ``WriterThread`` (_writer_thread.py): the background worker: group
  commit, buffered writes, periodic fsync, the expiry sweep.
* ``Compaction`` (_compaction.py): when to compact, and the rewrite.
* ``FileRecovery`` (_recover_files.py): what open() does with the files;
  the replay itself is pure (_chain.py, _recovery.py, _format.py).
* ``LogFiles`` (_log_files.py): where the files are, claiming the base,
  writing a file atomically beside it.

What a write does on the caller's thread (the event loop's, for ``AioKV``):
at "flush", it copies its frame into the mapped window past the log's end, or
appends it with ``write(2)`` where the log is not mapped. Now and then that
same call also reserves and maps the next window (``fallocate`` + ``mmap``),
cuts the tail a failed write left, or, after ``clear()`` removed the log,
creates a new one (written, fsynced and renamed into place). It never
sleeps and never waits for a compaction. At "buffered" and "fsync" a write
only queues its frame (``PendingWrites``).

Locks, always taken in this order:

* ``io`` serializes the background work that touches descriptors (group
  commit, fsync, a compaction's move of appends and its swap of the base,
  clear, close), so a descriptor is never closed while another thread uses
  it, and no fsync of a log file precedes that of the file before it.
* ``lock`` guards the table, the pending writes, the log writer, the chain
  of files and the parts' own fields. Held for short sections, plus the
  file calls a write makes on the caller's thread (above): an append, a
  reservation, a cut, and the creation of a new base after ``clear()``,
  which includes an fsync; and those of a compaction's move of appends
  (cutting the old file's reserved space, writing the FOLLOWS record) and
  of its rename of the new base.
* ``_open_lock`` serializes open() and close().

Reads take no lock (``get``, ``exists``); see ``Table.lookup_aside`` for why
that is safe, and what it relies on. Calls that do work proportional to the
number of keys under ``lock``, at C speed: ``items()``, ``keys()`` and
``get_all()`` copy the entries; ``stats()`` counts the keys that have expired.
"""

from __future__ import annotations

import atexit
import fnmatch
import logging
import math
import os
import re
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ._arguments import DURABILITY_LEVELS, NOW, RECOVERY_MODES, check_key
from ._atomic_writes import AtomicWrites
from ._commit import Commit
from ._compaction import Compaction
from ._errors import (
    AioKVError,
    ClosedError,
    ForkedError,
    LockedError,
    ReadOnlyError,
)
from ._files import REAL_FILES, FileSystem, not_a_regular_file
from ._format import HEADER_SIZE, Encoded, Value, decode_value
from ._group_commit import PendingWrites
from ._lifecycle import CLOSED, CLOSING, FORKED, NEW, OPEN
from ._log_files import LogFiles
from ._log_writer import LogWriter
from ._recover_files import FileRecovery
from ._store_files import StoreFiles
from ._table import MISSING, Table
from ._writer_thread import MAX_INTERVAL, WriterThread
from ._writes import Writes

__all__ = ["DURABILITY_LEVELS", "NOW", "RECOVERY_MODES", "Engine", "Stats"]

logger = logging.getLogger("aiokv")


_open_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
"""Engines from the start of open() to the end of close()."""
_atexit_registered = False


def _close_all_at_exit() -> None:
    for engine in list(_open_engines):
        try:
            engine.close()
        except Exception:
            logger.exception("aiokv: could not close %r at exit", engine.path)


def _forsake_all_after_fork() -> None:
    for engine in list(_open_engines):
        engine.forsake_after_fork()
    _open_engines.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forsake_all_after_fork)


@dataclass(frozen=True)
class Stats:
    """A snapshot of a store's counters (see docs/api.md)."""

    path: str
    keys: int
    file_bytes: int
    """Length of the store's files now: the base file and its log files (the
    one appended to may be longer by reserved space)."""
    live_bytes: int
    """Estimated size of a freshly compacted file holding the current entries."""
    dead_bytes: int
    """``file_bytes - live_bytes``: what a compaction would reclaim."""
    compactions: int
    """Compactions this log has gone through (kept in its header)."""
    last_compaction: float | None
    """Unix time of the last compaction, None if never."""
    durability: str
    pending_writes: int
    """Records acknowledged (or waiting, at "fsync") but not yet written."""
    ttl_keys: int
    """Live keys that have an expiry time."""
    held_entries: int
    """Entries held in memory: ``keys`` plus expired ones not yet swept."""


def _checked_path(path: object) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError("path must be a str path, not bytes")
    if not path:
        raise ValueError("path must not be empty")
    return os.path.abspath(path)


def _check_options(durability: object, recovery: object, readonly: object,
                   intervals: dict[str, object]) -> None:
    if durability not in DURABILITY_LEVELS:
        raise ValueError(f"durability must be one of {DURABILITY_LEVELS}, not {durability!r}")
    if recovery not in RECOVERY_MODES:
        raise ValueError(f"recovery must be one of {RECOVERY_MODES}, not {recovery!r}")
    for name, interval in intervals.items():
        if isinstance(interval, bool) or not isinstance(interval, (int, float)):
            raise TypeError(f"{name} must be a number of seconds")
        if not 0 < interval <= MAX_INTERVAL:
            raise ValueError(f"{name} must be a positive number of seconds, at most "
                             f"{MAX_INTERVAL:.0f} (a day), not {interval!r}")
    if not isinstance(readonly, bool):
        raise TypeError(f"readonly must be True or False, not {readonly!r}")


class Engine:
    """The store: its state, its lifecycle and its reads; the parts do the rest.

    The fields the parts share are public (``lock``, ``io``, ``table``,
    ``log``, ``store``, ``pending``, ``wake``, ``state``...), guarded by
    ``lock`` (see the module docstring for the order of the locks); ``io``
    is taken as well to replace or close a descriptor. ``_open_lock``
    serializes open() and close(), which alone change ``state`` from NEW
    or to CLOSED. ``set``, ``incr``, ``add``, ``expire`` and ``delete`` are
    ``Writes``' methods, ``commit_batch`` and ``update`` ``AtomicWrites``'
    and ``compact`` is ``Compaction``'s, bound here.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: str = "flush",
        fsync_interval: float = 1.0,
        flush_interval: float = 0.1,
        recovery: str = "strict",
        files: FileSystem = REAL_FILES,
        clock: Callable[[], float] = time.time,
        readonly: bool = False,
    ) -> None:
        self.path = _checked_path(path)
        _check_options(durability, recovery, readonly, {"fsync_interval": fsync_interval,
                                                        "flush_interval": flush_interval})
        self.readonly = readonly
        """Opened to read what the file holds: no lock, nothing written or cut."""
        self.durability = durability
        self.fsync_interval = float(fsync_interval)
        self.flush_interval = float(flush_interval)
        self.recovery = recovery
        self.files = files
        self.clock = clock
        """The store's clock (Unix seconds): expiry times, and ``set(key)``'s
        value (the shells compute that as ``int(engine.clock())``)."""
        self.disk = LogFiles(self.path, files)

        self.is_open = False
        """True between a successful open() and close(); a plain attribute
        because the async shell reads it on every call."""
        self.log_missing = False
        """True after clear() removed the file, until a write creates it again."""

        self.io = threading.Lock()
        self.lock = threading.Lock()
        self._open_lock = threading.Lock()
        self.state = NEW
        self._owner = 0  # the id of the process that opened the store
        self._lock_fd: int | None = None
        self.wake = threading.Event()
        """Wakes the writer thread: frames queued, a write unsynced, a compaction asked for."""

        self.table = Table(clock)
        self.log = LogWriter(files, self.path)
        self.store = StoreFiles()
        self.pending = PendingWrites(group_commit=durability == "fsync")
        self.file_recovery = FileRecovery(self.disk, files, self.table, self.store, self.log,
                                          salvage=recovery == "salvage", clock=clock)
        self.worker = WriterThread(self)
        self.writes = Writes(self)
        self.compaction = Compaction(self)
        self.atomic_writes = AtomicWrites(self)
        self.commit_batch = self.atomic_writes.commit
        self.update = self.atomic_writes.update
        self.set_many = self.atomic_writes.set_many
        writes = self.writes
        self.set = writes.set
        self.incr = writes.incr
        self.add = writes.add
        self.expire = writes.expire
        self.delete = writes.delete
        self.pop = writes.pop
        self.compact = self.compaction.compact

    def __repr__(self) -> str:
        return f"<aiokv engine {self.path!r} {self.state} durability={self.durability}>"

    @property
    def legacy_ints_as_strings(self) -> bool:
        """Store a JSON state file's ints beyond 64 bits as strings when
        converting it (set by ``aiokv migrate --ints-as-strings``)."""
        return self.file_recovery.legacy_ints_as_strings

    @legacy_ints_as_strings.setter
    def legacy_ints_as_strings(self, value: bool) -> None:
        self.file_recovery.legacy_ints_as_strings = value

    # -- opening and closing ------------------------------------------------

    def open(self) -> None:
        """Open the store: lock, recover, replay. Idempotent and thread-safe."""
        if self.state is FORKED:  # before the lock: one held at the fork stays held
            raise self.unusable()
        with self._open_lock:
            if self.state is OPEN:
                return
            if self.state is not NEW:
                raise self.unusable()
            # From here until close(), a fork leaves this engine unusable in the child.
            _open_engines.add(self)
            try:
                self._open_locked()
            except BaseException:
                _open_engines.discard(self)
                raise
            global _atexit_registered
            if not _atexit_registered:
                atexit.register(_close_all_at_exit)
                _atexit_registered = True

    def _open_locked(self) -> None:
        self.disk.resolve()  # links resolved anew at every open
        mode = self.files.mode(self.disk.file)
        if mode is not None and not stat.S_ISREG(mode):
            # Before the lock file: nothing is created, read or changed.
            raise not_a_regular_file(self.path, mode)
        if self.readonly:
            self.file_recovery.read_only()
            self._owner = os.getpid()
            self.state = OPEN
            self.is_open = True
            return
        lock_fd = self._take_lock_file()
        try:
            self.log.map_appends = (self.durability == "flush"
                                    and self.files.can_map(self.disk.file))
            self.file_recovery.recover()
            self.seal()
            self._lock_fd = lock_fd
            self._owner = os.getpid()
            self.state = OPEN
            self.is_open = True
            self.worker.start()
        except BaseException:
            self.state = NEW
            self.is_open = False
            self.worker.thread = None
            self._lock_fd = None
            with self.lock:
                self.log.drop_window()
            self.file_recovery.close_files(quietly=False)
            self.files.unlock(lock_fd)
            raise

    def _take_lock_file(self) -> int:
        try:
            lock_fd = self.files.lock(self.disk.file + ".lock")
        except OSError as exc:
            # Named after the store: a "<path>.lock" a user never made says little.
            if isinstance(exc, FileNotFoundError):
                raise FileNotFoundError(exc.errno, "the directory of the store does not "
                                        "exist", self.path) from exc
            raise type(exc)(exc.errno, f"cannot take the lock of the store ({exc.strerror}; "
                            "readonly=True reads without it)", self.path) from exc
        if lock_fd is None:
            raise LockedError(self.path, self.files.lock_holder(self.disk.file + ".lock"))
        return lock_fd

    def unusable(self) -> AioKVError:
        """The error for a call on a store that is not open (or, opened
        read-only, for a write)."""
        if self.state is FORKED:
            return ForkedError(self.path, self._owner)
        if self.state is OPEN and self.readonly:
            return ReadOnlyError(self.path)
        return ClosedError(self.path)

    def forsake_after_fork(self) -> None:
        """Called in the child of a fork: give up the owner's store untouched.

        The child has copies of the owner's descriptors and mapping but none
        of its threads, and any lock another thread held at the fork stays
        held here forever: so no lock is taken, nothing is written, cut or
        unlocked. Closing the copies of the descriptors releases nothing of
        the owner's (a flock belongs to the open file description, which the
        owner still holds), and keeps the child from holding the lock after
        the owner closes. From now on every call raises ForkedError.
        """
        if self.state is NEW or self.state is CLOSED or self.state is FORKED:
            return
        self.state = FORKED
        self.is_open = False
        self.log.revoke_room()
        self.log.window = None  # the child's copy of the mapping goes with it
        for fd in [*self.store.let_go(self.log.fd), self._lock_fd]:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.log.fd = self._lock_fd = None
        self.worker.thread = self.compaction.thread = None

    def seal(self) -> None:
        """Vouch now for what the last fsync made durable: a SYNCED frame, fsynced.

        At open and close, where no append may come soon to carry the frame.
        Raises OSError if that fails; the data it would vouch for is durable
        either way, and a second attempt writes the frame only if it is not
        in the log.
        """
        with self.io, self.lock:
            fd = self.log.fd
            if fd is None:
                return
            mark, previous = self.log.take_mark()
            if not mark:
                return
            try:
                self.files.write_synced(fd, mark)
            except BaseException:
                self.log.unmark(previous)
                self.log.cut_tail_after_failure()
                raise
            self.log.end += len(mark)

    def close(self) -> None:
        """Write and fsync everything, stop the threads, release the lock.

        Calling it again is a no-op. If the final write fails, the error is
        raised and the store stays open, so nothing acknowledged is dropped.
        In a process forked from the owner it does nothing (see
        ``forsake_after_fork``), even after a fork made without Python's
        fork handlers, which the process id shows.
        """
        if self.state is FORKED:
            return
        if self._owner and self._owner != os.getpid():
            self.forsake_after_fork()
            return
        with self._open_lock:
            if self.state is NEW:
                self.state = CLOSED
                return
            if self.state is CLOSED:
                return
            with self.lock:
                self.state = CLOSING
                self.log.revoke_room()
                self.is_open = False
                self.compaction.void()  # a running compaction is discarded
            compaction = self.compaction.thread
            if compaction is not None:
                compaction.join()
            try:
                with self.lock:
                    self.log.release_reserved()
                self.worker.flush_all()
                self.seal()
            except BaseException:
                with self.lock:
                    self.state = OPEN
                    self.is_open = True
                raise
            self.worker.stop()
            with self.lock:
                never_started = self.compaction.forget_request()
            if never_started is not None:
                never_started.settle(ClosedError(self.path))
            # Everything is on disk: from here on close() completes. A failing
            # close(2) still frees the descriptor (and with it the flock).
            with self.io, self.lock:
                self.file_recovery.close_files()
                if self._lock_fd is not None:
                    try:
                        self.files.unlock(self._lock_fd)
                    except OSError as exc:
                        logger.warning("aiokv: releasing the lock of %s failed: %s",
                                       self.path, exc)
                    self._lock_fd = None
                self.state = CLOSED
            _open_engines.discard(self)

    def check_writable(self) -> None:
        if self.state is not OPEN or self.readonly:
            raise self.unusable()

    def check_openable(self) -> None:
        """Raise now what open() would raise for the state alone (no I/O, no lock).

        The async shell calls it before handing open() to a thread: in a
        forked child the executor's threads are gone, and a hand-over could
        wait forever.
        """
        if self.state is FORKED or self.state is CLOSING or self.state is CLOSED:
            raise self.unusable()

    @property
    def closed(self) -> bool:
        """Whether close() has run: the engine is spent (a shell makes a new one)."""
        return self.state is CLOSED

    def in_own_thread(self) -> bool:
        """Whether the caller runs on one of the engine's own threads."""
        current = threading.current_thread()
        return current is self.worker.thread or current is self.compaction.thread

    @property
    def forked(self) -> bool:
        """Whether this engine was inherited through a fork (see forsake_after_fork)."""
        return self.state is FORKED or bool(self._owner and self._owner != os.getpid())

    # -- reads --------------------------------------------------------------

    def get(self, key: str, default: object = None) -> object:
        if self.state is not OPEN:
            raise self.unusable()
        if type(key) is not str:
            key = check_key(key)
        # The expiry is looked up before the entry: the sweep removes both,
        # and this order never shows an expired value while it runs. No lock:
        # see Table.lookup_aside.
        table = self.table
        if table.expiries and table.is_expired(key):
            return default
        value = table.entries.get(key, MISSING)
        if value is MISSING:
            value = table.lookup_aside(key)
            if value is MISSING:
                return default
        if type(value) is Encoded:
            return decode_value(value)
        return value

    def get_many(self, keys: Iterable[str]) -> dict[str, object]:
        """The present (live) ones of ``keys``, with their values (fresh
        copies), as they were at one instant."""
        if self.state is not OPEN:
            raise self.unusable()
        if isinstance(keys, str):
            raise TypeError("keys must be an iterable of str keys, not a str")
        wanted = [key if type(key) is str else check_key(key) for key in keys]
        found: dict[str, Value] = {}
        with self.lock:  # one instant: never half of an atomic batch
            table = self.table
            for key in wanted:
                value = table.live_value(key)
                if value is not MISSING:
                    found[key] = value  # type: ignore[assignment]
        return {key: decode_value(value) for key, value in found.items()}

    def _live_items(self) -> list[tuple[str, Value]]:
        with self.lock:
            return self.table.live_items()

    def items(self) -> dict[str, object]:
        if self.state is not OPEN:
            raise self.unusable()
        return {key: decode_value(value) for key, value in self._live_items()}

    def items_with_expiry(self) -> list[tuple[str, object, float | None]]:
        """Every live entry with its expiry time (Unix seconds, or None), as
        ``aiokv copy`` moves them: values are fresh copies."""
        if self.state is not OPEN:
            raise self.unusable()
        with self.lock:
            expiries = dict(self.table.expiries)
        return [(key, decode_value(value), expiries.get(key))
                for key, value in self._live_items()]

    def keys(self, pattern: str = "*") -> list[str]:
        """Live keys matching a glob (fnmatch.fnmatchcase: case-sensitive,
        ``*`` also matches ``:`` and ``/``)."""
        if self.state is not OPEN:
            raise self.unusable()
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a str, not {type(pattern).__name__}")
        live = [key for key, _ in self._live_items()]
        if pattern == "*":
            return live
        match = re.compile(fnmatch.translate(pattern)).match
        return [key for key in live if match(key)]

    def count(self) -> int:
        """How many live keys the store holds."""
        if self.state is not OPEN:
            raise self.unusable()
        with self.lock:
            table = self.table
            return table.held - (table.count_expired() if table.expiries else 0)

    def exists(self, key: str) -> bool:
        if self.state is not OPEN:
            raise self.unusable()
        if type(key) is not str:
            key = check_key(key)
        table = self.table
        if table.expiries and table.is_expired(key):  # before the entry: see get()
            return False
        return table.lookup(key) is not MISSING

    def ttl(self, key: str) -> int:
        """Whole seconds left (rounded up); -1 without expiry; -2 if absent."""
        if self.state is not OPEN:
            raise self.unusable()
        if type(key) is not str:
            key = check_key(key)
        with self.lock:
            if self.table.lookup(key) is MISSING:
                return -2
            when = self.table.expiries.get(key)
            if when is None:
                return -1
            left = when - self.clock()
        return -2 if left <= 0 else math.ceil(left)

    def stats(self) -> Stats:
        if self.state is not OPEN:
            raise self.unusable()
        with self.lock:
            table, store = self.table, self.store
            expired = table.count_expired()
            held = table.held
            live = (table.live_bytes if held else HEADER_SIZE) + store.log_floor
            total = store.total(self.log.end)
            return Stats(
                path=self.path, keys=held - expired, file_bytes=total, live_bytes=live,
                dead_bytes=max(0, total - live), compactions=store.compactions,
                last_compaction=store.last_compaction, durability=self.durability,
                pending_writes=self.pending.waiting, ttl_keys=len(table.expiries) - expired,
                held_entries=held,
            )

    # -- clear, flush ---------------------------------------------------------

    def clear(self) -> None:
        """Remove every entry and the store's files. Raises OSError on failure.

        If the base file cannot be removed, nothing changes. Its log files
        follow nothing once it is gone: a failure to remove one is logged,
        and the next open removes it. If the base was removed but the
        directory could not be synced, the entries are gone (memory and
        files agree) and the error is raised: a power loss might bring the
        old files back.
        """
        self.check_writable()  # unlocked: see forsake_after_fork
        writes = self.writes
        with self.io, self.lock:
            self.check_writable()
            self.compaction.void()
            if self.log.fd is not None:
                self.files.remove(self.disk.file)
                self.log.drop_window()
                self.log.reserved_end = 0
                # From here on the clear has happened: nothing may stop it.
                self.file_recovery.close_files()
                self.disk.remove_logs(self.store.cleared())
                self.log_missing = True
            superseded = self.pending.drop()
            clearing = writes.clearing = Commit()
            self.worker.write_failure = None  # nothing is held any more
            self.table.empty()
            self.log.vouch_from(0)
            self.log.end = 0
            self.log.tail_dirty = False
            self.log.unsynced = False
        # The writes queued before the clear are superseded by it: their
        # writers, and whoever waits on the clear (see Writes.last_commit),
        # are answered once the removal is durable, not before.
        error: BaseException | None = None
        try:
            self.files.fsync_dir(self.disk.directory)
        except BaseException as exc:
            error = exc
            raise
        finally:
            with self.lock:
                if writes.clearing is clearing:
                    writes.clearing = None
            for commit in (*superseded, clearing):
                commit.settle(error)

    def recreate_base(self) -> None:
        """Create the base file again after clear() (memory is left as it is). Hold lock."""
        self.file_recovery.create_empty_base()
        self.log_missing = False

    def ensure_log_file(self) -> None:
        """Create the log file if clear() removed it (blocking)."""
        self.check_writable()
        with self.lock:
            self.check_writable()
            if self.log.fd is None:
                self.recreate_base()

    def flush(self) -> None:
        """Return once everything acknowledged so far is fsynced."""
        self.check_writable()
        self.worker.flush_all()
