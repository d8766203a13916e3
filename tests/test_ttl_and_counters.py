"""TTLs, counters and key patterns, on both shells.

The first part runs every example of the scriptling.kv document (the seed of
this API) against ``AioKV`` and against ``KV``: each scenario is written once
against ``Shell``, a small async adapter, and the ``shell`` fixture runs it on
both. ``KV`` calls go through ``asyncio.to_thread`` so that its blocking calls
never hold the event loop (and so they come from several threads at once).

Time is a ``FakeClock`` wherever the test is about time, so nothing sleeps
for a TTL; a few tests use the real clock with TTLs of a fraction of a second.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import pytest
from fake_clock import START, FakeClock

from aiokv import KV, AioKV, Durability, Stats

DURABILITY_LEVELS: list[Durability] = ["flush", "fsync", "buffered"]


class Shell:
    """The calls the scenarios make, on either shell (async either way)."""

    kind = ""

    @property
    def path(self) -> str:
        raise NotImplementedError

    async def set(self, key: str, value: object, ttl: object = None) -> None:
        raise NotImplementedError

    async def get(self, key: str, default: object = None) -> object:
        raise NotImplementedError

    async def delete(self, key: str) -> bool:
        raise NotImplementedError

    async def incr(self, key: str, amount: object = 1, *, ttl: object = None) -> int:
        raise NotImplementedError

    async def keys(self, pattern: str = "*") -> list[str]:
        raise NotImplementedError

    async def exists(self, key: str) -> bool:
        raise NotImplementedError

    async def ttl(self, key: str) -> int:
        raise NotImplementedError

    async def expire(self, key: str, ttl: object) -> bool:
        raise NotImplementedError

    async def get_all(self) -> dict[str, object]:
        raise NotImplementedError

    async def clear(self) -> bool:
        raise NotImplementedError

    async def compact(self) -> None:
        raise NotImplementedError

    async def stats(self) -> Stats:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def close_outside_a_loop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Shell:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


# The adapters pass ``object`` arguments straight through so that the tests
# can hand the store wrong types and check its errors.


class AsyncShell(Shell):
    kind = "AioKV"

    def __init__(self, kv: AioKV) -> None:
        self.kv = kv

    @property
    def path(self) -> str:
        return self.kv.path

    async def set(self, key: str, value: object, ttl: object = None) -> None:
        await self.kv.set(key, value, ttl)  # type: ignore[arg-type]

    async def get(self, key: str, default: object = None) -> object:
        return await self.kv.get(key, default)

    async def delete(self, key: str) -> bool:
        return await self.kv.delete(key)

    async def incr(self, key: str, amount: object = 1, *, ttl: object = None) -> int:
        return await self.kv.incr(key, amount, ttl=ttl)  # type: ignore[arg-type]

    async def keys(self, pattern: str = "*") -> list[str]:
        return await self.kv.keys(pattern)

    async def exists(self, key: str) -> bool:
        return await self.kv.exists(key)

    async def ttl(self, key: str) -> int:
        return await self.kv.ttl(key)

    async def expire(self, key: str, ttl: object) -> bool:
        return await self.kv.expire(key, ttl)  # type: ignore[arg-type]

    async def get_all(self) -> dict[str, object]:
        return await self.kv.get_all()

    async def clear(self) -> bool:
        return await self.kv.clear()

    async def compact(self) -> None:
        await self.kv.compact()

    async def stats(self) -> Stats:
        return await self.kv.stats()

    async def close(self) -> None:
        await self.kv.close()

    def close_outside_a_loop(self) -> None:
        asyncio.run(self.kv.close())


class ThreadedShell(Shell):
    kind = "KV"

    def __init__(self, kv: KV) -> None:
        self.kv = kv

    @property
    def path(self) -> str:
        return self.kv.path

    async def set(self, key: str, value: object, ttl: object = None) -> None:
        await asyncio.to_thread(self.kv.set, key, value, ttl)  # type: ignore[arg-type]

    async def get(self, key: str, default: object = None) -> object:
        return await asyncio.to_thread(self.kv.get, key, default)

    async def delete(self, key: str) -> bool:
        return await asyncio.to_thread(self.kv.delete, key)

    async def incr(self, key: str, amount: object = 1, *, ttl: object = None) -> int:
        return await asyncio.to_thread(
            lambda: self.kv.incr(key, amount, ttl=ttl)  # type: ignore[arg-type]
        )

    async def keys(self, pattern: str = "*") -> list[str]:
        return await asyncio.to_thread(self.kv.keys, pattern)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.kv.exists, key)

    async def ttl(self, key: str) -> int:
        return await asyncio.to_thread(self.kv.ttl, key)

    async def expire(self, key: str, ttl: object) -> bool:
        return await asyncio.to_thread(self.kv.expire, key, ttl)  # type: ignore[arg-type]

    async def get_all(self) -> dict[str, object]:
        return await asyncio.to_thread(self.kv.get_all)

    async def clear(self) -> bool:
        return await asyncio.to_thread(self.kv.clear)

    async def compact(self) -> None:
        await asyncio.to_thread(self.kv.compact)

    async def stats(self) -> Stats:
        return await asyncio.to_thread(self.kv.stats)

    async def close(self) -> None:
        await asyncio.to_thread(self.kv.close)

    def close_outside_a_loop(self) -> None:
        self.kv.close()


class Opener(Protocol):
    def __call__(
        self,
        path: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        durability: Durability = "flush",
    ) -> Shell: ...


@pytest.fixture(params=["AioKV", "KV"])
def shell(request: pytest.FixtureRequest, store_path: str) -> Iterator[Opener]:
    """Opens stores of one shell (AioKV, then KV); closes any a test left open."""
    opened: list[Shell] = []

    def open_store(
        path: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        durability: Durability = "flush",
    ) -> Shell:
        where = store_path if path is None else path
        store: Shell
        if request.param == "AioKV":
            store = AsyncShell(AioKV(where, clock=clock, durability=durability))
        else:
            store = ThreadedShell(KV(where, clock=clock, durability=durability))
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close_outside_a_loop()  # a no-op for the ones already closed


async def wait_until(
    condition: Callable[[], Awaitable[bool]], limit: float
) -> float | None:
    """Poll ``condition`` until it holds; the seconds it took, or None."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if await condition():
            return time.monotonic() - start
        await asyncio.sleep(0.02)
    return None


