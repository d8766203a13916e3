"""Comparison suite: aiokv against the stores a Python program might use instead.

Run from the repository root::

    python benchmarks/compare.py                    # everything, 3 repetitions (20-40 min)
    python benchmarks/compare.py --quick            # small sizes, 1 repetition (~1 min)
    python benchmarks/compare.py --only aiokv-async-flush,diskcache --workloads W1,W5

Every (system, workload) measurement runs in a fresh child process
(``systems.py --child``) that prints one JSON object; a child that fails or
times out shows as "error" in the report and the run goes on. Figures are
medians over the repetitions; targets are printed with PASS or MISS and never
asserted. The report is printed; only when asked does it replace the part of
``--page`` between the ``compare.py`` markers and draw the chart into
``--chart`` (``--write-docs``: both into docs/; the chart needs matplotlib,
``pip install -e '.[chart]'``). ``benchmarks/README.md`` describes every
workload and system.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from systems import Durability, System, catalogue, describe

T = TypeVar("T")

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD_SCRIPT = os.path.join(HERE, "systems.py")
BEGIN = "<!-- compare.py: begin -->"
END = "<!-- compare.py: end -->"
REFERENCE = "aiokv-async-flush"
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W9", "W10")
BENCH_REDIS = os.path.join(HERE, "bench_redis.py")
DOCS_PAGE = os.path.join(os.path.dirname(HERE), "docs", "benchmarks.md")
DOCS_CHART = os.path.join(os.path.dirname(HERE), "docs", "benchmarks.png")
"""Where --write-docs puts the report and the chart: nothing else writes there."""
"""W10's script: aiokv on Redis against raw redis-py (run in a child)."""


@dataclass(frozen=True)
class Sizes:
    """How much work each workload does; ``--quick`` shrinks all of it."""

    repetitions: int
    set_ops: int  # W1, W2, W4
    gets: int  # W3
    tasks: int  # W2
    mid_keys: int  # W5 "100k" store
    big_keys: int  # W5 "1M" store, W7
    growth_keys: tuple[int, ...]  # W9 store sizes
    growth_ops: int  # W9 sets per size
    compaction_keys: int  # W8 store
    budget: float  # seconds of timed work per part, for slow systems
    timeout: float  # seconds per child
    w5_mid_store: bool = True  # W5 also opens the "100k" store (--quick: the big one only)


FULL = Sizes(repetitions=3, set_ops=20_000, gets=100_000, tasks=100, mid_keys=100_000,
             big_keys=1_000_000, growth_keys=(10_000, 100_000, 1_000_000), growth_ops=20_000,
             compaction_keys=1_000_000, budget=1.0, timeout=1800.0)
QUICK = Sizes(repetitions=1, set_ops=3_000, gets=10_000, tasks=100, mid_keys=5_000,
              big_keys=10_000, growth_keys=(1_000, 10_000), growth_ops=2_000,
              compaction_keys=20_000, budget=0.1, timeout=120.0, w5_mid_store=False)


def count_label(count: int) -> str:
    """1000000 -> "1M", 100000 -> "100k", 30000 -> "30k"."""
    if count >= 1_000_000 and count % 1_000_000 == 0:
        return f"{count // 1_000_000}M"
    if count >= 1000 and count % 1000 == 0:
        return f"{count // 1000}k"
    return f"{count:,}"


# -- results ----------------------------------------------------------------

Figure = dict[str, float]


@dataclass
class Cell:
    """One figure of one system: its value in each repetition, or why there is none."""

    runs: list[Figure] = field(default_factory=list)
    error: str = ""
    note: str = ""  # "n/a ..." or "= other system" when not measured on purpose

    def median(self, name: str = "value") -> float | None:
        values = [run[name] for run in self.runs if name in run]
        return statistics.median(values) if values and not self.error else None

    def fewest_ops(self) -> int | None:
        """Ops done in the shortest budgeted repetition (None when every one completed)."""
        cut = [int(run["ops"]) for run in self.runs if run.get("complete") == 0.0]
        return min(cut) if cut else None


class Results:
    """Every cell of the run, keyed by (system key, figure id)."""

    def __init__(self) -> None:
        self.cells: dict[tuple[str, str], Cell] = {}

    def cell(self, system: str, figure: str) -> Cell:
        return self.cells.setdefault((system, figure), Cell())

    def add(self, system: str, figures: dict[str, Figure]) -> None:
        for name, figure in figures.items():
            self.cell(system, name).runs.append(figure)

    def fail(self, system: str, names: Sequence[str], error: str) -> None:
        for name in names:
            self.cell(system, name).error = error

    def median(self, system: str, figure: str, name: str = "value") -> float | None:
        cell = self.cells.get((system, figure))
        return None if cell is None else cell.median(name)

    def paired_ratio(self, numerator: tuple[str, str], denominator: tuple[str, str]
                     ) -> float | None:
        """Median of per-repetition ratios (a slow spell hits both sides of one)."""
        top = self.cells.get(numerator)
        bottom = self.cells.get(denominator)
        if top is None or bottom is None or top.error or bottom.error:
            return None
        pairs = [t["value"] / b["value"]
                 for t, b in zip(top.runs, bottom.runs, strict=False) if b["value"]]
        return statistics.median(pairs) if pairs else None


# -- children ---------------------------------------------------------------


