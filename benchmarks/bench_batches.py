"""Atomic batches and update() against the calls they replace, in one run.

For each backend (a local store at "flush" and at "fsync", and a private
redis-server with its AOF on, appendfsync everysec) and each shell:

* ``set_many`` of N small items (N = 10,000) against N sequential ``set``
  calls of the same items: the ratio is set_many's rate over the sets';
* ``update(key, lambda v: v + 1, 0)`` N times against ``incr(key)`` N times
  (N = 10,000; 2,000 on a server, which is a round trip each): the ratio is
  update's rate over incr's.

The two sides of a line alternate within each repetition, on fresh keys of
a fresh store; the median of the ratios is printed against the target, with
PASS or MISS. Nothing asserts on a timing.

    python benchmarks/bench_batches.py [--quick] [--repetitions N] [--no-redis]

Targets: set_many >= 5 x the sets on the local store and >= 10 x on a
server; update >= 0.5 x incr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from systems import RedisServer

from aiokv import KV, AioKV

ITEMS = 10_000
SET_MANY_TARGET = {"local": 5.0, "redis": 10.0}
UPDATE_TARGET = 0.5


@dataclass
class Line:
    name: str
    target: float
    ratios: list[float] = field(default_factory=list)

    def verdict(self) -> str:
        ratio = statistics.median(self.ratios)
        return (f"{self.name:<44} {ratio:8.2f} x  (target >= {self.target:g}: "
                f"{'PASS' if ratio >= self.target else 'MISS'}; runs "
                f"{', '.join(f'{r:.2f}' for r in self.ratios)})")


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


async def timed_async(run: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await run()
    return time.perf_counter() - start


def items(round_: int) -> dict[str, object]:
    """Small items: a timestamp, a counter, a short text, in turn."""
    values: list[object] = [1_700_000_000.5, 42, "ok"]
    return {f"r{round_}:k{i}": values[i % 3] for i in range(ITEMS)}


def blocking_round(kv: Any, round_: int, updates: int) -> tuple[float, float]:
    """(set_many's speed-up over the sets, update's rate over incr's)."""
    pairs = items(round_)
    many = timed(lambda: kv.set_many(pairs))
    moved = {f"s{key}": value for key, value in pairs.items()}

    def sets() -> None:
        for key, value in moved.items():
            kv.set(key, value)

    one_by_one = timed(sets)

    def updates_() -> None:
        for _ in range(updates):
            kv.update(f"u{round_}", lambda v: v + 1, 0)

    def incrs() -> None:
        for _ in range(updates):
            kv.incr(f"i{round_}")

    updated, incremented = timed(updates_), timed(incrs)
    return one_by_one / many, incremented / updated


async def async_round(kv: Any, round_: int, updates: int) -> tuple[float, float]:
    pairs = items(round_)
    many = await timed_async(lambda: kv.set_many(pairs))
    moved = {f"s{key}": value for key, value in pairs.items()}

    async def sets() -> None:
        for key, value in moved.items():
            await kv.set(key, value)

    one_by_one = await timed_async(sets)

    async def updates_() -> None:
        for _ in range(updates):
            await kv.update(f"u{round_}", lambda v: v + 1, 0)

    async def incrs() -> None:
        for _ in range(updates):
            await kv.incr(f"i{round_}")

    updated = await timed_async(updates_)
    incremented = await timed_async(incrs)
    return one_by_one / many, incremented / updated


def measure(where: str, backend: str, label: str, repetitions: int,
            updates: int) -> list[Line]:
    """Both lines for both shells on the store at ``where`` (a path or URL)."""
    lines = []
    for shell in ("AioKV", "KV"):
        many = Line(f"{label} {shell}: set_many / sets", SET_MANY_TARGET[backend])
        update = Line(f"{label} {shell}: update / incr", UPDATE_TARGET)
        for round_ in range(repetitions):
            if shell == "KV":
                kv = KV.from_url(where, **({"durability": "fsync"} if "fsync" in label
                                           else {}))
                ratios = blocking_round(kv, round_, updates)
                kv.clear()
                kv.close()
            else:
                async def run(round_: int = round_) -> tuple[float, float]:
                    kv = AioKV.from_url(where, **({"durability": "fsync"} if "fsync" in label
                                                  else {}))
                    try:
                        return await async_round(kv, round_, updates)
                    finally:
                        await kv.clear()
                        await kv.close()

                ratios = asyncio.run(run())
            many.ratios.append(ratios[0])
            update.ratios.append(ratios[1])
        lines += [many, update]
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--no-redis", action="store_true", help="the local store only")
    args = parser.parse_args(argv)
    repetitions = 1 if args.quick else args.repetitions
    directory = tempfile.mkdtemp(prefix=".bench-batches-", dir=".")
    lines: list[Line] = []
    try:
        lines += measure(os.path.join(directory, "flush.kv"), "local", "local flush",
                         repetitions, ITEMS)
        lines += measure(os.path.join(directory, "fsync.kv"), "local", "local fsync",
                         repetitions, ITEMS // 5)
        if not args.no_redis:
            server = RedisServer(os.path.join(directory, "redis"), "everysec")
            server.start()
            try:
                lines += measure(f"redis://127.0.0.1:{server.port}/0?prefix=bench:", "redis",
                                 "redis", repetitions, ITEMS // 5)
            finally:
                server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"{ITEMS:,} small items; median of {repetitions} run(s), ratio of rates")
    for line in lines:
        print(line.verdict())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
