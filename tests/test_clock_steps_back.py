"""A clock stepped back: the running store and a reopen agree.

Expiry follows the store's clock. Once the store has acted on an expiry
(the writer thread's sweep removed the key, or an open dropped it), the
removal is in the log: a clock set back afterwards brings the key back
neither in the running store nor after a reopen. Before, the sweep wrote
nothing, so the key stayed gone in the running store but was back after a
reopen.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fake_clock import START, FakeClock

from aiokv import KV, Durability

LEVELS = ["fsync", "flush", "buffered"]


def wait_until_swept(kv: KV, held: int) -> None:
    deadline = time.monotonic() + 10
    while kv.stats().held_entries != held:
        assert time.monotonic() < deadline, "the sweep never removed the expired key"
        time.sleep(0.02)


@pytest.mark.parametrize("durability", LEVELS)
def test_a_key_the_sweep_removed_stays_gone_when_the_clock_steps_back_and_after_a_reopen(
        tmp_path: Path, durability: Durability) -> None:
    path = tmp_path / "state.kv"
    clock = FakeClock()
    with KV(path, durability=durability, clock=clock) as kv:
        kv.set("session", "abc", ttl=60)
        kv.set("stays", 1)
        clock.advance(61)
        wait_until_swept(kv, held=1)
        clock.now = START + 10  # back, to before the session's expiry
        assert kv.get("session") is None and not kv.exists("session")
        assert kv.ttl("session") == -2 and kv.keys() == ["stays"]
    with KV(path, durability=durability, clock=FakeClock(START + 10)) as kv:
        assert kv.get_all() == {"stays": 1}


@pytest.mark.parametrize("durability", LEVELS)
def test_a_key_an_open_dropped_as_expired_stays_gone_when_the_clock_steps_back(
        tmp_path: Path, durability: Durability) -> None:
    path = tmp_path / "state.kv"
    with KV(path, durability=durability, clock=FakeClock()) as kv:
        kv.set("session", "abc", ttl=60)
        kv.set("stays", 1)
    with KV(path, durability=durability, clock=FakeClock(START + 61)) as kv:
        assert kv.get_all() == {"stays": 1}
    with KV(path, durability=durability, clock=FakeClock(START + 10)) as kv:
        assert kv.get_all() == {"stays": 1}


def test_so_many_keys_expired_at_open_that_the_store_is_rewritten_instead(
        tmp_path: Path) -> None:
    path = tmp_path / "state.kv"
    with KV(path, clock=FakeClock()) as kv:
        for i in range(40_000):
            kv.set(f"session:{i:06d}", i, ttl=60)
        kv.set("stays", 1)
        kv.compact()
    size = path.stat().st_size
    with KV(path, clock=FakeClock(START + 61)) as kv:
        assert kv.get_all() == {"stays": 1}
        assert kv.stats().compactions == 1  # carried over by the rewrite
    assert path.stat().st_size < size // 100  # no delete records: a new log
    with KV(path, clock=FakeClock(START + 10)) as kv:
        assert kv.get_all() == {"stays": 1}


def test_a_key_not_yet_removed_comes_back_with_the_clock_in_both_alike(
        tmp_path: Path) -> None:
    """Until the store acts on an expiry, expiry is the clock's alone: a clock
    set back before the expiry time shows the key, and so does a reopen."""
    path = tmp_path / "state.kv"
    clock = FakeClock()
    with KV(path, clock=clock) as kv:
        kv.set("session", "abc", ttl=3600)
        clock.advance(3601)
        assert kv.get("session") is None
        clock.now = START + 10  # set back before the sweep ran (it runs at most once a second)
        if kv.stats().held_entries == 0:  # the sweep did run: then it stays gone
            assert kv.get("session") is None
            expected: dict[str, object] = {}
        else:
            assert kv.get("session") == "abc"
            expected = {"session": "abc"}
    with KV(path, clock=FakeClock(START + 10)) as kv:
        assert kv.get_all() == expected
