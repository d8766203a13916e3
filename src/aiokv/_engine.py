"""The engine: one synchronous, thread-safe store that both shells drive.

It keeps every entry in memory and appends each change to the log. Reads never
touch the disk. Work that blocks (open and replay, fsync, compaction, clear,
close) runs on the caller's thread or the engine's own threads; the async
shell runs those calls in an executor.

The engine coordinates parts that each keep one thing:

* ``Table`` (_table.py): the entries, their expiry times, the split state.
* ``PendingWrites`` (_group_commit.py): frames not yet written, and how
  "fsync" batches them.
* ``LogWriter`` (_log_writer.py): the end of the log being appended to,
  its mapped window, its SYNCED frames, and the hot path's room.
* ``LogFiles`` (_log_files.py): where the files are (the base file and the
  log files of its chain, _chain.py), claiming the base, writing a file
  atomically beside it.
* ``plan_round`` and ``FailureLog`` (_writer_thread.py): what the writer
  thread does each round, and how its failures are logged.
* ``replay_chain`` (_chain.py), ``replay`` (_recovery.py) and the record
  format (_format.py), pure.

What a write does on the caller's thread (the event loop's, for ``AioKV``):
at "flush", it copies its frame into the mapped window past the log's end, or
appends it with ``write(2)`` where the log is not mapped. Now and then that
same call also reserves and maps the next window (``fallocate`` + ``mmap``),
cuts the tail a failed write left, or, after ``clear()`` removed the log,
creates a new one (written, fsynced and renamed into place). It never
sleeps and never waits for a compaction. At "buffered" and "fsync" a write
only queues its frame (``PendingWrites``).

Locks, always taken in this order:

* ``_io`` serializes the background work that touches descriptors (group
  commit, fsync, a compaction's move of appends and its swap of the base,
  clear, close), so a descriptor is never closed while another thread uses
  it, and no fsync of a log file precedes that of the file before it.
* ``_lock`` guards the entries, the queue of unwritten frames, the write
  position and the chain of files (``_store``, a ``StoreFiles``).
  Held for short sections, plus the file calls a write makes on the
  caller's thread (above): an append, a reservation, a cut, and the
  creation of a new base after ``clear()``, which includes an fsync; and
  those of a compaction's move of appends (cutting the old file's reserved
  space, writing the FOLLOWS record) and of its rename of the new base.

Reads take no lock (``get``, ``exists``); see ``Table.lookup_aside`` for why
that is safe, and what it relies on.

A compaction does not chase the writers (``_compact_once``): when it starts
it moves appends to a new log file, which the base it then writes names as
its first, so nothing written meanwhile is copied. It does not copy the
entries under ``_lock`` either: it walks the live dict a batch at a time,
releasing the lock between batches. While it walks, the dict's layout must
not change (the "split" state of ``Table``). Replaying the new log file after
the snapshot gives the same state whatever moment each batch was taken at,
because every record sets its key's state outright.

Calls that do work proportional to the number of keys under ``_lock``, at C
speed: ``items()``, ``keys()`` and ``get_all()`` copy the
entries; ``stats()`` counts the keys that have expired.
"""

from __future__ import annotations

import atexit
import errno
import fnmatch
import itertools
import logging
import math
import os
import re
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ._chain import ChainReplay, first_log, follows_of, holds_records, replay_chain
from ._commit import Commit
from ._errors import (
    AioKVError,
    ClosedError,
    CorruptionError,
    ForkedError,
    LockedError,
    ReadOnlyError,
)
from ._files import (
    REAL_FILES,
    FileSystem,
    not_a_regular_file,
)
from ._format import (
    HEADER_SIZE,
    SET,
    SET_ENCODED,
    UINT32_END,
    UINT32_MIN,
    Encoded,
    Value,
    decode_value,
    encode_delete,
    encode_expire,
    encode_float_set,
    encode_follows,
    encode_header,
    encode_record,
    encode_uint32_set,
    encode_value,
    entry_size,
    size_change,
)
from ._group_commit import PendingWrites, Undo
from ._legacy import INTS_AS_STRINGS_HINT, ints_as_strings, parse_legacy_json
from ._log_files import WRITE_CHUNK, LogFiles, OnDisk
from ._log_writer import LogWriter
from ._recovery import Damage, is_log, new_entries
from ._snapshot import (
    SNAPSHOT_BATCH,
    Pacer,
    batch_frames,
    durable_batch,
    pending_deletions,
    snapshot_frames,
)
from ._store_files import StoreFiles
from ._table import MISSING, Table, expiry_size
from ._writer_thread import FailureLog, plan_round

logger = logging.getLogger("aiokv")

DURABILITY_LEVELS = ("fsync", "flush", "buffered")
RECOVERY_MODES = ("strict", "salvage")

COMPACT_SLACK = 640 * 1024
"""Compaction starts once dead bytes exceed live bytes by this much."""
COMPACTION_CHECK_BYTES = 16 * 1024
"""How much may be appended between two checks of the compaction rule."""
_NEW, _OPEN, _CLOSING, _CLOSED = "new", "open", "closing", "closed"
_FORKED = "forked"
"""The state of an engine inherited by the child of a fork (see forsake_after_fork)."""
_AS_IS = frozenset({float, str, bytes, bool, type(None)})
"""Value types stored without encoding or checks (int needs a range check)."""
_HOT_TYPES = _AS_IS | {int}
"""Value types set()'s hot path takes: an int out of range fails its encoding."""
_TTL_TYPES = frozenset({int, float})
_HOT_TTL_LIMIT = 1e15
"""set()'s hot path takes a ttl of an exact int or float type in (0, this);
others (0, bool, a negative or enormous one) take the general path, which
checks them (_check_ttl)."""

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


class _CompactionVoid(Exception):
    """clear() ran while a compaction was writing: its result is discarded."""


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


@dataclass(frozen=True)
class _Batch:
    """A batch of frames about to be written outside the lock (see _begin_batch)."""

    fd: int
    start: int
    """The log's length before the batch: where it goes."""
    vouch: bytes
    """The SYNCED frame leading the batch, or b""."""
    vouched_before: int
    """What to give _unmark if the write fails."""


class _Now:
    """The default value of ``set(key)``: the current Unix time as an int."""

    def __repr__(self) -> str:
        return "<now>"


NOW = _Now()


def _check_key(key: object) -> str:
    """``key`` as the exact str a dict would match it by.

    A str subclass (``class Color(str, Enum)``) is stored under its string
    value, not under ``str(key)``, which a subclass may override ("Color.RED").
    """
    if isinstance(key, str):
        return str.__str__(key)
    raise TypeError(f"key must be a str, not {type(key).__name__}: {key!r}")