async def set_concurrently(
    kv: Shell, items: dict[str, object], ttl: Callable[[int], float | None]
) -> None:
    """``kv.set`` every item, up to 100 calls at once (at "fsync" they share
    commits). Small groups: creating thousands of tasks at once in debug mode
    would itself hold the loop past the stall limit."""
    pairs = list(items.items())
    for start in range(0, len(pairs), 100):
        await asyncio.gather(*(
            kv.set(key, value, ttl=ttl(start + offset))
            for offset, (key, value) in enumerate(pairs[start:start + 100])
        ))


SWEEP_LIMIT = 4.0
"""Seconds the tests allow the ~1 s sweep (generous: CI machines are noisy)."""


# -- the scriptling.kv examples ------------------------------------------------


async def test_seed_set_stores_a_string_a_session_with_a_one_hour_ttl_a_list_and_a_dict(
    shell: Opener,
) -> None:
    clock = FakeClock()
    async with shell(clock=clock) as kv:
        await kv.set("api_key", "secret123")
        await kv.set("session:abc", {"user": "bob", "login_time": 123456}, ttl=3600)
        await kv.set("recent_items", ["item1", "item2", "item3"])
        await kv.set("config", {"debug": True, "port": 8080})

        assert await kv.get("api_key") == "secret123"
        assert await kv.get("session:abc") == {"user": "bob", "login_time": 123456}
        assert await kv.get("recent_items") == ["item1", "item2", "item3"]
        assert await kv.get("config") == {"debug": True, "port": 8080}
        assert await kv.ttl("session:abc") == 3600
        assert await kv.ttl("api_key") == -1
        clock.advance(3600)
        assert await kv.get("session:abc") is None
        assert await kv.get("api_key") == "secret123"
    async with shell(clock=clock) as kv:  # the same, read back from the log
        assert await kv.get_all() == {
            "api_key": "secret123",
            "recent_items": ["item1", "item2", "item3"],
            "config": {"debug": True, "port": 8080},
        }


async def test_seed_get_returns_the_value_or_the_default_for_missing_and_expired_keys(
    shell: Opener,
) -> None:
    clock = FakeClock()
    async with shell(clock=clock) as kv:
        await kv.set("api_key", "secret123")
        await kv.set("session:old", {"user": "carol"}, ttl=5)
        value = await kv.get("api_key")
        count = await kv.get("counter", default=0)
        assert value == "secret123"
        assert count == 0
        assert await kv.get("session:old", default={}) == {"user": "carol"}
        clock.advance(5.5)
        # "Expired keys return default"
        session = await kv.get("session:old", default={})
        assert session == {}
        assert await kv.get("session:old") is None


async def test_seed_delete_removes_a_key_and_deleting_an_absent_key_is_fine(
    shell: Opener,
) -> None:
    async with shell() as kv:
        await kv.set("session:abc", {"user": "bob"}, ttl=3600)
        assert await kv.delete("session:abc") is True
        assert await kv.delete("temp_data") is True  # never stored
        assert await kv.get("session:abc") is None
        assert await kv.exists("session:abc") is False
        assert await kv.ttl("session:abc") == -2
    async with shell() as kv:
        assert await kv.get_all() == {}


async def test_seed_exists_chooses_between_the_stored_config_and_the_default_one(
    shell: Opener,
) -> None:
    defaults_loaded = 0

    def load_default_config() -> dict[str, object]:
        nonlocal defaults_loaded
        defaults_loaded += 1
        return {"debug": False}

    async def current_config(kv: Shell) -> object:
        if await kv.exists("config"):
            return await kv.get("config")
        return load_default_config()

    clock = FakeClock()
    async with shell(clock=clock) as kv:
        assert await current_config(kv) == {"debug": False}
        assert defaults_loaded == 1
        await kv.set("config", {"debug": True, "port": 8080}, ttl=10)
        assert await current_config(kv) == {"debug": True, "port": 8080}
        assert defaults_loaded == 1
        await kv.set("falsy", None)  # exists() is about the key, not the value
        assert await kv.exists("falsy") is True
        clock.advance(10)
        assert await kv.exists("config") is False  # "exists and is not expired"
        assert await current_config(kv) == {"debug": False}
        assert defaults_loaded == 2


async def test_seed_incr_counts_by_one_and_by_five_and_starts_a_new_counter_at_one(
    shell: Opener,
) -> None:
    async with shell() as kv:
        await kv.set("page_views", 0)
        views = await kv.incr("page_views")
        assert views == 1
        views = await kv.incr("page_views", 5)
        assert views == 6
        assert await kv.incr("new_counter") == 1
        assert await kv.incr("new_counter", -3) == -2  # a negative amount decrements
        assert await kv.get("page_views") == 6
        assert await kv.ttl("new_counter") == -1
    async with shell() as kv:
        assert await kv.get_all() == {"page_views": 6, "new_counter": -2}


