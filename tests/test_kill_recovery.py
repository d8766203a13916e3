"""Kill test: SIGKILL a writing process at random instants, then reopen.

The harness is ``aiokv._torture`` (also the ``aiokv torture`` command); its
docstring lists what each trial checks: every acknowledged write survives (at
"buffered", those before an acknowledged clear or flush), no value is torn,
each atomic batch is whole or absent, the store is the state after a prefix
of the writes that includes every write that must survive, reopening works
and leaves no temporary file, and a write after reopening survives another
reopen.

Set ``AIOKV_KILL_SEED`` to replay a run's random choices and
``AIOKV_KILL_TRIALS`` to change the number of trials of every level.
"""

from __future__ import annotations

import copy
import os
import random
import sys
import threading
import time
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from aiokv import KV, _torture
from aiokv._torture import (
    DURABILITIES,
    ChildRun,
    check_batches,
    check_per_key,
    check_prefix,
    expected_value,
    identify,
    is_intact,
    key_name,
    key_number,
    run_and_kill,
    same_contents,
    same_value,
    torture,
)

TRIALS = {"flush": 120, "fsync": 120,
          # A trial fills 1500 keys and checks a larger store: 90 of them
          # take no longer than 120 of the others.
          "buffered": 90}
if "AIOKV_KILL_TRIALS" in os.environ:
    TRIALS = dict.fromkeys(TRIALS, int(os.environ["AIOKV_KILL_TRIALS"]))
SEED = int(os.environ.get("AIOKV_KILL_SEED", str(random.SystemRandom().randrange(1 << 32))))
TIME_LIMIT = 600.0
"""Seconds; TRIALS ends the run long before on any machine that passes."""


@pytest.mark.parametrize("durability", DURABILITIES)
def test_sigkill_at_random_instants_keeps_what_the_level_promises(
    durability: str, tmp_path: Path
) -> None:
    violations: list[str] = []
    result = torture(tmp_path, TIME_LIMIT, durability, SEED, violations.append,
                     trials=TRIALS[durability])
    assert not result.violations, (f"AIOKV_KILL_SEED={SEED}: {len(result.violations)} of"
                                   f" {result.trials} trials broke a rule\n"
                                   + "\n\n".join(result.violations[:5]))
    assert violations == result.violations  # each was reported as it was found
    assert result.trials == result.kills == TRIALS[durability]
    assert result.writes_checked > 0
    assert not list(tmp_path.iterdir()), "the stores of a clean run are deleted"
    print(f"\n{durability}: seed {SEED}: {result}")


# -- the checks are not vacuous -------------------------------------------------


def _child(run: int, writes: list[tuple[str, str]], acked: range,
           durability: str = "flush") -> ChildRun:
    """A child that issued ``writes`` (op, key) in order and acknowledged ``acked``."""
    child = ChildRun(mode="writing", delay=0.0, run=run, durability=durability)
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


def test_an_acknowledged_delete_of_an_absent_key_keeps_the_writes_before_it() -> None:
    """At "fsync" it waits for them: the key may be absent because of one."""
    one, two = key_name(18), key_name(19)
    events = _events(("set", one), ("del", one), ("del", two), ("ack", 2))
    events[2]["present"] = False
    stale = {one: expected_value(one, 7, 0)}
    for durability in ("flush", "fsync"):
        child = _parsed(durability, events)
        assert child.absent_deletes == {2}
        assert child.floor == 3
        assert check_per_key({}, child, {}) == check_prefix({}, child, {}) == []
        # Neither write to ``one`` was acknowledged, but both precede one that was.
        assert check_per_key({}, child, stale) == []
        assert "that includes the 3 first" in check_prefix({}, child, stale)[0]


