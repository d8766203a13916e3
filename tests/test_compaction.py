"""Compaction: automatic, bounded, atomic, and never losing concurrent writes."""

from __future__ import annotations

import asyncio
import os
import random

import pytest
from on_disk import store_size

from aiokv import AioKV, Durability
from aiokv._format import BULK, FORMAT_VERSION, HEADER_SIZE, SNAPSHOT, decode_header
from aiokv._recovery import Frame, read_frame

MIB = 1024 * 1024


async def test_an_overwrite_only_workload_keeps_the_file_below_twice_live_plus_one_mib(
    store_path: str,
) -> None:
    keys = [f"user:{i}" for i in range(3000)]
    async with AioKV(store_path) as kv:
        for key in keys:
            await kv.set(key, 1.0)
        await kv.compact()
        live = store_size(store_path)  # floats: every value has the same size
        engine = kv._engine
        largest_outside_compaction = 0
        rounds = 0
        was_compacting = False
        for i in range(150_000):
            await kv.set(keys[i % len(keys)], float(i))
            compacting = engine.compaction.commit is not None
            if compacting:
                was_compacting = True
                continue
            if was_compacting:  # one just completed: back below the bound
                rounds += 1
                was_compacting = False
            size = store_size(store_path)
            largest_outside_compaction = max(largest_outside_compaction, size)
            assert size < 2 * live + MIB, (i, size, live)
        stats = await kv.stats()
    assert stats.compactions >= 3
    assert largest_outside_compaction > live  # the log did grow between compactions


async def test_an_overwrite_workload_at_every_level_triggers_compaction(
    tmp_path: os.PathLike[str],
) -> None:
    for durability in ("fsync", "flush", "buffered"):
        path = os.path.join(tmp_path, f"{durability}.kv")
        async with AioKV(path, durability=durability, flush_interval=0.01) as kv:
            # ~1 KB records: the 640 KiB of slack is dead after ~700 of them
            # (at "fsync" each set waits for its own fsync).
            for i in range(4_000 if durability != "fsync" else 1_000):
                await kv.set(f"k{i % 50}", "v" * 1000)
            await kv.flush()
            await asyncio.sleep(0.2)
            stats = await kv.stats()
            assert stats.compactions >= 1, durability
            everything = await kv.get_all()
        async with AioKV(path) as kv:
            assert await kv.get_all() == everything


@pytest.mark.parametrize("durability", ["flush", "fsync", "buffered"])
async def test_writes_made_while_a_compaction_runs_are_kept(
    store_path: str, durability: Durability
) -> None:
    rng = random.Random(7)
    model: dict[str, object] = {}
    async with AioKV(store_path) as kv:
        for i in range(30_000):
            model[f"k{i}"] = {"i": i, "pad": "x" * 50}
            await kv.set(f"k{i}", model[f"k{i}"])
    async with AioKV(store_path, durability=durability) as kv:

        async def writer() -> None:
            # Enough to overlap both compactions (at "fsync" each write waits
            # for its fsync, a few ms here).
            for i in range(3_000 if durability != "fsync" else 800):
                key = f"k{rng.randrange(40_000)}"
                if rng.random() < 0.2:
                    await kv.delete(key)
                    model.pop(key, None)
                else:
                    model[key] = i
                    await kv.set(key, i)
                if i % 50 == 0:
                    await asyncio.sleep(0)

        await asyncio.gather(kv.compact(), writer(), kv.compact())
        assert await kv.get_all() == model
        assert (await kv.stats()).compactions >= 1
    async with AioKV(store_path) as kv:
        assert await kv.get_all() == model


async def test_compaction_drops_dead_records(store_path: str) -> None:
    async with AioKV(store_path) as kv:
        for i in range(5000):
            await kv.set(f"k{i % 10}", i)
        for i in range(5):
            await kv.delete(f"k{i}")
        before = (await kv.stats()).file_bytes
        await kv.compact()
        stats = await kv.stats()
        assert stats.file_bytes < before // 20
        assert stats.keys == 5
    async with AioKV(store_path) as kv:
        assert await kv.get_all() == {f"k{i}": 4990 + i for i in range(5, 10)}


async def test_a_compaction_of_an_empty_store_leaves_an_empty_store(store_path: str) -> None:
    async with AioKV(store_path) as kv:
        await kv.set("k", 1)
        await kv.delete("k")
        await kv.compact()
        assert (await kv.stats()).file_bytes == store_size(store_path)
    async with AioKV(store_path) as kv:
        assert await kv.get_all() == {}


async def test_compaction_writes_scalars_as_bulk_frames_and_containers_as_snapshots(
    store_path: str,
) -> None:
    async with AioKV(store_path) as kv:
        for i in range(1500):
            await kv.set(f"n:{i}", float(i))
        await kv.set("list", [1, 2, {"x": "y"}], ttl=3600)
        await kv.set("text", "abc", ttl=3600)
        await kv.set("blob", b"\x96\xce")
        await kv.compact()
        expected = await kv.get_all()
    with open(store_path, "rb") as file:
        data = file.read()
    assert decode_header(data).version == FORMAT_VERSION
    kinds = []
    offset = HEADER_SIZE
    while offset < len(data):
        frame = read_frame(data, offset)
        assert isinstance(frame, Frame)
        kinds.append(frame.kind)
        offset = frame.end
    assert kinds.count(SNAPSHOT) == 1  # only the batch holding the list
    assert set(kinds) == {BULK, SNAPSHOT} and kinds.count(BULK) >= 3
    async with AioKV(store_path) as kv:
        assert await kv.get_all() == expected
        assert 3590 < await kv.ttl("list") <= 3600 and 3590 < await kv.ttl("text") <= 3600
        assert await kv.ttl("blob") == -1
