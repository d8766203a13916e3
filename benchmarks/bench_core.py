"""Core benchmark of aiokv against baselines doing the same work, in one run.

Run from the repository root::

    python benchmarks/bench_core.py            # full run, 5 repetitions each
    python benchmarks/bench_core.py --quick    # 1 repetition, smaller sizes (< 30 s)
    python benchmarks/bench_core.py --markdown results.md

Every figure is the median over the repetitions; the spread (min..max) is
printed below it because the machines this runs on are shared and noisy.
Targets are printed as PASS/MISS and never asserted: timings are information,
not a test. ``benchmarks/README.md`` explains each line.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

# The benchmarks directory is on sys.path when this file is run as a script:
# the seed design is the one the comparison suite measures.
from systems import SeedJsonStore

import aiokv
from aiokv import _format
from aiokv._arguments import as_durability

STORE_KEYS = 5000
"""Every workload writes or reads the keys ``user:0`` .. ``user:4999``."""


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does; ``--quick`` shrinks the slow ones."""

    repetitions: int
    overwrites: int  # measurements 1 and 3 (buffered): the workload
    long_overwrites: int  # 1c and 6: long enough for automatic compactions
    seed_sets: int  # the seed design rewrites a whole file per set: keep it short
    fsync_sequential_sets: int  # one fsync per set
    concurrent_sets: int
    concurrent_tasks: int
    gets: int
    replay_records: int
    import_runs: int


FULL = Sizes(repetitions=5, overwrites=20_000, long_overwrites=100_000, seed_sets=300,
             fsync_sequential_sets=2_000, concurrent_sets=20_000, concurrent_tasks=100,
             gets=500_000, replay_records=1_000_000, import_runs=10)
QUICK = Sizes(repetitions=1, overwrites=20_000, long_overwrites=60_000, seed_sets=100,
              fsync_sequential_sets=300, concurrent_sets=20_000, concurrent_tasks=100, gets=200_000,
              replay_records=100_000, import_runs=4)


# -- reporting --------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the summary table."""

    metric: str
    aiokv: str
    baseline: str
    ratio: str
    target: str
    verdict: str  # "PASS", "MISS" or "info"


def verdict(value: float, op: str, limit: float) -> str:
    met = {">=": value >= limit, "<=": value <= limit, "<": value < limit}[op]
    return "PASS" if met else "MISS"


def rate(value: float) -> str:
    return f"{value:,.0f}/s"