class Runner:
    """Runs children in a scratch directory, and builds each big store once."""

    def __init__(self, root: str, sizes: Sizes) -> None:
        self.root = root
        self.sizes = sizes
        self.children = 0
        self.stores: dict[tuple[str, int, bool], str] = {}
        self.build_errors: dict[tuple[str, int, bool], str] = {}

    def run(self, params: dict[str, object]) -> dict[str, Figure] | str:
        """One child; its figures, or the error line to show in the report."""
        self.children += 1
        work = os.path.join(self.root, f"child-{self.children}")
        os.makedirs(work)
        try:
            return self.run_in(work, params)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def run_in(self, work: str, params: dict[str, object]) -> dict[str, Figure] | str:
        request = {"work": os.path.join(work, "w"), "budget": self.sizes.budget, **params}
        os.makedirs(str(request["work"]))
        command = [sys.executable, CHILD_SCRIPT, "--child", json.dumps(request)]
        try:
            done = subprocess.run(command, capture_output=True, text=True,
                                  timeout=self.sizes.timeout, check=False)
        except subprocess.TimeoutExpired:
            return f"error: timed out after {self.sizes.timeout:.0f} s"
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            return lines[0] if lines else f"error: exit status {done.returncode}"
        try:
            figures: dict[str, Figure] = {
                name: {key: float(value) for key, value in figure.items()}
                for name, figure in json.loads(done.stdout).items()}
        except (ValueError, AttributeError) as exc:
            return f"error: unreadable child output ({exc})"
        return figures

    def store(self, system: System, keys: int, compacted: bool) -> str:
        """A store of ``keys`` keys for the system's family, built on first use.

        Raises RuntimeError with the build's error line when it failed.
        """
        wanted = (system.family, keys, compacted)
        if wanted in self.build_errors:
            raise RuntimeError(self.build_errors[wanted])
        if wanted not in self.stores:
            directory = os.path.join(self.root, "stores",
                                     f"{system.family}-{keys}-{'c' if compacted else 'u'}")
            print(f"  building {system.family} store: {keys:,} keys, "
                  f"{'compacted' if compacted else '3 records per key'} ...", flush=True)
            os.makedirs(os.path.dirname(directory), exist_ok=True)
            started = time.perf_counter()
            result = self.run({"system": system.key, "workload": "build", "keys": keys,
                               "passes": 1 if compacted else 3, "compacted": compacted,
                               "work": directory})
            if isinstance(result, str):
                self.build_errors[wanted] = f"build failed: {result}"
                raise RuntimeError(self.build_errors[wanted])
            print(f"  built in {time.perf_counter() - started:.1f} s", flush=True)
            self.stores[wanted] = directory
        return self.stores[wanted]


# -- the plan: which children each repetition runs --------------------------


@dataclass(frozen=True)
class Selection:
    """The systems and workloads of this run."""

    systems: list[System]  # available ones, in report order
    skipped: dict[str, str]  # system key -> reason
    workloads: set[str]

    def selected_keys(self) -> set[str]:
        return {system.key for system in self.systems}

    def stand_in(self, system: System) -> str:
        """The system whose W5/W7 figures this one shares (same file, same open)."""
        if system.open_like and system.open_like in self.selected_keys():
            return system.open_like
        return ""


def w5_figures(sizes: Sizes, system: System) -> list[tuple[str, int, bool, str]]:
    """(figure id, keys, compacted, mode) of every W5 measurement for a system."""
    figures = []
    for keys in ((sizes.mid_keys,) if sizes.w5_mid_store else ()) + (sizes.big_keys,):
        for compacted in (True, False):
            if not compacted and not system.uncompacted:
                continue
            for mode in ("open", "all"):
                figures.append((w5_id(mode, keys, compacted), keys, compacted, mode))
    return figures


def w5_id(mode: str, keys: int, compacted: bool) -> str:
    return f"w5-{mode}-{keys}-{'c' if compacted else 'u'}"


def in_turn(systems: Sequence[T], repetition: int) -> list[T]:
    """The order in which repetition ``repetition`` (from 1) runs the systems.

    Each repetition starts one system later than the one before, the skipped
    ones going last, so a slow moment of the machine at one point of a
    repetition falls on a different system each time. In two full runs in a
    row, the row that always ran first (aiokv's headline W1 row) came out at
    about 55 % of its usual rate in two repetitions of three. Whether the
    first child is slowed more often than the others is not established (a
    6-repetition W1 run showed no such effect), but with a fixed order every
    such moment fell on the same row.
    """
    if not systems:
        return []
    shift = (repetition - 1) % len(systems)
    return [*systems[shift:], *systems[:shift]]


