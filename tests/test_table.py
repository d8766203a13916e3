"""The in-memory table on its own: what it holds through puts, removes, undos,
expiries and a compaction's split state, and the size it estimates.

``Table`` does no I/O and takes no lock, so these tests drive it directly,
with a clock they set by hand; the engine's use of it is tested through the
store everywhere else.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aiokv._format import HEADER_SIZE, Value, entry_size
from aiokv._table import FOLD_BATCH, MISSING, Table, expiry_size


class HandClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def exact_size(table: Table) -> int:
    """What ``live_bytes`` estimates: the entries' size in a compacted log."""
    items = table.live_items() if not table.expiries else [
        (key, value) for key, value in table.entries.items() if value is not MISSING
    ] + list(table.added.items())
    return (HEADER_SIZE + sum(entry_size(key, value) for key, value in items)
            + sum(expiry_size(key) for key in table.expiries))


def visible(table: Table) -> dict[str, Value]:
    return dict(table.live_items())


def test_a_key_put_during_a_walk_waits_aside_and_is_folded_back() -> None:
    table = Table(HandClock())
    table.put("old", 1, None)
    walk = table.start_split()
    table.put("new", 2, None)
    assert "new" not in table.entries and table.added == {"new": 2}
    assert table.lookup("new") == 2
    assert list(walk) == [("old", 1)]
    assert table.fold_batch()
    assert table.entries == {"old": 1, "new": 2} and not table.split


def test_a_key_removed_during_a_walk_leaves_a_tombstone_until_the_fold() -> None:
    table = Table(HandClock())
    table.put("old", 1, None)
    table.start_split()
    assert table.remove("old") == (1, None)
    assert table.entries["old"] is MISSING and table.gone == {"old"}
    assert table.lookup("old") is MISSING
    assert visible(table) == {}
    assert table.fold_batch()
    assert "old" not in table.entries and not table.gone


def test_the_fold_takes_batches_and_ends_the_split_with_the_last() -> None:
    table = Table(HandClock())
    table.start_split()
    for i in range(FOLD_BATCH + 10):
        table.put(f"k{i}", i, None)
    assert not table.fold_batch()
    assert table.split and not table.frozen and len(table.added) == 10
    assert table.fold_batch()
    assert len(table.entries) == FOLD_BATCH + 10 and not table.split


def test_an_expired_key_is_invisible_before_the_sweep_removes_it() -> None:
    clock = HandClock()
    table = Table(clock)
    table.put("short", "v", clock.now + 5)
    table.put("long", "w", clock.now + 50)
    clock.now += 10
    assert table.live_value("short") is MISSING
    assert table.lookup("short") == "v"  # held until swept
    assert table.count_expired() == 1 and table.held == 2
    assert visible(table) == {"long": "w"}
    due = table.pop_expired(clock.now)
    assert due == (clock.now - 5, "short")
    assert table.pop_expired(clock.now) is None


def test_a_changed_expiry_leaves_a_stale_heap_item_that_the_caller_skips() -> None:
    clock = HandClock()
    table = Table(clock)
    table.put("k", 1, clock.now + 1)
    table.put("k", 2, clock.now + 100)
    clock.now += 2
    when, key = table.pop_expired(clock.now) or (None, None)
    assert key == "k" and table.expiries["k"] != when


def test_taking_a_replayed_log_drops_what_has_expired_and_indexes_the_rest() -> None:
    clock = HandClock()
    table = Table(clock)
    dropped = table.take({"a": 1, "b": 2, "c": 3}, {"a": clock.now - 1, "b": clock.now + 9})
    assert dropped == ["a"]
    assert table.entries == {"b": 2, "c": 3} and table.expiries == {"b": clock.now + 9}
    assert table.heap == [(clock.now + 9, "b")]


def test_pruning_rebuilds_a_heap_made_mostly_of_stale_items() -> None:
    clock = HandClock()
    table = Table(clock)
    for i in range(3000):  # each expiry earlier than the last: one item each
        table.put("k", i, clock.now + 4000 - i)
    assert len(table.heap) == 3000
    table.prune_heap()
    assert table.heap == [(clock.now + 1001, "k")]


def test_a_later_expiry_adds_no_heap_item_the_earlier_one_stands_for_it() -> None:
    clock = HandClock()
    table = Table(clock)
    for i in range(100):
        table.put("session", i, clock.now + 60 + i)
    assert table.heap == [(clock.now + 60, "session")]
    assert table.expiries["session"] == clock.now + 159


KEYS = st.sampled_from([f"k{i}" for i in range(12)])
VALUES = st.one_of(st.integers(-5, 5), st.floats(allow_nan=False, width=32),
                   st.text(max_size=6), st.none(), st.booleans())
OPERATIONS = st.lists(st.one_of(
    st.tuples(st.just("put"), KEYS, VALUES, st.sampled_from([None, 5.0, 500.0])),
    st.tuples(st.just("remove"), KEYS),
    st.tuples(st.just("undo_last")),
    st.tuples(st.just("split")),
    st.tuples(st.just("fold")),
    st.tuples(st.just("tick")),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(OPERATIONS)
def test_any_sequence_of_changes_splits_and_folds_holds_what_a_dict_would(
        operations: list[tuple[object, ...]]) -> None:
    clock = HandClock()
    table = Table(clock)
    model: dict[str, tuple[Value, float | None]] = {}
    last: tuple[str, tuple[object, float | None], dict[str, tuple[Value, float | None]]] | None
    last = None
    for operation in operations:
        kind = operation[0]
        if kind == "put":
            _, key, value, ttl = operation
            assert isinstance(key, str)
            expires = None if ttl is None else clock.now + ttl  # type: ignore[operator]
            before = dict(model)
            last = (key, table.put(key, value, expires), before)  # type: ignore[arg-type]
            model[key] = (value, expires)  # type: ignore[assignment]
        elif kind == "remove":
            key = operation[1]
            assert isinstance(key, str)
            before = dict(model)
            last = (key, table.remove(key), before)
            model.pop(key, None)
        elif kind == "undo_last" and last is not None:
            key, (old, old_expiry), before = last
            table.restore(key, old, old_expiry)
            model = before
            last = None
        elif kind == "split" and not table.split:
            table.start_split()
        elif kind == "fold" and table.split:
            while not table.fold_batch():
                pass
        elif kind == "tick":
            clock.now += 10
        now = clock.now
        live = {key: value for key, (value, when) in model.items() if when is None or when > now}
        assert visible(table) == live
        for key in {f"k{i}" for i in range(12)}:
            assert (table.live_value(key) is not MISSING) == (key in live)
            if key in model:
                assert table.lookup(key) == model[key][0]
                assert table.expiries.get(key) == model[key][1]
        assert table.held == len(model)
        assert table.live_bytes == exact_size(table)
