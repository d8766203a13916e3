"""The comparison suite's plan: every system once per repetition, in an order that moves."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from compare import (  # noqa: E402
    DOCS_CHART,
    DOCS_PAGE,
    WORKLOADS,
    Results,
    Selection,
    chart_bars,
    in_turn,
    outputs,
    parse_args,
)
from systems import catalogue, describe  # noqa: E402

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


# -- what a run writes, and what its chart marks ---------------------------------


@pytest.mark.parametrize(("argv", "expected"), [
    (["--quick"], (None, None)),
    ([], (None, None)),
    (["--page", "out.md"], ("out.md", None)),
    (["--chart", "out.png"], (None, "out.png")),
    (["--write-docs"], (DOCS_PAGE, DOCS_CHART)),
    (["--write-docs", "--page", "out.md"], ("out.md", DOCS_CHART)),
])
def test_a_run_writes_only_what_it_is_asked_to(
        argv: list[str], expected: tuple[str | None, str | None]) -> None:
    assert outputs(parse_args(argv)) == expected


def test_write_docs_names_the_repository_s_docs_whatever_the_directory() -> None:
    docs = BENCHMARKS.parent / "docs"
    assert Path(DOCS_PAGE) == docs / "benchmarks.md"
    assert Path(DOCS_CHART) == docs / "benchmarks.png"


def test_the_open_and_memory_panels_mark_the_stores_that_load_nothing_at_open() -> None:
    systems = catalogue()
    selection = Selection(systems, {}, set(WORKLOADS))
    described = {system.key: describe(system) for system in systems}
    results = Results()
    for number, system in enumerate(systems, 1):
        results.add(system.key, {"w1": {"value": 1000.0 * number},
                                 "w7": {"value": 100.0 + number},
                                 "w5-open-1000-c": {"value": 0.01 * number}})
    results.add("dict", {"w7": {"value": 64.0}})
    marked = {"sqlitedict", "aiosqlite", "diskcache"}
    for figure_id in ("w5-open-1000-c", "w7"):
        bars = chart_bars(results, selection, figure_id, described)
        not_comparable = {bar.name for bar in bars if not bar.comparable}
        assert marked <= not_comparable, figure_id
        assert not any(bar.name.startswith("aiokv") for bar in bars if not bar.comparable)
        assert all(described[system.key].loads_into_memory != "yes"
                   for system in systems if system.name in not_comparable)
    w7 = chart_bars(results, selection, "w7", described)
    assert w7[-1].name == "plain dict" and w7[-1].comparable
    # The rate panels compare everyone.
    assert all(bar.comparable for bar in chart_bars(results, selection, "w1", described))
