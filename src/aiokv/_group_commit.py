"""Writes acknowledged in memory but not yet in the log, and how "fsync" batches them.

At "buffered" and "fsync" a write changes memory at once and queues its frame
here; the engine's writer thread takes the frames from here and writes them.
Each frame comes with its undo, what memory held for the key before it: a
failed batch restores that, and a compaction's walk reads it, because a
queued write may still be rolled back and the walk must take each key as the
log holds it.

At "fsync" every writer waits on a ``Commit`` settled once its batch is
fsynced. Group commit runs as a pipeline: writers woken by one batch queue
the next one while the writer thread has nothing to write. When queueing
takes longer than an fsync, the frames queued so far (``MIN_CUT`` or more)
are cut into a batch of their own once they have waited as long as recent
fsyncs took (``CutPolicy``): the writer thread commits them while the rest
are still being queued, and from then on the two groups of writers take
turns. No cut while a batch is being written: whatever queues meanwhile
shares the next fsync.

Nothing here does I/O, starts a thread or takes a lock: ``PendingWrites``
is guarded by the engine's ``lock``, held around every call. The clock is
injected, so the policy is tested without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from ._commit import Commit

Undo = tuple[str, object, float | None]
"""(key, value before the write or the engine's _MISSING, expiry before)."""
FrameUndo = Undo | list[Undo]
"""What a frame's undo is: one Undo, or a list of them (an atomic batch's
frame, oldest change first)."""


def each_undo(undo: Iterable[FrameUndo]) -> Iterator[Undo]:
    """Every Undo of ``undo`` (one per frame, or a list for a batch's frame), in order."""
    for entry in undo:
        if type(entry) is list:
            yield from entry
        else:
            yield entry  # type: ignore[misc]

MIN_CUT = 16
"""Fewest queued frames worth a batch of their own."""
MIN_OVERLAP = 0.0001
"""An fsync faster than this leaves nothing worth overlapping: another batch
would cost more than it saves, so nothing is cut."""
SYNC_TIME_WEIGHT = 0.25
"""Weight of the newest batch in the running average of write + fsync time."""


class CutPolicy:
    """When queued "fsync" writes become a batch of their own.

    Learns how long a batch takes to write and fsync (a running average) and
    says a queue is due for a cut once it holds ``MIN_CUT`` frames that have
    waited that long. Owned by one ``PendingWrites``; no lock of its own.
    """

    def __init__(self) -> None:
        self.average: float | None = None
        """Running average of a batch's write + fsync time, seconds."""
        self.cut_after: float | None = None
        """How long queued frames wait before they are cut (None: never)."""

    def batch_took(self, seconds: float) -> None:
        """A batch was written and fsynced in ``seconds``."""
        average = self.average
        average = seconds if average is None else average + SYNC_TIME_WEIGHT * (seconds - average)
        self.average = average
        self.cut_after = average if average >= MIN_OVERLAP else None

    def due(self, queued: int, waited: float) -> bool:
        """Whether ``queued`` frames, the oldest ``waited`` seconds old, are a batch now."""
        return self.cut_after is not None and queued >= MIN_CUT and waited >= self.cut_after


class PendingWrites:
    """The queue of frames the writer thread has yet to write, oldest first.

    Fields are guarded by the engine's ``lock``. ``frames[i]`` comes with
    ``undo[i]``. At "fsync" (``group_commit``) the first ``cut`` frames, if
    any, are a batch of their own with the commit ``cut_commit``; the frames
    after them share ``commit``; ``inflight`` is the batch being written.
    """

    def __init__(self, *, group_commit: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.group_commit = group_commit
        self._clock = clock
        self.policy = CutPolicy()
        self.frames: list[bytes] = []
        self.undo: list[FrameUndo] = []
        self.since = 0.0
        """When the oldest frame still queued (or the newest cut) was queued."""
        self.commit = Commit()
        self.cut = 0
        self.cut_commit: Commit | None = None
        self.inflight: Commit | None = None
        self.inflight_frames = 0

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def waiting(self) -> int:
        """Writes acknowledged (or waited on) but not written yet: queued or in flight."""
        return len(self.frames) + self.inflight_frames

    def add(self, frame: bytes, undo: FrameUndo) -> Commit | None:
        """Queue one frame; at "fsync", the commit its writer waits on.

        May cut the frames queued so far into a batch (see ``CutPolicy``).
        """
        frames = self.frames
        if not frames:
            self.since = self._clock()
        frames.append(frame)
        self.undo.append(undo)
        if not self.group_commit:
            return None
        commit = self.commit
        if self.inflight is None and not self.cut and self.policy.cut_after is not None:
            now = self._clock()
            if self.policy.due(len(frames), now - self.since):
                self.cut = len(frames)
                self.cut_commit, self.commit = commit, Commit()
                self.since = now
        return commit

    def last_commit(self) -> Commit | None:
        """The commit whose settling makes every queued write durable (None if none)."""
        if len(self.frames) > self.cut:
            return self.commit
        if self.cut:
            return self.cut_commit
        return self.inflight

    def take_batch(self) -> tuple[Commit, list[bytes], list[FrameUndo]]:
        """The next batch to commit: the cut frames if any, else all; now in flight."""
        cut = self.cut
        if not cut:
            frames, self.frames = self.frames, []
            undo, self.undo = self.undo, []
            commit, self.commit = self.commit, Commit()
        else:
            cut_commit = self.cut_commit
            assert cut_commit is not None
            commit = cut_commit
            self.cut, self.cut_commit = 0, None
            frames, self.frames = self.frames[:cut], self.frames[cut:]
            undo, self.undo = self.undo[:cut], self.undo[cut:]
        if frames:
            self.inflight = commit
            self.inflight_frames = len(frames)
        return commit, frames, undo

    def batch_done(self, seconds: float) -> None:
        """The batch in flight is written and fsynced; it took ``seconds``."""
        self.inflight = None
        self.inflight_frames = 0
        self.policy.batch_took(seconds)

    def written(self, count: int) -> None:
        """The oldest ``count`` frames are written ("buffered"): they leave the queue."""
        del self.frames[:count]
        del self.undo[:count]

    def fail(self) -> tuple[list[FrameUndo], list[Commit]]:
        """A batch failed: everything queued after it goes too.

        Returns the undo of the frames still queued (oldest first) and, if
        there were any, the commits their writers wait on, to fail.
        """
        later, self.undo = self.undo, []
        self.frames = []
        self.inflight = None
        self.inflight_frames = 0
        failed = [commit for commit in (self.cut_commit, self.commit) if commit is not None]
        self.commit, self.cut, self.cut_commit = Commit(), 0, None
        return later, failed if later else []

    def drop(self) -> list[Commit]:
        """clear() supersedes every queued write: empty the queue.

        Returns the commits their writers wait on, to settle once the clear
        is durable.
        """
        superseded = [commit for commit in (self.cut_commit, self.commit)
                      if commit is not None] if self.undo else []
        self.frames = []
        self.undo = []
        self.commit = Commit()
        self.cut, self.cut_commit = 0, None
        return superseded

    def waited_on(self) -> list[Commit]:
        """Every commit a writer may be waiting on (the writer thread is gone)."""
        return [commit for commit in (self.inflight, self.cut_commit, self.commit)
                if commit is not None]