async def test_seed_ttl_gives_seconds_left_then_minus_one_without_expiry_and_minus_two_missing(
    shell: Opener,
) -> None:
    clock = FakeClock()
    async with shell(clock=clock) as kv:
        await kv.set("session", "data", ttl=3600)
        await kv.set("config", {"debug": True})
        assert await kv.ttl("session") == 3600
        clock.advance(1)
        remaining = await kv.ttl("session")
        assert remaining == 3599  # "e.g., 3599"
        no_expiry = await kv.ttl("config")
        assert no_expiry == -1
        missing = await kv.ttl("unknown")
        assert missing == -2
        clock.advance(0.5)
        assert await kv.ttl("session") == 3599  # whole seconds, rounded up
        clock.advance(3598.25)
        assert await kv.ttl("session") == 1  # a quarter of a second left
        clock.advance(0.25)
        assert await kv.ttl("session") == -2  # expired: as if missing


async def test_seed_keys_match_user_session_and_cache_data_glob_patterns(
    shell: Opener,
) -> None:
    clock = FakeClock()
    async with shell(clock=clock) as kv:
        stored = [
            "user:1", "user:2", "user:1:profile", "user:path/to/x", "users", "User:3",
            "session:abc", "session:", "sessions:abc",
            "cache:users:data", "cache:a:b:data", "cache:users:meta", "cache:x:data:old",
            "Cache:x:data",
        ]
        for key in stored:
            await kv.set(key, 1)
        await kv.set("session:gone", 1, ttl=1)
        assert sorted(await kv.keys()) == sorted([*stored, "session:gone"])
        clock.advance(1)

        all_keys = await kv.keys()
        user_keys = await kv.keys("user:*")
        session_keys = await kv.keys("session:*")
        cache_keys = await kv.keys("cache:*:data")
        assert sorted(all_keys) == sorted(stored)  # expired keys are not listed
        # '*' spans ':' and '/'; matching is case-sensitive.
        assert sorted(user_keys) == ["user:1", "user:1:profile", "user:2", "user:path/to/x"]
        assert sorted(session_keys) == ["session:", "session:abc"]
        assert sorted(cache_keys) == ["cache:a:b:data", "cache:users:data"]
        assert await kv.keys() == await kv.keys("*")
        assert sorted(await kv.keys("user:?")) == ["user:1", "user:2"]
        assert await kv.keys("[CU]ser:*") == ["User:3"]
        assert await kv.keys("nothing:*") == []
        assert await kv.keys("user:1") == ["user:1"]  # no wildcard: an exact match


async def test_seed_clear_removes_every_key_and_the_file(shell: Opener, store_path: str) -> None:
    async with shell() as kv:
        await kv.set("a", 1)
        await kv.set("b", [1, 2], ttl=100)
        await kv.incr("c")
        assert await kv.clear() is True
        assert await kv.keys() == []
        assert await kv.get_all() == {}
        assert await kv.ttl("b") == -2
        assert (await kv.stats()).keys == 0
        assert not Path(store_path).exists()
        assert await kv.incr("c") == 1  # counting starts over
    async with shell() as kv:
        assert await kv.get_all() == {"c": 1}


async def test_seed_reads_are_deep_copies_so_changing_a_result_changes_nothing(
    shell: Opener,
) -> None:
    async with shell() as kv:
        original: dict[str, object] = {"user": "bob", "roles": ["admin"], "prefs": {"a": 1}}
        await kv.set("session:abc", original, ttl=3600)
        original["user"] = "mallory"  # changing the argument after set changes nothing
        first = await kv.get("session:abc")
        assert isinstance(first, dict)
        first["roles"].append("root")
        first["prefs"]["a"] = 2
        first["new"] = True
        everything = await kv.get_all()
        session = everything["session:abc"]
        assert isinstance(session, dict)
        session["roles"].clear()
        expected = {"user": "bob", "roles": ["admin"], "prefs": {"a": 1}}
        assert await kv.get("session:abc") == expected
        assert await kv.get("session:abc") is not await kv.get("session:abc")


async def test_seed_set_with_ttl_zero_means_no_expiration(shell: Opener) -> None:
    clock = FakeClock()
    async with shell(clock=clock) as kv:
        await kv.set("forever", "x", ttl=0)
        await kv.set("was_expiring", "y", ttl=10)
        await kv.set("was_expiring", "y", ttl=0)  # ttl=0 also removes an earlier ttl
        await kv.set("none", "z", ttl=None)
        clock.advance(10**9)
        for key in ("forever", "was_expiring", "none"):
            assert await kv.ttl(key) == -1
            assert await kv.exists(key) is True
        assert (await kv.stats()).ttl_keys == 0


@dataclass
class Request:
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class JsonResponse:
    status: int
    body: dict[str, object]


def json_response(status: int, body: dict[str, object]) -> JsonResponse:
    """Stands in for scriptling.http.json."""
    return JsonResponse(status, body)


def request_from(ip: str | None) -> Request:
    return Request({} if ip is None else {"x-forwarded-for": ip})