class Suite:
    """Runs every selected (system, workload) child, repetition after repetition."""

    def __init__(self, sizes: Sizes, selection: Selection, runner: Runner) -> None:
        self.sizes = sizes
        self.selection = selection
        self.runner = runner
        self.results = Results()
        self.order = selection.systems  # this repetition's order: see in_turn()

    def wants(self, *workloads: str) -> bool:
        return any(workload in self.selection.workloads for workload in workloads)

    def run(self) -> Results:
        for repetition in range(1, self.sizes.repetitions + 1):
            print(f"repetition {repetition}/{self.sizes.repetitions}", flush=True)
            self.order = in_turn(self.selection.systems, repetition)
            self.run_rates()
            if self.wants("W5"):
                self.each_system(self.run_open)
            if self.wants("W7"):
                self.run_dict_memory()
                self.each_system(self.run_memory)
            if self.wants("W8"):
                self.each_system(self.run_compaction)
            if self.wants("W9"):
                self.run_dict_growth()
                self.each_system(self.run_growth)
        return self.results

    def each_system(self, measure: Callable[[System], None]) -> None:
        for system in self.order:
            measure(system)

    def record(self, system: str, names: Sequence[str], result: dict[str, Figure] | str,
               label: str) -> None:
        if isinstance(result, str):
            self.results.fail(system, names, result)
            print(f"  {label}: {result}", flush=True)
            return
        self.results.add(system, result)
        shown = ", ".join(f"{name} {figure['value']:,.6g}" for name, figure in result.items())
        print(f"  {label}: {shown}", flush=True)

    def run_rates(self) -> None:
        """W1 (with W6), W2, W3, W4: systems interleaved within each workload."""
        plan = [("w1", self.sizes.set_ops, ("w1", "w6"), self.wants("W1", "W6")),
                ("w2", self.sizes.set_ops, ("w2",), self.wants("W2")),
                ("w3", self.sizes.gets, ("w3",), self.wants("W3")),
                ("w4", self.sizes.set_ops, ("w4",), self.wants("W4"))]
        for workload, ops, names, wanted in plan:
            if not wanted:
                continue
            for system in self.order:
                result = self.runner.run({"system": system.key, "workload": workload,
                                          "ops": ops, "tasks": self.sizes.tasks})
                self.record(system.key, names, result, f"{workload} {system.name}")
            if workload == "w2":
                result = self.runner.run({"system": "floor", "workload": "w2-floor",
                                          "ops": ops, "tasks": self.sizes.tasks})
                self.record("floor", ["w2"], result, "w2 storeless group commit")

    def measure_on_store(self, system: System, figure: str | dict[str, str], keys: int,
                         compacted: bool, params: dict[str, object]) -> None:
        """One child on a copy of a built store (a failed build fails the figures).

        ``figure``: the name to record the child's figure under, or, for a
        child reporting several, its names by the names the child gives them.
        """
        names = {"": figure} if isinstance(figure, str) else figure
        try:
            store = self.runner.store(system, keys, compacted)
        except RuntimeError as exc:
            self.results.fail(system.key, list(names.values()), str(exc))
            return
        result = self.runner.run({"system": system.key, "store": store, "keys": keys,
                                  **params})
        if not isinstance(result, str):
            result = ({names[""]: next(iter(result.values()))} if "" in names
                      else {names[name]: value for name, value in result.items()})
        self.record(system.key, list(names.values()), result,
                    f"{'/'.join(names.values())} {system.name}")

    def run_open(self, system: System) -> None:
        """W5: open, and open + every item, of each built store, each in a fresh child."""
        stand_in = self.selection.stand_in(system)
        for figure, keys, compacted, mode in w5_figures(self.sizes, system):
            if stand_in:
                self.results.cell(system.key, figure).note = f"= {stand_in}"
                continue
            self.measure_on_store(system, figure, keys, compacted, {"workload": f"w5-{mode}"})

    def run_dict_memory(self) -> None:
        result = self.runner.run({"system": "dict", "workload": "w7-dict",
                                  "keys": self.sizes.big_keys})
        self.record("dict", ["w7"], result, "w7 plain dict")

    def run_memory(self, system: System) -> None:
        """W7: RSS added per key by opening the compacted big store."""
        stand_in = self.selection.stand_in(system)
        if stand_in:
            self.results.cell(system.key, "w7").note = f"= {stand_in}"
            return
        self.measure_on_store(system, "w7", self.sizes.big_keys, True, {"workload": "w7"})

    def run_compaction(self, system: System) -> None:
        """W8: a compaction of the W8 store while sets continue (systems that have one)."""
        if not system.has_compaction:
            self.results.cell(system.key, "w8").note = "n/a"
            return
        self.measure_on_store(system, "w8", self.sizes.compaction_keys, True,
                              {"workload": "w8"})

    def run_growth(self, system: System) -> None:
        """W9: sequential sets of keys from the whole store, then of hot keys, at each size."""
        for keys in self.sizes.growth_keys:
            self.measure_on_store(system, growth_figures(keys), keys, True,
                                  {"workload": "w9", "ops": self.sizes.growth_ops})

    def run_dict_growth(self) -> None:
        """W9 baseline: the same sets into a plain dict of each size."""
        for keys in self.sizes.growth_keys:
            result = self.runner.run({"system": "dict", "workload": "w9-dict", "keys": keys,
                                      "ops": self.sizes.growth_ops})
            names = growth_figures(keys)
            if not isinstance(result, str):
                result = {names[name]: value for name, value in result.items()}
            self.record("dict", list(names.values()), result, f"w9-{keys} plain dict")


def growth_figures(keys: int) -> dict[str, str]:
    """The W9 child's figures at one size: "w9" sets of keys of the whole
    store, "w9h" sets of hot keys, "w9g" gets of keys of the whole store."""
    return {"w9": f"w9-{keys}", "w9h": f"w9h-{keys}", "w9g": f"w9g-{keys}"}


# -- formatting -------------------------------------------------------------


def show_rate(value: float) -> str:
    return f"{value:,.0f}/s"


def show_seconds(value: float) -> str:
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def show_count(value: float) -> str:
    return f"{value:,.0f}"


def show_millis(value: float) -> str:
    return f"{value * 1000:.2f} ms"


def show_ratio(value: float) -> str:
    return f"{value:.2f}x"


def show_cost(rate: float) -> str:
    """A rate shown as what one operation costs."""
    return f"{1e6 / rate:.2f} µs" if rate else "-"


def cell_text(results: Results, system: str, figure: str, show: Callable[[float], str],
              name: str = "value") -> str:
    """A figure as shown in a table: its median, or "error: ...", "n/a", "= other"."""
    cell = results.cells.get((system, figure))
    if cell is None:
        return "-"
    if cell.error:
        return cell.error.replace("|", "/")[:120]
    if cell.note:
        return cell.note
    value = cell.median(name)
    if value is None:
        return "-"
    text = show(value)
    ops = cell.fewest_ops()
    return f"{text} ({ops:,} ops)" if ops is not None and name == "value" else text