def millis(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def median(values: Sequence[float], show: Callable[[float], str]) -> str:
    return show(statistics.median(values))


def spread(values: Sequence[float], show: Callable[[float], str]) -> str:
    """``min..max`` of repeated figures (empty for a single one)."""
    return "" if len(values) == 1 else f"{show(min(values))}..{show(max(values))}"


def spreads(**figures: tuple[Sequence[float], Callable[[float], str]]) -> str:
    """``name min..max, ...`` for the detail line; the noise behind a median."""
    parts = [f"{name} {spread(values, show)}" for name, (values, show) in figures.items()
             if len(values) > 1]
    return f"range over repetitions: {', '.join(parts)}" if parts else ""


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median of the per-repetition ratios.

    Each repetition runs aiokv and its baseline seconds apart, so a slow
    spell on a shared machine tends to hit both; dividing within a
    repetition cancels it, where a ratio of two medians would not.
    """
    return statistics.median(n / d for n, d in zip(numerators, denominators, strict=True))


def announce(row: Row, *details: str) -> Row:
    """Print a finished measurement at once, so a long run shows progress."""
    figures = f"aiokv {row.aiokv}"
    if row.baseline != "-":
        figures += f" | baseline {row.baseline} | ratio {row.ratio}"
    print(f"{row.metric}: {figures} | target {row.target} {row.verdict}", flush=True)
    for line in details:
        if line:
            print(f"    {line}", flush=True)
    return row


def summary_lines(rows: Sequence[Row]) -> list[str]:
    header = ("metric", "aiokv", "baseline", "ratio", "target", "verdict")
    table = [header, *((r.metric, r.aiokv, r.baseline, r.ratio, r.target, r.verdict)
                       for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
            .rstrip() for line in table]


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| metric | aiokv | baseline | ratio | target | verdict |",
             "| --- | ---: | ---: | ---: | --- | --- |"]
    lines += [f"| {r.metric} | {r.aiokv} | {r.baseline} | {r.ratio} | {r.target} | {r.verdict} |"
              for r in rows]
    return "\n".join(lines) + "\n"


# -- shared helpers ---------------------------------------------------------


def overwrite_keys(count: int) -> list[str]:
    # Built once, outside the timed loops, so they time the store rather than
    # string formatting (every contender gets the same list).
    return [f"user:{i % STORE_KEYS}" for i in range(count)]


class FreshPaths:
    """A new file name in the work directory for every store (one per repetition)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._count = 0

    def __call__(self, stem: str) -> str:
        self._count += 1
        return os.path.join(self.directory, f"{stem}-{self._count}.kv")


async def filled_store(path: str, durability: str) -> aiokv.AioKV:
    """An open store already holding the 5,000 keys (each a float)."""
    kv = aiokv.AioKV(path, durability=as_durability(durability))
    await kv.open()
    # gather: at "fsync" this fills in a few group commits instead of 5,000 fsyncs.
    await asyncio.gather(*(kv.set(f"user:{i}", float(i)) for i in range(STORE_KEYS)))
    return kv


async def timed_sequential_sets(kv: aiokv.AioKV, keys: Sequence[str]) -> float:
    """Seconds taken by one task awaiting ``kv.set(key, time.time())`` per key."""
    start = time.perf_counter()
    for key in keys:
        await kv.set(key, time.time())
    return time.perf_counter() - start


# -- 1. sequential sets at "flush" against the seed design and a bare write --


async def measure_flush_sets(sizes: Sizes, fresh: FreshPaths) -> list[Row]:
    keys = overwrite_keys(sizes.overwrites)
    seed_keys = keys[: sizes.seed_sets]
    aiokv_rates: list[float] = []
    seed_rates: list[float] = []
    bare_rates: list[float] = []
    compactions: list[int] = []
    for _ in range(sizes.repetitions):
        kv = await filled_store(fresh("flush"), "flush")
        before = (await kv.stats()).compactions
        aiokv_rates.append(len(keys) / await timed_sequential_sets(kv, keys))
        compactions.append((await kv.stats()).compactions - before)
        await kv.close()

        # The same 5,000-key starting point, filled untimed.
        seed = SeedJsonStore(fresh("seed"))
        os.makedirs(seed.directory)
        seed.data = {f"user:{i}": float(i) for i in range(STORE_KEYS)}
        start = time.perf_counter()
        for key in seed_keys:
            await seed.set(key, time.time())
        seed_rates.append(len(seed_keys) / (time.perf_counter() - start))

        bare_rates.append(len(keys) / await timed_bare_appends(fresh("bare"), keys))

    aiokv_rate = statistics.median(aiokv_rates)
    seed_rate = statistics.median(seed_rates)
    bare_rate = statistics.median(bare_rates)
    speedup = paired_ratio(aiokv_rates, seed_rates)
    overhead = paired_ratio(bare_rates, aiokv_rates)
    return [
        announce(Row("1. set, 1 task, flush", rate(aiokv_rate), "-", "-",
                     ">= 250,000/s", verdict(aiokv_rate, ">=", 250_000)),
                 f"{len(keys):,} overwrites per repetition; compactions during each: "
                 f"{compactions}", spreads(aiokv=(aiokv_rates, rate))),
        announce(Row("1a. vs seed JSON design", rate(aiokv_rate), rate(seed_rate),
                     f"{speedup:,.0f}x faster", ">= 1,000x", verdict(speedup, ">=", 1000)),
                 f"seed timed on {len(seed_keys)} sets per repetition",
                 spreads(seed=(seed_rates, rate))),
        announce(Row("1b. vs bare os.write", rate(aiokv_rate), rate(bare_rate),
                     f"bare/aiokv {overhead:.2f}", "<= 1.5", verdict(overhead, "<=", 1.5)),
                 spreads(bare=(bare_rates, rate))),
    ]


async def timed_bare_appends(path: str, keys: Sequence[str]) -> float:
    """The floor for "flush": encode the same frame and write(2) it, nothing else."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    # A coroutine per set, like kv.set, so both pay the same call-and-await cost.
    async def append(key: str, value: float) -> None:
        os.write(fd, _format.encode_set(key, value))

    try:
        start = time.perf_counter()
        for key in keys:
            await append(key, time.time())
        return time.perf_counter() - start
    finally:
        os.close(fd)


# -- 2. concurrent sets at "fsync" (group commit) ---------------------------


async def measure_concurrent_fsync_sets(sizes: Sizes, fresh: FreshPaths) -> Row:
    tasks = sizes.concurrent_tasks
    keys = overwrite_keys(sizes.concurrent_sets // tasks * tasks)
    rates: list[float] = []

    async def writer(kv: aiokv.AioKV, task: int) -> None:
        # Task t makes sets number t, t + tasks, t + 2 * tasks, ... of the whole run.
        for key in keys[task::tasks]:
            await kv.set(key, time.time())

    for _ in range(sizes.repetitions):
        kv = await filled_store(fresh("fsync-concurrent"), "fsync")
        start = time.perf_counter()
        await asyncio.gather(*(writer(kv, t) for t in range(tasks)))
        rates.append(len(keys) / (time.perf_counter() - start))
        await kv.close()
    median_rate = statistics.median(rates)
    return announce(
        Row(f"2. set, {tasks} tasks, fsync", rate(median_rate), "-", "-", ">= 80,000/s",
            verdict(median_rate, ">=", 80_000)),
        f"{len(keys):,} sets per repetition", spreads(aiokv=(rates, rate)))


# -- 3. sequential sets at "buffered" and "fsync" (information) -------------


async def measure_other_durabilities(sizes: Sizes, fresh: FreshPaths) -> list[Row]:
    rows = []
    for durability, count in (("buffered", sizes.overwrites),
                              ("fsync", sizes.fsync_sequential_sets)):
        keys = overwrite_keys(count)
        rates: list[float] = []
        for _ in range(sizes.repetitions):
            kv = await filled_store(fresh(durability), durability)
            rates.append(len(keys) / await timed_sequential_sets(kv, keys))
            await kv.close()
        rows.append(announce(Row(f"3. set, 1 task, {durability}", median(rates, rate), "-",
                                 "-", "(information)", "info"),
                             f"{len(keys):,} sets per repetition",
                             spreads(aiokv=(rates, rate))))
    return rows


# -- 4. gets ----------------------------------------------------------------


async def measure_gets(sizes: Sizes, fresh: FreshPaths) -> Row:
    keys = overwrite_keys(sizes.gets)
    aiokv_rates: list[float] = []
    dict_rates: list[float] = []
    plain = {f"user:{i}": float(i) for i in range(STORE_KEYS)}

    # Baseline: a dict behind a coroutine, the least an async get can cost.
    async def dict_get(key: str) -> float | None:
        return plain.get(key)

    for _ in range(sizes.repetitions):
        kv = await filled_store(fresh("get"), "flush")
        start = time.perf_counter()
        for key in keys:
            await kv.get(key)
        aiokv_rates.append(len(keys) / (time.perf_counter() - start))
        await kv.close()

        start = time.perf_counter()
        for key in keys:
            await dict_get(key)
        dict_rates.append(len(keys) / (time.perf_counter() - start))
    aiokv_rate = statistics.median(aiokv_rates)
    dict_rate = statistics.median(dict_rates)
    return announce(Row("4. get (float)", rate(aiokv_rate), rate(dict_rate),
                        f"dict/aiokv {paired_ratio(dict_rates, aiokv_rates):.2f}",
                        ">= 1,500,000/s",
                        verdict(aiokv_rate, ">=", 1_500_000)),
                    f"{len(keys):,} gets per repetition; baseline: dict.get in a coroutine",
                    spreads(aiokv=(aiokv_rates, rate), dict=(dict_rates, rate)))


# -- 5. open (replay) -------------------------------------------------------


def write_replay_logs(directory: str, records: int) -> tuple[str, str]:
    """Write the same SET records as an aiokv log and as plain msgpack.

    Keys cycle through the 5,000-key space (``user:{i % 5000}``), values are
    distinct floats; nothing expires.
    """
    log_path = os.path.join(directory, "replay.kv")
    plain_path = os.path.join(directory, "replay.msgpack")
    pack = msgpack.Packer(use_bin_type=True).pack
    base = time.time()
    with open(log_path, "wb") as log, open(plain_path, "wb") as plain:
        # compacted_length = HEADER_SIZE: every frame is an appended record.
        log.write(_format.encode_header(0, 0.0, _format.HEADER_SIZE))
        for start in range(0, records, 10_000):
            log_chunk: list[bytes] = []
            plain_chunk: list[bytes] = []
            for i in range(start, min(start + 10_000, records)):
                key, value = f"user:{i % STORE_KEYS}", base + i
                log_chunk.append(_format.encode_set(key, value))
                plain_chunk.append(pack((_format.SET, key, value, None)))
            log.write(b"".join(log_chunk))
            plain.write(b"".join(plain_chunk))
    return log_path, plain_path


def unpack_plain_log(path: str) -> dict[str, object]:
    entries: dict[str, object] = {}
    with open(path, "rb") as file:
        for _kind, key, value, _expires in msgpack.Unpacker(file, use_list=False):
            entries[key] = value
    return entries


async def measure_replay(sizes: Sizes, directory: str) -> Row:
    log_path, plain_path = write_replay_logs(directory, sizes.replay_records)
    aiokv_times: list[float] = []
    unpacker_times: list[float] = []
    for _ in range(sizes.repetitions):
        start = time.perf_counter()
        kv = aiokv.AioKV(log_path)
        await kv.open()
        aiokv_times.append(time.perf_counter() - start)
        keys = (await kv.stats()).keys
        await kv.close()  # nothing was written, so the log stays as it is

        start = time.perf_counter()
        entries = unpack_plain_log(plain_path)
        unpacker_times.append(time.perf_counter() - start)
        if keys != len(entries):
            raise RuntimeError(f"replay disagrees: aiokv {keys} keys, unpacker {len(entries)}")
    ratio = paired_ratio(aiokv_times, unpacker_times)
    return announce(
        Row(f"5. open, {sizes.replay_records:,} records", median(aiokv_times, millis),
            median(unpacker_times, millis), f"aiokv/unpacker {ratio:.2f}", "<= 1.5",
            verdict(ratio, "<=", 1.5)),
        spreads(aiokv=(aiokv_times, millis), unpacker=(unpacker_times, millis)),
        f"log {os.path.getsize(log_path):,} bytes, plain msgpack "
        f"{os.path.getsize(plain_path):,} bytes; {STORE_KEYS:,} distinct keys")


# -- 6. event-loop stalls while writing -------------------------------------


async def record_loop_gaps(stop: asyncio.Event, gaps: list[float]) -> None:
    """Yield to the loop over and over, noting the time between wake-ups.

    With ``sleep(0)`` the expected gap is ~0, so every gap is a stall: the
    time something else (a set, or a thread holding the GIL) kept the loop.
    """
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


async def loop_gaps_during(work: Awaitable[None]) -> list[float]:
    """Every gap between the ticker's wake-ups while ``work`` runs, sorted."""
    stop = asyncio.Event()
    gaps: list[float] = []
    ticker = asyncio.create_task(record_loop_gaps(stop, gaps))
    try:
        await work
    finally:
        stop.set()
        await ticker
    return sorted(gaps)


def percentile(ordered: Sequence[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


async def measure_sets_with_compactions(sizes: Sizes, fresh: FreshPaths) -> Row:
    """The workload of 1., run long enough that compactions happen during it.

    20,000 overwrites of 5,000 floats stay below the compaction threshold, so
    line 1 never pays for a compaction; this line does, amortised.
    """
    keys = overwrite_keys(sizes.long_overwrites)
    rates: list[float] = []
    compactions: list[int] = []
    for _ in range(sizes.repetitions):
        kv = await filled_store(fresh("long"), "flush")
        before = (await kv.stats()).compactions
        rates.append(len(keys) / await timed_sequential_sets(kv, keys))
        compactions.append((await kv.stats()).compactions - before)
        await kv.close()
    aiokv_rate = statistics.median(rates)
    return announce(
        Row("1c. set, flush, with compactions", rate(aiokv_rate), "-", "-", ">= 250,000/s",
            verdict(aiokv_rate, ">=", 250_000)),
        f"{len(keys):,} overwrites per repetition; compactions during each: {compactions}",
        spreads(aiokv=(rates, rate)))


async def measure_loop_stalls(sizes: Sizes, fresh: FreshPaths) -> Row:
    keys = overwrite_keys(sizes.long_overwrites)
    worst: list[float] = []
    p99: list[float] = []
    bare_worst: list[float] = []
    compactions: list[int] = []

    # The workload of 1., but yielding after each set: a set at "flush"
    # does not suspend, so without this the ticker would hardly ever run.
    # close() is inside the window so that a compaction still running counts.
    async def write_and_close(kv: aiokv.AioKV) -> None:
        before = (await kv.stats()).compactions
        for key in keys:
            await kv.set(key, time.time())
            await asyncio.sleep(0)
        compactions.append((await kv.stats()).compactions - before)
        await kv.close()

    # The same loop over bare appends: the stalls this machine causes by
    # itself (other processes, the kernel), against which to read aiokv's.
    async def bare_appends(path: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            for key in keys:
                os.write(fd, _format.encode_set(key, time.time()))
                await asyncio.sleep(0)
        finally:
            os.close(fd)

    for _ in range(sizes.repetitions):
        kv = await filled_store(fresh("stall"), "flush")
        gaps = await loop_gaps_during(write_and_close(kv))
        worst.append(gaps[-1])
        p99.append(percentile(gaps, 0.99))
        bare_worst.append((await loop_gaps_during(bare_appends(fresh("stall-bare"))))[-1])
    median_worst = statistics.median(worst)
    return announce(
        Row("6. worst loop stall, flush", millis(median_worst),
            millis(statistics.median(bare_worst)), "-", "< 1 ms",
            verdict(median_worst, "<", 0.001)),
        f"99th percentile gap {median(p99, millis)}; worst over all repetitions "
        f"{millis(max(worst))}; compactions during each: {compactions}; "
        "baseline: the same loop over bare os.write appends (the machine's own noise)",
        spreads(worst=(worst, millis), p99=(p99, millis), bare=(bare_worst, millis)))


# -- 7. import time, and that importing has no side effects -----------------


_TIMED_IMPORT = ("import time; start = time.perf_counter(); import {modules}; "
                 "print(time.perf_counter() - start)")

# Runs in a fresh interpreter: an audit hook sees every open for writing and
# every file-system change made while aiokv is imported; /proc/self/task
# counts OS threads (also those a C extension might start).
_SIDE_EFFECTS_CHECK = r"""
import json, os, sys, threading
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
changes = []
def hook(event, args):
    if event == "open":
        path, mode, flags = args
        writing = (any(c in mode for c in "wax+") if isinstance(mode, str)
                   else bool((flags or 0) & WRITE_FLAGS))
        cached = "__pycache__" in str(path) or (
            sys.pycache_prefix is not None and str(path).startswith(sys.pycache_prefix))
        if writing and not cached:  # bytecode caching is the interpreter's, not aiokv's
            changes.append(f"open {path} for writing")
    elif event in ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.symlink",
                   "os.link", "os.truncate", "shutil.rmtree"):
        changes.append(f"{event} {args[0]}")
sys.addaudithook(hook)
os_threads = len(os.listdir("/proc/self/task"))
py_threads = threading.active_count()
listing = sorted(os.listdir("."))
import aiokv
new_changes = list(changes)
print(json.dumps({
    "new_os_threads": len(os.listdir("/proc/self/task")) - os_threads,
    "new_python_threads": threading.active_count() - py_threads,
    "new_files_in_cwd": sorted(set(os.listdir(".")) - set(listing)),
    "writes": new_changes,
}))
"""


def child_environment(directory: str) -> dict[str, str]:
    """The environment for the import children: bytecode cached, under ``directory``.

    PYTHONDONTWRITEBYTECODE (set on some machines) would make aiokv, an
    editable install, compile from source on every import while the
    installed baselines load bytecode. A private cache prefix gives both
    sides cached bytecode without writing into the source tree.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(directory, "pycache")
    return env


def timed_import(modules: str, directory: str, env: dict[str, str]) -> float:
    completed = subprocess.run(
        [sys.executable, "-c", _TIMED_IMPORT.format(modules=modules)],
        cwd=directory, env=env, capture_output=True, text=True, check=True)
    return float(completed.stdout)


def baseline_modules() -> tuple[str, str]:
    """The modules aiokv is compared against, and a note when aiofiles is missing."""
    if importlib.util.find_spec("aiofiles") is None:
        return "asyncio, msgpack", "aiofiles is not installed: baseline is asyncio, msgpack"
    return "asyncio, msgpack, aiofiles", ""


def measure_import(sizes: Sizes, directory: str) -> list[Row]:
    workdir = os.path.join(directory, "imports")
    os.mkdir(workdir)
    env = child_environment(workdir)
    baseline, note = baseline_modules()
    for modules in (baseline, "aiokv"):  # warm-up: fills the bytecode cache
        timed_import(modules, workdir, env)
    baseline_times: list[float] = []
    aiokv_times: list[float] = []
    for _ in range(sizes.import_runs):  # alternating, so drift hits both alike
        baseline_times.append(timed_import(baseline, workdir, env))
        aiokv_times.append(timed_import("aiokv", workdir, env))
    ratio = paired_ratio(aiokv_times, baseline_times)
    rows = [announce(
        Row("7. import time", median(aiokv_times, millis), median(baseline_times, millis),
            f"aiokv/baseline {ratio:.2f}", "<= 1.2", verdict(ratio, "<=", 1.2)),
        f"baseline: import {baseline}; {sizes.import_runs} runs each, alternating", note,
        spreads(aiokv=(aiokv_times, millis), baseline=(baseline_times, millis)))]

    empty = os.path.join(directory, "import-side-effects")
    os.mkdir(empty)
    completed = subprocess.run([sys.executable, "-c", _SIDE_EFFECTS_CHECK], cwd=empty,
                               env=env, capture_output=True, text=True, check=True)
    found: dict[str, Any] = json.loads(completed.stdout)
    clean = (found["new_os_threads"] == 0 and found["new_python_threads"] == 0
             and not found["new_files_in_cwd"] and not found["writes"])
    rows.append(announce(
        Row("7a. import side effects", "none" if clean else "found", "-", "-",
            "no threads, no files", "PASS" if clean else "MISS"),
        f"new OS threads {found['new_os_threads']}, new Python threads "
        f"{found['new_python_threads']}, new files in cwd {found['new_files_in_cwd']}, "
        f"opens for writing / file changes {found['writes']}"))
    return rows


# -- main -------------------------------------------------------------------


async def run_async_measurements(sizes: Sizes, directory: str) -> list[Row]:
    fresh = FreshPaths(directory)
    steps: list[Callable[[], Awaitable[Row | list[Row]]]] = [
        lambda: measure_flush_sets(sizes, fresh),
        lambda: measure_sets_with_compactions(sizes, fresh),
        lambda: measure_concurrent_fsync_sets(sizes, fresh),
        lambda: measure_other_durabilities(sizes, fresh),
        lambda: measure_gets(sizes, fresh),
        lambda: measure_replay(sizes, directory),
        lambda: measure_loop_stalls(sizes, fresh),
    ]
    rows: list[Row] = []
    for step in steps:
        result = await step()
        rows.extend(result if isinstance(result, list) else [result])
    return rows


def source_revision() -> str:
    """The git revision of the aiokv being measured (figures depend on it), if known."""
    try:
        completed = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
            cwd=os.path.dirname(os.path.abspath(aiokv.__file__)), timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown revision"
    return f"git {completed.stdout.strip()}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help="1 repetition and smaller sizes (finishes in under 30 s)")
    parser.add_argument("--repetitions", type=int, default=None,
                        help="override the number of repetitions (default 5, --quick 1)")
    parser.add_argument("--markdown", metavar="FILE",
                        help="also write the summary table as Markdown to FILE")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.repetitions is not None:
        sizes = Sizes(**{**sizes.__dict__, "repetitions": max(1, args.repetitions)})

    print(f"aiokv {aiokv.__version__} ({source_revision()}), Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, {sizes.repetitions} repetition(s); "
          "figures are medians, ranges below them", flush=True)
    started = time.perf_counter()
    # Under the current directory: the same file system the project lives on,
    # rather than a /tmp that may be a RAM disk.
    directory = tempfile.mkdtemp(prefix="aiokv-bench-", dir=os.getcwd())
    try:
        rows = asyncio.run(run_async_measurements(sizes, directory))
        rows += measure_import(sizes, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    print(f"\nSummary ({time.perf_counter() - started:.1f} s):")
    for line in summary_lines(rows):
        print(line)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as file:
            file.write(markdown_table(rows))
        print(f"Markdown table written to {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