async def test_seed_rate_limiting_handler_as_written_allows_100_requests_a_minute_per_ip(
    shell: Opener,
) -> None:
    clock = FakeClock()
    async with shell(clock=clock) as kv:

        async def check_rate_limit(request: Request) -> JsonResponse | None:
            ip = request.headers.get("x-forwarded-for", "unknown")
            key = f"rate:{ip}"
            count = await kv.incr(key)
            # Set expiry on first request
            if count == 1:
                await kv.set(key, 1, ttl=60)  # 1 minute window
            if count > 100:
                return json_response(429, {"error": "Rate limit exceeded"})
            return None  # Allow request

        for _ in range(100):
            assert await check_rate_limit(request_from("10.0.0.1")) is None
        assert await check_rate_limit(request_from("10.0.0.1")) == JsonResponse(
            429, {"error": "Rate limit exceeded"})
        assert await check_rate_limit(request_from("10.0.0.2")) is None  # per address
        assert await check_rate_limit(request_from(None)) is None  # "rate:unknown"
        assert sorted(await kv.keys("rate:*")) == ["rate:10.0.0.1", "rate:10.0.0.2",
                                                    "rate:unknown"]
        assert await kv.ttl("rate:10.0.0.1") == 60
        clock.advance(30)
        assert await check_rate_limit(request_from("10.0.0.1")) is not None  # same window
        clock.advance(30)  # the window has expired: counting starts again
        assert await check_rate_limit(request_from("10.0.0.1")) is None
        assert await kv.get("rate:10.0.0.1") == 1
        assert await kv.ttl("rate:10.0.0.1") == 60


async def test_seed_rate_limiting_as_one_atomic_incr_with_ttl_resets_when_the_window_expires(
    shell: Opener,
) -> None:
    clock = FakeClock()
    async with shell(clock=clock) as kv:

        async def check_rate_limit(request: Request) -> JsonResponse | None:
            ip = request.headers.get("x-forwarded-for", "unknown")
            if await kv.incr(f"rate:{ip}", ttl=60) > 100:
                return json_response(429, {"error": "Rate limit exceeded"})
            return None

        results = [await check_rate_limit(request_from("10.0.0.1")) for _ in range(105)]
        assert results.count(None) == 100
        assert results[100:] == [JsonResponse(429, {"error": "Rate limit exceeded"})] * 5
        assert await kv.get("rate:10.0.0.1") == 105
        clock.advance(59)
        assert await kv.ttl("rate:10.0.0.1") == 1  # later increments kept the first expiry
        assert await check_rate_limit(request_from("10.0.0.1")) is not None
        clock.advance(1)  # 60 s after the first request: a new window
        assert await kv.exists("rate:10.0.0.1") is False
        assert await check_rate_limit(request_from("10.0.0.1")) is None
        assert await kv.get("rate:10.0.0.1") == 1
        assert await kv.ttl("rate:10.0.0.1") == 60


async def test_atomic_rate_limit_admits_exactly_the_limit_under_concurrent_requests(
    shell: Opener,
) -> None:
    async with shell() as kv:

        async def allowed() -> bool:
            return await kv.incr("rate:10.0.0.9", ttl=60) <= 100

        verdicts = await asyncio.gather(*(allowed() for _ in range(250)))
        assert verdicts.count(True) == 100
        assert await kv.get("rate:10.0.0.9") == 250
        assert 59 <= await kv.ttl("rate:10.0.0.9") <= 60


async def test_seed_session_management_creates_reads_deletes_and_expires_after_a_day(
    shell: Opener,
) -> None:
    clock = FakeClock()
    async with shell(clock=clock) as kv:

        async def create_session(user_id: int) -> str:
            token = secrets.token_hex(32)
            await kv.set(f"session:{token}", {
                "user_id": user_id,
                "created": clock(),
            }, ttl=86400)  # 24 hours
            return token

        async def get_session(token: str) -> object:
            return await kv.get(f"session:{token}")

        async def delete_session(token: str) -> None:
            await kv.delete(f"session:{token}")

        alice, bob = await create_session(1), await create_session(2)
        assert alice != bob
        assert await get_session(alice) == {"user_id": 1, "created": START}
        assert await get_session(bob) == {"user_id": 2, "created": START}
        assert await get_session("no-such-token") is None
        await delete_session(alice)
        assert await get_session(alice) is None
        assert await kv.keys("session:*") == [f"session:{bob}"]
        clock.advance(86399)
        assert await kv.ttl(f"session:{bob}") == 1
    async with shell(clock=clock) as kv:  # sessions survive a restart...
        assert await kv.get(f"session:{bob}") == {"user_id": 2, "created": START}
        clock.advance(1)  # ...until their day is over
        assert await kv.get(f"session:{bob}") is None
        assert await kv.keys("session:*") == []


async def test_seed_caching_api_responses_fetches_once_per_ttl_window(shell: Opener) -> None:
    clock = FakeClock()
    fetched: list[str] = []

    def fetch_json(url: str) -> dict[str, object]:
        """Stands in for requests.get(url).json()."""
        fetched.append(url)
        return {"url": url, "fetch": len(fetched), "items": [1, 2, 3]}

    async with shell(clock=clock) as kv:

        async def get_cached_api_data(endpoint: str, ttl: int = 300) -> object:
            cache_key = f"api:{endpoint}"
            # Try cache first
            cached = await kv.get(cache_key)
            if cached:
                return cached
            # Fetch from API
            data = fetch_json(f"https://api.example.com/{endpoint}")
            # Cache for future requests
            await kv.set(cache_key, data, ttl=ttl)
            return data

        first = await get_cached_api_data("users")
        assert first == {"url": "https://api.example.com/users", "fetch": 1,
                         "items": [1, 2, 3]}
        assert isinstance(first, dict)
        first["items"].append(4)  # the caller's copy; the cache keeps its own
        clock.advance(299)
        assert await get_cached_api_data("users") == {
            "url": "https://api.example.com/users", "fetch": 1, "items": [1, 2, 3]}
        assert len(fetched) == 1
        assert (await get_cached_api_data("orders", ttl=10))["fetch"] == 2  # type: ignore[index]
        clock.advance(1)  # "users" is 300 s old: fetched again
        assert (await get_cached_api_data("users"))["fetch"] == 3  # type: ignore[index]
        assert (await get_cached_api_data("orders"))["fetch"] == 2  # type: ignore[index]
        assert fetched == ["https://api.example.com/users", "https://api.example.com/orders",
                           "https://api.example.com/users"]