def test_at_buffered_the_checks_accept_the_loss_of_any_suffix_of_the_writes() -> None:
    one, two = key_name(10), key_name(11)
    before = {one: expected_value(one, 6, 0)}
    child = _child(7, [("set", one), ("set", two), ("del", one)], acked=range(3),
                   durability="buffered")
    for after in (before,
                  {one: expected_value(one, 7, 0)},
                  {one: expected_value(one, 7, 0), two: expected_value(two, 7, 1)},
                  {two: expected_value(two, 7, 1)}):
        assert check_per_key(before, child, after) == []
        assert check_prefix(before, child, after) == []
    # At "flush" the same loss is a lost acknowledged write.
    flushed = _child(7, [("set", one), ("set", two), ("del", one)], acked=range(3))
    assert "lost its acknowledged write #2" in check_per_key(before, flushed, before)[0]


def test_at_buffered_the_checks_catch_a_state_that_never_existed() -> None:
    """Issue 18: y=1 then x=1 were written; the store reopened with x=1 but y=0."""
    y, x = key_name(12), key_name(13)
    before = {y: expected_value(y, 6, 0), x: expected_value(x, 6, 1)}
    child = _child(7, [("set", y), ("set", x)], acked=range(2), durability="buffered")
    after = {y: before[y], x: expected_value(x, 7, 1)}
    # Each key alone may have lost its write, but x's without y's is no prefix.
    assert check_per_key(before, child, after) == []
    [problem] = check_prefix(before, child, after)
    assert problem.startswith("the store is not the state after any prefix of the writes (")
    assert (f"the nearest, after the 2 first, differs in 1 key: {y!r} holds its value"
            f" before the run, not write #0") in problem


def _events(*steps: tuple[str, object]) -> list[dict[str, object]]:
    """The child's lines for ``steps``: ("set", key), ("ack", seq), ("flush-start", n),
    ("batch", [["set", key], ["del", key]...])..."""
    events: list[dict[str, object]] = []
    seq = 0
    for kind, argument in steps:
        if kind == "batch":
            events.append({"e": "intent", "op": "batch", "key": "", "seq": seq,
                           "writes": argument})
            seq += 1
        elif kind in ("set", "del", "clear"):
            events.append({"e": "intent", "op": kind, "key": argument, "seq": seq,
                           "present": True})
            seq += 1
        elif kind == "ack":
            events.append({"e": "ack", "seq": argument})
        else:
            events.append({"e": kind, "n": argument})
    return events


def _parsed(durability: str, events: list[dict[str, object]]) -> ChildRun:
    child = ChildRun(mode="writing", delay=0.0, run=7, durability=durability)
    _torture._parse_events(events, child)
    assert child.problems == []
    return child


def test_at_buffered_an_acknowledged_flush_keeps_the_writes_acknowledged_before_it() -> None:
    one, two = key_name(14), key_name(15)
    events = _events(("set", one), ("ack", 0), ("set", two), ("ack", 1),
                     ("flush-start", 1), ("set", one), ("ack", 2), ("flush-done", 1),
                     ("set", two), ("ack", 3), ("flush-start", 2))
    child = _parsed("buffered", events)
    assert child.floor == 2
    assert child.must_survive == {0, 1}
    for after in ({one: expected_value(one, 7, 0), two: expected_value(two, 7, 1)},
                  {one: expected_value(one, 7, 2), two: expected_value(two, 7, 1)},
                  {one: expected_value(one, 7, 2), two: expected_value(two, 7, 3)}):
        assert check_per_key({}, child, after) == []
        assert check_prefix({}, child, after) == []
    lost = {one: expected_value(one, 7, 0)}
    assert f"{two!r} lost its acknowledged write #1 (set) (before #2, the floor" in (
        check_per_key({}, child, lost)[0])
    assert "that includes the 2 first" in check_prefix({}, child, lost)[0]
    # Without its acknowledgement the flush promises nothing: all may be lost.
    unfinished = _parsed("buffered", events[:7])
    assert unfinished.floor == 0
    assert check_per_key({}, unfinished, {}) == check_prefix({}, unfinished, {}) == []
    assert check_prefix({}, child, {}) != []


