"""Compaction: when it is due, and the rewrite of the base from memory.

A compaction does not chase the writers (``_compact_once``): when it starts
it moves appends to a new log file, which the base it then writes names as
its first, so nothing written meanwhile is copied. It does not copy the
entries under the engine's lock either: it walks the live dict a batch at a
time, releasing the lock between batches. While it walks, the dict's layout
must not change (the "split" state of ``Table``). Replaying the new log file
after the snapshot gives the same state whatever moment each batch was taken
at, because every record sets its key's state outright. The steps, and what
a crash between any two leaves, are in docs/format.md.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ._commit import Commit
from ._errors import ClosedError, LockedError
from ._format import HEADER_SIZE, Value, encode_follows, encode_header
from ._lifecycle import OPEN
from ._snapshot import (
    SNAPSHOT_BATCH,
    Pacer,
    batch_frames,
    durable_batch,
    pending_deletions,
)
from ._table import MISSING

if TYPE_CHECKING:
    from ._engine import Engine

logger = logging.getLogger("aiokv")

COMPACT_SLACK = 640 * 1024
"""Compaction starts once dead bytes exceed live bytes by this much."""
COMPACTION_CHECK_BYTES = 16 * 1024
"""How much may be appended between two checks of the compaction rule."""


class _CompactionVoid(Exception):
    """clear() ran while a compaction was writing: its result is discarded."""


class Compaction:
    """Decides when to compact, and runs each compaction on a thread of its own.

    Its fields are guarded by the engine's ``lock``. A compaction takes the
    engine's ``io`` as well to move appends, to write each batch of its
    snapshot, and to put the new base in place; the new file is written
    outside both. The writer thread starts the requested compaction's
    thread (``start_locked``): starting a thread takes too long for the
    event loop's thread, where most requests come from.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = engine.lock
        self._io = engine.io
        self._table = engine.table
        self._log = engine.log
        self._store = engine.store
        self._disk = engine.disk
        self._files = engine.files
        self.commit: Commit | None = None
        """The running (or requested) compaction's; None when there is none."""
        self.wanted = False
        """A compaction was requested and its thread is not started yet."""
        self.thread: threading.Thread | None = None
        self.generation = 0
        """Bumped by clear() and close() (``void``): a running compaction is discarded."""
        self.next_check = 0
        """The log's length at which the compaction rule is checked again."""

    # -- when -------------------------------------------------------------------

    def check(self) -> None:
        """Start a compaction when dead bytes dominate. Hold lock.

        Checked again only after another COMPACTION_CHECK_BYTES have been
        appended, which keeps the check off nearly every set.
        """
        log = self._log
        self.next_check = log.end + COMPACTION_CHECK_BYTES
        log.limit_room(self.next_check - 1)  # the hot path checks again there
        live = self._table.live_bytes + self._store.log_floor
        total = self._store.total(log.end)
        if total - live > live + COMPACT_SLACK and self.commit is None:
            self.request_locked()

    def compact(self) -> None:
        """Compact now and wait for it; raises OSError if it fails.

        A compaction already running took its snapshot before this call, so
        it is waited for and then a new one is run.
        """
        engine = self._engine
        engine.check_writable()
        with self._lock:
            running = self.commit
        if running is not None:
            try:
                running.wait()
            except OSError:
                pass  # it was logged; this call's own compaction decides
        with self._lock:
            engine.check_writable()
            commit = self.request_locked()
        commit.wait()

    def request(self) -> Commit:
        with self._lock:
            return self.request_locked()

    def request_locked(self) -> Commit:
        """Ask for a compaction; the writer thread starts it. Hold lock."""
        if self.commit is not None:
            return self.commit
        commit = Commit()
        self.commit = commit
        self.wanted = True
        self._engine.wake.set()
        return commit

    def forget_request(self) -> Commit | None:
        """No compaction will run (the writer thread ended, or close()): the
        commit to settle, if one was asked for. Hold lock."""
        commit, self.commit, self.wanted = self.commit, None, False
        return commit

    def void(self) -> None:
        """clear() or close(): a running compaction's result is discarded. Hold lock."""
        self.generation += 1

    def start_locked(self) -> None:
        """Start the requested compaction's thread. Hold lock.

        When no thread can be started (a container's pids limit), the
        compaction fails: compact() raises the RuntimeError, and an
        automatic one is asked for again by the next check.
        """
        self.wanted = False
        commit = self.commit
        assert commit is not None
        thread = threading.Thread(target=self._run, args=(commit,),
                                  name=f"aiokv-compact {os.path.basename(self._engine.path)}",
                                  daemon=True)
        self.thread = thread
        try:
            thread.start()
        except Exception as exc:  # RuntimeError: can't start new thread
            self.thread = None
            self.commit = None
            self._engine.worker.failures.report("starting a compaction", exc)
            commit.settle(exc)

    def _run(self, commit: Commit) -> None:
        error: BaseException | None = None
        try:
            self._compact_once()
        except _CompactionVoid:
            pass  # clear() emptied the store meanwhile: nothing left to compact
        except ClosedError as exc:
            error = exc
        except BaseException as exc:  # reported to compact() callers, logged otherwise
            error = exc
            logger.error("aiokv: compaction of %s failed: %s", self._engine.path, exc)
        finally:
            with self._lock:
                self.commit = None
                self.thread = None
            commit.settle(error)

    # -- how --------------------------------------------------------------------

    def _compact_once(self) -> None:
        """Move appends to a new log file, then write a new base from memory.

        Nothing chases the writers: from the moment appends move (under
        ``lock``, a few system calls), what they write goes to the new log
        file, which the new base names as its first; the base holds what
        the walk takes of the table, each batch as the log files hold it.
        """
        engine = self._engine
        with self._lock:
            if engine.state is not OPEN:
                raise engine.unusable()
            if self._log.fd is None:
                return  # cleared: there is no log to compact
            generation = self.generation
            number = self._store.next_log
            base_compactions = self._store.compactions
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
                    self._check_still_wanted(generation)
                    first, live_at_snapshot, walk = self._move_appends(
                        log_fd, number, base_compactions)
            except BaseException:
                self._disk.close_quietly(log_fd)
                self._disk.remove_logs([number])
                raise
            # Now, so that the new log file may be fsynced at once. Should it
            # fail, so does the compaction; sync() tries again before any
            # fsync of the new log file.
            engine.worker.sync_retired()
        temp = self._disk.temp_path()
        try:
            fd = self._files.create(temp)
        except BaseException:
            self.fold_split()
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
                self.fold_split()
            stamp = engine.clock()
            compactions = base_compactions + 1
            self._disk.write_at(fd, 0, [encode_header(compactions, stamp, snapshot_end,
                                                      number, has_log=True)])
            self._files.fsync(fd)
            swapped = self._put_in_place(temp, number, generation,
                                         (compactions, stamp, snapshot_end, live_at_snapshot))
        finally:
            self._files.close(fd)
            if not swapped:
                try:
                    self._files.remove(temp)
                except OSError:
                    logger.warning("aiokv: could not remove %s", temp)

    def _move_appends(self, log_fd: int, number: int, base_compactions: int
                      ) -> tuple[tuple[list[tuple[str, Value]], dict[str, float]], int,
                                 Iterator[tuple[str, Value]]]:
        """From now on appends go to log file ``number``, open at ``log_fd``,
        whose header is fsynced. Hold io, lock.

        The file appended to until now joins the files fsynced before it.
        Returns the keys to write first (those a queued "fsync" delete took
        out of the entries: the old files still hold them), the live bytes
        at this instant, and the walk of the table, now split.
        """
        log = self._log
        if log.tail_dirty:
            log.cut_tail()
        log.release_reserved()  # no appends go there any more
        table = self._table
        undo = self._engine.pending.undo
        first = durable_batch(pending_deletions(undo, table.entries), undo,
                              table.expiries, self._engine.clock())
        follows = encode_follows(self._store.previous(), log.end, base_compactions)
        self._disk.write_all(log_fd, follows)
        # From here on nothing fails: appends move, the walk starts.
        end = HEADER_SIZE + len(follows)
        old_fd, old_end = log.switch(log_fd, end)
        self._store.moved(old_fd, old_end, number, end)
        self.next_check = end + COMPACTION_CHECK_BYTES
        if not log.unsynced:
            log.unsynced = True
            log.unsynced_since = time.monotonic()
            self._engine.wake.set()
        live_at_snapshot = table.live_bytes
        walk = table.start_split()
        return first, live_at_snapshot, walk

    def _put_in_place(self, temp: str, number: int, generation: int,
                      written: tuple[int, float, int, int]) -> bool:
        """Rename the new base (fsynced at ``temp``) over the old one, and let
        the files it holds go; whether it was put in place."""
        compactions, stamp, snapshot_end, live_at_snapshot = written
        engine = self._engine
        store = self._store
        swapped = False
        with self._io:
            # The walk saw writes made after appends moved: the log file
            # holding them is fsynced before a base reflecting them is in
            # place (and the files before it before that).
            engine.worker.sync_retired()
            with self._lock:
                self._check_still_wanted(generation)
                log_fd, end = self._log.fd, self._log.end
            assert log_fd is not None
            self._files.fsync(log_fd)
            new_base = self._files.open_append(temp)
            try:
                # Claimed before it is in place (see LogFiles.claim).
                if not self._files.lock_open_file(new_base):
                    raise LockedError(engine.path)
                with self._lock:
                    self._log.synced(end)
                    self._check_still_wanted(generation)
                    self._files.replace(temp, self._disk.file)
                    swapped = True
                    old_base, retired, done = store.compacted(new_base, number, snapshot_end)
                    store.compactions = compactions
                    store.last_compaction = stamp
                    self._table.live_bytes += snapshot_end - live_at_snapshot
                    store.dir_unsynced = True
            except BaseException:
                if not swapped:
                    self._disk.close_quietly(new_base)
                raise
            for old_fd in (old_base, *retired):
                if old_fd is not None:
                    self._disk.close_quietly(old_fd)
            self._files.fsync_dir(self._disk.directory)
            store.dir_unsynced = False
            self._disk.remove_logs(done)  # or the next open: the base holds them
        return swapped

    def _snapshot_frames(self, walk: Iterator[tuple[str, Value]],
                         generation: int) -> Iterator[bytes]:
        """The snapshot's frames, taking ``walk`` a batch per lock hold.

        Each batch is taken as it is on disk at that moment: tombstones are
        left out, and so are the effects of queued "fsync" writes (which may
        still be rolled back; their frames reach the new log file once
        written). Holding io, no batch is half written.
        """
        pacer = Pacer()
        engine = self._engine
        while True:
            with self._io, self._lock:
                self._check_still_wanted(generation)
                batch = list(itertools.islice(walk, SNAPSHOT_BATCH))
                if not batch:
                    return
                kept_expiries: dict[str, float] = {}
                undo = engine.pending.undo
                table = self._table
                if not undo and not table.expiries:
                    if table.gone:
                        batch = [item for item in batch if item[1] is not MISSING]
                    kept = batch
                else:
                    kept, kept_expiries = durable_batch(batch, undo, table.expiries,
                                                        engine.clock())
            if kept:
                yield from batch_frames(kept, kept_expiries)
            pacer.step()

    def fold_split(self) -> None:
        """End the split state: fold it back, a batch per lock hold (Table.fold_batch)."""
        pacer = Pacer()
        while True:
            with self._lock:
                if self._table.fold_batch():
                    return
            pacer.step()

    def _check_still_wanted(self, generation: int) -> None:
        """Raise if the store was closed, or return-worthy if cleared. Hold lock."""
        engine = self._engine
        if engine.state is not OPEN:
            raise engine.unusable()
        if self.generation != generation:
            raise _CompactionVoid
