"""What the writer thread does each round (plan_round), decided without a
thread or a clock: the times below are given, not waited for."""

from __future__ import annotations

import logging

import pytest

from aiokv._writer_thread import FailureLog, RoundPlan, plan_round


def plan(now: float, *, group_commit: bool = False, queued_since: float | None = None,
         unsynced_since: float | None = None, sweep_in: float | None = None) -> RoundPlan:
    """plan_round with flush_interval 0.1 s and fsync_interval 1 s."""
    return plan_round(now, group_commit=group_commit, queued_since=queued_since,
                      flush_interval=0.1, unsynced_since=unsynced_since, fsync_interval=1.0,
                      sweep_in=sweep_in)


def test_with_nothing_held_or_unsynced_it_waits_for_the_sweep_or_a_wake_up() -> None:
    assert plan(50.0) == RoundPlan(False, False, None)
    assert plan(50.0, sweep_in=0.7) == RoundPlan(False, False, 0.7)


def test_at_fsync_queued_frames_are_committed_at_once() -> None:
    assert plan(50.0, group_commit=True, queued_since=49.999, sweep_in=1.0) == RoundPlan(
        True, False, None)


def test_buffered_frames_wait_flush_interval_then_are_written() -> None:
    early = plan(50.0, queued_since=49.97)
    assert not early.write and early.wait == pytest.approx(0.07)
    assert plan(50.1, queued_since=50.0).write


def test_written_data_is_fsynced_fsync_interval_after_the_first_unsynced_write() -> None:
    early = plan(10.4, unsynced_since=10.0, sweep_in=5.0)
    assert not early.sync and early.wait == pytest.approx(0.6)
    assert plan(11.0, unsynced_since=10.0, sweep_in=5.0).sync


def test_the_wait_is_the_soonest_of_what_is_pending() -> None:
    soonest = plan(10.0, queued_since=9.95, unsynced_since=9.5, sweep_in=0.3)
    assert not soonest.write and not soonest.sync
    assert soonest.wait == pytest.approx(0.05)


def test_a_failure_is_logged_in_full_once_then_briefly_until_a_round_succeeds(
        caplog: pytest.LogCaptureFixture) -> None:
    failures = FailureLog("state.kv")
    with caplog.at_level(logging.DEBUG, logger="aiokv"):
        for _ in range(3):
            failures.report("the expiry sweep", OSError(5, "Input/output error"))
        failures.report("a background write", OSError(28, "No space left on device"))
        failures.succeeded()
        failures.report("a background write", OSError(28, "No space left on device"))
    levels = [record.levelno for record in caplog.records]
    assert levels == [logging.ERROR, logging.DEBUG, logging.DEBUG, logging.ERROR,
                      logging.ERROR]
    assert all("state.kv" in record.getMessage() for record in caplog.records)
