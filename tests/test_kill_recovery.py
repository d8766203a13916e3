"""Kill test: SIGKILL a writing process at random instants, then reopen.

The harness is ``aiokv._torture`` (also the ``aiokv torture`` command); its
docstring lists what each trial checks: every acknowledged write survives, no
value is torn, the store is the state after a prefix of the writes that
includes every acknowledged one, reopening works and leaves no temporary
file, and a write after reopening survives another reopen.

Set ``AIOKV_KILL_SEED`` to replay a run's random choices and
``AIOKV_KILL_TRIALS`` to change the number of trials per level.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import pytest

from aiokv import _torture
from aiokv._torture import (
    ChildRun,
    check_per_key,
    check_prefix,
    expected_value,
    key_name,
    run_and_kill,
    same_contents,
    torture,
)

TRIALS = int(os.environ.get("AIOKV_KILL_TRIALS", "120"))
SEED = int(os.environ.get("AIOKV_KILL_SEED", str(random.SystemRandom().randrange(1 << 32))))
TIME_LIMIT = 600.0
"""Seconds; TRIALS ends the run long before on any machine that passes."""


@pytest.mark.parametrize("durability", ["flush", "fsync"])
def test_sigkill_at_random_instants_loses_no_acknowledged_write(
    durability: str, tmp_path: Path
) -> None:
    violations: list[str] = []
    result = torture(tmp_path, TIME_LIMIT, durability, SEED, violations.append,
                     trials=TRIALS)
    assert not result.violations, (f"AIOKV_KILL_SEED={SEED}\n"
                                   + "\n\n".join(result.violations[:5]))
    assert violations == result.violations  # each was reported as it was found
    assert result.trials == result.kills == TRIALS
    assert result.writes_checked > 0
    assert not list(tmp_path.iterdir()), "the stores of a clean run are deleted"
    print(f"\n{durability}: seed {SEED}: {result}")


# -- the checks are not vacuous -------------------------------------------------


def _child(run: int, writes: list[tuple[str, str]], acked: range) -> ChildRun:
    """A child that issued ``writes`` (op, key) in order and acknowledged ``acked``."""
    child = ChildRun(mode="writing", delay=0.0, run=run)
    child.intents = [(seq, op, key) for seq, (op, key) in enumerate(writes)]
    child.acked = set(acked)
    return child


def test_the_checks_accept_any_state_they_should() -> None:
    key = key_name(1)
    child = _child(7, [("set", key), ("set", key), ("del", key)], acked=range(1))
    for after in ({key: expected_value(key, 7, 0)}, {key: expected_value(key, 7, 1)}, {}):
        assert check_per_key({}, child, after) == []
        assert check_prefix({}, child, after) == []


def test_the_checks_catch_a_lost_acknowledged_write() -> None:
    key = key_name(2)
    child = _child(7, [("set", key), ("set", key)], acked=range(2))
    after = {key: expected_value(key, 7, 0)}
    assert "lost its acknowledged write #1" in check_per_key({}, child, after)[0]
    assert "not the state after any prefix" in check_prefix({}, child, after)[0]


def test_the_checks_catch_a_torn_value() -> None:
    key = key_name(3)
    child = _child(7, [("set", key)], acked=range(1))
    value = expected_value(key, 7, 0)
    torn = value[:-1] if isinstance(value, (str, bytes)) else repr(value)[:-1]
    assert "torn or foreign" in check_per_key({}, child, {key: torn})[0]


def test_the_checks_catch_writes_applied_out_of_order() -> None:
    one, two = key_name(4), key_name(5)
    child = _child(7, [("set", one), ("set", two)], acked=range(0))
    # Each key alone is allowed (neither write was acknowledged), but the
    # second write without the first is no prefix of the writes.
    after = {two: expected_value(two, 7, 1)}
    assert check_per_key({}, child, after) == []
    assert check_prefix({}, child, after) != []


def test_the_checks_treat_a_clear_as_a_delete_of_every_key() -> None:
    one, two, three = key_name(6), key_name(8), key_name(9)
    before = {one: expected_value(one, 6, 0), three: expected_value(three, 6, 1)}
    child = _child(7, [("set", two), ("clear", ""), ("set", one), ("set", two)],
                   acked=range(3))
    # Only valid because of the acknowledged clear #1: ``three`` (never
    # written by the child) is gone, and so is the acknowledged write #0.
    for after in ({one: expected_value(one, 7, 2)},
                  {one: expected_value(one, 7, 2), two: expected_value(two, 7, 3)}):
        assert check_per_key(before, child, after) == []
        assert check_prefix(before, child, after) == []
    # A key resurrected after the acknowledged clear, with no later write.
    resurrected = {one: expected_value(one, 7, 2), three: expected_value(three, 6, 1)}
    assert "survived the acknowledged clear #1" in check_per_key(before, child, resurrected)[0]
    assert "not the state after any prefix" in check_prefix(before, child, resurrected)[0]
    # So is an acknowledged write made before the clear.
    stale = {one: expected_value(one, 7, 2), two: expected_value(two, 7, 0)}
    assert "survived the acknowledged clear #1" in check_per_key(before, child, stale)[0]
    assert check_prefix(before, child, stale) != []
    # Before its ack, the clear may or may not have happened.
    unacked = _child(7, [("set", two), ("clear", "")], acked=range(1))
    for after in ({**before, two: expected_value(two, 7, 0)}, {}):
        assert check_per_key(before, unacked, after) == []
        assert check_prefix(before, unacked, after) == []


# -- the harness itself -----------------------------------------------------------


def test_a_child_that_exits_by_itself_is_reported_not_signalled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """poll() reaps such a child: signalling its pid then would raise (or hit a stranger)."""
    def exits_at_once(path: Path, durability: str, run: int) -> list[str]:
        return [sys.executable, "-c", "import sys; print('{\"e\": \"opening\"}'); sys.exit(3)"]

    monkeypatch.setattr(_torture, "_child_command", exits_at_once)
    store = tmp_path / "state.kv"
    for seed in range(4):  # every kill mode waits for a point this child never reaches
        started = time.monotonic()
        child = run_and_kill(store, "fsync", 0, random.Random(seed))
        assert time.monotonic() - started < _torture.WAIT_LIMIT / 2
        assert any("exited by itself (status 3)" in problem for problem in child.problems)


def test_a_relative_directory_holds_the_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The children run from the package's directory: the path they get is absolute."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    result = torture("runs", TIME_LIMIT, "flush", SEED, pytest.fail, trials=3)
    assert result.trials == result.kills == 3
    assert not result.violations
    assert result.writes_checked > 0


def test_contents_compare_key_by_key_in_any_order_with_exact_types() -> None:
    """A compaction may reorder the keys (scalars and containers go in separate
    frames): a reopened store that holds the same entries is the same store."""
    assert same_contents({"a": 1, "m": {"x": 1}}, {"m": {"x": 1}, "a": 1})
    assert not same_contents({"a": 1}, {"a": 1.0})
    assert not same_contents({"a": 1}, {"a": True})
    assert not same_contents({"a": 1}, {"a": 1, "b": 2})
    assert not same_contents({"m": {"x": 1, "y": 2}}, {"m": {"y": 2, "x": 1}})