def _prepare(key: str, value: object) -> Value:
    try:
        return encode_value(value)
    except TypeError as exc:
        raise TypeError(f"key {key!r}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"key {key!r}: {exc}") from None


def _encode_put(key: str, stored: Value, expires: float | None) -> bytes:
    """The frame of ``key = stored`` expiring at ``expires``; ValueError names the key."""
    try:
        return encode_record(SET_ENCODED if type(stored) is Encoded else SET, key, stored,
                             expires)
    except ValueError as exc:
        raise ValueError(f"key {key!r}: cannot be stored: {exc}") from None


def _check_ttl(ttl: object) -> float | None:
    """Seconds to live, or None for "never expires" (None or 0)."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"ttl must be a number of seconds or None, not {type(ttl).__name__}")
    if ttl == 0:
        return None
    try:
        seconds = float(ttl)
    except OverflowError:  # an int beyond any float
        seconds = math.inf
    if not 0 < seconds < math.inf:
        raise ValueError(f"ttl must be a positive, finite number of seconds, not {ttl!r}")
    return seconds


MAX_INTERVAL = 86400.0
"""The longest ``fsync_interval`` or ``flush_interval`` accepted (a day), and
the longest the writer thread sleeps at a time: longer intervals are refused
at construction, where a typo like 1e10 would otherwise pass and later
overflow the thread's wait."""

SWEEP_INTERVAL = 1.0
"""Longest time (seconds) an expired entry stays in memory unread."""
SWEEP_BATCH = 1000
"""Expired entries removed per hold of the engine lock by the sweep."""


class Engine:
    """The store's state and its log. Thread-safe; see the module docstring.

    ``_lock`` guards the table, the pending writes, the log writer and every
    other field below that a write or the writer thread changes; ``_io``
    is taken as well to replace or close a descriptor; ``_open_lock``
    serializes open() and close().
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
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
        path = os.fspath(path)
        if not isinstance(path, str):
            raise TypeError("path must be a str path, not bytes")
        if not path:
            raise ValueError("path must not be empty")
        if durability not in DURABILITY_LEVELS:
            raise ValueError(f"durability must be one of {DURABILITY_LEVELS}, not {durability!r}")
        if recovery not in RECOVERY_MODES:
            raise ValueError(f"recovery must be one of {RECOVERY_MODES}, not {recovery!r}")
        for name, interval in (("fsync_interval", fsync_interval),
                               ("flush_interval", flush_interval)):
            if isinstance(interval, bool) or not isinstance(interval, (int, float)):
                raise TypeError(f"{name} must be a number of seconds")
            if not 0 < interval <= MAX_INTERVAL:
                raise ValueError(f"{name} must be a positive number of seconds, at most "
                                 f"{MAX_INTERVAL:.0f} (a day), not {interval!r}")
        if not isinstance(readonly, bool):
            raise TypeError(f"readonly must be True or False, not {readonly!r}")
        self.path = os.path.abspath(path)
        self.readonly = readonly
        """Opened to read what the file holds: no lock, nothing written or cut."""
        self.durability = durability
        self.fsync_interval = float(fsync_interval)
        self.flush_interval = float(flush_interval)
        self.recovery = recovery
        self._files = files
        self.clock = clock
        """The store's clock (Unix seconds): expiry times, and ``set(key)``'s
        value (the shells compute that as ``int(engine.clock())``)."""
        self._disk = LogFiles(self.path, files)
        self._inline_writes = durability == "flush"

        self.is_open = False
        """True between a successful open() and close(); a plain attribute
        because the async shell reads it on every call."""
        self.log_missing = False
        """True after clear() removed the file, until a write creates it again."""
        self.legacy_ints_as_strings = False
        """Store a JSON state file's ints beyond 64 bits as strings when
        converting it (set by ``aiokv migrate --ints-as-strings``)."""

        self._io = threading.Lock()
        self._lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._state = _NEW
        self._owner = 0  # the id of the process that opened the store

        self._table = Table(clock)
        self._log = LogWriter(files, self.path)
        # The chain of files on disk (see _chain): the base file, locked
        # while the store is open, and the log files after it.
        self._store = StoreFiles()
        # The hot path of set() takes the general path when this is true:
        # during a compaction's split state, or when a SYNCED frame is due.
        self._detour = False
        self._lock_fd: int | None = None
        self._compactions = 0
        self._last_compaction: float | None = None
        self._expired_at_open: list[str] = []  # dropped by the replay, to be logged

        # "flush": written but not fsynced since this monotonic time.
        self._unsynced = False
        self._unsynced_since = 0.0
        self._dir_unsynced = False
        # "buffered" and "fsync": frames not yet written, with their undo,
        # and at "fsync" the commits their writers wait on.
        self._writes = PendingWrites(group_commit=durability == "fsync")
        # "buffered": why the held frames could not be written, until they are.
        self._write_failure: OSError | None = None
        # A clear() whose directory fsync is under way: settled once it is done.
        self._clearing: Commit | None = None

        self._compaction: Commit | None = None
        self._compaction_thread: threading.Thread | None = None
        self._generation = 0  # bumped by clear() and close() to void a compaction
        self._next_compaction_check = 0
        self._compaction_wanted = False  # the writer thread starts it

        self._wake = threading.Event()
        # Set if the writer thread ended before close() (see _sync_loop).
        self._writer_stopped: BaseException | None = None
        self._failures = FailureLog(self.path)
        self._stopping = False
        self._syncer: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<aiokv engine {self.path!r} {self._state} durability={self.durability}>"

    # -- opening and closing ------------------------------------------------


    def open(self) -> None:
        """Open the store: lock, recover, replay. Idempotent and thread-safe."""
        if self._state is _FORKED:  # before the lock: one held at the fork stays held
            raise self._unusable()
        with self._open_lock:
            if self._state is _OPEN:
                return
            if self._state is not _NEW:
                raise self._unusable()
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
        self._disk.resolve()  # links resolved anew at every open
        mode = self._files.mode(self._disk.file)
        if mode is not None and not stat.S_ISREG(mode):
            # Before the lock file: nothing is created, read or changed.
            raise not_a_regular_file(self.path, mode)
        if self.readonly:
            self._read_only()
            self._owner = os.getpid()
            self._state = _OPEN
            self.is_open = True
            return
        try:
            lock_fd = self._files.lock(self._disk.file + ".lock")
        except OSError as exc:
            # Named after the store: a "<path>.lock" a user never made says little.
            if isinstance(exc, FileNotFoundError):
                raise FileNotFoundError(exc.errno, "the directory of the store does not "
                                        "exist", self.path) from exc
            raise type(exc)(exc.errno, f"cannot take the lock of the store ({exc.strerror}; "
                            "readonly=True reads without it)", self.path) from exc
        if lock_fd is None:
            raise LockedError(self.path, self._files.lock_holder(self._disk.file + ".lock"))
        try:
            self._log.map_appends = self._inline_writes and self._files.can_map(self._disk.file)
            self._recover()
            self._lock_fd = lock_fd
            self._owner = os.getpid()
            self._state = _OPEN
            self.is_open = True
            self._stopping = False
            self._syncer = threading.Thread(
                target=self._sync_loop, name=f"aiokv-sync {os.path.basename(self.path)}",
                daemon=True,
            )
            # Under a thread limit (a container's pids limit) this raises
            # RuntimeError: the store then stays unopened, as on any failure.
            self._syncer.start()
        except BaseException:
            self._state = _NEW
            self.is_open = False
            self._syncer = None
            self._lock_fd = None
            with self._lock:
                self._log.drop_window()
            self._close_files(quietly=False)
            self._files.unlock(lock_fd)
            raise

    def _close_files(self, *, quietly: bool = True) -> None:
        """Close every descriptor of the chain (the log, the base, retired ones)."""
        fds = self._store.let_go(self._log.fd)
        self._log.fd = None
        for fd in fds:
            if quietly:
                self._disk.close_quietly(fd)
            else:
                self._files.close(fd)

    def _unusable(self) -> AioKVError:
        """The error for a call on a store that is not open (or, opened
        read-only, for a write)."""
        if self._state is _FORKED:
            return ForkedError(self.path, self._owner)
        if self._state is _OPEN and self.readonly:
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
        if self._state is _NEW or self._state is _CLOSED or self._state is _FORKED:
            return
        self._state = _FORKED
        self.is_open = False
        self._log.revoke_room()
        self._log.window = None  # the child's copy of the mapping goes with it
        for fd in [*self._store.let_go(self._log.fd), self._lock_fd]:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._log.fd = self._lock_fd = None
        self._syncer = self._compaction_thread = None

    def _read_only(self) -> None:
        """Hold what the files hold, touching nothing: no lock (the store may
        be open elsewhere), no cut, no write, no thread. A torn tail is left
        out, damage raises (or, with recovery="salvage", is skipped), a JSON
        state file is read as it is, and no file is an empty store."""
        found = self._disk.read()
        data = found.base or b""
        entries: dict[str, Value] = new_entries()
        expiries: dict[str, float] = {}
        if not is_log(data):
            legacy = parse_legacy_json(data)
            if legacy is None:
                raise CorruptionError(self.path, 0, "neither an aiokv log nor a JSON object")
            entries = self._legacy_entries(legacy)
        elif data:
            self._refuse_log_file(found)
            chain = replay_chain(data, found.logs, salvage=self.recovery == "salvage")
            if chain.corruption is not None and self.recovery == "strict":
                raise self._corruption(chain.corruption)
            if chain.header is not None:
                self._compactions = chain.header.compactions
                self._last_compaction = chain.header.compacted_at or None
            entries, expiries = chain.entries, chain.expiries
            self._store.adopt(None, [number for number, _ in chain.files[1:]],
                              chain.before_last, _log_floor(found.logs[:len(chain.files) - 1]),
                              found.next_number)
            self._log.end = chain.last[1].end
        self._table.take(entries, expiries)
        self._table.live_bytes = self._table.estimate_live_bytes()

    def _refuse_log_file(self, found: OnDisk) -> None:
        """A log file given as the store: its records mean nothing alone."""
        if found.header is not None and found.header.log_file:
            raise CorruptionError(self.path, 0, "this is a log file of a store (it follows a "
                                  "base file), not a store: open the base file")

    def _file_of(self, number: int) -> str:
        """The path of a file of the chain (0: the base)."""
        return self._disk.file if number == 0 else self._disk.log_path(number)

    def _corruption(self, where: tuple[int, Damage]) -> CorruptionError:
        number, damage = where
        return CorruptionError(self._file_of(number), damage.offset, damage.reason)

    def _recover(self) -> None:
        """Claim the base file, then bring the store back: replay, repair, or create it.

        The base is locked before anything is read or changed (see
        ``LogFiles.claim``); a new base replacing it is locked before it is
        put in place, and the old one is let go only then.
        """
        claimed = self._disk.claim()
        try:
            self._recover_claimed(claimed)
        finally:
            if claimed is not None and self._store.base_fd != claimed:
                self._disk.close_quietly(claimed)  # a new base replaced it, or opening failed

    def _recover_claimed(self, claimed: int | None) -> None:
        self._disk.remove_leftover_temps()
        if claimed is None:
            stale = self._disk.log_numbers()
            if stale:
                logger.warning("aiokv: %s: log files without their base file (%s); they "
                               "follow nothing and are removed", self.path,
                               ", ".join(map(self._disk.log_path, stale)))
            self._create_log({}, {}, new=True)
            return
        # Every file written from now on (new bases, log files, a backup, a
        # damaged copy) gets these, not the 0600 of a new store.
        self._disk.permissions = self._files.permissions(claimed)
        found = self._disk.read()
        data = found.base or b""
        if not is_log(data):
            legacy = parse_legacy_json(data)
            if legacy is None:
                raise CorruptionError(self.path, 0, "neither an aiokv log nor a JSON object")
            self._migrate_legacy(data, legacy)
            return
        self._refuse_log_file(found)
        chain = replay_chain(data, found.logs, salvage=self.recovery == "salvage")
        if chain.header is None and chain.corruption is None:
            if data:
                logger.warning("aiokv: %s held only an unfinished header (%d bytes); "
                               "starting an empty store", self.path, len(data))
            self._create_log({}, {})
            return
        if chain.corruption is not None and self.recovery == "strict":
            raise self._corruption(chain.corruption)
        if chain.skipped or chain.corruption is not None:
            self._salvage(found, chain)
            return
        # Files that cannot be replayed go before anything is appended: a
        # log file left after the one appended to would be taken for its
        # successor at the next open.
        unusable = found.beyond + chain.dropped
        if chain.dropped:
            logger.warning("aiokv: %s: %s; leaving out %s", self.path, chain.dropped_reason,
                           ", ".join(map(self._disk.log_path, chain.dropped)))
        if found.beyond:
            logger.warning("aiokv: %s: log files that follow no file of the store (%s) are "
                           "removed", self.path, ", ".join(map(self._disk.log_path,
                                                                 found.beyond)))
        for number in unusable:
            self._files.remove(self._disk.log_path(number))
        if unusable:
            self._files.fsync_dir(self._disk.directory)
        self._disk.remove_logs(found.below)  # their records are in the base
        kept = found.logs[:len(chain.files) - 1]
        floor = _log_floor(kept)
        self._adopt(chain, kept, floor)
        number, result = chain.last
        name = self._file_of(number)
        if result.torn_tail:
            if result.dropped_frames:
                logger.warning(
                    "aiokv: %s: bytes from offset %d were never fsynced and did not all "
                    "reach the disk (a power loss); truncating %d bytes, %d records after "
                    "the gap included", name, result.end, result.torn_tail,
                    result.dropped_frames)
            elif (dict(found.logs)[number] if number else data).count(
                    0, result.end) == result.torn_tail:
                logger.info("aiokv: %s ends in %d zero bytes at offset %d (space reserved "
                            "for appends, or a torn write); truncating them", name,
                            result.torn_tail, result.end)
            else:
                logger.warning("aiokv: %s ended in a torn record; truncating %d bytes at "
                               "offset %d", name, result.torn_tail, result.end)
        assert result.header is not None
        vouched = result.header.vouched
        # Appended frames no SYNCED frame vouches for (the writer was killed
        # before it could write one): fsync them, and vouch for them at once.
        unvouched = vouched and result.end > result.durable_end
        # The files before the last, fsynced before it ever is (as when
        # appends moved on): a kill may have come before the compaction did it.
        for earlier, _ in chain.files[:-1]:
            self._fsync_file(claimed if earlier == 0 else None, self._file_of(earlier))
        logs = [n for n, _ in chain.files[1:]]
        self._store.adopt(claimed, logs, chain.before_last, floor,
                          logs[-1] + 1 if logs else first_log(chain.header))  # type: ignore[arg-type]
        fd = claimed if number == 0 else self._files.open_append(name)
        self._log.fd = fd  # closed with the others should what follows fail
        if result.torn_tail:
            self._files.truncate(fd, result.end)
        # The expired keys the replay dropped: their removal goes into the log
        # as the sweep's does (see _sweep_locked), durable before the store is
        # used; so many that a new base is cheaper: that.
        deletes = b"".join(map(encode_delete, self._expired_at_open))
        self._expired_at_open = []
        if len(deletes) > COMPACT_SLACK:
            if fd != claimed:
                self._disk.close_quietly(fd)
            self._log.fd = self._store.base_fd = None  # claimed: closed by _recover
            self._create_log(self._table.entries, self._table.expiries)
            return
        end = result.end + len(deletes)
        if deletes:
            self._files.write_synced(fd, deletes)
        elif result.torn_tail or unvouched:
            self._files.fsync(fd)
        self._log.end = end
        synced = end if result.torn_tail or unvouched or deletes else result.durable_end
        self._vouch_from(synced, vouched, result.durable_end)
        self._seal()

    def _fsync_file(self, fd: int | None, path: str) -> None:
        """fsync the file open at ``fd``, or else the one at ``path``."""
        if fd is not None:
            self._files.fsync(fd)
            return
        opened = self._files.open_append(path)
        try:
            self._files.fsync(opened)
        finally:
            self._disk.close_quietly(opened)

    def _adopt(self, chain: ChainReplay, kept: list[tuple[int, bytes]], floor: int) -> None:
        """Take the entries of a replayed chain, minus those already expired.

        ``kept``: the log files replayed; ``floor``: what the last starts with.
        """
        assert chain.header is not None
        self._compactions = chain.header.compactions
        self._last_compaction = chain.header.compacted_at or None
        table = self._table
        dropped = table.take(chain.entries, chain.expiries)
        self._expired_at_open = dropped
        base = chain.files[0][1]
        if (base.end == chain.header.compacted_length and not dropped
                and not any(holds_records(log) for _, log in kept)):
            # Nothing was appended since a compaction wrote the base, and
            # nothing expired since: every byte is live.
            table.live_bytes = chain.before_last + chain.last[1].end - floor
        else:
            table.live_bytes = table.estimate_live_bytes()

    def _legacy_entries(self, legacy: dict[str, object]) -> dict[str, Value]:
        """The entries of a JSON state file, as the store holds them.

        JSON has no limit on ints and msgpack stores 64 bits: a bigger one
        raises ValueError (the file is not corrupt), naming the key and the
        way through, unless ``legacy_ints_as_strings`` says to store it as
        its decimal string.
        """
        if self.legacy_ints_as_strings:
            legacy = {key: ints_as_strings(value)[0] for key, value in legacy.items()}
        entries = new_entries()
        for key, value in legacy.items():
            try:
                entries[key] = _prepare(key, value)
            except (TypeError, ValueError, RecursionError) as exc:
                hint = ""
                if not self.legacy_ints_as_strings and ints_as_strings(value)[1]:
                    hint = f"; {INTS_AS_STRINGS_HINT}"
                raise ValueError(f"{self.path}: the JSON state file cannot be stored as it "
                                 f"is: {exc}{hint}") from None
        return entries

    def _migrate_legacy(self, data: bytes, legacy: dict[str, object]) -> None:
        entries = self._legacy_entries(legacy)
        backup = self._disk.free_name(self._disk.file + ".bak", data)
        if backup is not None:
            self._disk.write_atomically(backup, [data])
        self._create_log(entries, {})
        logger.warning("aiokv: converted the JSON state file %s (%d entries) to the log "
                       "format; the original is kept as %s", self.path, len(entries),
                       backup or self._disk.file + ".bak")

    def _salvage(self, found: OnDisk, chain: ChainReplay) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.clock()))
        damage = list(chain.skipped)
        if chain.corruption is not None:
            damage.append(chain.corruption)
        contents = {0: found.base or b"", **dict(found.logs)}
        kept: dict[int, str] = {}
        for number in dict.fromkeys(number for number, _ in damage):
            data = contents[number]
            aside = self._disk.free_name(f"{self._file_of(number)}.corrupt-{stamp}", data)
            if aside is not None:
                self._disk.write_atomically(aside, [data])
            kept[number] = aside or "(an identical earlier copy)"
        # Log files the replay could not place (the base's header, which
        # names its first, is damaged): kept aside before the new base
        # replaces the chain and they go.
        for number in found.beyond:
            data = self._files.read(self._disk.log_path(number)) or b""
            aside = self._disk.free_name(f"{self._disk.log_path(number)}.corrupt-{stamp}", data)
            if aside is not None:
                self._disk.write_atomically(aside, [data])
            kept[number] = aside or "(an identical earlier copy)"
            logger.warning("aiokv: salvaging %s: %s follows no file that could be read; "
                           "its records are not kept in the store", self.path,
                           self._disk.log_path(number))
        for number, item in damage:
            logger.warning("aiokv: salvaging %s: skipped bytes %d-%d (%s)",
                           self._file_of(number), item.offset, item.end, item.reason)
        if chain.header is not None:
            self._compactions = chain.header.compactions
        self._table.take(chain.entries, chain.expiries)
        self._create_log(self._table.entries, self._table.expiries)
        logger.warning("aiokv: salvaged %s: kept %d entries; the damaged files are kept as %s",
                       self.path, len(chain.entries), ", ".join(kept.values()))

    def _create_log(self, entries: dict[str, Value], expiries: dict[str, float], *,
                    new: bool = False) -> None:
        """Atomically write a base file holding ``entries``, appended to from
        now on; adopt and open it. The log files of the chain it replaces go.

        ``new``: no file is there to replace (see LogFiles.write_atomically).
        """
        frames = list(snapshot_frames(entries, expiries))
        length = HEADER_SIZE + sum(map(len, frames))
        self._put_base(frames, length, new=new)
        self._table.take(entries, expiries)
        self._table.live_bytes = length
        self._vouch_from(length)

    def _create_empty_log(self) -> None:
        """Create the base file again after clear(); memory is left as it is."""
        self._put_base([], HEADER_SIZE, new=True)
        self._vouch_from(HEADER_SIZE)
        self.log_missing = False

    def _put_base(self, frames: list[bytes], length: int, *, new: bool) -> None:
        """Put a base file holding ``frames`` in place, appended to from now on.

        Its first log file is numbered past every log file there is, so
        that none of them can be taken for one that follows it; they are
        removed once it is in place (or at the next open).
        """
        stale = self._disk.log_numbers()
        first = max([self._store.next_log, *(number + 1 for number in stale)])
        header = encode_header(self._compactions, self._last_compaction or 0.0, length, first)
        fd = self._disk.write_atomically(self._disk.file, [header, *frames], as_log=True,
                                         new=new)
        self._close_files()
        assert fd is not None
        self._store.new_base(fd, first)
        self._log.fd = fd
        self._log.end = length
        self._disk.remove_logs(stale)

    def _vouch_from(self, end: int, vouched: bool = True, marked: int | None = None) -> None:
        """A new log (or one just opened) is fsynced up to ``end``. Hold _lock.

        ``marked``: how far its SYNCED frames (or header) vouch, if less.
        """
        self._log.vouch_from(end, vouched, marked)
        self._update_detour()

    def _seal(self) -> None:
        """Vouch now for what the last fsync made durable: a SYNCED frame, fsynced.

        At open and close, where no append may come soon to carry the frame.
        Raises OSError if that fails; the data it would vouch for is durable
        either way, and a second attempt writes the frame only if it is not
        in the log.
        """
        with self._io, self._lock:
            fd = self._log.fd
            if fd is None:
                return
            mark, previous = self._take_mark()
            if not mark:
                return
            try:
                self._files.write_synced(fd, mark)
            except BaseException:
                self._unmark(previous)
                self._log.cut_tail_after_failure()
                raise
            self._log.end += len(mark)

    def _update_detour(self) -> None:
        """Whether set() must leave its hot path. Hold _lock."""
        self._detour = self._table.split or self._log.mark_due()
        if self._detour:
            self._log.revoke_room()

    def _synced(self, end: int) -> None:
        """An fsync of the log up to ``end`` succeeded. Hold _lock."""
        if self._log.synced(end):
            self._update_detour()

    def _take_mark(self) -> tuple[bytes, int]:
        """The SYNCED frame due before the next append (or b""), and what to
        give ``_unmark`` if that append fails (LogWriter.take_mark). Hold _lock."""
        taken = self._log.take_mark()
        self._update_detour()
        return taken

    def _unmark(self, previous: int) -> None:
        """The append that held a SYNCED frame failed: it is not in the log. Hold _lock."""
        self._log.unmark(previous)
        self._update_detour()

    def close(self) -> None:
        """Write and fsync everything, stop the threads, release the lock.

        Calling it again is a no-op. If the final write fails, the error is
        raised and the store stays open, so nothing acknowledged is dropped.
        In a process forked from the owner it does nothing (see
        ``forsake_after_fork``), even after a fork made without Python's
        fork handlers, which the process id shows.
        """
        if self._state is _FORKED:
            return
        if self._owner and self._owner != os.getpid():
            self.forsake_after_fork()
            return
        with self._open_lock:
            if self._state is _NEW:
                self._state = _CLOSED
                return
            if self._state is _CLOSED:
                return
            with self._lock:
                self._state = _CLOSING
                self._log.revoke_room()
                self.is_open = False
                self._generation += 1  # a running compaction is discarded
            compaction = self._compaction_thread
            if compaction is not None:
                compaction.join()
            try:
                with self._lock:
                    self._log.release_reserved()
                self._flush_all()
                self._seal()
            except BaseException:
                with self._lock:
                    self._state = _OPEN
                    self.is_open = True
                raise
            with self._lock:
                self._stopping = True
                self._wake.set()
            if self._syncer is not None:
                self._syncer.join()
            with self._lock:
                never_started = self._compaction if self._compaction_wanted else None
                self._compaction = None
                self._compaction_wanted = False
            if never_started is not None:
                never_started.settle(ClosedError(self.path))
            # Everything is on disk: from here on close() completes. A failing
            # close(2) still frees the descriptor (and with it the flock).
            with self._io, self._lock:
                self._close_files()
                if self._lock_fd is not None:
                    try:
                        self._files.unlock(self._lock_fd)
                    except OSError as exc:
                        logger.warning("aiokv: releasing the lock of %s failed: %s",
                                       self.path, exc)
                    self._lock_fd = None
                self._state = _CLOSED
            _open_engines.discard(self)

    def _check_writable(self) -> None:
        if self._state is not _OPEN or self.readonly:
            raise self._unusable()

    def check_openable(self) -> None:
        """Raise now what open() would raise for the state alone (no I/O, no lock).

        The async shell calls it before handing open() to a thread: in a
        forked child the executor's threads are gone, and a hand-over could
        wait forever.
        """
        if self._state is _FORKED or self._state is _CLOSING or self._state is _CLOSED:
            raise self._unusable()

    @property
    def closed(self) -> bool:
        """Whether close() has run: the engine is spent (a shell makes a new one)."""
        return self._state is _CLOSED

    def in_own_thread(self) -> bool:
        """Whether the caller runs on one of the engine's own threads."""
        current = threading.current_thread()
        return current is self._syncer or current is self._compaction_thread

    @property
    def forked(self) -> bool:
        """Whether this engine was inherited through a fork (see forsake_after_fork)."""
        return self._state is _FORKED or bool(self._owner and self._owner != os.getpid())

    # -- reads --------------------------------------------------------------

    def get(self, key: str, default: object = None) -> object:
        if self._state is not _OPEN:
            raise self._unusable()
        if type(key) is not str:
            key = _check_key(key)
        # The expiry is looked up before the entry: the sweep removes both,
        # and this order never shows an expired value while it runs. No lock:
        # see Table.lookup_aside.
        table = self._table
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

    def _live_items(self) -> list[tuple[str, Value]]:
        with self._lock:
            return self._table.live_items()

    def items(self) -> dict[str, object]:
        if self._state is not _OPEN:
            raise self._unusable()
        return {key: decode_value(value) for key, value in self._live_items()}

    def items_with_expiry(self) -> list[tuple[str, object, float | None]]:
        """Every live entry with its expiry time (Unix seconds, or None), as
        ``aiokv copy`` moves them: values are fresh copies."""
        if self._state is not _OPEN:
            raise self._unusable()
        with self._lock:
            expiries = dict(self._table.expiries)
        return [(key, decode_value(value), expiries.get(key))
                for key, value in self._live_items()]

    def keys(self, pattern: str = "*") -> list[str]:
        """Live keys matching a glob (fnmatch.fnmatchcase: case-sensitive,
        ``*`` also matches ``:`` and ``/``)."""
        if self._state is not _OPEN:
            raise self._unusable()
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a str, not {type(pattern).__name__}")
        live = [key for key, _ in self._live_items()]
        if pattern == "*":
            return live
        match = re.compile(fnmatch.translate(pattern)).match
        return [key for key in live if match(key)]

    def exists(self, key: str) -> bool:
        if self._state is not _OPEN:
            raise self._unusable()
        if type(key) is not str:
            key = _check_key(key)
        table = self._table
        if table.expiries and table.is_expired(key):  # before the entry: see get()
            return False
        return table.lookup(key) is not MISSING

    def ttl(self, key: str) -> int:
        """Whole seconds left (rounded up); -1 without expiry; -2 if absent."""
        if self._state is not _OPEN:
            raise self._unusable()
        if type(key) is not str:
            key = _check_key(key)
        with self._lock:
            if self._table.lookup(key) is MISSING:
                return -2
            when = self._table.expiries.get(key)
            if when is None:
                return -1
            left = when - self.clock()
        return -2 if left <= 0 else math.ceil(left)

    def stats(self) -> Stats:
        if self._state is not _OPEN:
            raise self._unusable()
        with self._lock:
            table = self._table
            expired = table.count_expired()
            held = table.held
            live = (table.live_bytes if held else HEADER_SIZE) + self._store.log_floor
            return Stats(
                path=self.path,
                keys=held - expired,
                file_bytes=self._store.total(self._log.end),
                live_bytes=live,
                dead_bytes=max(0, self._store.total(self._log.end) - live),
                compactions=self._compactions,
                last_compaction=self._last_compaction,
                durability=self.durability,
                pending_writes=self._writes.waiting,
                ttl_keys=len(table.expiries) - expired,
                held_entries=held,
            )

    # -- writes -------------------------------------------------------------

    def set(self, key: str, value: object, ttl: float | None = None) -> Commit | None:
        """Store ``value``; returns a Commit to wait on at "fsync", else None.

        ``ttl`` (seconds; None or 0 for never) sets when the key expires; a
        set without one removes an earlier expiry, as Redis's SET does.

        The hot path, a set under a str key, is written out here: while
        the log's room allows (see ``_grant_fast_room``), such a set copies its
        frame into the mapped window and updates memory, with nothing else to
        check. Without a ttl it changes the entries itself (unless the key
        has an expiry to remove); with one, through the table. Every call
        saved here is a few percent of a set.
        """
        if ttl is None and type(key) is str:
            if type(value) is not float and type(value) not in _HOT_TYPES:
                # A list or a dict: encoded once, and proven to read back.
                value = _prepare(key, value)
            try:
                if type(value) is float:  # a timestamp: the most common value by far
                    frame = encode_float_set(key, value)
                elif type(value) is int and UINT32_MIN <= value < UINT32_END:
                    frame = encode_uint32_set(key, value)  # set(key)'s Unix time
                elif type(value) is Encoded:
                    frame = encode_record(SET_ENCODED, key, value, None)
                else:
                    frame = encode_record(SET, key, value, None)
            except ValueError as exc:  # e.g. a lone surrogate in the key or the value
                raise ValueError(f"key {key!r}: cannot be stored: {exc}") from None
            except OverflowError:  # an int beyond 64 bits: as _prepare says it
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
                    # A key with an expiry takes the general path, which removes it.
                    if end <= log.fast_end and not (table.expiries and key in table.expiries):
                        log.window.write(frame)  # type: ignore[union-attr]  # room: mapped
                        log.end = end
                        entries = table.entries
                        old_value = entries.get(key, MISSING)
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
            expires = self.clock() + ttl  # type: ignore[operator]
            try:
                frame = encode_record(SET, key, value, expires)
            except (ValueError, OverflowError):
                frame = b""
            log = self._log
            if frame and log.end + len(frame) <= log.fast_end:  # read again under the lock
                lock = self._lock
                lock.acquire()
                try:
                    if log.append_in_room(frame):
                        self._table.put(key, value, expires)  # type: ignore[arg-type]
                        return None
                finally:
                    lock.release()
        if type(key) is not str:
            key = _check_key(key)
        if type(value) in _AS_IS:
            stored: Value = value  # type: ignore[assignment]
        else:
            stored = _prepare(key, value)
        if ttl is not None:
            return self._set_expiring(key, stored, _check_ttl(ttl))
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
        if self._state is not _OPEN or self.readonly:  # unlocked: see forsake_after_fork
            raise self._unusable()
        with self._lock:
            if self._state is not _OPEN:
                raise self._unusable()
            if self._write_failure is not None:
                self._refuse_if_failing()
            # _append() and _put(), written out: no call of theirs on this
            # path, which most sets take when the log is not mapped.
            window = self._log.window
            queued = False
            if (window is not None and self._log.end + size <= self._log.window_end
                    and not self._detour):
                window.write(frame)
            else:
                fd = self._log.fd
                if (not self._inline_writes or fd is None or self._log.tail_dirty or self._detour
                        or self._log.map_appends):
                    if self._inline_writes:
                        self._append(frame)  # creates, repairs or maps first
                        self._put(key, stored, None)
                        self._maybe_compact()
                        return None
                    if self._table.split:
                        return self._queue(frame, key, self._put(key, stored, None))
                    queued = True  # "buffered" or "fsync": memory first, as below
                else:
                    try:
                        written = self._files.write(fd, frame)
                        if written != size:
                            self._disk.write_all(fd, memoryview(frame)[written:])
                    except OSError:
                        self._log.cut_tail_after_failure()
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
                return self._queue(frame, key, (old_value, old_expiry))
            self._log.end += size
            if not self._unsynced or self._log.end >= self._next_compaction_check:
                self._after_append()
            if window is not None:
                self._grant_fast_room()
            return None

    def _grant_fast_room(self) -> None:
        """Open the hot path for as many bytes as nothing else is due. Hold _lock.

        The hot path (set(), incr()) only copies a frame into the window and
        updates the table, so it may run only while _hot_path_open() holds
        and the next append stays short of the window's end and of the next
        compaction check. The room is the LogWriter's (``fast_end``, an offset
        in the file: other appends shrink it by moving the end on); whatever
        ends one of the conditions revokes it where it happens: close(),
        _update_detour() (a SYNCED frame due, a split), every unmap of the
        window (reserve, clear, cut, close), the writer thread's end, a
        compaction's move to a new log file, and _sync() (unsynced no
        longer). The next set past it takes the general path, which grants
        the room again. Paths with no window ("fsync",
        "buffered", open) need nothing: the room is only granted with one.
        """
        if self._hot_path_open():
            self._log.grant_room(self._next_compaction_check - 1)
        else:
            self._log.revoke_room()

    def _hot_path_open(self) -> bool:
        """Whether the hot path may be given room now (see _grant_fast_room). Hold _lock."""
        return (self._state is _OPEN and self._log.window is not None and self._unsynced
                and not self._detour and not self._table.split and not self._log.tail_dirty
                and self._write_failure is None)

    def _set_expiring(self, key: str, stored: Value, ttl: float | None) -> Commit | None:
        if self._state is not _OPEN or self.readonly:  # unlocked: see forsake_after_fork
            raise self._unusable()
        with self._lock:
            if self._state is not _OPEN:
                raise self._unusable()
            expires = None if ttl is None else self.clock() + ttl
            return self._write_put(key, stored, expires)

    def _write_put(self, key: str, stored: Value, expires: float | None,
                   frame: bytes | None = None) -> Commit | None:
        """Log and apply ``key = stored`` expiring at ``expires``. Hold _lock."""
        if self._write_failure is not None:
            self._refuse_if_failing()
        if frame is None:
            frame = _encode_put(key, stored, expires)
        if self._inline_writes:
            self._append(frame)
            self._put(key, stored, expires)
            if self._log.window is not None:
                self._grant_fast_room()
            return None
        return self._queue(frame, key, self._put(key, stored, expires))

    def incr(self, key: str, amount: int = 1,
             ttl: float | None = None) -> tuple[int, Commit | None]:
        """Add ``amount`` to the int at ``key`` (a missing or expired key
        counts as 0) and return the new value with the Commit to wait on.

        An existing key keeps its expiry; ``ttl`` applies only when the key
        is created. Atomic: the read and the write happen under one lock.
        """
        if type(key) is not str:
            key = _check_key(key)
        if type(amount) is not int:
            if isinstance(amount, bool) or not isinstance(amount, int):
                raise TypeError(f"amount must be an int, not {type(amount).__name__}")
            amount = int(amount)  # an IntEnum would be stored as one, and fail the next incr
        hot_ttl = type(ttl) in _TTL_TYPES and 0 < ttl < _HOT_TTL_LIMIT  # type: ignore[operator]
        seconds = ttl if hot_ttl else _check_ttl(ttl)
        if self._state is not _OPEN or self.readonly:  # unlocked: see forsake_after_fork
            raise self._unusable()
        # acquire() and release() rather than "with": half the cost (see set()).
        lock = self._lock
        lock.acquire()
        try:
            if self._state is not _OPEN:
                raise self._unusable()
            # Table.live_value, written out: the lock is held, so one look
            # in the split state's keys is enough.
            table = self._table
            expiries = table.expiries
            when = expiries.get(key) if expiries else None
            if when is not None and when <= self.clock():
                current = MISSING  # expired: counts as absent
            else:
                current = table.entries.get(key, MISSING)
                if current is MISSING and table.split:
                    current = table.added.get(key, MISSING)
            if current is MISSING:
                value = amount
                expires = None if seconds is None else self.clock() + seconds
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
                frame = encode_record(SET, key, value, expires)
            except ValueError as exc:  # a lone surrogate in the key
                raise ValueError(f"key {key!r}: cannot be stored: {exc}") from None
            if self._log.append_in_room(frame):  # the hot path (see _grant_fast_room)
                if current is MISSING:
                    table.put(key, value, expires)
                else:
                    table.overwrite(key, value, current)  # type: ignore[arg-type]
                return value, None
            return value, self._write_put(key, value, expires, frame)
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
            key = _check_key(key)
        stored: Value = value if type(value) in _AS_IS else _prepare(key, value)  # type: ignore[assignment]
        seconds = _check_ttl(ttl)
        if self._state is not _OPEN or self.readonly:  # unlocked: see forsake_after_fork
            raise self._unusable()
        with self._lock:
            if self._state is not _OPEN:
                raise self._unusable()
            if self._table.live_value(key) is not MISSING:
                return False, self._last_commit() if self.durability == "fsync" else None
            expires = None if seconds is None else self.clock() + seconds
            return True, self._write_put(key, stored, expires)

    def expire(self, key: str, ttl: float | None) -> tuple[bool, Commit | None]:
        """Set (or with None/0 remove) the expiry of a live key.

        Returns whether the key existed, and the Commit to wait on.
        """
        if type(key) is not str:
            key = _check_key(key)
        seconds = _check_ttl(ttl)
        if self._state is not _OPEN or self.readonly:  # unlocked: see forsake_after_fork
            raise self._unusable()
        with self._lock:
            if self._state is not _OPEN:
                raise self._unusable()
            current = self._table.live_value(key)
            if current is MISSING:
                return False, None
            expires = None if seconds is None else self.clock() + seconds
            frame = encode_expire(key, expires)
            return True, self._write_put(key, current, expires, frame)  # type: ignore[arg-type]

    def delete(self, key: str) -> Commit | None:
        """Remove ``key`` (absent is fine); Commit at "fsync", else None."""
        if type(key) is not str:
            key = _check_key(key)
        if self._state is not _OPEN or self.readonly:  # unlocked: see forsake_after_fork
            raise self._unusable()
        with self._lock:
            if self._state is not _OPEN:
                raise self._unusable()
            if self._write_failure is not None:
                self._refuse_if_failing()
            if self._table.lookup(key) is MISSING:
                # Nothing to write. But at "fsync" the key may be absent only
                # because of a write not yet durable (an earlier delete):
                # acknowledge once that is durable too.
                if self.durability == "fsync":
                    return self._last_commit()
                return None
            frame = encode_delete(key)  # the key was stored, so it encodes
            if self.durability == "flush":
                self._append(frame)
                self._remove(key)
                self._maybe_compact()
                return None
            old = self._remove(key)
            return self._queue(frame, key, old)

    def _queue(self, frame: bytes, key: str,
               old: tuple[object, float | None]) -> Commit | None:
        """Hold a frame for the background writer ("buffered" and "fsync"). Hold _lock.

        The undo, what memory held before, goes with it: a compaction's walk
        takes each key as the log holds it (durable_batch), at "buffered" too.
        """
        writes = self._writes
        if not writes.frames:
            # Woken once: the writer looks for more frames after every batch.
            self._wake.set()
        return writes.add(frame, (key, *old))

    def _last_commit(self) -> Commit | None:
        """The commit whose settling makes every queued write durable
        ("fsync"; None when nothing is queued or being written), or a clear()
        whose removal of the file is not yet durable. Hold _lock."""
        commit = self._writes.last_commit()
        return self._clearing if commit is None else commit

    def _put(self, key: str, stored: Value, expires: float | None) -> tuple[object, float | None]:
        """Change memory only; returns what to restore to undo it. Hold _lock."""
        return self._table.put(key, stored, expires)

    def _remove(self, key: str) -> tuple[object, float | None]:
        """Change memory only; returns what to restore to undo it. Hold _lock."""
        return self._table.remove(key)

    def _restore(self, key: str, old: object, old_expiry: float | None) -> None:
        if old is MISSING:
            self._table.remove(key)
        else:
            self._put(key, old, old_expiry)  # type: ignore[arg-type]

    def _append(self, frame: bytes) -> None:
        """Append one frame to the log now ("flush" level). Hold _lock."""
        if self._log.fd is None:
            self._create_empty_log()  # only after clear(); rare
        if self._log.tail_dirty:
            self._log.cut_tail()
        mark, previous = self._take_mark()
        if mark:
            try:
                self._log.write_frame(mark)
            except BaseException:
                self._unmark(previous)
                raise
        self._log.write_frame(frame)
        self._after_append()

    def _after_append(self) -> None:
        """What an append at the "flush" level sometimes needs. Hold _lock."""
        if not self._unsynced:
            self._unsynced = True
            self._unsynced_since = time.monotonic()
            self._wake.set()
        if self._log.end >= self._next_compaction_check:
            self._maybe_compact()

    # -- clear --------------------------------------------------------------

    def clear(self) -> None:
        """Remove every entry and the store's files. Raises OSError on failure.

        If the base file cannot be removed, nothing changes. Its log files
        follow nothing once it is gone: a failure to remove one is logged,
        and the next open removes it. If the base was removed but the
        directory could not be synced, the entries are gone (memory and
        files agree) and the error is raised: a power loss might bring the
        old files back.
        """
        if self._state is not _OPEN or self.readonly:  # unlocked: see forsake_after_fork
            raise self._unusable()
        with self._io, self._lock:
            if self._state is not _OPEN:
                raise self._unusable()
            self._generation += 1
            if self._log.fd is not None:
                self._files.remove(self._disk.file)
                self._log.drop_window()
                self._log.reserved_end = 0
                # From here on the clear has happened: nothing may stop it.
                self._close_files()
                self._disk.remove_logs(self._store.cleared())
                self.log_missing = True
            superseded = self._writes.drop()
            clearing = self._clearing = Commit()
            self._write_failure = None  # nothing is held any more
            self._table.empty()
            self._vouch_from(0)
            self._log.end = 0
            self._log.tail_dirty = False
            self._unsynced = False
        # The writes queued before the clear are superseded by it: their
        # writers, and whoever waits on the clear (see _last_commit), are
        # answered once the removal is durable, not before.
        error: BaseException | None = None
        try:
            self._files.fsync_dir(self._disk.directory)
        except BaseException as exc:
            error = exc
            raise
        finally:
            with self._lock:
                if self._clearing is clearing:
                    self._clearing = None
            for commit in (*superseded, clearing):
                commit.settle(error)

    def ensure_log_file(self) -> None:
        """Create the log file if clear() removed it (blocking)."""
        self._check_writable()
        with self._lock:
            self._check_writable()
            if self._log.fd is None:
                self._create_empty_log()

    # -- background: group commit, buffered writes, periodic fsync ----------

    def _sync_loop(self) -> None:
        """The writer thread's life: until close(), every duty in turn.

        It must outlive any exception: at "fsync" every writer waits on it,
        and a dead writer thread would leave them waiting forever. So each
        duty fails on its own (a clock that raises stops the sweep, not the
        writes), a failure is reported to the callers it concerns (a batch's
        writers, compact()) and logged, and the loop goes on. Should it end
        anyway, every waiter is released with the error.
        """
        try:
            while True:
                try:
                    if not self._sync_step():
                        return
                except Exception as exc:
                    self._failures.report("the writer thread's round", exc)
                    time.sleep(0.05)
        except BaseException as exc:  # not an Exception: the thread cannot go on
            logger.critical("aiokv: the writer thread of %s stopped: %r", self.path, exc)
            with self._lock:
                self._writer_stopped = exc
                # Nothing would write queued frames or settle commits: refuse writes.
                self._write_failure = OSError(errno.EIO, "the store's writer thread stopped")
                self._log.revoke_room()
            self._release_waiters(exc)  # and the thread ends: logged, not raised again

    def _sync_step(self) -> bool:
        """One round of the writer thread: False once close() stops it."""
        with self._lock:
            if self._stopping:
                return False
            if self._compaction_wanted:
                self._start_compaction_locked()
            timeout: float | None = None
            try:
                if self._state is _OPEN:  # a closing store writes nothing more of its own
                    timeout = self._sweep_locked()
            except Exception as exc:
                self._failures.report("the expiry sweep", exc)
                timeout = SWEEP_INTERVAL
            plan = plan_round(
                time.monotonic(), group_commit=self.durability == "fsync",
                queued_since=self._writes.since if self._writes.frames else None,
                flush_interval=self.flush_interval,
                unsynced_since=self._unsynced_since if self._unsynced else None,
                fsync_interval=self.fsync_interval, sweep_in=timeout)
            write, sync = plan.write, plan.sync
            if not (write or sync):
                self._wake.clear()
        if not (write or sync):
            self._wake.wait(None if plan.wait is None else min(plan.wait, MAX_INTERVAL))
            return True
        try:
            if self.durability == "fsync":
                self._commit_pending()
                return True
            if write:
                self._write_pending()
            if sync:
                self._sync()
            self._failures.succeeded()
        except Exception as exc:  # logged; retried on the next round
            if not (write and self._write_failure is exc):  # _write_pending logged it
                self._failures.report("a background write", exc)
            time.sleep(min(self.flush_interval, 0.05))
        return True

    def _release_waiters(self, error: BaseException) -> None:
        """The writer thread is gone: fail every commit someone may wait on.

        At "fsync" the queued writes are undone (their writers get the
        error); a batch in flight is failed too, though it may have reached
        the file. At "buffered" the held frames stay: flush() and close()
        write them on the caller's thread.
        """
        with self._lock:
            commits = [self._compaction]
            if self.durability == "fsync":
                commits += self._writes.waited_on()
                self._roll_back([], error)
            self._compaction = None
            self._compaction_wanted = False
        for commit in commits:
            if commit is not None:
                commit.settle(error)

    def _sweep_locked(self) -> float | None:
        """Remove expired entries; seconds until the next sweep.

        An expiry the store has acted on stays acted on: each removal is
        logged (a DELETE record, at the store's level), so a clock set back
        afterwards brings the key back neither in the running store nor
        after a reopen (replay, open and compaction agree: see _recover).
        Hold _lock; at most SWEEP_BATCH entries go per call, so the lock is
        never held for long. While held records cannot be written, nothing
        is swept: expired keys stay in memory, invisible to reads.
        """
        table = self._table
        if not table.heap:
            return None
        if self._write_failure is not None:
            return SWEEP_INTERVAL  # nothing can be logged: the keys stay, invisible
        now = self.clock()
        removed = 0
        while removed < SWEEP_BATCH and (due := table.pop_expired(now)) is not None:
            when, key = due
            current = table.expiries.get(key)
            if current != when:
                if current is not None and current > when:
                    table.push_expiry(current, key)  # given a later expiry since
                continue  # else stale: the key has no expiry any more
            frame = encode_delete(key)
            if self._inline_writes:
                try:
                    self._append(frame)
                except BaseException:
                    table.push_expiry(when, key)  # swept again next time
                    raise
                table.remove(key)
            else:
                self._queue(frame, key, table.remove(key))
            removed += 1
        table.prune_heap()
        if removed == SWEEP_BATCH:
            return 0.0
        heap = table.heap
        return None if not heap else min(SWEEP_INTERVAL, max(0.0, heap[0][0] - now))

    def _commit_pending(self) -> None:
        """Write and fsync the pending frames as one batch ("fsync" level)."""
        with self._io:
            with self._lock:
                commit, frames, undo = self._writes.take_batch()
                if not frames:
                    commit.settle()
                    return
                try:
                    batch = self._begin_batch(frames)
                except Exception as exc:  # whatever it is, the writers hear of it
                    self._roll_back(undo, exc)
                    commit.settle(exc)
                    return
            data = batch.vouch + b"".join(frames)
            started = time.monotonic()
            try:
                self._sync_retired()
                self._files.write_synced(batch.fd, data)
                if self._dir_unsynced:
                    self._files.fsync_dir(self._disk.directory)
                    self._dir_unsynced = False
            except Exception as exc:  # OSError, or whatever else: the writers hear of it
                with self._lock:
                    self._abandon_batch(batch)
                    self._roll_back(undo, exc)
                commit.settle(exc)
                logger.error("aiokv: writing %d records to %s failed: %s", len(frames),
                             self.path, exc)
                return
            took = time.monotonic() - started
            with self._lock:
                self._log.end = batch.start + len(data)
                self._synced(batch.start + len(data))
                self._writes.batch_done(took)
                self._maybe_compact()
        commit.settle()

    def _roll_back(self, undo: list[Undo], error: BaseException) -> None:
        """Undo a failed batch and everything queued after it. Hold _lock."""
        later, failed = self._writes.fail()
        for key, old, old_expiry in reversed(undo + later):
            self._restore(key, old, old_expiry)
        for commit in failed:
            commit.settle(error)

    def _write_pending(self) -> None:
        """Write the held frames ("buffered" level), WRITE_CHUNK bytes at a time.

        Frames stay in ``_pending`` (and count in ``stats()``) until written,
        and each chunk leaves it once written: a disk with room for less
        than the whole backlog still takes it a chunk at a time. A failed
        write keeps what is left and raises; until a later write succeeds,
        new writes are refused (``_refuse_if_failing``), so nothing more is
        acknowledged that cannot reach the disk.
        """
        with self._io:
            with self._lock:
                left = len(self._writes)
            while left:
                with self._lock:
                    count = size = 0
                    for frame in itertools.islice(self._writes.frames, left):
                        count += 1
                        size += len(frame)
                        if size >= WRITE_CHUNK:
                            break
                    frames = self._writes.frames[:count]
                    try:
                        batch = self._begin_batch(frames)
                    except OSError as exc:
                        self._note_write_failure(exc)
                        raise
                data = batch.vouch + b"".join(frames)
                try:
                    self._disk.write_all(batch.fd, data)
                except OSError as exc:
                    with self._lock:
                        self._abandon_batch(batch)
                        self._note_write_failure(exc)
                    raise
                with self._lock:
                    # _io held throughout: only _queue added frames, at the end.
                    self._writes.written(count)
                    self._log.end = batch.start + len(data)
                    if not self._unsynced:
                        self._unsynced = True
                        self._unsynced_since = time.monotonic()
                    if self._write_failure is not None and self._writer_stopped is None:
                        self._write_failure = None
                        logger.warning("aiokv: writes to %s succeed again; new writes are "
                                       "accepted", self.path)
                    self._maybe_compact()
                left -= count

    def _note_write_failure(self, error: OSError) -> None:
        """Held frames could not be written: refuse new writes until they are. Hold _lock."""
        if self._write_failure is None:
            logger.error("aiokv: writing %d held records to %s failed: %s; they are kept and "
                         "retried, and new writes raise until they are written",
                         len(self._writes), self.path, error)
        self._write_failure = error

    def _refuse_if_failing(self) -> None:
        """Raise while held frames cannot be written ("buffered"). Hold _lock.

        Acknowledging more would let the backlog, and what a crash loses,
        grow past the documented window without the program knowing.
        """
        failure = self._write_failure
        if self._writer_stopped is not None:
            raise OSError(errno.EIO, f"the writer thread of {self.path!r} stopped "
                          f"({self._writer_stopped!r}): no write is accepted; close the "
                          "store and open it again")
        if failure is not None:
            raise OSError(
                failure.errno,
                f"writes to {self.path!r} are failing ({failure.strerror or failure}): "
                f"{len(self._writes)} acknowledged writes wait to be retried, and no new "
                "write is accepted until they are written (flush() retries now)")

    def _begin_batch(self, frames: list[bytes]) -> _Batch:
        """Ready the log for a batch of frames written outside _lock. Hold _io, _lock.

        Creates the log if clear() removed it and cuts a failed write's tail;
        raises OSError if that fails, with nothing changed. Then the SYNCED
        frame due (if any) is taken to lead the batch.
        """
        if self._log.fd is None:
            self._create_empty_log()
        if self._log.tail_dirty:
            self._log.cut_tail()
        fd = self._log.fd
        assert fd is not None
        vouch, vouched_before = self._take_mark()
        return _Batch(fd, self._log.end, vouch, vouched_before)

    def _abandon_batch(self, batch: _Batch) -> None:
        """The batch's write failed: undo what _begin_batch did, cut the tail. Hold _lock."""
        self._log.end = batch.start
        if batch.vouch:
            self._unmark(batch.vouched_before)
        self._log.cut_tail_after_failure()

    def _sync(self) -> None:
        """fsync the log (and its directory after a compaction or creation)."""
        with self._io:
            with self._lock:
                fd = self._log.fd
                self._unsynced = False
                self._log.revoke_room()
                sync_dir = self._dir_unsynced
                end = self._log.end  # appends made from here on may miss this fsync
            if fd is None:
                return
            try:
                self._sync_retired()
                self._files.fsync(fd)
                with self._lock:
                    if self._log.fd == fd:  # not replaced by a compaction meanwhile
                        self._synced(end)
                if sync_dir:
                    self._files.fsync_dir(self._disk.directory)
                    self._dir_unsynced = False
            except OSError:
                with self._lock:
                    if not self._unsynced:
                        self._unsynced = True
                        self._unsynced_since = time.monotonic()
                # After a failed fsync the kernel may have dropped the dirty
                # pages: rewrite everything from memory into a new file.
                self._request_compaction()
                raise

    def _sync_retired(self) -> None:
        """fsync the files appends moved away from, before the one appended to
        is fsynced: so a power loss can only lose a suffix of the chain (see
        _chain). Hold _io. Raises OSError; what failed is tried again."""
        with self._lock:
            pending = list(self._store.retired_unsynced)
        for fd in pending:
            self._files.fsync(fd)
            with self._lock:
                self._store.synced(fd)

    def flush(self) -> None:
        """Return once everything acknowledged so far is fsynced."""
        self._check_writable()
        self._flush_all()

    def _flush_all(self) -> None:
        if self.durability == "fsync":
            with self._lock:
                commit = self._last_commit()
                self._wake.set()
            if commit is not None:
                commit.wait()
            return
        if self.durability == "buffered":
            self._write_pending()
        with self._lock:
            self._unsynced = True
        self._sync()

    # -- compaction ---------------------------------------------------------

    def compact(self) -> None:
        """Compact now and wait for it; raises OSError if it fails.

        A compaction already running took its snapshot before this call, so
        it is waited for and then a new one is run.
        """
        self._check_writable()
        with self._lock:
            running = self._compaction
        if running is not None:
            try:
                running.wait()
            except OSError:
                pass  # it was logged; this call's own compaction decides
        with self._lock:
            self._check_writable()
            commit = self._request_compaction_locked()
        commit.wait()

    def _maybe_compact(self) -> None:
        """Start a compaction when dead bytes dominate. Hold _lock.

        Checked again only after another COMPACTION_CHECK_BYTES have been
        appended, which keeps the check off nearly every set.
        """
        self._next_compaction_check = self._log.end + COMPACTION_CHECK_BYTES
        self._log.limit_room(self._next_compaction_check - 1)  # the hot path checks again there
        live = self._table.live_bytes + self._store.log_floor
        total = self._store.total(self._log.end)
        if total - live > live + COMPACT_SLACK and self._compaction is None:
            self._request_compaction_locked()

    def _request_compaction(self) -> Commit:
        with self._lock:
            return self._request_compaction_locked()

    def _request_compaction_locked(self) -> Commit:
        """Ask for a compaction; the writer thread starts it. Hold _lock.

        Starting a thread takes a fraction of a millisecond, too long for the
        event loop's thread, which is where most requests come from.
        """
        if self._compaction is not None:
            return self._compaction
        commit = Commit()
        self._compaction = commit
        self._compaction_wanted = True
        self._wake.set()
        return commit

    def _start_compaction_locked(self) -> None:
        """Start the requested compaction's thread. Hold _lock.

        When no thread can be started (a container's pids limit), the
        compaction fails: compact() raises the RuntimeError, and an
        automatic one is asked for again by the next check.
        """
        self._compaction_wanted = False
        commit = self._compaction
        assert commit is not None
        thread = threading.Thread(target=self._run_compaction, args=(commit,),
                                  name=f"aiokv-compact {os.path.basename(self.path)}",
                                  daemon=True)
        self._compaction_thread = thread
        try:
            thread.start()
        except Exception as exc:  # RuntimeError: can't start new thread
            self._compaction_thread = None
            self._compaction = None
            self._failures.report("starting a compaction", exc)
            commit.settle(exc)

    def _run_compaction(self, commit: Commit) -> None:
        error: BaseException | None = None
        try:
            self._compact_once()
        except _CompactionVoid:
            pass  # clear() emptied the store meanwhile: nothing left to compact
        except ClosedError as exc:
            error = exc
        except BaseException as exc:  # reported to compact() callers, logged otherwise
            error = exc
            logger.error("aiokv: compaction of %s failed: %s", self.path, exc)
        finally:
            with self._lock:
                self._compaction = None
                self._compaction_thread = None
            commit.settle(error)

    def _compact_once(self) -> None:
        """Move appends to a new log file, then write a new base from memory.

        Nothing chases the writers: from the moment appends move (under
        ``_lock``, a few system calls), what they write goes to the new log
        file, which the new base names as its first; the base holds what
        the walk takes of the table, each batch as the log files hold it.
        """
        with self._lock:
            if self._state is not _OPEN:
                raise self._unusable()
            if self._log.fd is None:
                return  # cleared: there is no log to compact
            generation = self._generation
            number = self._store.next_log
            base_compactions = self._compactions
        # Created, with its directory entry, fsynced before it takes a frame:
        # writers go on appending to the old file meanwhile.
        self._disk.remove_logs([number])  # left by a compaction that failed
        header = encode_header(base_compactions, 0.0, HEADER_SIZE, number, log_file=True)
        log_fd = self._disk.write_atomically(self._disk.log_path(number), [header],
                                             as_log=True, new=True)
        with self._io:
            assert log_fd is not None
            try:
                with self._lock:
                    self._check_compaction_still_wanted(generation)
                    if self._log.tail_dirty:
                        self._log.cut_tail()
                    self._log.release_reserved()  # no appends go there any more
                    table = self._table
                    # A key that a queued "fsync" delete took out of the entries
                    # is not on the walk, but the old files still hold it: it
                    # goes first.
                    undo = self._writes.undo
                    first = durable_batch(pending_deletions(undo, table.entries), undo,
                                          table.expiries, self.clock())
                    follows = encode_follows(self._store.previous(), self._log.end,
                                             base_compactions)
                    self._disk.write_all(log_fd, follows)
                    # From here on nothing fails: appends move, the walk starts.
                    self._move_appends(log_fd, number, HEADER_SIZE + len(follows))
                    live_at_snapshot = table.live_bytes
                    walk = table.start_split()
                    self._update_detour()
            except BaseException:
                self._disk.close_quietly(log_fd)
                self._disk.remove_logs([number])
                raise
            # Now, so that the new log file may be fsynced at once. Should it
            # fail, so does the compaction; _sync() tries again before any
            # fsync of the new log file.
            self._sync_retired()
        temp = self._disk.temp_path()
        try:
            fd = self._files.create(temp)
        except BaseException:
            self._fold_split()
            raise
        swapped = False
        try:
            try:
                if self._disk.permissions is not None:
                    self._files.give_permissions(fd, self._disk.permissions)
                # A placeholder header; the real one is written before the fsync.
                self._disk.write_at(fd, 0, [encode_header(0, 0.0, HEADER_SIZE)])
                frames = itertools.chain(batch_frames(*first) if first[0] else (),
                                         self._snapshot_frames(walk, generation))
                snapshot_end = self._disk.write_at(fd, HEADER_SIZE, frames)
            finally:
                self._fold_split()
            stamp = self.clock()
            compactions = base_compactions + 1
            self._disk.write_at(fd, 0, [encode_header(compactions, stamp, snapshot_end,
                                                      number, has_log=True)])
            self._files.fsync(fd)
            with self._io:
                # The walk saw writes made after appends moved: the log file
                # holding them is fsynced before a base reflecting them is in
                # place (and the files before it before that).
                self._sync_retired()
                with self._lock:
                    self._check_compaction_still_wanted(generation)
                    log_fd, end = self._log.fd, self._log.end
                assert log_fd is not None
                self._files.fsync(log_fd)
                new_base = self._files.open_append(temp)
                try:
                    # Claimed before it is in place (see LogFiles.claim).
                    if not self._files.lock_open_file(new_base):
                        raise LockedError(self.path)
                    with self._lock:
                        self._synced(end)
                        self._check_compaction_still_wanted(generation)
                        self._files.replace(temp, self._disk.file)
                        swapped = True
                        old_base, retired, done = self._store.compacted(new_base, number,
                                                                        snapshot_end)
                        self._compactions = compactions
                        self._last_compaction = stamp
                        table.live_bytes += snapshot_end - live_at_snapshot
                        self._dir_unsynced = True
                except BaseException:
                    if not swapped:
                        self._disk.close_quietly(new_base)
                    raise
                for old_fd in (old_base, *retired):
                    if old_fd is not None:
                        self._disk.close_quietly(old_fd)
                self._files.fsync_dir(self._disk.directory)
                self._dir_unsynced = False
                self._disk.remove_logs(done)  # or the next open: the base holds them
        finally:
            self._files.close(fd)
            if not swapped:
                try:
                    self._files.remove(temp)
                except OSError:
                    logger.warning("aiokv: could not remove %s", temp)

    def _move_appends(self, fd: int, number: int, end: int) -> None:
        """From now on appends go to log file ``number``, open at ``fd``,
        whose header is fsynced and which holds ``end`` bytes. Hold _io, _lock.

        The file appended to until now joins the files fsynced before it.
        """
        old = self._log
        old.revoke_room()
        log = LogWriter(self._files, self.path)
        log.fd = fd
        log.map_appends = old.map_appends
        log.end = end
        log.vouch_from(HEADER_SIZE)  # the header is fsynced, not yet what follows it
        self._log = log
        assert old.fd is not None
        self._store.moved(old.fd, old.end, number, end)
        self._next_compaction_check = end + COMPACTION_CHECK_BYTES
        self._update_detour()
        if not self._unsynced:
            self._unsynced = True
            self._unsynced_since = time.monotonic()
            self._wake.set()

    def _snapshot_frames(self, walk: Iterator[tuple[str, Value]],
                         generation: int) -> Iterator[bytes]:
        """The snapshot's frames, taking ``walk`` a batch per lock hold.

        Each batch is taken as it is on disk at that moment: tombstones are
        left out, and so are the effects of queued "fsync" writes (which may
        still be rolled back; their frames reach the new log file once
        written). Holding _io, no batch is half written.
        """
        pacer = Pacer()
        while True:
            with self._io, self._lock:
                self._check_compaction_still_wanted(generation)
                batch = list(itertools.islice(walk, SNAPSHOT_BATCH))
                if not batch:
                    return
                kept_expiries: dict[str, float] = {}
                undo = self._writes.undo
                table = self._table
                if not undo and not table.expiries:
                    if table.gone:
                        batch = [item for item in batch if item[1] is not MISSING]
                    kept = batch
                else:
                    kept, kept_expiries = durable_batch(batch, undo, table.expiries,
                                                        self.clock())
            if kept:
                yield from batch_frames(kept, kept_expiries)
            pacer.step()

    def _fold_split(self) -> None:
        """End the split state: fold it back, a batch per lock hold (Table.fold_batch)."""
        pacer = Pacer()
        while True:
            with self._lock:
                if self._table.fold_batch():
                    self._update_detour()
                    return
            pacer.step()

    def _check_compaction_still_wanted(self, generation: int) -> None:
        """Raise if the store was closed, or return-worthy if cleared. Hold _lock."""
        if self._state is not _OPEN:
            raise self._unusable()
        if self._generation != generation:
            raise _CompactionVoid


def _log_floor(logs: list[tuple[int, bytes]]) -> int:
    """The bytes the last of ``logs`` starts with (see StoreFiles.log_floor)."""
    if not logs:
        return 0
    opening = follows_of(logs[-1][1])
    return HEADER_SIZE if opening is None else opening.end
