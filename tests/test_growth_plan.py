"""W9's plan: what each store size is timed on, and what stays out of the timing."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from systems import WARMUP_OPS, GrowthKeys, Params, catalogue  # noqa: E402

PARAMS = Params(system="test", workload="w9", work="", budget=10.0, keys=2_000, ops=400)


class Recorder:
    """Stands in for a store: records every call, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def set(self, key: str, value: float) -> None:
        self.calls.append("set")

    def get(self, key: str) -> None:
        self.calls.append("get")

    def compact(self) -> None:
        self.calls.append("compact")

    async def set_async(self, key: str, value: float) -> None:
        self.set(key, value)

    async def get_async(self, key: str) -> None:
        self.get(key)

    async def compact_async(self) -> None:
        self.compact()

    def runs(self) -> list[tuple[str, int]]:
        """The calls as runs of one kind: [("set", 700), ("compact", 1), ...]."""
        runs: list[tuple[str, int]] = []
        for call in self.calls:
            if runs and runs[-1][0] == call:
                runs[-1] = (call, runs[-1][1] + 1)
            else:
                runs.append((call, 1))
        return runs


def expected_runs(plan: GrowthKeys) -> list[tuple[str, int]]:
    return [("compact", 1), ("set", len(plan.warm) + len(plan.spread)),
            ("compact", 1), ("set", len(plan.hot[:WARMUP_OPS]) + len(plan.hot)),
            ("get", len(plan.warm) + len(plan.read))]


def test_a_store_that_compacts_by_itself_is_compacted_before_each_run_of_sets() -> None:
    plan, store = GrowthKeys(PARAMS), Recorder()
    figures = plan.timed_sync(store.set, store.get, PARAMS, store.compact)
    # A compaction comes only before a warm-up: never between a warm-up and
    # its timed part, never inside one.
    assert store.runs() == expected_runs(plan)
    assert sorted(figures) == ["w9", "w9g", "w9h"]


def test_the_async_loop_settles_the_same_way() -> None:
    plan, store = GrowthKeys(PARAMS), Recorder()
    figures = asyncio.run(plan.timed_async(store.set_async, store.get_async, PARAMS,
                                           store.compact_async))
    assert store.runs() == expected_runs(plan)
    assert sorted(figures) == ["w9", "w9g", "w9h"]


def test_without_a_settle_step_the_same_parts_run_and_nothing_else() -> None:
    plan, store = GrowthKeys(PARAMS), Recorder()
    figures = plan.timed_sync(store.set, store.get, PARAMS)
    sets = len(plan.warm) + len(plan.spread) + len(plan.hot[:WARMUP_OPS]) + len(plan.hot)
    assert store.runs() == [("set", sets), ("get", len(plan.warm) + len(plan.read))]
    assert sorted(figures) == ["w9", "w9g", "w9h"]


def test_every_figure_counts_the_operations_of_its_own_part_only() -> None:
    plan, store = GrowthKeys(PARAMS), Recorder()
    figures = plan.timed_sync(store.set, store.get, PARAMS, store.compact)
    done = {}
    for name, figure in figures.items():
        assert isinstance(figure, dict)
        done[name] = figure["ops"]
    assert done == {"w9": len(plan.spread), "w9h": len(plan.hot), "w9g": len(plan.read)}


def test_only_aiokv_compacts_by_itself_the_peers_are_configured_not_to() -> None:
    assert {system.key for system in catalogue() if system.compacts_by_itself} == {
        system.key for system in catalogue() if system.family == "aiokv"}