# -- counters ------------------------------------------------------------------


@pytest.mark.parametrize("durability", DURABILITY_LEVELS)
async def test_incr_from_50_tasks_of_100_calls_each_gives_exactly_5000_also_after_reopen(
    store_path: str, durability: Durability
) -> None:
    async with AioKV(store_path, durability=durability) as kv:

        async def count() -> list[int]:
            return [await kv.incr("n") for _ in range(100)]

        started = time.monotonic()
        results = await asyncio.gather(*(count() for _ in range(50)))
        elapsed = time.monotonic() - started
        assert await kv.get("n") == 5000
        every_value = sorted(value for task in results for value in task)
        assert every_value == list(range(1, 5001))  # each call saw its own new value
        assert all(task == sorted(task) for task in results)
    assert elapsed < 10
    async with AioKV(store_path) as kv:
        assert await kv.get("n") == 5000


NOT_INTS: list[object] = ["5", 5.0, True, False, [1], {"a": 1}, None, b"1"]


@pytest.mark.parametrize("value", NOT_INTS, ids=repr)
async def test_incr_of_a_value_that_is_not_an_int_raises_type_error_and_leaves_it(
    shell: Opener, store_path: str, value: object
) -> None:
    clock = FakeClock()
    async with shell(clock=clock) as kv:
        await kv.set("k", value, ttl=100)
        before = Path(store_path).read_bytes()
        with pytest.raises(TypeError, match="'k'"):
            await kv.incr("k")
        with pytest.raises(TypeError):
            await kv.incr("k", 5, ttl=10)
        assert await kv.get("k") == value
        assert type(await kv.get("k")) is type(value)
        assert await kv.ttl("k") == 100
        assert Path(store_path).read_bytes() == before
    async with shell(clock=clock) as kv:
        assert await kv.get("k") == value


@pytest.mark.parametrize("amount", [1.0, True, "1", None, Decimal(1)], ids=repr)
async def test_incr_by_an_amount_that_is_not_an_int_raises_type_error_and_changes_nothing(
    shell: Opener, amount: object
) -> None:
    async with shell() as kv:
        await kv.set("k", 10)
        with pytest.raises(TypeError):
            await kv.incr("k", amount)
        with pytest.raises(TypeError):
            await kv.incr("new", amount)
        assert await kv.get_all() == {"k": 10}


async def test_incr_beyond_the_64_bit_range_raises_value_error_and_leaves_the_value(
    shell: Opener,
) -> None:
    async with shell() as kv:
        await kv.set("big", 2**64 - 2)
        assert await kv.incr("big") == 2**64 - 1
        with pytest.raises(ValueError, match="'big'"):
            await kv.incr("big")
        await kv.set("small", -(2**63))
        with pytest.raises(ValueError):
            await kv.incr("small", -1)
        assert await kv.get_all() == {"big": 2**64 - 1, "small": -(2**63)}


async def test_incr_keeps_the_ttl_of_an_existing_key_and_ignores_its_own_ttl(
    shell: Opener,
) -> None:
    clock = FakeClock()
    async with shell(clock=clock) as kv:
        await kv.set("expiring", 10, ttl=100)
        await kv.set("permanent", 10)
        clock.advance(40)
        assert await kv.incr("expiring") == 11
        assert await kv.incr("expiring", ttl=1000) == 12
        assert await kv.incr("permanent", ttl=5) == 11
        assert await kv.ttl("expiring") == 60
        assert await kv.ttl("permanent") == -1
        clock.advance(59)
    async with shell(clock=clock) as kv:  # the kept expiry is the one in the log
        assert await kv.ttl("expiring") == 1
        assert await kv.get("expiring") == 12
        clock.advance(1)
        assert await kv.get("expiring") is None
        assert await kv.get("permanent") == 11


async def test_incr_with_ttl_sets_it_on_the_key_it_creates(shell: Opener) -> None:
    clock = FakeClock()
    async with shell(clock=clock) as kv:
        assert await kv.incr("hits", 3, ttl=30) == 3
        assert await kv.ttl("hits") == 30
        assert await kv.incr("hits") == 4
        assert await kv.incr("float-ttl", ttl=0.5) == 1
        assert await kv.ttl("float-ttl") == 1
        assert await kv.incr("no-ttl", ttl=0) == 1
        assert await kv.ttl("no-ttl") == -1
        stats = await kv.stats()
        assert (stats.keys, stats.ttl_keys) == (3, 2)
        clock.advance(29.5)
    async with shell(clock=clock) as kv:
        assert await kv.get_all() == {"hits": 4, "no-ttl": 1}
        clock.advance(0.5)
        assert await kv.get_all() == {"no-ttl": 1}