def growth_ratio(results: Results, system: str, sizes: Sizes, kind: str = "w9"
                 ) -> float | None:
    """Cost per operation at the largest size / at the smallest (median of
    per-repetition ratios).

    ``kind``: "w9" for sets of keys drawn from the whole store, "w9h" for sets
    of hot keys, "w9g" for gets of keys drawn from the whole store.
    """
    small = f"{kind}-{sizes.growth_keys[0]}"
    large = f"{kind}-{sizes.growth_keys[-1]}"
    return results.paired_ratio((system, small), (system, large))


def growth_text(results: Results, system: str, sizes: Sizes, kind: str = "w9") -> str:
    for keys in sizes.growth_keys:
        cell = results.cells.get((system, f"{kind}-{keys}"))
        if cell is None:
            return "-"
        if cell.error:
            return cell.error.replace("|", "/")[:120]
    ratio = growth_ratio(results, system, sizes, kind)
    return "-" if ratio is None else show_ratio(ratio)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def durability_table(selection: Selection, all_systems: Sequence[System],
                     described: dict[str, Durability]) -> list[str]:
    rows = []
    for system in all_systems:
        if system.key in selection.skipped:
            rows.append([system.name, f"skipped: {selection.skipped[system.key]}", "", "", ""])
            continue
        if system.key not in selection.selected_keys():
            continue
        d = described[system.key]
        rows.append([system.name, d.configuration, d.kill9, d.power_loss, d.loads_into_memory])
    return markdown_table(["system", "configuration", "acknowledged write survives kill -9",
                           "survives power loss", "loads its data into memory on open"], rows)


def figures_table(results: Results, selection: Selection, sizes: Sizes,
                  all_systems: Sequence[System]) -> list[str]:
    mid, big = count_label(sizes.mid_keys), count_label(sizes.big_keys)
    header = ["system", "W1 set/s", f"W2 set/s ({sizes.tasks} tasks)", "W3 get/s", "W4 incr/s",
              f"W5 open {mid}", f"W5 open {big}", f"W5 open {big} uncompacted",
              f"W5 open+all {big}", "W6 file bytes", "W7 bytes/key",
              f"W9 cost {count_label(sizes.growth_keys[-1])} / "
              f"{count_label(sizes.growth_keys[0])}, any key",
              f"W9 cost {count_label(sizes.growth_keys[-1])} / "
              f"{count_label(sizes.growth_keys[0])}, hot keys"]
    rows = []
    for system in all_systems:
        if system.key in selection.skipped:
            rows.append([system.name, f"skipped: {selection.skipped[system.key]}",
                         *[""] * (len(header) - 2)])
            continue
        if system.key not in selection.selected_keys():
            continue
        key = system.key
        uncompacted = (cell_text(results, key, w5_id("open", sizes.big_keys, False),
                                 show_seconds) if system.uncompacted else "n/a")
        rows.append([
            system.name,
            cell_text(results, key, "w1", show_rate),
            cell_text(results, key, "w2", show_rate),
            cell_text(results, key, "w3", show_rate),
            cell_text(results, key, "w4", show_rate),
            cell_text(results, key, w5_id("open", sizes.mid_keys, True), show_seconds),
            cell_text(results, key, w5_id("open", sizes.big_keys, True), show_seconds),
            uncompacted,
            cell_text(results, key, w5_id("all", sizes.big_keys, True), show_seconds),
            cell_text(results, key, "w6", show_count),
            cell_text(results, key, "w7", show_count),
            growth_text(results, key, sizes),
            growth_text(results, key, sizes, "w9h")])
    floor = cell_text(results, "floor", "w2", show_rate)
    if floor != "-":
        rows.append(["storeless asyncio group commit (W2 baseline)", "n/a", floor,
                     *["n/a"] * (len(header) - 3)])
    dict_memory = cell_text(results, "dict", "w7", show_count)
    dict_growth = growth_text(results, "dict", sizes)
    if dict_memory != "-" or dict_growth != "-":
        rows.append(["plain dict (W7, W9 baselines)", *["n/a"] * 9, dict_memory, dict_growth,
                     growth_text(results, "dict", sizes, "w9h")])
    return markdown_table(header, rows)


def open_detail_table(results: Results, selection: Selection, sizes: Sizes) -> list[str]:
    """Every W5 figure: open and open + all, compacted and uncompacted, both sizes."""
    header = ["system"]
    columns = []
    for keys in ((sizes.mid_keys,) if sizes.w5_mid_store else ()) + (sizes.big_keys,):
        for compacted in (True, False):
            for mode in ("open", "all"):
                layout = "compacted" if compacted else "uncompacted"
                what = "open" if mode == "open" else "open+all"
                header.append(f"{what} {count_label(keys)} {layout}")
                columns.append(w5_id(mode, keys, compacted))
    rows = []
    for system in selection.systems:
        row = [system.name]
        for figure in columns:
            applies = system.uncompacted or figure.endswith("-c")
            row.append(cell_text(results, system.key, figure, show_seconds) if applies
                       else "n/a")
        rows.append(row)
    return markdown_table(header, rows)


def growth_detail_table(results: Results, selection: Selection, sizes: Sizes) -> list[str]:
    """W9 as costs: a set and a get of any key at each size, and how each grew."""
    small, large = count_label(sizes.growth_keys[0]), count_label(sizes.growth_keys[-1])
    header = ["system"]
    for what in ("set", "get"):
        header += [f"{what} {count_label(keys)}" for keys in sizes.growth_keys]
        header.append(f"{what} {large} / {small}")
    systems = [(system.key, system.name) for system in selection.systems]
    if any(system == "dict" for system, _figure in results.cells):
        systems.append(("dict", "plain dict"))
    rows = []
    for key, name in systems:
        row = [name]
        for kind in ("w9", "w9g"):
            row += [cell_text(results, key, f"{kind}-{keys}", show_cost)
                    for keys in sizes.growth_keys]
            row.append(growth_text(results, key, sizes, kind))
        rows.append(row)
    return markdown_table(header, rows)


