"""The comparison suite's plan: every system once per repetition, in an order that moves."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from compare import in_turn  # noqa: E402

SYSTEMS = ["aiokv", "semidbm", "pickledb", "redis"]


@pytest.mark.parametrize("repetition", range(1, 9))
def test_each_repetition_runs_every_system_once(repetition: int) -> None:
    order = in_turn(SYSTEMS, repetition)
    assert sorted(order) == sorted(SYSTEMS)


def test_the_first_repetition_keeps_the_report_order() -> None:
    assert in_turn(SYSTEMS, 1) == SYSTEMS


def test_each_repetition_starts_one_system_later_the_skipped_ones_last() -> None:
    assert in_turn(SYSTEMS, 2) == ["semidbm", "pickledb", "redis", "aiokv"]
    assert in_turn(SYSTEMS, 3) == ["pickledb", "redis", "aiokv", "semidbm"]


def test_no_system_runs_first_twice_until_every_system_has() -> None:
    firsts = [in_turn(SYSTEMS, repetition)[0] for repetition in range(1, len(SYSTEMS) + 1)]
    assert sorted(firsts) == sorted(SYSTEMS)
    assert in_turn(SYSTEMS, len(SYSTEMS) + 1) == SYSTEMS


def test_no_systems_give_an_empty_order() -> None:
    assert in_turn([], 3) == []