async def test_incr_on_an_expired_key_restarts_from_the_amount_with_the_new_ttl(
    shell: Opener,
) -> None:
    clock = FakeClock()
    async with shell(clock=clock) as kv:
        await kv.set("counter", 41, ttl=10)
        await kv.set("text", "not a number", ttl=10)
        await kv.set("plain", 41, ttl=10)
        clock.advance(10)
        assert await kv.incr("counter", 5, ttl=20) == 5
        assert await kv.ttl("counter") == 20
        assert await kv.incr("text", ttl=20) == 1  # an expired value's type is irrelevant
        assert await kv.incr("plain") == 1  # no ttl given: the new key never expires
        assert await kv.ttl("plain") == -1
        clock.advance(19)
        assert await kv.incr("counter") == 6
    async with shell(clock=clock) as kv:
        assert await kv.get_all() == {"counter": 6, "text": 1, "plain": 1}
        clock.advance(1)
        assert await kv.get_all() == {"plain": 1}


@pytest.mark.parametrize("durability", DURABILITY_LEVELS)
async def test_counters_and_their_ttls_survive_a_reopen_at_every_durability_level(
    shell: Opener, durability: Durability
) -> None:
    clock = FakeClock()
    async with shell(clock=clock, durability=durability) as kv:
        assert await kv.incr("a", 2, ttl=50) == 2
        assert await kv.incr("a") == 3
        assert await kv.incr("b", -7) == -7
    async with shell(clock=clock) as kv:
        assert await kv.get_all() == {"a": 3, "b": -7}
        assert await kv.ttl("a") == 50
        assert await kv.incr("a") == 4


# -- expiry --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("later", "still_there"), [(59, True), (59.999, True), (60, False), (61, False)]
)
async def test_a_key_set_with_ttl_60_and_reopened_later_is_there_only_within_the_60_seconds(
    shell: Opener, later: float, still_there: bool
) -> None:
    clock = FakeClock()
    async with shell(clock=clock) as kv:
        await kv.set("k", "v", ttl=60)
        await kv.set("other", "stays")
    async with shell(clock=FakeClock(START + later)) as kv:
        assert await kv.exists("k") is still_there
        assert await kv.get("k") == ("v" if still_there else None)
        assert await kv.ttl("k") == (1 if still_there else -2)
        assert await kv.get("other") == "stays"
        stats = await kv.stats()
        assert stats.keys == (2 if still_there else 1)
        if not still_there:
            assert stats.held_entries == 1  # dropped by the replay itself


async def test_expiry_times_survive_a_compaction_and_a_reopen(
    shell: Opener, store_path: str
) -> None:
    clock = FakeClock()
    async with shell(clock=clock) as kv:
        for i in range(50):
            await kv.set(f"short:{i}", i, ttl=10)
            await kv.set(f"long:{i}", [i], ttl=100)
            await kv.set(f"never:{i}", {"i": i})
        await kv.set("was-short", 1, ttl=10)
        await kv.set("was-short", 1)
        clock.advance(5)
        await kv.compact()
        assert (await kv.stats()).compactions == 1
    async with shell(clock=clock) as kv:
        assert await kv.ttl("short:0") == 5
        assert await kv.ttl("long:0") == 95
        assert await kv.ttl("never:0") == -1
        assert await kv.ttl("was-short") == -1
        clock.advance(5)  # the short ones are gone, the compaction dropped them...
        await kv.compact()
    compacted = Path(store_path).read_bytes()
    async with shell(clock=clock) as kv:
        assert len(await kv.keys("short:*")) == 0
        assert len(await kv.keys("long:*")) == 50
        assert len(await kv.keys("never:*")) == 50
        assert await kv.get("long:7") == [7]
        assert (await kv.stats()).held_entries == 101
    assert b"short:" not in compacted  # ...from the file too
    assert b"long:" in compacted


async def test_an_expired_key_is_absent_from_every_read_path(shell: Opener) -> None:
    clock = FakeClock()
    async with shell(clock=clock) as kv:
        await kv.set("gone", 41, ttl=10)
        await kv.set("gone:list", [1, 2], ttl=10)
        await kv.set("kept", "k")
        await kv.set("kept:ttl", "t", ttl=100)
        assert (await kv.stats()).keys == 4
        clock.advance(10)  # the instant "gone" expires

        missing = object()
        assert await kv.get("gone", missing) is missing
        assert await kv.get("gone:list") is None
        assert await kv.get_all() == {"kept": "k", "kept:ttl": "t"}
        assert sorted(await kv.keys()) == ["kept", "kept:ttl"]
        assert await kv.keys("gone*") == []
        assert await kv.exists("gone") is False
        assert await kv.ttl("gone") == -2
        stats = await kv.stats()
        assert (stats.keys, stats.ttl_keys) == (2, 1)
        assert await kv.expire("gone:list", 100) is False  # no resurrection
        assert await kv.get("gone:list") is None
        assert await kv.incr("gone") == 1  # counts from 0, not from 41
        assert await kv.ttl("gone") == -1


async def test_a_key_expires_exactly_at_its_expiry_time_not_a_moment_later(
    shell: Opener,
) -> None:
    clock = FakeClock()
    async with shell(clock=clock) as kv:
        await kv.set("k", "v", ttl=2.5)
        clock.now = START + 2.5 - 1e-6
        assert await kv.get("k") == "v"
        assert await kv.ttl("k") == 1
        clock.now = START + 2.5
        assert await kv.get("k") is None
        assert await kv.exists("k") is False
        assert await kv.ttl("k") == -2


# At "flush", more entries than one sweep batch (1,000) expire at once.
@pytest.mark.parametrize(("durability", "count"), [("flush", 1500), ("fsync", 300),
                                                   ("buffered", 300)])
