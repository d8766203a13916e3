"""Reads take no lock, yet never miss an acknowledged key while a compaction
folds its split state back (issue: 7 and 18 misses in two 20 s runs).

While a compaction walks the entries, new keys wait in ``_added`` and deleted
ones leave a tombstone; afterwards the fold moves them back, a batch per
lock hold. ``get()`` and ``exists()`` take no lock, so they may run between
any two steps of the fold, and the fold may run between any two steps of
theirs. These tests force each such interleaving deterministically: dicts
that run a probe (every acknowledged key read through ``get`` and
``exists``) before and after each change the fold makes, and a reader whose
own lookups are followed by a whole fold before it goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aiokv._engine import Engine

OLD = [f"old{i}" for i in range(40)]
NEW = [f"new{i}" for i in range(40)]
GONE = OLD[::4]
"""Old keys deleted during the split."""
REVIVED = NEW[::5] + GONE[::2]
"""Keys written again after the walk ended, while the fold runs."""


class ProbingDict(dict[str, Any]):
    """A dict that calls ``probe`` before and after every change made to it."""

    def __init__(self, data: dict[str, Any], probe: Callable[[], None]) -> None:
        super().__init__(data)
        self.probe = probe

    def __setitem__(self, key: str, value: Any) -> None:
        self.probe()
        super().__setitem__(key, value)
        self.probe()

    def __delitem__(self, key: str) -> None:
        self.probe()
        super().__delitem__(key)
        self.probe()

    def update(self, items: Any = (), /, **extra: Any) -> None:
        for key, value in dict(items, **extra).items():
            self[key] = value

    def pop(self, key: str, *default: Any) -> Any:
        self.probe()
        value = super().pop(key, *default)
        self.probe()
        return value

    def popitem(self) -> tuple[str, Any]:
        self.probe()
        item = super().popitem()
        self.probe()
        return item


class FoldingDict(dict[str, Any]):
    """A dict whose ``get`` lets the whole fold run after it looked, once."""

    def __init__(self, data: dict[str, Any], engine: Engine) -> None:
        super().__init__(data)
        self.engine = engine
        self.armed = False

    def get(self, key: str, default: Any = None) -> Any:
        value = super().get(key, default)
        if self.armed:
            self.armed = False
            self.engine.compaction.fold_split()
        return value


def split_store(path: Path) -> tuple[Engine, dict[str, object]]:
    """A store halfway through a compaction: walk done, fold not yet begun.

    Returns it with what every reader must see (the acknowledged state).
    """
    engine = Engine(path)
    engine.open()
    for i, key in enumerate(OLD):
        engine.set(key, i)
    with engine.lock:
        engine.table.frozen = engine.table.split = True
    for i, key in enumerate(NEW):
        engine.set(key, -i)
    for key in GONE:
        engine.delete(key)
    assert set(engine.table.added) == set(NEW)
    assert engine.table.gone == set(GONE)
    with engine.lock:
        engine.table.frozen = False  # as the fold's first step does
    expected: dict[str, object] = {key: i for i, key in enumerate(OLD) if key not in GONE}
    expected.update({key: -i for i, key in enumerate(NEW)})
    return engine, expected


def probe_of(engine: Engine, expected: dict[str, object], misses: list[str]
             ) -> Callable[[], None]:
    def probe() -> None:
        for key, value in expected.items():
            if engine.get(key) != value:
                misses.append(f"get({key!r})")
            if not engine.exists(key):
                misses.append(f"exists({key!r})")
        for key in GONE:
            if key in expected:
                continue
            if engine.get(key) is not None or engine.exists(key):
                misses.append(f"deleted {key!r} seen")
    return probe


def test_no_read_misses_an_acknowledged_key_between_any_two_steps_of_the_fold(
        tmp_path: Path) -> None:
    engine, expected = split_store(tmp_path / "state.kv")
    misses: list[str] = []
    probe = probe_of(engine, expected, misses)
    engine.table.entries = ProbingDict(engine.table.entries, probe)
    engine.table.added = ProbingDict(engine.table.added, probe)
    engine.compaction.fold_split()
    assert not engine.table.split and not engine.table.added and not engine.table.gone
    assert misses == []
    probe()
    assert misses == []
    engine.close()


@pytest.mark.parametrize("where", ["entries", "added"])
def test_a_fold_between_a_readers_own_lookups_makes_it_miss_nothing(
        tmp_path: Path, where: str) -> None:
    engine, expected = split_store(tmp_path / "state.kv")
    wrong: list[str] = []
    for key, value in expected.items():
        if not engine.table.split:  # the previous key's read ended the split: begin anew
            engine.close()
            engine, expected = split_store(tmp_path / f"state-{key}.kv")
        table = engine.table
        folding = FoldingDict(table.entries if where == "entries" else table.added, engine)
        if where == "entries":
            engine.table.entries = folding
        else:
            engine.table.added = folding
        folding.armed = True
        got = engine.get(key)
        if got != value:
            wrong.append(f"get({key!r}) gave {got!r}")
    assert wrong == []
    engine.close()


def test_a_key_written_again_while_the_split_ends_is_never_missed(tmp_path: Path) -> None:
    engine, expected = split_store(tmp_path / "state.kv")
    misses: list[str] = []
    writing: dict[str, object] = {}

    def probe() -> None:
        for key, value in expected.items():
            allowed = (value, writing.get(key, value))
            if engine.get(key) not in allowed:
                misses.append(f"get({key!r})")
            if not engine.exists(key):
                misses.append(f"exists({key!r})")

    engine.table.entries = ProbingDict(engine.table.entries, probe)
    engine.table.added = ProbingDict(engine.table.added, probe)
    for key in REVIVED:  # keys in _added, and tombstones: _put takes them back
        writing[key] = f"again-{key}"
        engine.set(key, writing[key])
        expected[key] = writing.pop(key)
    engine.compaction.fold_split()
    assert misses == []
    assert engine.items() == expected
    engine.close()
    reopened = Engine(tmp_path / "state.kv")
    reopened.open()
    assert reopened.items() == expected
    reopened.close()
