"""The queue of unwritten frames and when "fsync" cuts it into batches.

``PendingWrites`` and ``CutPolicy`` are plain objects with an injected clock:
these tests drive the clock by hand, so no test sleeps. The engine's use of
them (a real writer thread, real fsyncs) is tested in test_group_commit.py.
"""

from __future__ import annotations

import pytest

from aiokv._commit import Commit
from aiokv._group_commit import MIN_CUT, MIN_OVERLAP, CutPolicy, PendingWrites


class HandClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def queue(writes: PendingWrites, count: int, first: int = 0) -> list[Commit | None]:
    return [writes.add(f"frame{i}".encode(), (f"k{i}", None, None))
            for i in range(first, first + count)]


def fsync_queue(clock: HandClock, batch_seconds: float | None = 0.005) -> PendingWrites:
    writes = PendingWrites(group_commit=True, clock=clock)
    if batch_seconds is not None:
        writes.policy.batch_took(batch_seconds)
    return writes


# -- the policy ---------------------------------------------------------------


def test_a_policy_that_has_seen_no_batch_never_cuts() -> None:
    assert not CutPolicy().due(queued=10_000, waited=60.0)


def test_the_policy_cuts_once_enough_frames_have_waited_as_long_as_a_batch_takes() -> None:
    policy = CutPolicy()
    policy.batch_took(0.004)
    assert policy.due(queued=MIN_CUT, waited=0.004)
    assert not policy.due(queued=MIN_CUT - 1, waited=1.0)
    assert not policy.due(queued=MIN_CUT, waited=0.0039)


def test_the_policy_averages_batch_times_weighting_the_newest_by_a_quarter() -> None:
    policy = CutPolicy()
    policy.batch_took(0.004)
    policy.batch_took(0.008)
    assert policy.cut_after == pytest.approx(0.005)


def test_fsyncs_too_fast_to_overlap_turn_cutting_off() -> None:
    policy = CutPolicy()
    policy.batch_took(MIN_OVERLAP / 2)
    assert policy.cut_after is None
    assert not policy.due(queued=1000, waited=1.0)


# -- the queue ----------------------------------------------------------------


def test_writes_queued_together_share_one_commit_until_a_cut() -> None:
    writes = fsync_queue(HandClock())
    commits = queue(writes, 40)
    assert len({id(commit) for commit in commits}) == 1
    assert writes.cut == 0
    assert writes.last_commit() is commits[0]


def test_frames_that_waited_longer_than_a_batch_takes_are_cut_into_their_own_batch() -> None:
    clock = HandClock()
    writes = fsync_queue(clock, batch_seconds=0.005)
    before = queue(writes, MIN_CUT)
    clock.now += 0.05
    cut_here = queue(writes, 1, first=MIN_CUT)[0]
    after = queue(writes, 23, first=MIN_CUT + 1)
    # The write that found them waiting joins the cut batch: 17 and 23.
    assert writes.cut == MIN_CUT + 1
    assert cut_here is before[0]
    assert all(commit is after[0] for commit in after)
    assert after[0] is not before[0]
    commit, frames, undo = writes.take_batch()
    assert commit is before[0] and len(frames) == len(undo) == MIN_CUT + 1
    assert writes.inflight is commit and writes.waiting == 40
    commit, frames, _ = writes.take_batch()
    assert commit is after[0] and len(frames) == 23


def test_nothing_is_cut_while_a_batch_is_in_flight() -> None:
    clock = HandClock()
    writes = fsync_queue(clock)
    queue(writes, 3)
    writes.take_batch()
    queue(writes, 50, first=3)
    clock.now += 1.0
    queue(writes, 1, first=53)
    assert writes.cut == 0
    writes.batch_done(0.005)
    assert writes.inflight is None and writes.waiting == 51


def test_the_newest_queued_write_is_the_commit_to_wait_for() -> None:
    clock = HandClock()
    writes = fsync_queue(clock)
    assert writes.last_commit() is None
    cut = queue(writes, MIN_CUT)[0]
    clock.now += 1.0
    queue(writes, 1, first=MIN_CUT)
    assert writes.last_commit() is cut  # everything queued is in the cut batch
    later = queue(writes, 1, first=MIN_CUT + 1)[0]
    assert writes.last_commit() is later
    writes.take_batch()
    writes.take_batch()
    assert writes.last_commit() is later  # in flight
    writes.batch_done(0.005)
    assert writes.last_commit() is None


def test_a_failed_batch_takes_every_later_write_with_it() -> None:
    clock = HandClock()
    writes = fsync_queue(clock)
    queue(writes, MIN_CUT)
    clock.now += 1.0
    queue(writes, 5, first=MIN_CUT)
    _, _, undo = writes.take_batch()
    later, failed = writes.fail()
    assert [key for key, _, _ in undo] == [f"k{i}" for i in range(MIN_CUT + 1)]
    assert [key for key, _, _ in later] == [f"k{i}" for i in range(MIN_CUT + 1, MIN_CUT + 5)]
    assert failed and all(not commit.done for commit in failed)
    assert writes.waiting == 0 and writes.inflight is None and writes.last_commit() is None


def test_a_failed_batch_with_nothing_after_it_fails_no_other_commit() -> None:
    writes = fsync_queue(HandClock())
    queue(writes, 3)
    writes.take_batch()
    assert writes.fail() == ([], [])


def test_a_clear_drops_the_queue_and_returns_the_commits_to_settle() -> None:
    clock = HandClock()
    writes = fsync_queue(clock)
    first = queue(writes, MIN_CUT)[0]
    clock.now += 1.0
    second = queue(writes, 2, first=MIN_CUT)[1]
    superseded = writes.drop()
    assert {id(commit) for commit in superseded} == {id(first), id(second)}
    assert len(writes) == 0 and writes.last_commit() is None
    assert writes.drop() == []


def test_buffered_writes_leave_the_queue_as_they_are_written_oldest_first() -> None:
    clock = HandClock()
    writes = PendingWrites(group_commit=False, clock=clock)
    assert queue(writes, 5) == [None] * 5
    assert writes.since == 100.0
    clock.now += 3.0
    queue(writes, 1, first=5)
    assert writes.since == 100.0  # the oldest frame's time
    writes.written(2)
    assert writes.frames[0] == b"frame2" and writes.undo[0][0] == "k2"
    assert len(writes) == writes.waiting == 4