async def test_expired_keys_leave_memory_within_about_a_second_without_any_read(
    shell: Opener, durability: Durability, count: int
) -> None:
    clock = FakeClock()
    async with shell(clock=clock, durability=durability) as kv:
        await set_concurrently(kv, {f"temp:{i}": i for i in range(count)}, lambda i: 5 + i % 3)
        await set_concurrently(kv, {f"keep:{i}": i for i in range(10)}, lambda i: None)
        stats = await kv.stats()
        assert (stats.keys, stats.ttl_keys, stats.held_entries) == (count + 10, count, count + 10)
        clock.advance(10)
        stats = await kv.stats()
        assert (stats.keys, stats.ttl_keys) == (10, 0)  # invisible at once

        async def swept() -> bool:
            return (await kv.stats()).held_entries == 10

        took = await wait_until(swept, SWEEP_LIMIT)
        assert took is not None, f"held_entries is {(await kv.stats()).held_entries}"
        assert await kv.get_all() == {f"keep:{i}": i for i in range(10)}


async def test_keys_given_a_later_expiry_again_and_again_are_swept_when_the_last_one_passes(
    shell: Opener,
) -> None:
    # A cooldown re-set with its ttl on every hit: the sweep's index keeps
    # one item per key (the earliest), and moves it on when it comes due.
    clock = FakeClock()
    async with shell(clock=clock) as kv:
        for round_ in range(5):
            for i in range(50):
                await kv.set(f"cooldown:{i}", round_, ttl=10)
            clock.advance(3)
        # Every first expiry (t+10) has passed; the last ones (t+22) have not.
        clock.advance(10 - 3 * 5 + 8)  # t+18
        await asyncio.sleep(SWEEP_LIMIT / 4)
        stats = await kv.stats()
        assert (stats.keys, stats.held_entries) == (50, 50)
        assert await kv.get("cooldown:7") == 4 and await kv.ttl("cooldown:7") == 4
        clock.advance(5)  # t+23

        async def swept() -> bool:
            return (await kv.stats()).held_entries == 0

        assert await wait_until(swept, SWEEP_LIMIT) is not None
        assert await kv.get_all() == {}


async def test_keys_replayed_from_the_log_are_swept_when_they_expire_later(
    shell: Opener,
) -> None:
    clock = FakeClock()
    async with shell(clock=clock) as kv:
        for i in range(100):
            await kv.set(f"k{i}", i, ttl=60)
        await kv.set("stays", 0)
    clock.advance(30)
    async with shell(clock=clock) as kv:
        assert (await kv.stats()).held_entries == 101
        clock.advance(30)

        async def swept() -> bool:
            return (await kv.stats()).held_entries == 1

        assert await wait_until(swept, SWEEP_LIMIT) is not None
        assert await kv.keys() == ["stays"]


async def test_with_the_real_clock_short_ttls_expire_and_leave_memory_unread(
    shell: Opener,
) -> None:
    async with shell() as kv:
        started = time.monotonic()
        await set_concurrently(kv, {f"brief:{i}": i for i in range(300)}, lambda i: 0.5)
        await kv.set("stays", True)
        assert (await kv.stats()).keys == 301

        async def swept() -> bool:
            return (await kv.stats()).held_entries == 1

        took = await wait_until(swept, SWEEP_LIMIT)
        assert took is not None
        assert time.monotonic() - started >= 0.45  # not before they expired
        assert await kv.get_all() == {"stays": True}


async def test_with_the_real_clock_a_key_disappears_once_its_ttl_has_passed(
    shell: Opener,
) -> None:
    async with shell() as kv:
        await kv.set("session", {"user": "bob"}, ttl=0.5)
        assert await kv.incr("window", ttl=0.5) == 1
        assert await kv.incr("window", ttl=0.5) == 2
        assert await kv.exists("session") is True
        assert await kv.ttl("session") == 1
        await asyncio.sleep(0.6)
        assert await kv.exists("session") is False
        assert await kv.get("session") is None
        assert await kv.ttl("window") == -2
        assert await kv.incr("window", ttl=0.5) == 1  # a new window


async def test_a_set_without_ttl_removes_an_earlier_ttl_and_that_survives_a_reopen(
    shell: Opener,
) -> None:
    clock = FakeClock()
    for durability in DURABILITY_LEVELS:
        async with shell(clock=clock, durability=durability) as kv:
            await kv.set(durability, "first", ttl=10)
            assert await kv.ttl(durability) == 10
            await kv.set(durability, "second")
            assert await kv.ttl(durability) == -1
            assert (await kv.stats()).ttl_keys == 0
    clock.advance(3600)
    async with shell(clock=clock) as kv:
        assert await kv.get_all() == dict.fromkeys(DURABILITY_LEVELS, "second")
        for durability in DURABILITY_LEVELS:
            assert await kv.ttl(durability) == -1


async def test_expire_sets_and_removes_ttls_and_both_survive_a_reopen(shell: Opener) -> None:
    clock = FakeClock()
    async with shell(clock=clock) as kv:
        await kv.set("soon", "s")
        await kv.set("never", "n", ttl=10)
        await kv.set("zero", "z", ttl=10)
        await kv.set("later", ["l"], ttl=10)
        assert await kv.expire("soon", 30) is True
        assert await kv.expire("never", None) is True
        assert await kv.expire("zero", 0) is True
        assert await kv.expire("later", 99.5) is True
        assert await kv.ttl("soon") == 30
        assert await kv.ttl("never") == -1
        assert await kv.ttl("zero") == -1
        assert await kv.ttl("later") == 100
        assert await kv.get("later") == ["l"]  # the value is untouched
        clock.advance(29)
    async with shell(clock=clock) as kv:
        assert await kv.ttl("soon") == 1
        assert await kv.ttl("never") == -1
        clock.advance(1)
        assert await kv.get_all() == {"never": "n", "zero": "z", "later": ["l"]}
        clock.advance(70)
    async with shell(clock=clock) as kv:
        assert await kv.get_all() == {"never": "n", "zero": "z"}