def compaction_table(results: Results, selection: Selection) -> list[str]:
    header = ["system", "compaction", "sets during it", "set p50", "set p99", "set max",
              "worst loop gap"]
    rows = []
    for system in selection.systems:
        if not system.has_compaction:
            continue
        key = system.key
        rows.append([system.name, cell_text(results, key, "w8", show_seconds, "duration"),
                     cell_text(results, key, "w8", show_count, "sets"),
                     cell_text(results, key, "w8", show_millis, "p50"),
                     cell_text(results, key, "w8", show_millis, "p99"),
                     cell_text(results, key, "w8", show_millis, "max"),
                     cell_text(results, key, "w8", show_millis, "gap")])
    return markdown_table(header, rows)


def ratio_table(results: Results, selection: Selection, sizes: Sizes) -> list[str]:
    """How many times faster aiokv async flush is than each system (>1: aiokv faster)."""
    big = sizes.big_keys
    header = ["system", "W1", "W2", "W3", "W4", f"W5 open {count_label(big)}"]
    rows = []
    for system in selection.systems:
        if system.key == REFERENCE:
            continue
        row = [system.name]
        for figure in ("w1", "w2", "w3", "w4"):
            ratio = results.paired_ratio((REFERENCE, figure), (system.key, figure))
            row.append("-" if ratio is None else show_ratio(ratio))
        figure = w5_id("open", big, True)
        other = selection.stand_in(system) or system.key
        ratio = results.paired_ratio((other, figure), (REFERENCE, figure))
        row.append("-" if ratio is None else show_ratio(ratio))
        rows.append(row)
    return markdown_table(header, rows)


# -- targets ----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    what: str
    figure: str
    verdict: str  # PASS, MISS or "-" (not measured)


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "MISS")


def durable_peers(selection: Selection, described: dict[str, Durability]) -> list[System]:
    """Systems other than aiokv whose acknowledged writes survive kill -9."""
    return [system for system in selection.systems if system.family != "aiokv"
            and described[system.key].kill9.startswith("yes")]


def memory_peers(selection: Selection, described: dict[str, Durability]) -> list[System]:
    """Systems other than aiokv that load all their data into memory on open."""
    return [system for system in selection.systems if system.family != "aiokv"
            and described[system.key].loads_into_memory == "yes"
            and not selection.stand_in(system)]


def targets(results: Results, selection: Selection, sizes: Sizes,
            described: dict[str, Durability]) -> list[Target]:
    found: list[Target] = []
    flush_rate = results.median(REFERENCE, "w1")
    peer_rates = {s.name: results.median(s.key, "w1") for s in durable_peers(selection,
                                                                               described)}
    best = max(((rate, name) for name, rate in peer_rates.items() if rate is not None),
               default=None)
    ok = None if flush_rate is None else flush_rate >= 250_000
    found.append(Target("W1: async flush set >= 250,000/s",
                        "-" if flush_rate is None else show_rate(flush_rate), verdict(ok)))
    if flush_rate is not None and best is not None:
        found.append(Target("W1: async flush ahead of every peer that survives kill -9",
                            f"best peer: {best[1]} {show_rate(best[0])}",
                            verdict(flush_rate > best[0])))
    fsync_rate = results.median("aiokv-async-fsync", "w2")
    redis_always = results.median("redis-always", "w2")
    found.append(Target(f"W2: async fsync, {sizes.tasks} tasks >= 100,000/s",
                        "-" if fsync_rate is None else show_rate(fsync_rate),
                        verdict(None if fsync_rate is None else fsync_rate >= 100_000)))
    if fsync_rate is not None and redis_always is not None:
        shown = f"{fsync_rate / redis_always:.1f}x"
        floor = results.median("floor", "w2")
        if floor is not None:
            shown += (f" (a storeless asyncio group commit, one batch at a time: "
                      f"{floor / redis_always:.1f}x)")
        found.append(Target('W2: async fsync >= 10 x "redis always"', shown,
                            verdict(fsync_rate >= 10 * redis_always)))
    found += open_targets(results, selection, sizes, described)
    memory = results.paired_ratio((REFERENCE, "w7"), ("dict", "w7"))
    found.append(Target("W7: aiokv bytes per key <= 1.3 x plain dict",
                        "-" if memory is None else show_ratio(memory),
                        verdict(None if memory is None else memory <= 1.3)))
    p99 = results.median(REFERENCE, "w8", "p99")
    gap = results.median(REFERENCE, "w8", "gap")
    keys = count_label(sizes.compaction_keys)
    found.append(Target(f"W8: during a {keys} compaction (flush), set p99 <= 5 ms",
                        "-" if p99 is None else show_millis(p99),
                        verdict(None if p99 is None else p99 <= 0.005)))
    found.append(Target(f"W8: during a {keys} compaction (flush), worst loop gap <= 10 ms",
                        "-" if gap is None else show_millis(gap),
                        verdict(None if gap is None else gap <= 0.010)))
    large, small = count_label(sizes.growth_keys[-1]), count_label(sizes.growth_keys[0])
    for kind, keys in (("w9", "any key of the store"), ("w9h", "hot keys")):
        growth = growth_ratio(results, REFERENCE, sizes, kind)
        baseline = growth_ratio(results, "dict", sizes, kind)
        shown = "-" if growth is None else show_ratio(growth)
        if growth is not None and baseline is not None:
            shown += f" (plain dict: {show_ratio(baseline)})"
        found.append(Target(f"W9: set cost at {large} <= 1.2 x at {small} ({keys})", shown,
                            verdict(None if growth is None else growth <= 1.2)))
    return found


