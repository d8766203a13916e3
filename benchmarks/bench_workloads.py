"""Hot-path workloads of real programs, each against a float set, in one run.

Run from the repository root::

    python benchmarks/bench_workloads.py                 # 3 repetitions, 50,000 calls each
    python benchmarks/bench_workloads.py --quick         # 1 repetition, 10,000 calls
    python benchmarks/bench_workloads.py --against HEAD~3   # this tree against a revision
    python benchmarks/bench_workloads.py --markdown out.md

Each workload times one caller making the same call over and over on a fresh
store, through the async shell (``AioKV``) and the blocking one (``KV``). The
figure that matters is the ratio to the float set ``set(key, time.time())``
timed in the same child process, in the same repetition. Every measurement
runs in a child process importing aiokv from the ``src/`` directory it is
given (this tree's, or a checkout of ``--against REV``), so the two builds are
measured the same way, alternating repetition by repetition.

Every figure is a median over the repetitions, with its min..max range;
"best/best" is the ratio of the best rates (noise only slows a run, so on a
shared machine it is the steadiest figure). The verdict is the median's.
Targets are printed as PASS/MISS and never asserted. ``benchmarks/README.md``
explains each line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiokv import KV, AioKV

ROOT = Path(__file__).resolve().parent.parent
THIS_TREE_SOURCE = ROOT / "src"
CHILD_TIMEOUT = 900.0  # seconds; a full child takes a few seconds
# Untimed calls of the same kind first, on keys of their own.
WARM_UP_KEYS = tuple(f"warm:{i % 64}" for i in range(256))
DICT_VALUE_TEXT = '{"user": "bob", "n": i, "ok": True}'


@dataclass(frozen=True)
class Workload:
    """One line of each table: a call made over and over, and its target."""

    name: str  # the key used between parent and child
    label: str  # what the line shows; "N" (of "N TTL keys") is --ttl-keys
    target: float | None  # least ratio to the float set; None for the float set itself

    def text(self, sizes: Sizes) -> str:
        return self.label.replace("N TTL keys", f"{sizes.ttl_keys:,} TTL keys")


FLOAT_SET = "float"
WORKLOADS = (
    Workload(FLOAT_SET, "set(key, time.time())", None),
    Workload("now", "set(key)", 0.8),
    Workload("incr", "incr(key, ttl=60)", 0.6),
    Workload("ttl", "set(key, i, ttl=60)", 0.6),
    Workload("dict", f"set(key, {DICT_VALUE_TEXT})", 0.45),
    Workload("ttl-store", "set(key, time.time()), N TTL keys held", 0.9),
)
BY_NAME = {workload.name: workload for workload in WORKLOADS}
SHELLS = {"async": 'AioKV (async), durability "flush"',
          "sync": 'KV (blocking), durability "flush"'}


@dataclass(frozen=True)
class Sizes:
    repetitions: int
    calls: int
    keys: int
    ttl_keys: int


FULL = Sizes(repetitions=3, calls=50_000, keys=5_000, ttl_keys=1_000)
QUICK = Sizes(repetitions=1, calls=10_000, keys=5_000, ttl_keys=1_000)


# -- the child: one shell, every workload, one build --------------------------
#
# Keys and values are built before each timed loop, except the dict, which a
# program builds per call: building it is part of that workload. Each loop is
# written out plainly so that the float set and the others pay the same loop
# overhead (a `for` over the key list, plus `enumerate` where the value is i).


async def async_float_sets(kv: AioKV, keys: Sequence[str]) -> None:
    for key in keys:
        await kv.set(key, time.time())


async def async_now_sets(kv: AioKV, keys: Sequence[str]) -> None:
    for key in keys:
        await kv.set(key)


async def async_incrs(kv: AioKV, keys: Sequence[str]) -> None:
    for key in keys:
        await kv.incr(key, ttl=60)


async def async_ttl_sets(kv: AioKV, keys: Sequence[str]) -> None:
    for i, key in enumerate(keys):
        await kv.set(key, i, ttl=60)


async def async_dict_sets(kv: AioKV, keys: Sequence[str]) -> None:
    for i, key in enumerate(keys):
        await kv.set(key, {"user": "bob", "n": i, "ok": True})


def sync_float_sets(kv: KV, keys: Sequence[str]) -> None:
    for key in keys:
        kv.set(key, time.time())


def sync_now_sets(kv: KV, keys: Sequence[str]) -> None:
    for key in keys:
        kv.set(key)


def sync_incrs(kv: KV, keys: Sequence[str]) -> None:
    for key in keys:
        kv.incr(key, ttl=60)


def sync_ttl_sets(kv: KV, keys: Sequence[str]) -> None:
    for i, key in enumerate(keys):
        kv.set(key, i, ttl=60)


def sync_dict_sets(kv: KV, keys: Sequence[str]) -> None:
    for i, key in enumerate(keys):
        kv.set(key, {"user": "bob", "n": i, "ok": True})


ASYNC_LOOPS: dict[str, Callable[[AioKV, Sequence[str]], Awaitable[None]]] = {
    FLOAT_SET: async_float_sets, "now": async_now_sets, "incr": async_incrs,
    "ttl": async_ttl_sets, "dict": async_dict_sets, "ttl-store": async_float_sets}
SYNC_LOOPS: dict[str, Callable[[KV, Sequence[str]], None]] = {
    FLOAT_SET: sync_float_sets, "now": sync_now_sets, "incr": sync_incrs,
    "ttl": sync_ttl_sets, "dict": sync_dict_sets, "ttl-store": sync_float_sets}


def check_last_value(name: str, keys: Sequence[str], value: object) -> None:
    """Raise unless the last key holds what the workload's last call stored.

    A build that silently stored something else (or nothing) must not get a figure.
    """
    last = len(keys) - 1
    expected: object
    if name in (FLOAT_SET, "ttl-store"):
        good = isinstance(value, float) and abs(value - time.time()) < 600
        expected = "a float of about now"
    elif name == "now":
        good = (isinstance(value, int) and not isinstance(value, bool)
                and abs(value - time.time()) < 600)
        expected = "an int of about now"
    elif name == "incr":
        expected = keys.count(keys[last])
        good = value == expected and not isinstance(value, bool)
    elif name == "ttl":
        expected = last
        good = value == expected
    else:
        expected = {"user": "bob", "n": last, "ok": True}
        good = value == expected
    if not good:
        raise RuntimeError(f"{keys[last]} holds {value!r}, expected {expected}")


def compactions_of(stats: object) -> int | None:
    count = getattr(stats, "compactions", None)
    return count if isinstance(count, int) else None


async def one_async_workload(module: Any, name: str, path: str, sizes: Sizes,
                             keys: Sequence[str]) -> dict[str, Any]:
    loop = ASYNC_LOOPS[name]
    kv: AioKV = module.AioKV(path)
    await kv.open()
    try:
        if name == "ttl-store":
            for i in range(sizes.ttl_keys):
                await kv.set(f"ttl:{i}", time.time(), ttl=3600)
        await loop(kv, WARM_UP_KEYS)
        before = compactions_of(await kv.stats())
        start = time.perf_counter()
        await loop(kv, keys)
        elapsed = time.perf_counter() - start
        after = compactions_of(await kv.stats())
        check_last_value(name, keys, await kv.get(keys[-1]))
    finally:
        await kv.close()
    return {"rate": len(keys) / elapsed,
            "compactions": None if before is None or after is None else after - before}


def one_sync_workload(module: Any, name: str, path: str, sizes: Sizes,
                      keys: Sequence[str]) -> dict[str, Any]:
    loop = SYNC_LOOPS[name]
    kv: KV = module.KV(path)
    kv.open()
    try:
        if name == "ttl-store":
            for i in range(sizes.ttl_keys):
                kv.set(f"ttl:{i}", time.time(), ttl=3600)
        loop(kv, WARM_UP_KEYS)
        before = compactions_of(kv.stats())
        start = time.perf_counter()
        loop(kv, keys)
        elapsed = time.perf_counter() - start
        after = compactions_of(kv.stats())
        check_last_value(name, keys, kv.get(keys[-1]))
    finally:
        kv.close()
    return {"rate": len(keys) / elapsed,
            "compactions": None if before is None or after is None else after - before}


def error_text(error: BaseException) -> str:
    return f"error: {type(error).__name__}: {error}".splitlines()[0][:200]


async def run_async_shell(module: Any, order: Sequence[str], sizes: Sizes,
                          directory: str) -> dict[str, dict[str, Any]]:
    keys = [f"user:{i % sizes.keys}" for i in range(sizes.calls)]
    results: dict[str, dict[str, Any]] = {}
    for name in order:
        path = os.path.join(directory, f"async-{name}.kv")
        try:
            results[name] = await one_async_workload(module, name, path, sizes, keys)
        except Exception as error:  # one workload an old build lacks must not end the run
            results[name] = {"error": error_text(error)}
    return results


def run_sync_shell(module: Any, order: Sequence[str], sizes: Sizes,
                   directory: str) -> dict[str, dict[str, Any]]:
    keys = [f"user:{i % sizes.keys}" for i in range(sizes.calls)]
    results: dict[str, dict[str, Any]] = {}
    for name in order:
        path = os.path.join(directory, f"sync-{name}.kv")
        try:
            results[name] = one_sync_workload(module, name, path, sizes, keys)
        except Exception as error:
            results[name] = {"error": error_text(error)}
    return results


def child_main(args: argparse.Namespace, sizes: Sizes) -> int:
    """Measure one shell of the aiokv under ``--source``; print one JSON object."""
    source = Path(args.source).resolve()
    sys.path.insert(0, str(source))
    module = importlib.import_module("aiokv")
    imported_from = Path(module.__file__ or "").resolve()
    if not imported_from.is_relative_to(source):
        print(f"aiokv was imported from {imported_from}, not from {source}", file=sys.stderr)
        return 2
    order = args.order.split(",")
    directory = tempfile.mkdtemp(prefix=f"{args.child}-", dir=args.workdir)
    try:
        if args.child == "async":
            results = asyncio.run(run_async_shell(module, order, sizes, directory))
        else:
            results = run_sync_shell(module, order, sizes, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps({"aiokv_file": str(imported_from),
                      "version": getattr(module, "__version__", "?"), "results": results}))
    return 0


# -- the parent: builds, repetitions, children --------------------------------


@dataclass
class Build:
    """One aiokv to measure: a ``src`` directory, and every child's results."""

    label: str
    source: Path
    version: str = "?"
    # shell -> one {workload: result} per repetition
    runs: dict[str, list[dict[str, dict[str, Any]]]] = field(default_factory=dict)


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        message = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise SystemExit(f"git {' '.join(args)} failed: {message[-1] if message else '?'}")
    return done.stdout.strip()