def test_at_buffered_an_acknowledged_clear_stays_done() -> None:
    one, two = key_name(16), key_name(17)
    child = _parsed("buffered", _events(("set", one), ("ack", 0), ("clear", ""), ("ack", 1),
                                        ("set", two), ("ack", 2)))
    assert child.floor == 2
    for after in ({}, {two: expected_value(two, 7, 2)}):
        assert check_per_key({}, child, after) == []
        assert check_prefix({}, child, after) == []
    stale = {one: expected_value(one, 7, 0)}
    assert "survived the acknowledged clear #1" in check_per_key({}, child, stale)[0]
    assert "that includes the 2 first" in check_prefix({}, child, stale)[0]


def test_the_checks_catch_a_batch_that_is_neither_whole_nor_absent() -> None:
    one, two, three, four = key_name(20), key_name(21), key_name(22), key_name(23)
    before = {key: expected_value(key, 6, number) for number, key in enumerate((two, three))}
    events = _events(("set", one), ("ack", 0), ("set", four),
                     ("batch", [["set", one], ["set", two], ["del", three]]),
                     ("set", two))
    child = _parsed("flush", events)
    assert child.batches == {2}
    assert child.intents[2:5] == [(2, "set", one), (2, "set", two), (2, "del", three)]
    batch = {one: expected_value(one, 7, 2), two: expected_value(two, 7, 2)}
    absent = {**before, one: expected_value(one, 7, 0), four: expected_value(four, 7, 1)}
    whole = {**batch, four: expected_value(four, 7, 1)}  # and ``three`` deleted
    # Only #0 is acknowledged: the batch whole or absent, the write to ``two``
    # after it there or not.
    for after in ({**before, one: expected_value(one, 7, 0)}, absent, whole,
                  {**whole, two: expected_value(two, 7, 3)}):
        assert check_per_key(before, child, after) == []
        assert check_batches(before, child, after) == []
        assert check_prefix(before, child, after) == []
    # Part of the batch: each key alone is fine, the batch is not.
    for after, seen, stale in (
        ({**absent, one: batch[one]}, one, [two, three]),
        ({key: value for key, value in absent.items() if key != three} | {two: batch[two]},
         two, [one]),
        (absent | batch, one, [three]),  # its sets without its delete
    ):
        assert check_per_key(before, child, after) == []
        assert check_batches(before, child, after) == [
            f"batch #2 is partial: {seen!r} holds its value, but {key!r} holds"
            f" {'write #0' if key == one else 'its value before the run'}, not what the"
            f" batch or a later write left" for key in stale]
        assert "not the state after any prefix" in check_prefix(before, child, after)[0]
    # Only its delete: no value of the batch to see, but no prefix either.
    deleted = {key: value for key, value in absent.items() if key != three}
    assert check_batches(before, child, deleted) == []
    assert "not the state after any prefix" in check_prefix(before, child, deleted)[0]
    # Acknowledged at "flush", the batch must be whole: absent is a loss.
    acked = _parsed("flush", [*events, {"e": "ack", "seq": 2}])
    assert "lost its acknowledged write #2 (set)" in check_per_key(before, acked, absent)[0]
    assert "that includes the 3 first" in check_prefix(before, acked, absent)[0]


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


def test_every_value_names_its_key_run_and_seq_across_the_whole_key_space() -> None:
    kinds = set()
    for number in (0, 7, 127, 128, 255, 256, 1007, 1499, _torture.KEY_LIMIT - 1):
        key = key_name(number)
        assert key_number(key) == number
        for run in (0, 1, _torture.RUN_LIMIT - 1):
            for seq in (*range(40), _torture.SEQ_LIMIT - 1):
                value = expected_value(key, run, seq)
                assert identify(value) == (key, run, seq)
                assert is_intact(key, value)
                assert not is_intact(key_name(number ^ 1), value)
                kinds.add(type(value))
    assert kinds == {int, float, str, bytes, dict, list}
    assert key_number(key_name(_torture.KEY_LIMIT)) is None
    assert key_number("k0012") is None  # one name per key