def open_targets(results: Results, selection: Selection, sizes: Sizes,
                 described: dict[str, Durability]) -> list[Target]:
    figure = w5_id("open", sizes.big_keys, True)
    label = count_label(sizes.big_keys)
    seconds = results.median(REFERENCE, figure)
    found = [Target(f"W5: open of the compacted {label} store <= 0.5 s",
                    "-" if seconds is None else show_seconds(seconds),
                    verdict(None if seconds is None else seconds <= 0.5))]
    peers = [(value, system.name) for system in memory_peers(selection, described)
             if (value := results.median(system.key, figure)) is not None]
    if seconds is not None and peers:
        fastest = min(peers)
        found.append(Target("W5: open faster than every peer that loads its data into memory",
                            f"fastest peer: {fastest[1]} {show_seconds(fastest[0])}",
                            verdict(seconds < fastest[0])))
    return found


def targets_table(found: Sequence[Target]) -> list[str]:
    return markdown_table(["target", "measured", "verdict"],
                          [[t.what, t.figure, t.verdict] for t in found])


# -- the report -------------------------------------------------------------


def file_system_type(path: str) -> str:
    """The type of the file system holding ``path`` (from /proc/mounts), or "unknown"."""
    path = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1]
                inside = path == point or path.startswith(point.rstrip("/") + "/")
                if inside and len(point) > len(best):
                    best, kind = point, fields[2]
    except OSError:
        pass
    return kind


@dataclass(frozen=True)
class OnRedis:
    """W10's figures (bench_redis.py's JSON), or why it did not run."""

    figures: dict[str, Any] | None
    skipped: str = ""


