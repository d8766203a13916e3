"""Sync-API benchmark: ``aiokv.KV`` against other embedded Python stores, in one run.

Run from the repository root, after ``pip install -e '.[bench]'``::

    python benchmarks/bench_sync.py            # full run, 5 repetitions
    python benchmarks/bench_sync.py --quick    # 1 repetition, fewer gets and incrs (< 30 s)
    python benchmarks/bench_sync.py --markdown results.md
    python benchmarks/bench_sync.py --profile  # also cProfile aiokv's three loops

The peers are ``diskcache.Cache``, ``sqlitedict.SqliteDict(path, autocommit=True)``,
the standard library's ``shelve`` and ``semidbm``; a peer that cannot be
imported is skipped with a note. Every figure is the median over the
repetitions, every ratio (aiokv / peer) the median of the per-repetition
ratios, with the min..max spread printed below. Targets are printed as
PASS/MISS and never asserted. ``benchmarks/README.md`` explains each line.
"""

from __future__ import annotations

import argparse
import cProfile
import dbm
import importlib
import importlib.metadata
import io
import os
import pstats
import shutil
import sqlite3
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

# The benchmarks directory is on sys.path when this file is run as a script.
from bench_core import (
    STORE_KEYS,
    Row,
    announce,
    markdown_table,
    overwrite_keys,
    paired_ratio,
    rate,
    source_revision,
    spreads,
    summary_lines,
    verdict,
)

import aiokv

INCR_KEY = "counter"


@dataclass(frozen=True)
class Sizes:
    """How much work each repetition does (every system does the same)."""

    repetitions: int
    sets: int  # overwrites of user:{i % 5000}
    gets: int  # reads of user:{i % 5000}
    incrs: int  # increments of one counter
    slow_divisor: int  # a slow peer (sqlitedict) is timed on 1/slow_divisor of each


FULL = Sizes(repetitions=5, sets=20_000, gets=100_000, incrs=20_000, slow_divisor=4)
QUICK = Sizes(repetitions=1, sets=20_000, gets=50_000, incrs=10_000, slow_divisor=4)

SET_TARGET = 250_000.0
SET_VS_DISKCACHE_TARGET = 15.0
GET_TARGET = 1_000_000.0

SYNCHRONOUS: dict[object, str] = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
"""SQLite's PRAGMA synchronous levels, by number."""


# -- timed loops -------------------------------------------------------------
#
# Each loop calls a bound method held in a local variable, so that what is
# timed is the store's own call and not attribute lookups or an adapter
# layer. The key lists are built beforehand (see bench_core.overwrite_keys).


def timed_sets(put: Callable[[str, float], object], keys: Sequence[str]) -> float:
    now = time.time
    start = time.perf_counter()
    for key in keys:
        put(key, now())
    return time.perf_counter() - start


def timed_gets(get: Callable[[str], object], keys: Sequence[str]) -> tuple[float, object]:
    """Seconds for ``get(key)`` over the keys, and the last value read (checked)."""
    value: object = None
    start = time.perf_counter()
    for key in keys:
        value = get(key)
    return time.perf_counter() - start, value


def timed_incrs(incr: Callable[[str], object], count: int) -> tuple[float, object]:
    key = INCR_KEY
    value: object = None
    start = time.perf_counter()
    for _ in range(count):
        value = incr(key)
    return time.perf_counter() - start, value


def timed_read_modify_writes(mapping: Any, count: int) -> tuple[float, object]:
    """``d[k] = d.get(k, 0) + 1``: the counter of a store without an incr."""
    key = INCR_KEY
    get = mapping.get
    put = mapping.__setitem__
    start = time.perf_counter()
    for _ in range(count):
        put(key, get(key, 0) + 1)
    return time.perf_counter() - start, mapping[key]


# -- contenders --------------------------------------------------------------