def test_contents_compare_key_by_key_in_any_order_with_exact_types() -> None:
    """A compaction may reorder the keys (scalars and containers go in separate
    frames): a reopened store that holds the same entries is the same store."""
    assert same_contents({"a": 1, "m": {"x": 1}}, {"m": {"x": 1}, "a": 1})
    assert not same_contents({"a": 1}, {"a": 1.0})
    assert not same_contents({"a": 1}, {"a": True})
    assert not same_contents({"a": 1}, {"a": 1, "b": 2})
    assert not same_contents({"m": {"x": 1, "y": 2}}, {"m": {"y": 2, "x": 1}})


# -- the fork server ----------------------------------------------------------------


def test_a_forked_child_that_exits_by_itself_is_reported(tmp_path: Path) -> None:
    """Its store cannot be opened: it exits with the traceback, before any kill."""
    store = tmp_path / "state.kv"
    store.mkdir()  # not a file: opening it fails
    forked = 0
    with _torture.ForkServer() as server:
        for seed in range(12):
            child = run_and_kill(store, "fsync", 0, random.Random(seed), server)
            if child.mode == "starting":  # a new interpreter, killed before it imports aiokv
                continue
            forked += 1
            assert any("exited by itself (status 1)" in problem for problem in child.problems)
            assert "Traceback" in child.stderr and str(store) in child.stderr
            assert child.began_opening and not child.opened
    assert forked >= 6


def test_closing_the_server_ends_the_child_it_runs(tmp_path: Path) -> None:
    with _torture.ForkServer() as server, open(tmp_path / "stderr", "wb") as stderr:
        child = _torture._Forked(server, tmp_path / "state.kv", "flush", 0, stderr)
        assert child.stdout.readline().startswith(b'{"e":"opening"}')
    # The server killed it as it ended: its output ends instead of running for LIFETIME.
    started = time.monotonic()
    child.stdout.read()
    child.stdout.close()
    assert time.monotonic() - started < 10


def test_the_server_signals_none_but_its_own_unreaped_child() -> None:
    with _torture.ForkServer() as server, pytest.raises(RuntimeError, match="not a child of"):
        server.stop(os.getpid())


def test_the_server_refuses_to_fork_what_a_child_must_not_inherit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store engine open in the server (or another thread) would be copied into the child."""
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    _torture._check_nothing_to_inherit()
    with KV(tmp_path / "state.kv"), pytest.raises(RuntimeError, match="1 engines"):
        _torture._check_nothing_to_inherit()
    monkeypatch.setattr(threading, "active_count", lambda: 2)
    with pytest.raises(RuntimeError, match="2 threads"):
        _torture._check_nothing_to_inherit()


def _same_value_by_definition(a: object, b: object) -> bool:
    """``same_value`` as its docstring says it, without the fast paths."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        return len(a) == len(b) and all(
            _same_value_by_definition(key_a, key_b)
            and _same_value_by_definition(a[key_a], b[key_b])
            for key_a, key_b in zip(a, b, strict=True))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same_value_by_definition, a, b))
    if isinstance(a, float):
        return repr(a) == repr(b)
    return a == b


_SCALARS = (st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True)
            | st.sampled_from([0.0, -0.0, 1.0, float("nan"), float("-inf")])
            | st.text(max_size=3) | st.binary(max_size=3))
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=2) | st.integers(0, 2), inner,
                                         max_size=3), max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_same_value_compares_types_order_and_float_bits_all_the_way_down(
    data: st.DataObject
) -> None:
    a = data.draw(_VALUES)
    # Often a itself or a copy of it, so that equal values are compared too.
    b = data.draw(st.sampled_from([a, copy.deepcopy(a)]) | _VALUES)
    assert same_value(a, b) == _same_value_by_definition(a, b)
    assert same_value(a, copy.deepcopy(a))
