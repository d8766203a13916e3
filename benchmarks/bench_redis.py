"""aiokv on a Redis server against raw redis-py sending the same commands.

A private redis-server (AOF on, appendfsync everysec) runs on a loopback
port. For each call, aiokv's store (``from_url``) and a raw redis-py client
of the same kind (async or blocking, a pool that waits, RESP2) send the same
commands to the same server, one call at a time from one task or thread,
alternating within each repetition: the ratio is aiokv's time per call over
raw redis-py's. Then ``get_all`` of 10,000 keys (raw: SCAN and MGET pages,
as aiokv sends them), and ``aiokv copy`` of a local store of 1,000,000 keys
(100,000 with --quick) into the server.

    python benchmarks/bench_redis.py [--quick] [--repetitions N]

Targets: each call <= 1.15 x raw redis-py; copy >= 40,000 keys/s. Printed
with PASS or MISS; nothing asserts on a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import redis
import redis.asyncio
from systems import RedisServer

from aiokv import KV, AioKV
from aiokv._copy import copy_store
from aiokv._redis_plans import INCR, SCAN_COUNT

PREFIX = "bench:"
CALL_TARGET = 1.15
COPY_TARGET = 40_000


@dataclass(frozen=True)
class Sizes:
    calls: int
    get_all_keys: int
    copy_keys: int
    repetitions: int


FULL = Sizes(calls=5_000, get_all_keys=10_000, copy_keys=1_000_000, repetitions=5)
QUICK = Sizes(calls=1_000, get_all_keys=10_000, copy_keys=100_000, repetitions=1)


@dataclass
class Line:
    name: str
    ours: list[float]
    raw: list[float]

    def ratio(self) -> float:
        return statistics.median(a / b for a, b in zip(self.ours, self.raw, strict=True))


def per_call(seconds: float, calls: int) -> float:
    return seconds / calls


async def time_async(call: Callable[[int], Awaitable[object]], calls: int) -> float:
    started = time.perf_counter()
    for i in range(calls):
        await call(i)
    return per_call(time.perf_counter() - started, calls)


def time_sync(call: Callable[[int], object], calls: int) -> float:
    started = time.perf_counter()
    for i in range(calls):
        call(i)
    return per_call(time.perf_counter() - started, calls)


def raw_value(value: float) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


async def async_lines(url: str, sizes: Sizes) -> list[Line]:
    store = AioKV.from_url(f"{url}?prefix={PREFIX}")
    pool = redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=32, protocol=2)
    raw = redis.asyncio.Redis(connection_pool=pool)
    keys = [f"k{i % 1000}" for i in range(sizes.calls)]
    full = [(PREFIX + key).encode() for key in keys]
    await raw.script_load(INCR.source)
    lines = {name: Line(f"async {name}", [], []) for name in ("set", "get", "incr(ttl=60)")}
    for _ in range(sizes.repetitions):
        lines["set"].ours.append(await time_async(
            lambda i: store.set(keys[i], float(i)), sizes.calls))
        lines["set"].raw.append(await time_async(
            lambda i: raw.set(full[i], raw_value(float(i))), sizes.calls))
        lines["get"].ours.append(await time_async(lambda i: store.get(keys[i]), sizes.calls))
        lines["get"].raw.append(await time_async(lambda i: raw.get(full[i]), sizes.calls))
        await store.clear()
        lines["incr(ttl=60)"].ours.append(await time_async(
            lambda i: store.incr(keys[i], ttl=60), sizes.calls))
        await store.clear()
        lines["incr(ttl=60)"].raw.append(await time_async(
            lambda i: raw.evalsha(INCR.sha, 1, full[i], 1, 60000), sizes.calls))
        await store.clear()
    await store.close()
    await raw.aclose()
    await pool.disconnect()
    return list(lines.values())


def sync_lines(url: str, sizes: Sizes) -> list[Line]:
    store = KV.from_url(f"{url}?prefix={PREFIX}")
    raw = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
        url, max_connections=32, protocol=2))
    keys = [f"k{i % 1000}" for i in range(sizes.calls)]
    full = [(PREFIX + key).encode() for key in keys]
    raw.script_load(INCR.source)
    lines = {name: Line(f"sync {name}", [], []) for name in ("set", "get", "incr(ttl=60)")}
    for _ in range(sizes.repetitions):
        lines["set"].ours.append(time_sync(lambda i: store.set(keys[i], float(i)), sizes.calls))
        lines["set"].raw.append(time_sync(
            lambda i: raw.set(full[i], raw_value(float(i))), sizes.calls))
        lines["get"].ours.append(time_sync(lambda i: store.get(keys[i]), sizes.calls))
        lines["get"].raw.append(time_sync(lambda i: raw.get(full[i]), sizes.calls))
        store.clear()
        lines["incr(ttl=60)"].ours.append(time_sync(
            lambda i: store.incr(keys[i], ttl=60), sizes.calls))
        store.clear()
        lines["incr(ttl=60)"].raw.append(time_sync(
            lambda i: raw.evalsha(INCR.sha, 1, full[i], 1, 60000), sizes.calls))
        store.clear()
    get_all = Line(f"sync get_all of {sizes.get_all_keys:,} keys", [], [])
    for i in range(sizes.get_all_keys):
        store.set(f"g{i}", float(i))
    for _ in range(sizes.repetitions):
        started = time.perf_counter()
        ours = store.get_all()
        get_all.ours.append(time.perf_counter() - started)
        started = time.perf_counter()
        theirs = raw_get_all(raw)
        get_all.raw.append(time.perf_counter() - started)
        assert len(ours) == len(theirs) == sizes.get_all_keys
    store.clear()
    store.close()
    raw.close()
    return [*lines.values(), get_all]


def raw_get_all(raw: Any) -> dict[bytes, object]:
    """What get_all sends, by hand: SCAN to the end, MGET a page at a time."""
    found = list(dict.fromkeys(raw.scan_iter(match=f"{PREFIX}*", count=SCAN_COUNT)))
    values: dict[bytes, object] = {}
    for start in range(0, len(found), SCAN_COUNT):
        page = found[start:start + SCAN_COUNT]
        for key, value in zip(page, raw.mget(page), strict=True):
            values[key] = msgpack.unpackb(value)
    return values


def copy_rate(url: str, sizes: Sizes, directory: str) -> float:
    source = f"{directory}/copy.kv"
    with KV(source) as kv:
        for i in range(sizes.copy_keys):
            kv.set(f"user:{i}", float(i))
    target = f"{url}?prefix=copy:"
    report = copy_store(source, target)
    assert report.copied == sizes.copy_keys, report
    KV.from_url(target).clear()
    return sizes.copy_keys / report.seconds


def measure(sizes: Sizes) -> dict[str, Any]:
    """Run every line on a private redis-server; the figures as plain data:
    {"lines": [{"name", "ours", "raw", "ratio"}], "copy_keys", "copy_rate"}
    (times in seconds a call, or a get_all)."""
    directory = tempfile.mkdtemp(prefix=".bench-redis-", dir=".")
    server = RedisServer(f"{directory}/redis", "everysec")
    try:
        server.start()
        url = f"redis://127.0.0.1:{server.port}/0"
        lines = asyncio.run(async_lines(url, sizes)) + sync_lines(url, sizes)
        rate = copy_rate(url, sizes, directory)
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return {"lines": [{"name": line.name, "ours": statistics.median(line.ours),
                       "raw": statistics.median(line.raw), "ratio": line.ratio()}
                      for line in lines],
            "copy_keys": sizes.copy_keys, "copy_rate": rate}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition, smaller copy")
    parser.add_argument("--repetitions", type=int)
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.repetitions:
        sizes = Sizes(sizes.calls, sizes.get_all_keys, sizes.copy_keys, args.repetitions)
    if shutil.which("redis-server") is None:
        print("bench_redis: no redis-server on PATH", file=sys.stderr)
        return 1
    started = time.perf_counter()
    figures = measure(sizes)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(figures, file)
    print(f"\nSummary ({time.perf_counter() - started:.1f} s, medians of "
          f"{sizes.repetitions}):")
    print(f"{'line':<34} {'aiokv':>12} {'raw redis-py':>14} {'ratio':>7}  target    verdict")
    for line in figures["lines"]:
        ratio = line["ratio"]
        unit = "ms" if "get_all" in line["name"] else "us"
        scale = 1e3 if unit == "ms" else 1e6
        print(f"{line['name']:<34} {line['ours'] * scale:>9.1f} {unit} "
              f"{line['raw'] * scale:>11.1f} {unit} {ratio:>7.2f}  "
              f"<= {CALL_TARGET}   {'PASS' if ratio <= CALL_TARGET else 'MISS'}")
    rate = figures["copy_rate"]
    print(f"{'copy, ' + format(sizes.copy_keys, ',') + ' keys':<34} {rate:>9,.0f}/s"
          f"{'':>15} {'':>7}  >= {COPY_TARGET:,}/s {'PASS' if rate >= COPY_TARGET else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