def describe_this_tree() -> str:
    try:
        return git("describe", "--always", "--dirty")
    except (OSError, subprocess.SubprocessError, SystemExit):
        return "unknown revision"


@contextlib.contextmanager
def checked_out(revision: str) -> Iterator[tuple[Path, str]]:
    """A detached worktree of ``revision`` (its ``src`` and short hash), removed afterwards."""
    commit = git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    short = git("rev-parse", "--short", commit)
    directory = tempfile.mkdtemp(prefix="aiokv-against-")
    try:
        git("worktree", "add", "--detach", directory, commit)
        source = Path(directory) / "src"
        if not (source / "aiokv" / "__init__.py").is_file():
            raise SystemExit(f"{revision} ({short}) has no src/aiokv package to measure")
        yield source, short
    finally:
        # Also after a failure or Ctrl-C; --force: the checkout is ours and disposable.
        removed = subprocess.run(["git", "worktree", "remove", "--force", directory], cwd=ROOT,
                                 capture_output=True, text=True, timeout=120, check=False)
        shutil.rmtree(directory, ignore_errors=True)
        if removed.returncode != 0 and "is not a working tree" not in removed.stderr:
            print(f"warning: git worktree remove {directory} failed "
                  f"({removed.stderr.strip()}); `git worktree prune` forgets it",
                  file=sys.stderr)