async def test_expire_returns_false_for_missing_and_expired_keys_and_writes_nothing(
    shell: Opener, store_path: str
) -> None:
    clock = FakeClock()
    async with shell(clock=clock) as kv:
        await kv.set("expired", 1, ttl=1)
        clock.advance(1)
        # The sweep logs the removal of the expired key (a delete record):
        # let it, so that only what expire() writes could change the file.
        deadline = time.monotonic() + 10
        while (await kv.stats()).held_entries and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        before = Path(store_path).read_bytes()
        assert await kv.expire("missing", 10) is False
        assert await kv.expire("missing", None) is False
        assert await kv.expire("expired", 10) is False
        assert await kv.expire("expired", 0) is False
        assert await kv.exists("missing") is False
        assert await kv.exists("expired") is False
        assert Path(store_path).read_bytes() == before
    async with shell(clock=clock) as kv:
        assert await kv.get_all() == {}


BAD_TTLS: list[tuple[object, type[Exception]]] = [
    (-1, ValueError),
    (-0.001, ValueError),
    (math.nan, ValueError),
    (math.inf, ValueError),
    (-math.inf, ValueError),
    (True, TypeError),
    (False, TypeError),
    ("60", TypeError),
    (b"60", TypeError),
    ([60], TypeError),
    (Decimal(60), TypeError),
    (Fraction(1, 2), TypeError),
    (1j, TypeError),
]


@pytest.mark.parametrize(("ttl", "error"), BAD_TTLS, ids=repr)
async def test_a_bad_ttl_raises_the_documented_error_and_changes_nothing(
    shell: Opener, store_path: str, ttl: object, error: type[Exception]
) -> None:
    clock = FakeClock()
    async with shell(clock=clock) as kv:
        await kv.set("k", "old", ttl=100)
        await kv.set("n", 5)
        before = Path(store_path).read_bytes()
        stats = await kv.stats()
        with pytest.raises(error):
            await kv.set("k", "new", ttl=ttl)
        with pytest.raises(error):
            await kv.set("fresh", "new", ttl=ttl)
        with pytest.raises(error):
            await kv.incr("n", ttl=ttl)
        with pytest.raises(error):
            await kv.incr("fresh", ttl=ttl)
        with pytest.raises(error):
            await kv.expire("k", ttl)
        with pytest.raises(error):
            await kv.expire("n", ttl)
        assert await kv.get_all() == {"k": "old", "n": 5}
        assert (await kv.ttl("k"), await kv.ttl("n"), await kv.ttl("fresh")) == (100, -1, -2)
        assert await kv.stats() == stats
        assert Path(store_path).read_bytes() == before
    async with shell(clock=clock) as kv:
        assert await kv.get_all() == {"k": "old", "n": 5}
        assert await kv.ttl("k") == 100


async def test_ttls_may_be_ints_or_floats_and_ttl_rounds_the_seconds_left_up(
    shell: Opener,
) -> None:
    clock = FakeClock()
    async with shell(clock=clock) as kv:
        await kv.set("int", 1, ttl=7)
        await kv.set("float", 1, ttl=7.25)
        await kv.set("tiny", 1, ttl=0.001)
        await kv.set("huge", 1, ttl=10**9)
        assert await kv.ttl("int") == 7
        assert await kv.ttl("float") == 8
        assert await kv.ttl("tiny") == 1
        assert await kv.ttl("huge") == 10**9
        clock.advance(0.001)
        assert await kv.ttl("tiny") == -2
        clock.advance(7)
        assert await kv.ttl("int") == -2
        assert await kv.ttl("float") == 1


async def test_stats_count_live_keys_and_live_keys_with_a_ttl(shell: Opener) -> None:
    clock = FakeClock()
    async with shell(clock=clock) as kv:
        await kv.set("a", 1)
        await kv.set("b", 1, ttl=10)
        await kv.set("c", 1, ttl=20)
        await kv.incr("d", ttl=30)
        stats = await kv.stats()
        assert (stats.keys, stats.ttl_keys) == (4, 3)
        clock.advance(15)
        stats = await kv.stats()
        assert (stats.keys, stats.ttl_keys) == (3, 2)
        assert stats.held_entries in (3, 4)  # "b" stays until the sweep gets to it
        await kv.expire("c", None)
        await kv.delete("d")
        stats = await kv.stats()
        assert (stats.keys, stats.ttl_keys) == (2, 0)


def test_after_a_salvage_open_expired_keys_still_leave_memory_without_any_read(
    store_path: str,
) -> None:
    clock = FakeClock()
    with KV(store_path, clock=clock) as kv:
        kv.set("damaged", 0)
        kv.set("expired", 1, ttl=10)
        kv.set("expiring", 2, ttl=100)
        kv.set("keep", 3)
    data = bytearray(Path(store_path).read_bytes())
    data[45] ^= 0xFF  # inside the first record, which valid records follow: corruption
    Path(store_path).write_bytes(bytes(data))
    clock.advance(50)  # "expired" is past its time before the store opens
    with KV(store_path, clock=clock, recovery="salvage") as kv:
        assert kv.get_all() == {"expiring": 2, "keep": 3}  # reads are right...
        clock.advance(50)
        deadline = time.monotonic() + 2.5
        while kv.stats().held_entries > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert kv.stats().held_entries == 1  # ...but memory is never reclaimed
