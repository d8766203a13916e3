"""``add()``: store only when the key is absent or expired, atomically, and say so.

The seed's "seen IDs" use case with concurrent handlers: get-then-set and
exists-then-set process duplicates (2 a run, and 8 to 14 right after a
``clear()``); ``add`` is Redis's ``SET NX`` and diskcache's ``add``, so
exactly one handler wins each ID, at every level, through both shells.
"""

from __future__ import annotations

import asyncio
import errno
import random
import threading
from pathlib import Path

import pytest
from fake_clock import START, FakeClock
from scripted_files import ScriptedFiles

from aiokv import KV, AioKV, Durability
from aiokv._engine import Engine

LEVELS = ["fsync", "flush", "buffered"]


@pytest.mark.parametrize("durability", LEVELS)
def test_exactly_one_of_1000_concurrent_adds_of_one_key_returns_true(
        tmp_path: Path, durability: Durability) -> None:
    async def main() -> list[bool]:
        async with AioKV(tmp_path / "state.kv", durability=durability) as kv:
            results = await asyncio.gather(*(kv.add("job:1", i) for i in range(1000)))
            winner = results.index(True)
            assert await kv.get("job:1") == winner
            return results

    assert asyncio.run(main()).count(True) == 1


@pytest.mark.parametrize("durability", LEVELS)
def test_exactly_one_of_8_threads_adding_each_of_200_keys_wins_it(
        tmp_path: Path, durability: Durability) -> None:
    wins: list[list[str]] = [[] for _ in range(8)]
    with KV(tmp_path / "state.kv", durability=durability) as kv:
        def handler(number: int) -> None:
            for i in range(200):
                if kv.add(f"id:{i}", number):
                    wins[number].append(f"id:{i}")

        threads = [threading.Thread(target=handler, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        won = sorted(key for keys in wins for key in keys)
        assert won == sorted(f"id:{i}" for i in range(200))  # each once, none twice
        for number, keys in enumerate(wins):
            assert all(kv.get(key) == number for key in keys)


@pytest.mark.parametrize("durability", LEVELS)
def test_the_seen_ids_use_case_processes_each_id_once_also_right_after_a_clear(
        tmp_path: Path, durability: Durability) -> None:
    """300 handlers, 3,000 IDs each delivered 3 times in random order."""

    async def main() -> None:
        async with AioKV(tmp_path / "state.kv", durability=durability) as kv:
            for round_ in range(2):
                deliveries = [f"msg:{i}" for i in range(3000)] * 3
                random.Random(round_).shuffle(deliveries)
                queue: asyncio.Queue[str] = asyncio.Queue()
                for message in deliveries:
                    queue.put_nowait(message)
                processed: list[str] = []

                async def handler(queue: asyncio.Queue[str] = queue,
                                  processed: list[str] = processed) -> None:
                    while not queue.empty():
                        message = queue.get_nowait()
                        if await kv.add(f"seen:{message}", ttl=3600):
                            processed.append(message)

                await asyncio.gather(*(handler() for _ in range(300)))
                assert sorted(processed) == sorted(set(deliveries))
                assert await kv.clear()  # and the next round starts right after it

    asyncio.run(main())


def test_add_stores_only_when_absent_or_expired_and_its_ttl_only_then(
        tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "state.kv"
    with KV(path, clock=clock) as kv:
        assert kv.add("k", "first", ttl=60)
        assert not kv.add("k", "second", ttl=5)
        assert kv.get("k") == "first" and kv.ttl("k") == 60  # untouched
        kv.set("plain", 1)
        assert not kv.add("plain", 2, ttl=5)
        assert kv.get("plain") == 1 and kv.ttl("plain") == -1
        clock.advance(60)  # "k" expires
        assert kv.add("k", "third")
        assert kv.get("k") == "third" and kv.ttl("k") == -1
        assert kv.add("stamp")  # no value: the time, like set(key)
        assert kv.get("stamp") == int(START + 60)
        kv.delete("plain")
        assert kv.add("plain", [1, {"a": 2}])
    with KV(path, clock=clock) as kv:
        assert kv.get_all() == {"k": "third", "stamp": int(START + 60), "plain": [1, {"a": 2}]}


def test_add_rejects_bad_input_and_changes_nothing(tmp_path: Path) -> None:
    with KV(tmp_path / "state.kv") as kv:
        with pytest.raises(TypeError, match="key must be a str"):
            kv.add(5, 1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="'k'"):
            kv.add("k", object())
        with pytest.raises(ValueError, match="ttl"):
            kv.add("k", 1, ttl=-1)
        assert kv.get_all() == {}


def test_at_fsync_an_add_refused_by_a_write_that_then_fails_is_tried_again(
        tmp_path: Path) -> None:
    """A key present only through a write not yet durable: the add waits for
    it, and when that write fails (and is undone), the add stores."""
    files = ScriptedFiles()
    kv = KV(tmp_path / "state.kv", durability="fsync")
    kv._engine = Engine(tmp_path / "state.kv", durability="fsync", files=files)
    kv.open()
    # The next batch write waits for its release, then fails.
    gate = files.hold("write_synced")
    outcomes: dict[str, object] = {}

    def set_then_fail() -> None:
        try:
            kv.set("k", "doomed")
        except OSError as exc:
            outcomes["set"] = exc

    setter = threading.Thread(target=set_then_fail)
    setter.start()
    gate.wait_reached()
    adder = threading.Thread(target=lambda: outcomes.update(add=kv.add("k", "added")))
    adder.start()
    adder.join(0.2)
    assert adder.is_alive(), "the add answered before the write it depends on was durable"
    gate.release(OSError(errno.EIO, "the disk failed this batch"))
    setter.join(10)
    adder.join(10)
    assert isinstance(outcomes["set"], OSError)
    assert outcomes["add"] is True
    assert kv.get("k") == "added"
    kv.close()
    with KV(tmp_path / "state.kv") as again:
        assert again.get("k") == "added"
