"""The engine's background worker: the writer thread, and its duties.

Each round the thread (``WriterThread``) takes the engine's lock, asks
``plan_round`` what is due, and does it: start a requested compaction,
sweep expired keys, write held frames ("buffered"), commit a batch
("fsync"), fsync the log, or wait. The decision depends only on times and
flags, so ``plan_round`` is tested without a thread or a clock. The duties
that write (``write_pending``, ``sync``, ``flush_all``) also run on a
caller's thread, for flush() and close().
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._format import encode_delete
from ._group_commit import FrameUndo, each_undo
from ._lifecycle import OPEN
from ._log_files import WRITE_CHUNK

if TYPE_CHECKING:
    from ._engine import Engine

logger = logging.getLogger("aiokv")


@dataclass(frozen=True)
class RoundPlan:
    write: bool
    """Write the held frames now (at "fsync": commit them as a batch)."""
    sync: bool
    """fsync the log now."""
    wait: float | None
    """When nothing is due: how long to wait for a wake-up (None: until one)."""


def plan_round(now: float, *, group_commit: bool, queued_since: float | None,
               flush_interval: float, unsynced_since: float | None, fsync_interval: float,
               sweep_in: float | None) -> RoundPlan:
    """What one round does.

    ``queued_since``: when the oldest held frame was queued (None: none);
    ``unsynced_since``: since when the log holds writes not fsynced (None:
    none); ``sweep_in``: seconds until the expiry sweep wants to run again.
    At "fsync" (``group_commit``) queued frames are committed at once; at
    "buffered" they wait ``flush_interval``; written data is fsynced
    ``fsync_interval`` after the first unsynced write.
    """
    wait = sweep_in
    write = sync = False
    if queued_since is not None:
        if group_commit:
            write = True
        else:
            due = queued_since + flush_interval
            write = now >= due
            if not write:
                wait = due - now if wait is None else min(wait, due - now)
    if unsynced_since is not None:
        due = unsynced_since + fsync_interval
        sync = now >= due
        if not sync:
            wait = due - now if wait is None else min(wait, due - now)
    return RoundPlan(write, sync, None if write or sync else wait)


class FailureLog:
    """Logs a failure of the writer thread's duties: in full the first time a
    duty fails in a way, briefly while it goes on failing so (a retry every
    50 ms must not flood the log). Used by the writer thread only (and by
    the thread that starts a compaction, under the engine's lock)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._last: tuple[str, type[BaseException], str] | None = None

    def report(self, duty: str, error: BaseException) -> None:
        signature = (duty, type(error), str(error))
        if signature == self._last:
            logger.debug("aiokv: %s of %s failed again: %s", duty, self._path, error)
            return
        self._last = signature
        logger.error("aiokv: %s of %s failed; it is retried: %s", duty, self._path, error,
                     exc_info=error)

    def succeeded(self) -> None:
        """A round went through: the next failure is news again."""
        self._last = None


MAX_INTERVAL = 86400.0
"""The longest ``fsync_interval`` or ``flush_interval`` accepted (a day), and
the longest the writer thread sleeps at a time: longer intervals are refused
at construction, where a typo like 1e10 would otherwise pass and later
overflow the thread's wait."""

SWEEP_INTERVAL = 1.0
"""Longest time (seconds) an expired entry stays in memory unread."""
SWEEP_BATCH = 1000
"""Expired entries removed per hold of the engine lock by the sweep."""


@dataclass(frozen=True)
class _Batch:
    """A batch of frames about to be written outside the lock (see begin_batch)."""

    fd: int
    start: int
    """The log's length before the batch: where it goes."""
    vouch: bytes
    """The SYNCED frame leading the batch, or b""."""
    vouched_before: int
    """What to give LogWriter.unmark if the write fails."""


class WriterThread:
    """The writer thread, and the duties that write what callers left behind.

    Its fields (``thread``, ``stopping``, ``write_failure``,
    ``writer_stopped``) are guarded by the engine's ``lock``; ``failures``
    is the thread's own. Every duty that touches a
    descriptor holds the engine's ``io`` (so none is closed under it, and no
    log file is fsynced before the file it follows), and ``lock`` around
    each change of the log writer, the pending writes or the table.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = engine.lock
        self._io = engine.io
        self._log = engine.log
        self._pending = engine.pending
        self._files = engine.files
        self._wake = engine.wake
        self._path = engine.path
        self.thread: threading.Thread | None = None
        self.stopping = False
        self.failures = FailureLog(engine.path)
        self.write_failure: OSError | None = None
        """"buffered": why the held frames could not be written, until they
        are; new writes are refused meanwhile (``refuse_if_failing``)."""
        self.writer_stopped: BaseException | None = None
        """Why the thread ended before close(), if it did."""

    # -- the thread -----------------------------------------------------------

    def start(self) -> None:
        """Start the thread. Under a thread limit (a container's pids limit)
        this raises RuntimeError, and the store stays unopened."""
        self.stopping = False
        self.thread = threading.Thread(
            target=self._loop, name=f"aiokv-sync {os.path.basename(self._path)}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """End the thread after its round, and wait for it."""
        with self._lock:
            self.stopping = True
            self._wake.set()
        if self.thread is not None:
            self.thread.join()

    def _loop(self) -> None:
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
                    if not self._step():
                        return
                except Exception as exc:
                    self.failures.report("the writer thread's round", exc)
                    time.sleep(0.05)
        except BaseException as exc:  # not an Exception: the thread cannot go on
            logger.critical("aiokv: the writer thread of %s stopped: %r", self._path, exc)
            with self._lock:
                self.writer_stopped = exc
                # Nothing would write queued frames or settle commits: refuse writes.
                self.write_failure = OSError(errno.EIO, "the store's writer thread stopped")
                self._log.revoke_room()
            self._release_waiters(exc)  # and the thread ends: logged, not raised again

    def _step(self) -> bool:
        """One round of the writer thread: False once close() stops it."""
        engine = self._engine
        with self._lock:
            if self.stopping:
                return False
            if engine.compaction.wanted:
                engine.compaction.start_locked()
            timeout: float | None = None
            try:
                if engine.state is OPEN:  # a closing store writes nothing more of its own
                    timeout = self._sweep_locked()
            except Exception as exc:
                self.failures.report("the expiry sweep", exc)
                timeout = SWEEP_INTERVAL
            log = self._log
            plan = plan_round(
                time.monotonic(), group_commit=engine.durability == "fsync",
                queued_since=self._pending.since if self._pending.frames else None,
                flush_interval=engine.flush_interval,
                unsynced_since=log.unsynced_since if log.unsynced else None,
                fsync_interval=engine.fsync_interval, sweep_in=timeout)
            write, sync = plan.write, plan.sync
            if not (write or sync):
                self._wake.clear()
        if not (write or sync):
            self._wake.wait(None if plan.wait is None else min(plan.wait, MAX_INTERVAL))
            return True
        try:
            if engine.durability == "fsync":
                self.commit_pending()
                return True
            if write:
                self.write_pending()
            if sync:
                self.sync()
            self.failures.succeeded()
        except Exception as exc:  # logged; retried on the next round
            if not (write and self.write_failure is exc):  # write_pending logged it
                self.failures.report("a background write", exc)
            time.sleep(min(engine.flush_interval, 0.05))
        return True

    def _release_waiters(self, error: BaseException) -> None:
        """The writer thread is gone: fail every commit someone may wait on.

        At "fsync" the queued writes are undone (their writers get the
        error); a batch in flight is failed too, though it may have reached
        the file. At "buffered" the held frames stay: flush() and close()
        write them on the caller's thread.
        """
        engine = self._engine
        with self._lock:
            commits = [engine.compaction.forget_request()]
            if engine.durability == "fsync":
                commits += self._pending.waited_on()
                self._roll_back([], error)
        for commit in commits:
            if commit is not None:
                commit.settle(error)

    # -- the duties -------------------------------------------------------------

    def _sweep_locked(self) -> float | None:
        """Remove expired entries; seconds until the next sweep.

        An expiry the store has acted on stays acted on: each removal is
        logged (a DELETE record, at the store's level), so a clock set back
        afterwards brings the key back neither in the running store nor
        after a reopen (replay, open and compaction agree: see FileRecovery).
        Hold lock; at most SWEEP_BATCH entries go per call, so the lock is
        never held for long. While held records cannot be written, nothing
        is swept: expired keys stay in memory, invisible to reads.
        """
        engine = self._engine
        table = engine.table
        if not table.heap:
            return None
        writes = engine.writes
        if self.write_failure is not None:
            return SWEEP_INTERVAL  # nothing can be logged: the keys stay, invisible
        now = engine.clock()
        removed = 0
        while removed < SWEEP_BATCH and (due := table.pop_expired(now)) is not None:
            when, key = due
            current = table.expiries.get(key)
            if current != when:
                if current is not None and current > when:
                    table.push_expiry(current, key)  # given a later expiry since
                continue  # else stale: the key has no expiry any more
            frame = encode_delete(key)
            if engine.durability == "flush":
                try:
                    writes.append(frame)
                except BaseException:
                    table.push_expiry(when, key)  # swept again next time
                    raise
                table.remove(key)
            else:
                writes.queue(frame, key, table.remove(key))
            removed += 1
        table.prune_heap()
        if removed == SWEEP_BATCH:
            return 0.0
        heap = table.heap
        return None if not heap else min(SWEEP_INTERVAL, max(0.0, heap[0][0] - now))

    def commit_pending(self) -> None:
        """Write and fsync the pending frames as one batch ("fsync" level)."""
        engine = self._engine
        with self._io:
            with self._lock:
                commit, frames, undo = self._pending.take_batch()
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
                self.sync_retired()
                self._files.write_synced(batch.fd, data)
                self._sync_dir_if_due()
            except Exception as exc:  # OSError, or whatever else: the writers hear of it
                with self._lock:
                    self._abandon_batch(batch)
                    self._roll_back(undo, exc)
                commit.settle(exc)
                logger.error("aiokv: writing %d records to %s failed: %s", len(frames),
                             self._path, exc)
                return
            took = time.monotonic() - started
            with self._lock:
                self._log.end = batch.start + len(data)
                self._log.synced(batch.start + len(data))
                self._pending.batch_done(took)
                engine.compaction.check()
        commit.settle()

    def _roll_back(self, undo: list[FrameUndo], error: BaseException) -> None:
        """Undo a failed batch and everything queued after it. Hold lock."""
        later, failed = self._pending.fail()
        restore = self._engine.table.restore
        for key, old, old_expiry in reversed(list(each_undo(undo + later))):
            restore(key, old, old_expiry)
        for commit in failed:
            commit.settle(error)

    def write_pending(self) -> None:
        """Write the held frames ("buffered" level), WRITE_CHUNK bytes at a time.

        Frames stay pending (and count in ``stats()``) until written, and
        each chunk leaves once written: a disk with room for less than the
        whole backlog still takes it a chunk at a time. A failed write keeps
        what is left and raises; until a later write succeeds, new writes
        are refused (``refuse_if_failing``), so nothing more is
        acknowledged that cannot reach the disk.
        """
        engine = self._engine
        pending = self._pending
        with self._io:
            with self._lock:
                left = len(pending)
            while left:
                with self._lock:
                    count = size = 0
                    for frame in itertools.islice(pending.frames, left):
                        count += 1
                        size += len(frame)
                        if size >= WRITE_CHUNK:
                            break
                    frames = pending.frames[:count]
                    try:
                        batch = self._begin_batch(frames)
                    except OSError as exc:
                        self._note_write_failure(exc)
                        raise
                data = batch.vouch + b"".join(frames)
                try:
                    engine.disk.write_all(batch.fd, data)
                except OSError as exc:
                    with self._lock:
                        self._abandon_batch(batch)
                        self._note_write_failure(exc)
                    raise
                with self._lock:
                    # io held throughout: only Writes.queue added frames, at the end.
                    pending.written(count)
                    log = self._log
                    log.end = batch.start + len(data)
                    if not log.unsynced:
                        log.unsynced = True
                        log.unsynced_since = time.monotonic()
                    if self.write_failure is not None and self.writer_stopped is None:
                        self.write_failure = None
                        logger.warning("aiokv: writes to %s succeed again; new writes are "
                                       "accepted", self._path)
                    engine.compaction.check()
                left -= count

    def _note_write_failure(self, error: OSError) -> None:
        """Held frames could not be written: refuse new writes until they are. Hold lock."""
        if self.write_failure is None:
            logger.error("aiokv: writing %d held records to %s failed: %s; they are kept and "
                         "retried, and new writes raise until they are written",
                         len(self._pending), self._path, error)
        self.write_failure = error

    def refuse_if_failing(self) -> None:
        """Raise while held frames cannot be written ("buffered"), or once the
        thread has stopped. Hold lock.

        Acknowledging more would let the backlog, and what a crash loses,
        grow past the documented window without the program knowing.
        """
        failure = self.write_failure
        if self.writer_stopped is not None:
            raise OSError(errno.EIO, f"the writer thread of {self._path!r} stopped "
                          f"({self.writer_stopped!r}): no write is accepted; close the "
                          "store and open it again")
        if failure is not None:
            raise OSError(
                failure.errno,
                f"writes to {self._path!r} are failing ({failure.strerror or failure}): "
                f"{len(self._pending)} acknowledged writes wait to be retried, and no new "
                "write is accepted until they are written (flush() retries now)")

    def _begin_batch(self, frames: list[bytes]) -> _Batch:
        """Ready the log for a batch of frames written outside lock. Hold io, lock.

        Creates the log if clear() removed it and cuts a failed write's tail;
        raises OSError if that fails, with nothing changed. Then the SYNCED
        frame due (if any) is taken to lead the batch.
        """
        log = self._log
        if log.fd is None:
            self._engine.recreate_base()
        if log.tail_dirty:
            log.cut_tail()
        fd = log.fd
        assert fd is not None
        vouch, vouched_before = log.take_mark()
        return _Batch(fd, log.end, vouch, vouched_before)

    def _abandon_batch(self, batch: _Batch) -> None:
        """The batch's write failed: undo what begin_batch did, cut the tail. Hold lock."""
        self._log.end = batch.start
        if batch.vouch:
            self._log.unmark(batch.vouched_before)
        self._log.cut_tail_after_failure()

    def sync(self) -> None:
        """fsync the log (and its directory after a compaction or creation)."""
        engine = self._engine
        log = self._log
        with self._io:
            with self._lock:
                fd = log.fd
                log.unsynced = False
                log.revoke_room()
                end = log.end  # appends made from here on may miss this fsync
            if fd is None:
                return
            try:
                self.sync_retired()
                self._files.fsync(fd)
                with self._lock:
                    if log.fd == fd:  # not replaced by a compaction meanwhile
                        self._log.synced(end)
                self._sync_dir_if_due()
            except OSError:
                with self._lock:
                    if not log.unsynced:
                        log.unsynced = True
                        log.unsynced_since = time.monotonic()
                # After a failed fsync the kernel may have dropped the dirty
                # pages: rewrite everything from memory into a new file.
                engine.compaction.request()
                raise

    def _sync_dir_if_due(self) -> None:
        """fsync the directory if a compaction changed it since. Hold io."""
        store = self._engine.store
        if store.dir_unsynced:
            self._files.fsync_dir(self._engine.disk.directory)
            store.dir_unsynced = False

    def sync_retired(self) -> None:
        """fsync the files appends moved away from, before the one appended to
        is fsynced: so a power loss can only lose a suffix of the chain (see
        _chain). Hold io. Raises OSError; what failed is tried again."""
        store = self._engine.store
        with self._lock:
            pending = list(store.retired_unsynced)
        for fd in pending:
            self._files.fsync(fd)
            with self._lock:
                store.synced(fd)

    def flush_all(self) -> None:
        """Return once everything acknowledged so far is fsynced."""
        engine = self._engine
        if engine.durability == "fsync":
            with self._lock:
                commit = engine.writes.last_commit()
                self._wake.set()
            if commit is not None:
                commit.wait()
            return
        if engine.durability == "buffered":
            self.write_pending()
        with self._lock:
            self._log.unsynced = True
        self.sync()
