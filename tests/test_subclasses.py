"""Subclasses of str and int are stored as what a dict would match: the plain
value.

Before: a str subclass key was stored under ``str(key)``, so with
``class Color(str, Enum)`` a ``set(Color.RED, 1)`` stored ``'Color.RED'`` and
``get('red')`` missed (a dict finds it); an ``incr()`` creating a key with an
``IntEnum`` amount stored the enum, and the next ``incr`` raised until a
reopen.
"""

from __future__ import annotations

import asyncio
from enum import Enum, IntEnum
from pathlib import Path

import pytest

from aiokv import KV, AioKV, Durability

LEVELS = ["fsync", "flush", "buffered"]


class Color(str, Enum):
    RED = "red"
    BLUE = "blue"


class Loud(str):
    """A str subclass whose str() says something else."""

    def __str__(self) -> str:
        return "LOUD"


class Step(IntEnum):
    ONE = 1
    TEN = 10


@pytest.mark.parametrize("durability", LEVELS)
def test_a_str_enum_key_is_stored_under_its_value_as_a_dict_would_match_it(
        tmp_path: Path, durability: Durability) -> None:
    path = tmp_path / "state.kv"
    like_a_dict: dict[str, object] = {}
    with KV(path, durability=durability) as kv:
        for key, value in ((Color.RED, 1), (Loud("quiet"), 2), (Color.BLUE, 3)):
            kv.set(key, value)
            like_a_dict[key] = value
        assert kv.get("red") == like_a_dict["red"] == 1
        assert kv.get(Color.RED) == 1 and kv.exists("red") and kv.exists(Color.RED)
        assert kv.get("quiet") == 2 and kv.get("LOUD") is None
        assert sorted(kv.keys()) == sorted(like_a_dict) == ["blue", "quiet", "red"]
        listed = kv.keys()
        assert all(type(key) is str for key in listed)
        assert kv.delete(Color.BLUE) and not kv.exists("blue")
        assert kv.incr(Color.RED) == 2 and kv.get("red") == 2
        assert kv.expire(Color.RED, 60) and 0 < kv.ttl("red") <= 60
    with KV(path) as kv:
        assert kv.get_all() == {"red": 2, "quiet": 2}


@pytest.mark.parametrize("durability", LEVELS)
def test_incr_creating_a_key_with_an_int_enum_amount_stores_a_plain_int(
        tmp_path: Path, durability: Durability) -> None:
    path = tmp_path / "state.kv"
    with KV(path, durability=durability) as kv:
        assert kv.incr("hits", Step.TEN) == 10
        assert type(kv.get("hits")) is int
        assert kv.incr("hits", Step.ONE) == 11  # the next incr works
        assert kv.incr("hits") == 12
        kv.set("flag", Step.ONE)
        kv.set("color", Color.RED)
        assert type(kv.get("flag")) is int and type(kv.get("color")) is str
    with KV(path) as kv:
        assert kv.get_all() == {"hits": 12, "flag": 1, "color": "red"}
        assert [type(value) for value in kv.get_all().values()] == [int, int, str]


@pytest.mark.parametrize("durability", LEVELS)
def test_the_async_shell_does_the_same(tmp_path: Path, durability: Durability) -> None:
    async def main() -> None:
        async with AioKV(tmp_path / "state.kv", durability=durability) as kv:
            await kv.set(Color.RED, "x")
            assert await kv.get("red") == "x"
            assert await kv.incr(Color.BLUE, Step.TEN) == 10
            assert type(await kv.get("blue")) is int
            assert await kv.incr("blue") == 11
            assert sorted(await kv.keys()) == ["blue", "red"]

    asyncio.run(main())


@pytest.mark.parametrize("durability", LEVELS)
def test_batches_update_and_the_mapping_store_subclasses_as_plain_values(
        tmp_path: Path, durability: Durability) -> None:
    """The same for the calls that change several keys or read first: a
    set_many of a str-enum key takes the general path, not the fast one."""
    with KV(tmp_path / "state.kv", durability=durability) as kv:
        kv.set_many({Color.RED: Step.ONE, Loud("quiet"): Step.TEN})
        with kv.batch() as batch:
            batch.incr(Color.BLUE, Step.TEN)
            batch.set(Loud("loud"), Color.RED)
        assert kv.update(Color.RED, lambda value: value + Step.ONE) == 2
        kv[Color.BLUE] = Step.ONE
        stored = kv.get_all()
        assert stored == {"red": 2, "quiet": 10, "blue": 1, "loud": "red"}
        assert {type(key) for key in stored} == {str}
        assert {type(value) for value in stored.values()} == {int, str}
        assert Color.RED in kv and kv[Color.BLUE] == 1
        assert kv.delete_many([Color.RED, Loud("quiet")]) == 2
    with KV(tmp_path / "state.kv") as again:
        assert again.get_all() == {"blue": 1, "loud": "red"}
        assert type(again.get("loud")) is str and type(again.get("blue")) is int