class Contender:
    """One store: opened fresh and filled (untimed), then the three timed loops."""

    name = ""
    set_note = ""
    get_note = ""
    incr_note = ""
    divisor = 1  # > 1: timed on a fraction of the work (reported per operation)

    def open(self, directory: str) -> None:
        raise NotImplementedError

    def time_sets(self, keys: Sequence[str]) -> float:
        raise NotImplementedError

    def time_gets(self, keys: Sequence[str]) -> float:
        raise NotImplementedError

    def time_incrs(self, count: int) -> float:
        raise NotImplementedError

    def durability(self) -> str:
        """What an acknowledged write survives, as configured (store open)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def check(name: str, what: str, value: object, expected: object) -> None:
    """A wrong answer would make its timing meaningless: stop the run."""
    ok = type(value) is expected if isinstance(expected, type) else value == expected
    if not ok:
        raise RuntimeError(f"{name}: {what} returned {value!r}, expected {expected!r}")


class AiokvContender(Contender):
    name = "aiokv"
    set_note = "kv.set(key, time.time())"
    get_note = "kv.get(key) -> float"
    incr_note = "kv.incr(key): atomic, one logged record"

    def __init__(self) -> None:
        self.kv: aiokv.KV | None = None

    def store(self) -> aiokv.KV:
        assert self.kv is not None
        return self.kv

    def open(self, directory: str) -> None:
        self.kv = kv = aiokv.KV(os.path.join(directory, "store.kv"))  # durability="flush"
        for i in range(STORE_KEYS):
            kv.set(f"user:{i}", float(i))

    def time_sets(self, keys: Sequence[str]) -> float:
        return timed_sets(self.store().set, keys)

    def time_gets(self, keys: Sequence[str]) -> float:
        seconds, value = timed_gets(self.store().get, keys)
        check(self.name, "get", value, float)
        return seconds

    def time_incrs(self, count: int) -> float:
        seconds, value = timed_incrs(self.store().incr, count)
        check(self.name, "incr", value, count)
        return seconds

    def durability(self) -> str:
        kv = self.store()
        return (f"aiokv {aiokv.__version__}, KV(durability={kv.durability!r}), fsync_interval "
                "1.0 s: a set returns once its record is in the OS's page cache (copied "
                "into a shared mapping of the log, or write(2) returned), so it survives "
                "kill -9; a power loss may lose the writes of the last ~1 s "
                "(fsync_interval plus one fsync), always a suffix (docs/guarantees.md)")

    def close(self) -> None:
        self.store().close()


class DiskcacheContender(Contender):
    name = "diskcache"
    set_note = "cache.set(key, time.time()): floats are stored as SQLite REAL, not pickled"
    get_note = "cache.get(key) -> float"
    incr_note = "cache.incr(key): atomic, one SQLite transaction"

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.cache: Any = None
        self.directory = ""

    def open(self, directory: str) -> None:
        self.directory = os.path.join(directory, "cache")
        self.cache = cache = self.module.Cache(self.directory)
        for i in range(STORE_KEYS):
            cache.set(f"user:{i}", float(i))

    def time_sets(self, keys: Sequence[str]) -> float:
        return timed_sets(self.cache.set, keys)

    def time_gets(self, keys: Sequence[str]) -> float:
        seconds, value = timed_gets(self.cache.get, keys)
        check(self.name, "get", value, float)
        return seconds

    def time_incrs(self, count: int) -> float:
        seconds, value = timed_incrs(self.cache.incr, count)
        check(self.name, "incr", value, count)
        return seconds

    def durability(self) -> str:
        # journal_mode is kept in the database file: read it back independently.
        # synchronous is per connection: diskcache's own setting is what applies.
        connection = sqlite3.connect(os.path.join(self.directory, "cache.db"))
        try:
            journal = str(connection.execute("PRAGMA journal_mode").fetchone()[0])
        finally:
            connection.close()
        synchronous = getattr(self.cache, "sqlite_synchronous", "?")
        mode = f"journal_mode={journal}, synchronous={SYNCHRONOUS.get(synchronous, synchronous)}"
        if journal.lower() == "wal" and synchronous == 1:
            consequence = ("each set is a committed transaction when it returns, so it survives "
                           "kill -9; a power loss or OS crash may roll back recent commits (the "
                           "WAL is fsynced only at checkpoints; SQLite docs: WAL + NORMAL stays "
                           "consistent but is not durable)")
        else:
            consequence = "unverified for this configuration"
        return f"diskcache {self.module.__version__}, {mode} (its defaults): {consequence}"

    def close(self) -> None:
        self.cache.close()


class SqlitedictContender(Contender):
    name = "sqlitedict"
    set_note = ("d[key] = time.time(), autocommit=True: each set waits for its REPLACE and "
                "commit on sqlitedict's worker thread; values pickled")
    get_note = "d[key] -> float (a SELECT round trip through the worker thread, unpickled)"
    incr_note = ("read-modify-write d[k] = d.get(k, 0) + 1 (no incr in the API; not atomic "
                 "across threads; get() is a SELECT for `in` plus one for the value)")

    def __init__(self, module: ModuleType, divisor: int) -> None:
        self.module = module
        self.divisor = divisor
        self.db: Any = None

    def open(self, directory: str) -> None:
        self.db = db = self.module.SqliteDict(os.path.join(directory, "store.sqlite"),
                                              autocommit=True)
        db.update({f"user:{i}": float(i) for i in range(STORE_KEYS)})  # one commit, untimed

    def time_sets(self, keys: Sequence[str]) -> float:
        return timed_sets(self.db.__setitem__, keys)

    def time_gets(self, keys: Sequence[str]) -> float:
        seconds, value = timed_gets(self.db.__getitem__, keys)
        check(self.name, "get", value, float)
        return seconds

    def time_incrs(self, count: int) -> float:
        seconds, value = timed_read_modify_writes(self.db, count)
        check(self.name, "incr", value, count)
        return seconds

    def durability(self) -> str:
        # Ask sqlitedict's own connection (the setting is per connection).
        try:
            journal = self.db.conn.select_one("PRAGMA journal_mode")[0]
            synchronous = self.db.conn.select_one("PRAGMA synchronous")[0]
        except Exception as exc:  # an internal API: say so rather than guess
            return f"sqlitedict: could not read its PRAGMAs ({exc!r}): unverified"
        mode = f"journal_mode={journal}, synchronous={SYNCHRONOUS.get(synchronous, synchronous)}"
        if synchronous == 0:
            consequence = ("a set returns after its commit, so it survives kill -9; but nothing "
                           "is ever fsynced: a power loss or OS crash may lose recent writes and, "
                           "per the SQLite docs for synchronous=OFF, may corrupt the database")
        else:
            consequence = "unverified for this configuration"
        return (f"sqlitedict {self.module.__version__}, autocommit=True, {mode} "
                f"(sqlitedict sets synchronous=OFF itself): {consequence}")

    def close(self) -> None:
        self.db.close()


class ShelveContender(Contender):
    name = "shelve"
    set_note = "shelf[key] = time.time() (pickled by shelve)"
    get_note = "shelf[key] -> float (unpickled by shelve)"
    incr_note = "read-modify-write d[k] = d.get(k, 0) + 1 (no incr in the API; not atomic)"

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.shelf: Any = None
        self.path = ""

    def open(self, directory: str) -> None:
        self.path = os.path.join(directory, "store")
        self.shelf = shelf = self.module.open(self.path)  # flag "c", writeback=False
        for i in range(STORE_KEYS):
            shelf[f"user:{i}"] = float(i)

    def time_sets(self, keys: Sequence[str]) -> float:
        return timed_sets(self.shelf.__setitem__, keys)

    def time_gets(self, keys: Sequence[str]) -> float:
        seconds, value = timed_gets(self.shelf.__getitem__, keys)
        check(self.name, "get", value, float)
        return seconds

    def time_incrs(self, count: int) -> float:
        seconds, value = timed_read_modify_writes(self.shelf, count)
        check(self.name, "incr", value, count)
        return seconds

    def durability(self) -> str:
        backend = dbm.whichdb(self.path)
        consequences = {
            "dbm.dumb": (
                "no fsync ever; a value is written with plain writes (in place when the new "
                "pickle fits the old 512-byte slot, as these floats do, else appended), but "
                "the index file (.dir) is rewritten only by sync()/close(): after kill -9 an "
                "overwrite that moved its value is lost, and CPython's dbm/dumb.py calls a "
                "crash before _commit() 'a disaster' for the database; power loss: "
                "unprotected"),
            "dbm.gnu": ("GDBM opened without the 's' (sync) flag: no fsync; kill -9: "
                        "unverified; power loss may lose or corrupt recent writes (unverified)"),
            "dbm.ndbm": "ndbm: depends on the C library behind it; unverified",
            "dbm.sqlite3": "dbm.sqlite3 (Python 3.13+): SQLite defaults; unverified",
        }
        consequence = consequences.get(str(backend), "unknown backend; unverified")
        return f"shelve, backend dbm.whichdb() = {backend!r}: {consequence}"

    def close(self) -> None:
        self.shelf.close()


class SemidbmContender(Contender):
    name = "semidbm"
    set_note = "db[key] = struct.pack('<d', time.time()) (semidbm stores bytes)"
    get_note = "struct.unpack('<d', db[key])[0] -> float (the unpacking is timed)"
    incr_note = ("read-modify-write db[k] = b'%d' % (int(db[k]) + 1), KeyError counting as 0 "
                 "(no incr and no get() in its API, and `str in db` is always False in "
                 "semidbm 0.5.1 as it does not encode the key; not atomic)")

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.db: Any = None

    def open(self, directory: str) -> None:
        self.db = db = self.module.open(os.path.join(directory, "store.semidbm"), "c")
        pack = struct.Struct("<d").pack
        for i in range(STORE_KEYS):
            db[f"user:{i}"] = pack(float(i))

    def time_sets(self, keys: Sequence[str]) -> float:
        put = self.db.__setitem__
        pack = struct.Struct("<d").pack
        now = time.time
        start = time.perf_counter()
        for key in keys:
            put(key, pack(now()))
        return time.perf_counter() - start

    def time_gets(self, keys: Sequence[str]) -> float:
        get = self.db.__getitem__
        unpack = struct.Struct("<d").unpack
        value: object = None
        start = time.perf_counter()
        for key in keys:
            value = unpack(get(key))[0]
        seconds = time.perf_counter() - start
        check(self.name, "get", value, float)
        return seconds

    def time_incrs(self, count: int) -> float:
        db = self.db
        get = db.__getitem__
        put = db.__setitem__
        key = INCR_KEY
        start = time.perf_counter()
        for _ in range(count):
            try:
                current = int(get(key))
            except KeyError:
                current = 0
            put(key, b"%d" % (current + 1))
        seconds = time.perf_counter() - start
        check(self.name, "incr", int(db[key]), count)
        return seconds

    def durability(self) -> str:
        version = importlib.metadata.version("semidbm")
        return (f"semidbm {version}: each set is one write(2) appended to its data file "
                "(O_APPEND), with no fsync until sync()/close(), so it survives kill -9; a "
                "power loss may lose recent writes, and a torn last record can make the next "
                "open fail (DBMLoadError): it has no recovery rule (from its loader's source, and "
                "seen by cutting its data file short)")

    def close(self) -> None:
        self.db.close()


PEERS = ("diskcache", "sqlitedict", "shelve", "semidbm")


def load_contenders(sizes: Sizes) -> tuple[list[Contender], list[str]]:
    """aiokv first, then every peer that imports; and a note for each that does not."""
    contenders: list[Contender] = [AiokvContender()]
    skipped: list[str] = []
    for name in PEERS:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            skipped.append(f"{name}: skipped, cannot import it ({exc}); "
                           "pip install -e '.[bench]' installs the peers")
            continue
        if name == "diskcache":
            contenders.append(DiskcacheContender(module))
        elif name == "sqlitedict":
            contenders.append(SqlitedictContender(module, sizes.slow_divisor))
        elif name == "shelve":
            contenders.append(ShelveContender(module))
        else:
            contenders.append(SemidbmContender(module))
    return contenders, skipped


# -- measuring ---------------------------------------------------------------


@dataclass
class Rates:
    """Per-repetition rates (operations per second) of one contender."""

    sets: list[float] = field(default_factory=list)
    gets: list[float] = field(default_factory=list)
    incrs: list[float] = field(default_factory=list)
    durability: str = ""


def measure(contenders: Sequence[Contender], sizes: Sizes, workdir: str) -> dict[str, Rates]:
    set_keys = overwrite_keys(sizes.sets)
    get_keys = overwrite_keys(sizes.gets)
    results = {c.name: Rates() for c in contenders}
    for repetition in range(sizes.repetitions):
        started = time.perf_counter()
        for contender in contenders:
            rates = results[contender.name]
            d = contender.divisor
            sets = set_keys[: len(set_keys) // d]
            gets = get_keys[: len(get_keys) // d]
            incrs = sizes.incrs // d
            directory = tempfile.mkdtemp(prefix=f"{contender.name}-", dir=workdir)
            try:
                contender.open(directory)  # fresh store, 5,000 keys, untimed
                try:
                    rates.sets.append(len(sets) / contender.time_sets(sets))
                    rates.gets.append(len(gets) / contender.time_gets(gets))
                    rates.incrs.append(incrs / contender.time_incrs(incrs))
                    if not rates.durability:
                        rates.durability = contender.durability()
                finally:
                    contender.close()
            finally:
                shutil.rmtree(directory, ignore_errors=True)
        print(f"repetition {repetition + 1}/{sizes.repetitions} done in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
    return results


def work_note(contender: Contender, count: int, unit: str) -> str:
    if contender.divisor == 1:
        return ""
    return (f"{contender.name} timed on {count // contender.divisor:,} of the {count:,} "
            f"{unit} (1/{contender.divisor}, it is slow); its rate is per operation")


def report_workload(number: str, label: str, unit: str, *, count: int,
                    contenders: Sequence[Contender], results: dict[str, Rates],
                    pick: Callable[[Rates], list[float]], target: float | None,
                    ratio_targets: dict[str, float]) -> list[Row]:
    """The aiokv line and one line per peer (aiokv / peer) for one workload."""
    ours = pick(results["aiokv"])
    ours_median = statistics.median(ours)
    aiokv_contender = contenders[0]
    if target is None:
        head = Row(f"{number}. {label}", rate(ours_median), "-", "-", "(information)", "info")
    else:
        head = Row(f"{number}. {label}", rate(ours_median), "-", "-", f">= {target:,.0f}/s",
                   verdict(ours_median, ">=", target))
    rows = [announce(head, f"{count:,} {unit} per repetition: {_note(aiokv_contender, unit)}",
                     spreads(aiokv=(ours, rate)))]
    for name, wanted in ratio_targets.items():
        if name not in results:  # a target against a peer that is not installed
            letter = "abcd"[PEERS.index(name)]
            rows.append(announce(
                Row(f"{number}{letter}. {label} vs {name}", rate(ours_median), "-", "-",
                    f"aiokv/peer >= {wanted:g}x", "skip"),
                f"{name} is not installed: this target cannot be checked"))
    for contender in contenders[1:]:
        letter = "abcd"[PEERS.index(contender.name)]  # fixed, whichever peers are present
        theirs = pick(results[contender.name])
        ratio = paired_ratio(ours, theirs)
        limit = ratio_targets.get(contender.name)
        target_text, result = "(information)", "info"
        if limit is not None:
            target_text, result = f"aiokv/peer >= {limit:g}x", verdict(ratio, ">=", limit)
        rows.append(announce(
            Row(f"{number}{letter}. {label} vs {contender.name}", rate(ours_median),
                rate(statistics.median(theirs)), f"aiokv/{contender.name} {ratio:,.1f}x",
                target_text, result),
            f"{contender.name}: {_note(contender, unit)}", work_note(contender, count, unit),
            spreads(**{contender.name: (theirs, rate),
                       "ratio": ([a / b for a, b in zip(ours, theirs, strict=True)],
                                 lambda r: f"{r:,.1f}x")})))
    return rows


def _note(contender: Contender, unit: str) -> str:
    return {"sets": contender.set_note, "gets": contender.get_note,
            "incrs": contender.incr_note}[unit]


def report(contenders: Sequence[Contender], results: dict[str, Rates], sizes: Sizes,
           skipped: Sequence[str]) -> list[Row]:
    rows = report_workload("1", "set", "sets", count=sizes.sets, contenders=contenders,
                           results=results, pick=lambda r: r.sets, target=SET_TARGET,
                           ratio_targets={"diskcache": SET_VS_DISKCACHE_TARGET})
    rows += report_workload("2", "get", "gets", count=sizes.gets, contenders=contenders,
                            results=results, pick=lambda r: r.gets, target=GET_TARGET,
                            ratio_targets={})
    rows += report_workload("3", "incr", "incrs", count=sizes.incrs, contenders=contenders,
                            results=results, pick=lambda r: r.incrs, target=None, ratio_targets={})
    for note in skipped:
        rows.append(Row(f"peer {note.split(':', 1)[0]}", "-", "-", "-", "-", "skip"))
    return rows


def durability_lines(contenders: Sequence[Contender], results: dict[str, Rates]) -> list[str]:
    return [results[c.name].durability for c in contenders]


# -- profile (--profile) -----------------------------------------------------


def profile_aiokv(sizes: Sizes, workdir: str, lines: int = 14) -> None:
    """cProfile aiokv's three loops on a fresh store: where a set, get, incr go."""
    contender = AiokvContender()
    directory = tempfile.mkdtemp(prefix="profile-", dir=workdir)
    set_keys, get_keys = overwrite_keys(sizes.sets), overwrite_keys(sizes.gets)
    workloads: list[tuple[str, Callable[[], float]]] = [
        ("set", lambda: contender.time_sets(set_keys)),
        ("get", lambda: contender.time_gets(get_keys)),
        ("incr", lambda: contender.time_incrs(sizes.incrs)),
    ]
    try:
        contender.open(directory)
        try:
            for name, run in workloads:
                profiler = cProfile.Profile()
                profiler.enable()
                run()
                profiler.disable()
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(lines)
                print(f"\nProfile of aiokv {name} (cProfile, sorted by own time; profiling "
                      "slows every call, compare shares, not totals):")
                print(out.getvalue().strip())
        finally:
            contender.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- main --------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help="1 repetition and fewer gets and incrs (finishes in under 30 s)")
    parser.add_argument("--repetitions", type=int, default=None,
                        help="override the number of repetitions (default 5, --quick 1)")
    parser.add_argument("--markdown", metavar="FILE",
                        help="also write the summary table and durability notes as Markdown")
    parser.add_argument("--profile", action="store_true",
                        help="afterwards, cProfile aiokv's set, get and incr loops")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.repetitions is not None:
        sizes = Sizes(**{**sizes.__dict__, "repetitions": max(1, args.repetitions)})

    contenders, skipped = load_contenders(sizes)
    print(f"aiokv {aiokv.__version__} ({source_revision()}), Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, {sizes.repetitions} repetition(s); "
          "figures are medians, ranges below them; ratios are aiokv / peer", flush=True)
    print(f"contenders: {', '.join(c.name for c in contenders)}", flush=True)
    for note in skipped:
        print(note, flush=True)

    started = time.perf_counter()
    # Under the current directory: the file system the project lives on,
    # rather than a /tmp that may be a RAM disk.
    workdir = tempfile.mkdtemp(prefix="aiokv-bench-sync-", dir=os.getcwd())
    try:
        results = measure(contenders, sizes, workdir)
        print()
        rows = report(contenders, results, sizes, skipped)
        durability = durability_lines(contenders, results)
        print("\nDurability of an acknowledged write, as configured here:")
        for line in durability:
            print(f"  {line}")
        elapsed = time.perf_counter() - started
        if args.profile:
            profile_aiokv(sizes, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nSummary ({elapsed:.1f} s):")
    for line in summary_lines(rows):
        print(line)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as file:
            file.write(markdown_table(rows))
            file.write("\nDurability of an acknowledged write, as configured:\n\n")
            file.writelines(f"- {line}\n" for line in durability)
        print(f"Markdown written to {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