def run_w10(sizes: Sizes, quick: bool, directory: str) -> OnRedis:
    """aiokv on a private redis-server against raw redis-py: bench_redis.py."""
    if shutil.which("redis-server") is None:
        return OnRedis(None, "no redis-server on PATH")
    output = os.path.join(directory, "w10.json")
    command = [sys.executable, BENCH_REDIS, "--repetitions", str(sizes.repetitions),
               "--json", output, *(["--quick"] if quick else [])]
    done = subprocess.run(command, cwd=directory, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        return OnRedis(None, f"bench_redis.py failed: {done.stderr.strip()[-300:]}")
    with open(output, encoding="utf-8") as file:
        figures: dict[str, Any] = json.load(file)
    return OnRedis(figures)


W10_CALL_TARGET = 1.15
W10_COPY_TARGET = 40_000


def on_redis_table(on_redis: OnRedis) -> list[str]:
    if on_redis.figures is None:
        return [f"skipped: {on_redis.skipped}"]
    rows = []
    for line in on_redis.figures["lines"]:
        scale, unit = (1e3, "ms") if "get_all" in line["name"] else (1e6, "µs")
        rows.append([line["name"], f"{line['ours'] * scale:.1f} {unit}",
                     f"{line['raw'] * scale:.1f} {unit}", f"{line['ratio']:.2f} x"])
    rows.append([f"aiokv copy of {on_redis.figures['copy_keys']:,} keys, log -> Redis",
                 f"{on_redis.figures['copy_rate']:,.0f} keys/s", "", ""])
    return markdown_table(["call", "aiokv", "raw redis-py", "ratio"], rows)


def on_redis_targets(on_redis: OnRedis) -> list[Target]:
    if on_redis.figures is None:
        return [Target(f"W10: every call on Redis <= {W10_CALL_TARGET} x raw redis-py",
                       on_redis.skipped, "-")]
    worst = max(on_redis.figures["lines"], key=lambda line: line["ratio"])
    rate = on_redis.figures["copy_rate"]
    return [Target(f"W10: every call on Redis <= {W10_CALL_TARGET} x raw redis-py",
                   f"worst: {worst['name']} {worst['ratio']:.2f} x",
                   verdict(worst["ratio"] <= W10_CALL_TARGET)),
            Target(f"W10: aiokv copy into Redis >= {W10_COPY_TARGET:,} keys/s",
                   f"{rate:,.0f} keys/s", verdict(rate >= W10_COPY_TARGET))]


def section(results: Results, selection: Selection, sizes: Sizes, *,
            all_systems: Sequence[System], described: dict[str, Durability],
            argv: Sequence[str], chart_link: str, seconds: float,
            on_redis: OnRedis | None = None) -> list[str]:
    """The generated Markdown, markers excluded."""
    notes = [f"- {system.name}: {system.notes}" for system in selection.systems if system.notes]

    def detail(workload: str, *parts: str) -> list[str]:
        """A workload's own section, only when it was run."""
        return ["", *parts] if workload in selection.workloads else []

    lines = [
        "## Comparison with other stores (generated by `benchmarks/compare.py`)", "",
        f"- date: {datetime.date.today().isoformat()}",
        f"- machine: {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, working directory on "
        f"{file_system_type(os.getcwd())}",
        f"- repetitions: {sizes.repetitions} (figures are medians); run took {seconds:.0f} s",
        f"- command: `{shlex.join(['python', 'benchmarks/compare.py', *argv])}`",
        f"- time budget per timed part: {sizes.budget:g} s; a figure followed by "
        "\"(N ops)\" was stopped by it after N operations (fewest over the repetitions)",
        f"- workloads run: {', '.join(sorted(selection.workloads))}",
        "", "### Durability, as configured", "",
        *durability_table(selection, all_systems, described),
        "", "### Figures", "",
        *figures_table(results, selection, sizes, all_systems),
        "",
        "W1-W4 stores hold 5,000 keys. W5: seconds until the first get is served, "
        "and (open+all) until every item is in a dict; uncompacted stores hold "
        "3 records per key. W6: bytes of all the store's files after W1. W7: resident "
        "memory added per key by the compacted "
        f"{count_label(sizes.big_keys)} store (lazy stores hold only what a first get reads). "
        "W9: cost of a set at the largest store over the smallest, setting keys drawn "
        "from the whole store (any key) or from its first 5,000 keys (hot keys, the W1 "
        "working set); the plain dict row is a dict of the same keys doing the same sets. "
        "\"= X\": same file and open as system X.",
        "", *notes,
        *detail("W5", "### W5 in detail (seconds)", "",
                *open_detail_table(results, selection, sizes)),
        *detail("W9", "### W9 in detail: cost of one operation on a key drawn from the "
                "whole store", "",
                *growth_detail_table(results, selection, sizes),
                "", "Sequential sets, then sequential gets of another draw of keys (the "
                "keys just set would still be in the CPU's caches). The plain dict does "
                "the same with `d[key] = value` and `d[key]`."),
        *detail("W8", f"### W8: compaction of a {count_label(sizes.compaction_keys)}-key "
                "store while one task keeps setting", "",
                *compaction_table(results, selection),
                "", "aiokv compacts in the background; the peers' rewrites (semidbm "
                "`compact()` called in the loop, the seed design's one save under its "
                "lock, aiosqlite `VACUUM`, Redis `BGREWRITEAOF`) are shown for information."),
        "", f"### Ratios: how many times faster aiokv async flush is (W5: open of the "
        f"compacted {count_label(sizes.big_keys)} store)", "",
        *ratio_table(results, selection, sizes),
        *detail("W10", "### W10: aiokv on Redis against raw redis-py", "",
                *on_redis_table(on_redis or OnRedis(None, "not run")),
                "", "`benchmarks/bench_redis.py` in a child: a private redis-server "
                "(AOF, everysec) on loopback; each call made again and again by one task "
                "(async) or thread (sync), through aiokv's store from `from_url` and "
                "through a raw redis-py client of the same kind sending the same commands; "
                "ratio = aiokv's time over raw redis-py's."),
        "", "### Targets (printed, never asserted)", "",
        *targets_table([*targets(results, selection, sizes, described),
                        *(on_redis_targets(on_redis or OnRedis(None, "not run"))
                          if "W10" in selection.workloads else [])]),
        "", f"![aiokv and its peers: set rates, open time and memory]({chart_link})", ""]
    return lines


def write_page(page: str, lines: Sequence[str]) -> None:
    """Replace the text between the markers (appending them, or creating the page)."""
    block = "\n".join([BEGIN, *lines, END]) + "\n"
    if not os.path.exists(page):
        text = "# Benchmarks\n\n" + block
    else:
        with open(page, encoding="utf-8") as file:
            text = file.read()
        if BEGIN in text and END in text and text.index(BEGIN) < text.index(END):
            before = text[:text.index(BEGIN)]
            after = text[text.index(END) + len(END):].lstrip("\n")
            text = before + block + ("\n" + after if after else "")
        else:
            text = text.rstrip("\n") + "\n\n" + block
    directory = os.path.dirname(os.path.abspath(page))
    os.makedirs(directory, exist_ok=True)
    with open(page, "w", encoding="utf-8") as file:
        file.write(text)


# -- the chart --------------------------------------------------------------


def chart_panels(results: Results, selection: Selection, sizes: Sizes
                 ) -> list[tuple[str, str, bool, Callable[[float], str]]]:
    """(title, figure id, log scale, label format) of each panel."""
    big = count_label(sizes.big_keys)
    return [("W1: sequential sets per second (log)", "w1", True, lambda v: f"{v:,.0f}"),
            (f"W2: sets per second, {sizes.tasks} tasks (log)", "w2", True,
             lambda v: f"{v:,.0f}"),
            (f"W5: open of the compacted {big} store (s)",
             w5_id("open", sizes.big_keys, True), False, lambda v: f"{v:.3f}"),
            (f"W7: resident bytes per key, {big} keys", "w7", False, lambda v: f"{v:,.0f}")]


@dataclass(frozen=True)
class Bar:
    """One bar of a chart panel."""

    name: str
    value: float
    colour: str
    comparable: bool = True
    """False on the open and memory panels for a store that loads nothing
    (or only its keys) at open: its figure measures another thing."""


NOT_COMPARABLE = "loads nothing (or only its keys) at open: not comparable"
"""The legend of the hatched bars of the open and memory panels."""


def chart_bars(results: Results, selection: Selection, figure_id: str,
               described: dict[str, Durability]) -> list[Bar]:
    """The bars of one panel: aiokv in blue, the peers in grey, the plain
    dict (memory panel) in green; on the open and memory panels a store
    that does not load its data at open is marked not comparable."""
    loading_panel = figure_id.startswith(("w5", "w7"))
    bars = []
    for system in selection.systems:
        key = selection.stand_in(system) if loading_panel else ""
        value = results.median(key or system.key, figure_id)
        if value is None or value <= 0:
            continue
        loads = system.key not in described or described[system.key].loads_into_memory == "yes"
        bars.append(Bar(system.name, value,
                        "tab:blue" if system.family == "aiokv" else "tab:gray",
                        comparable=loads or not loading_panel))
    if figure_id == "w7" and (baseline := results.median("dict", "w7")) is not None:
        bars.append(Bar("plain dict", baseline, "tab:green"))
    return bars


def draw_chart(path: str, results: Results, selection: Selection, sizes: Sizes,
               described: dict[str, Durability]) -> None:
    """Four horizontal-bar panels (see ``chart_bars``); bars that are not
    comparable are hatched, pale, and named with a "*"."""
    try:
        import matplotlib  # noqa: PLC0415 (only drawing needs it)
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
        from matplotlib.figure import Figure as MatplotlibFigure  # noqa: PLC0415
    except ImportError:
        sys.exit("drawing the chart needs matplotlib: pip install -e '.[chart]'")
    matplotlib.use("Agg")
    panels = chart_panels(results, selection, sizes)
    rows = len(selection.systems) + 1
    figure = MatplotlibFigure(figsize=(14, max(6.0, 0.33 * rows * 2 + 2)), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 2)
    for axis, (title, figure_id, log, label) in zip(axes.flat, panels, strict=True):
        bars = chart_bars(results, selection, figure_id, described)
        positions = list(range(len(bars)))
        drawn = axis.barh(positions, [bar.value for bar in bars],
                          color=[bar.colour for bar in bars])
        for patch, bar in zip(drawn, bars, strict=True):
            if not bar.comparable:
                patch.set_alpha(0.35)
                patch.set_hatch("//")
        axis.set_yticks(positions, [bar.name + ("" if bar.comparable else " *")
                                    for bar in bars], fontsize=9)
        axis.invert_yaxis()
        axis.set_title(title, fontsize=11)
        if log and bars:
            axis.set_xscale("log")
        axis.bar_label(drawn, labels=[label(bar.value) for bar in bars], fontsize=8,
                       padding=3)
        axis.margins(x=0.25)
        if not all(bar.comparable for bar in bars):
            axis.text(0.99, 0.01, f"* {NOT_COMPARABLE}", transform=axis.transAxes,
                      ha="right", va="bottom", fontsize=8, style="italic")
    figure.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    figure.savefig(path, format="png")


# -- command line -----------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, 1 repetition, short budgets (< 2 minutes)")
    parser.add_argument("--repetitions", type=int, help="repetitions (default 3; quick 1)")
    parser.add_argument("--only", help="comma-separated system keys (see --list)")
    parser.add_argument("--workloads", help="comma-separated workloads, e.g. W1,W5 (default all)")
    parser.add_argument("--page", help="Markdown page to update (default: none, the report "
                        "is only printed)")
    parser.add_argument("--chart", help="PNG chart to draw (default: none; needs matplotlib)")
    parser.add_argument("--write-docs", action="store_true",
                        help=f"update {DOCS_PAGE} and draw {DOCS_CHART} (in the repository)")
    parser.add_argument("--list", action="store_true", help="list the system keys and exit")
    return parser.parse_args(argv)


def select(args: argparse.Namespace, all_systems: Sequence[System]) -> Selection:
    """The systems (--only) and workloads (--workloads) asked for; unknown names exit."""
    known = {system.key for system in all_systems}
    wanted = set(args.only.split(",")) if args.only else known
    if wanted - known:
        sys.exit(f"unknown system(s): {', '.join(sorted(wanted - known))}; "
                 f"known: {', '.join(sorted(known))}")
    workloads = {w.strip().upper() for w in args.workloads.split(",")} if args.workloads \
        else set(WORKLOADS)
    if workloads - set(WORKLOADS):
        sys.exit(f"unknown workload(s): {', '.join(sorted(workloads - set(WORKLOADS)))}")
    systems, skipped = [], {}
    for system in all_systems:
        if system.key not in wanted:
            continue
        reason = system.unavailable()
        if reason:
            skipped[system.key] = reason
        else:
            systems.append(system)
    return Selection(systems, skipped, workloads)


def print_report(lines: Sequence[str]) -> None:
    print()
    for line in lines:
        print(line)


def outputs(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The page and the chart to write, if any: only what was asked for."""
    if args.write_docs:
        return args.page or DOCS_PAGE, args.chart or DOCS_CHART
    return args.page, args.chart


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    args.page, args.chart = outputs(args)
    all_systems = catalogue()
    if args.list:
        for system in all_systems:
            print(f"{system.key:26} {system.name}")
        return 0
    base = QUICK if args.quick else FULL
    repetitions = args.repetitions or base.repetitions
    sizes = Sizes(**{**base.__dict__, "repetitions": repetitions})
    selection = select(args, all_systems)
    for key, reason in selection.skipped.items():
        print(f"{key}: skipped, {reason}", flush=True)
    started = time.perf_counter()
    root = tempfile.mkdtemp(prefix=".compare-", dir=os.getcwd())
    try:
        described = {system.key: describe(system) for system in selection.systems}
        runner = Runner(root, sizes)
        results = Suite(sizes, selection, runner).run()
        on_redis = run_w10(sizes, args.quick, root) if "W10" in selection.workloads else None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    seconds = time.perf_counter() - started
    chart_link = "benchmarks.png"
    if args.chart and args.page:
        chart_link = os.path.relpath(os.path.abspath(args.chart),
                                     os.path.dirname(os.path.abspath(args.page)))
    elif args.chart:
        chart_link = os.path.abspath(args.chart)
    lines = section(results, selection, sizes, all_systems=all_systems, described=described,
                    argv=argv, chart_link=chart_link.replace(os.sep, "/"), seconds=seconds,
                    on_redis=on_redis)
    print_report(lines)
    written = []
    if args.page:
        write_page(args.page, lines)
        written.append(args.page)
    if args.chart:
        draw_chart(args.chart, results, selection, sizes, described)
        written.append(args.chart)
    print(f"\n{'wrote ' + ' and '.join(written) if written else 'wrote nothing'} "
          f"({runner.children} children, {seconds:.0f} s)"
          + ("" if written else "; --write-docs updates the docs, --page/--chart "
             "write elsewhere"))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # the stores are already removed, the servers stopped
        print("\ninterrupted: no report written", file=sys.stderr)
        sys.exit(130)