def run_child(build: Build, shell: str, order: Sequence[str], sizes: Sizes,
              workdir: str) -> dict[str, dict[str, Any]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(build.source), *filter(None, [os.environ.get("PYTHONPATH")])])
    # Bytecode of both builds cached in the work directory: nothing written into
    # either source tree, and no build compiles from source in a later child.
    env["PYTHONPYCACHEPREFIX"] = os.path.join(workdir, "pycache")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", shell,
               "--source", str(build.source), "--workdir", workdir, "--order", ",".join(order),
               "--calls", str(sizes.calls), "--keys", str(sizes.keys),
               "--ttl-keys", str(sizes.ttl_keys)]
    done = subprocess.run(command, env=env, capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise SystemExit(f"the {shell} child for {build.label} failed: "
                         f"{lines[-1] if lines else f'exit status {done.returncode}'}")
    found: dict[str, Any] = json.loads(done.stdout)
    build.version = str(found["version"])
    results: dict[str, dict[str, Any]] = found["results"]
    return results


def rate(value: float) -> str:
    return f"{value:,.0f}/s"


def times(value: float) -> str:
    return f"{value:.2f}x"


def span(values: Sequence[float], show: Callable[[float], str]) -> str:
    return "-" if len(values) < 2 else f"{show(min(values))}..{show(max(values))}"


def change(value: float) -> str:
    return f"{value:.3f} ({(value - 1) * 100:+.1f} %)"


def progress_line(build: Build, shell: str, repetition: int,
                  results: dict[str, dict[str, Any]]) -> str:
    parts = []
    float_rate = results.get(FLOAT_SET, {}).get("rate")
    for name, result in results.items():  # in the order they ran
        if "error" in result:
            parts.append(f"{name} {result['error']}")
            continue
        text = (rate(result["rate"]) if name == FLOAT_SET or not float_rate
                else times(result["rate"] / float_rate))
        if result.get("compactions"):
            text += f" ({result['compactions']} compaction(s))"
        parts.append(f"{name} {text}")
    return f"  repetition {repetition + 1}, {shell}, {build.label}: " + " | ".join(parts)


def rates_of(build: Build, shell: str, name: str) -> list[float] | str:
    """The workload's rate in every repetition, or the first error."""
    rates = []
    for results in build.runs[shell]:
        result = results[name]
        if "error" in result:
            return str(result["error"])
        rates.append(float(result["rate"]))
    return rates


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Per-repetition ratios: both figures of a pair were measured moments apart."""
    return [n / d for n, d in zip(numerators, denominators, strict=True)]


def table_rows(shell: str, new: Build, old: Build | None,
               sizes: Sizes) -> tuple[list[str], list[list[str]]]:
    header = ["workload", "calls/s", "range", "vs float set", "ratio range", "best/best",
              "target", "verdict"]
    if old is not None:
        header += [f"{old.label} calls/s", f"{old.label} vs float set",
                   f"new/{old.label}", f"new/{old.label} range"]
    rows = []
    new_float = rates_of(new, shell, FLOAT_SET)
    old_float = rates_of(old, shell, FLOAT_SET) if old is not None else None
    for workload in WORKLOADS:
        label = workload.text(sizes)
        new_rates = rates_of(new, shell, workload.name)
        target = "baseline" if workload.target is None else f">= {workload.target:.2f}x"
        if isinstance(new_rates, str):
            row = [label, new_rates, "-", "-", "-", "-", target, "error"]
        else:
            row = [label, rate(statistics.median(new_rates)), span(new_rates, rate)]
            if workload.target is None:
                row += ["1.00x", "-", "1.00x", target, "-"]
            elif isinstance(new_float, str):
                row += ["-", "-", "-", target, "error"]
            else:
                against_float = ratios(new_rates, new_float)
                ratio = statistics.median(against_float)
                # Noise from a shared machine only slows a run: the best rate
                # of each is the figure it disturbs least.
                best = max(new_rates) / max(new_float)
                row += [times(ratio), span(against_float, times), times(best), target,
                        "PASS" if ratio >= workload.target else "MISS"]
        if old is not None:
            old_rates = rates_of(old, shell, workload.name)
            if isinstance(old_rates, str):
                row += [old_rates, "-", "-", "-"]
            else:
                row.append(rate(statistics.median(old_rates)))
                if old_float is None or isinstance(old_float, str):
                    row.append("-")
                else:
                    row.append(times(statistics.median(ratios(old_rates, old_float))))
                if isinstance(new_rates, str):
                    row += ["-", "-"]
                else:
                    paired = ratios(new_rates, old_rates)
                    row += [change(statistics.median(paired)),
                            span(paired, lambda v: f"{v:.3f}")]
        rows.append(row)
    return header, rows


def text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    table = [header, *rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
            .rstrip() for line in table]


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def cells(line: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |"
    return [cells(header), "| " + " | ".join("---" for _ in header) + " |",
            *(cells(row) for row in rows)]


def parse_arguments(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Sizes]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help="1 repetition of 10,000 calls per workload (a few seconds)")
    parser.add_argument("--repetitions", type=int, default=None,
                        help="override the number of repetitions (default 3, --quick 1)")
    parser.add_argument("--calls", type=int, default=None,
                        help="calls per workload (default 50,000, --quick 10,000)")
    parser.add_argument("--keys", type=int, default=None,
                        help="keys the calls cycle through (default 5,000)")
    parser.add_argument("--ttl-keys", type=int, default=None,
                        help="TTL keys held by the store of the last workload (default 1,000)")
    parser.add_argument("--against", metavar="REV",
                        help="also measure the git revision REV (checked out in a temporary "
                             "worktree), alternating with this tree, and print new/REV")
    parser.add_argument("--markdown", metavar="FILE",
                        help="also write the tables as Markdown to FILE")
    # A child process measuring one shell of one build; not for direct use.
    parser.add_argument("--child", choices=sorted(SHELLS), help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--order", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    overrides = {"repetitions": args.repetitions, "calls": args.calls, "keys": args.keys,
                 "ttl_keys": args.ttl_keys}
    for name, value in overrides.items():
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    sizes = Sizes(**{**sizes.__dict__,
                     **{name: value for name, value in overrides.items() if value is not None}})
    return args, sizes


def measure(builds: Sequence[Build], sizes: Sizes, workdir: str) -> None:
    names = [workload.name for workload in WORKLOADS]
    for repetition in range(sizes.repetitions):
        # Each repetition starts one workload later, so no workload always runs first,
        # and the builds take turns going first.
        turn = repetition % len(names)
        order = names[turn:] + names[:turn]
        ordered = builds if repetition % 2 == 0 else list(reversed(builds))
        for shell in SHELLS:
            for build in ordered:
                results = run_child(build, shell, order, sizes, workdir)
                build.runs.setdefault(shell, []).append(results)
                print(progress_line(build, shell, repetition, results), flush=True)


def report(builds: Sequence[Build], sizes: Sizes, started: float,
           markdown: str | None) -> None:
    new = builds[0]
    old = builds[1] if len(builds) > 1 else None
    print(f"\nSummary ({time.perf_counter() - started:.1f} s); ratios are medians of "
          "per-repetition ratios, targets are printed, never asserted:")
    document = [f"aiokv workloads: {sizes.calls:,} calls over {sizes.keys:,} keys per "
                f"workload, {sizes.repetitions} repetition(s); this tree (aiokv {new.version}, "
                f"{describe_this_tree()})"
                + (f" against {old.label} (aiokv {old.version})" if old is not None else "")]
    for shell, title in SHELLS.items():
        header, rows = table_rows(shell, new, old, sizes)
        print(f"\n{title}")
        for line in text_table(header, rows):
            print(line)
        document += ["", f"### {title}", "", *markdown_table(header, rows)]
    if markdown:
        Path(markdown).write_text("\n".join(document) + "\n", encoding="utf-8")
        print(f"\nMarkdown tables written to {markdown}")


def main(argv: Sequence[str] | None = None) -> int:
    args, sizes = parse_arguments(argv)
    if args.child:
        return child_main(args, sizes)

    started = time.perf_counter()
    this_tree = Build("this tree", THIS_TREE_SOURCE)
    print(f"this tree: {THIS_TREE_SOURCE} ({describe_this_tree()}); "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {sizes.calls:,} calls over "
          f"{sizes.keys:,} keys per workload, {sizes.repetitions} repetition(s); "
          "ratios to the float set of the same child and repetition", flush=True)
    # Under the current directory: the project's file system, not a RAM-backed /tmp.
    workdir = tempfile.mkdtemp(prefix="aiokv-bench-workloads-", dir=os.getcwd())
    try:
        with contextlib.ExitStack() as stack:
            builds = [this_tree]
            if args.against:
                source, short = stack.enter_context(checked_out(args.against))
                builds.append(Build(args.against, source))
                print(f"against {args.against} = {short}, checked out in {source.parent}; "
                      "the builds alternate, repetition by repetition", flush=True)
            measure(builds, sizes, workdir)
        for build in builds:
            print(f"{build.label}: aiokv {build.version}", flush=True)
        report(builds, sizes, started, args.markdown)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
