"""The store on a Redis or Valkey server: ``RedisAioKV`` and ``RedisKV``.

``AioKV.from_url`` and ``KV.from_url`` give one of these for a server URL.
They have the local store's methods, return values and exceptions (see
docs/redis.md for the few documented differences); each method runs one
plan of ``_redis_plans`` through an executor of ``_redis_client``. Creating
one does no I/O; the first call (or ``open()``) connects and checks the
server. They hold no state of the data: any number of processes, on any
number of machines, may use one namespace at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar, overload

from . import _redis_plans as plans
from ._arguments import NOW, Default, Stored, check_key
from ._batch import WriteBatch
from ._engine import DURABILITY_LEVELS, Stats
from ._errors import ClosedError
from ._mapping import AsyncMapping, BlockingMapping
from ._redis_client import async_executor, sync_executor
from ._target import ServerTarget

logger = logging.getLogger("aiokv")

T = TypeVar("T")

KNOWN_KEYS = 4096
"""Keys whose last update() a store remembers, to update them in one round trip."""
LOCAL_ONLY_OPTIONS = frozenset({"fsync_interval", "flush_interval", "recovery", "clock"})
"""Options of the local store that mean nothing on a server: refused."""


def check_server_options(target: ServerTarget, options: dict[str, Any]) -> str | None:
    """The durability asked of the server (None: the server's own), or a
    ValueError/TypeError for options that do not apply."""
    local = sorted(LOCAL_ONLY_OPTIONS & options.keys())
    if local:
        raise ValueError(f"{', '.join(local)}: options of a local store; {target.display!r} "
                         "is on a server, which keeps its own time and files")
    unknown = sorted(options.keys() - {"durability"})
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}")
    durability = options.get("durability")
    if durability is not None and durability not in DURABILITY_LEVELS:
        raise ValueError(f"durability must be one of {DURABILITY_LEVELS} or None (the "
                         f"server's own), not {durability!r}")
    return durability


class _AsyncKeyTurns:
    """Makes this process's update() calls of one key, and batches whose incr
    reads it, take turns (per event loop): they would otherwise mostly fail
    the script's check against each other and read again (1,000 tasks
    updating one key: ~34 s, ~2 s in turns).
    Other processes are still guarded against by the script. An entry lives
    while a call of its key runs or waits."""

    def __init__(self) -> None:
        self._loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, tuple[asyncio.Lock, list[int]]]] = (
            weakref.WeakKeyDictionary())

    @contextlib.asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        turns = self._loops.setdefault(asyncio.get_running_loop(), {})
        lock, users = turns.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del turns[key]


class _KeyTurns:
    """``_AsyncKeyTurns`` for threads; ``_guard`` guards the table of locks."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._turns: dict[str, tuple[threading.Lock, list[int]]] = {}

    @contextlib.contextmanager
    def turn(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._turns.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._guard:
                users[0] -= 1
                if not users[0]:
                    del self._turns[key]


class _ServerStore:
    """What both shells on a server share: the target, names and state."""

    def __init__(self, target: ServerTarget, durability: str | None = None) -> None:
        self._target = target
        self._names = plans.Names(target.prefix, cluster=target.kind == "cluster",
                                  spread=target.spread)
        self._wanted = durability
        self._kept: str | None = None  # how the server keeps writes, once open
        self._closed = False
        self._known: dict[str, bytes] = {}
        """What update() last stored under a key: its guess of what the key
        holds next time (see plans.update); read and written by a call
        holding the key's turn. Forgotten whole past KNOWN_KEYS keys."""

    def _new_batch(self) -> WriteBatch:
        """An empty batch, on this machine's clock (``b.set(key)``'s time)."""
        self._check_open()
        return WriteBatch(time.time)

    def _update_plan(self, key: str, fn: Callable[[Any], Any], default: Any,
                     ttl: float | None) -> Generator[plans.Request, Any, Any]:
        """update()'s plan, with this store's guess; remembers what it stored."""
        key = check_key(key)
        known = self._known.pop(key, plans.UNKNOWN)
        value, stored = yield from plans.update(self._names, self._target.display, key, fn,
                                                default, ttl=ttl, known=known)
        if len(self._known) >= KNOWN_KEYS:
            self._known.clear()
        self._known[key] = stored
        return value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._target.display!r})"

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        # Only where the store is and how: it reconnects wherever it is used.
        return type(self), (self._target, self._wanted)

    @property
    def path(self) -> str:
        """The server's URL (without its password) and the store's prefix."""
        return self._target.display

    @property
    def durability(self) -> str:
        """The level asked for, or how the server keeps writes once known."""
        return self._wanted or self._kept or "server"

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(self._target.display)

    def _stats(self, counted: tuple[int, int]) -> Stats:
        keys, with_ttl = counted
        return Stats(path=self._target.display, keys=keys, file_bytes=0, live_bytes=0,
                     dead_bytes=0, compactions=0, last_compaction=None,
                     durability=self._kept or "server", pending_writes=0,
                     ttl_keys=with_ttl, held_entries=keys)


class RedisAioKV(_ServerStore, AsyncMapping):
    """``AioKV``'s methods on a Redis or Valkey server (see docs/redis.md)."""

    def __init__(self, target: ServerTarget, durability: str | None = None) -> None:
        super().__init__(target, durability)
        self._executor = async_executor(target)
        self._opened = False
        self._turns = _AsyncKeyTurns()

    async def _run(self, plan: Generator[plans.Request, Any, T]) -> T:
        if not self._opened:
            await self.open()
        return await self._executor.run(plan)

    async def open(self) -> RedisAioKV:
        """Connect and check the server (its durability against the level asked)."""
        self._check_open()
        if not self._opened:
            self._kept = await self._executor.run(
                plans.server_durability(self._target.display, self._wanted))
            self._opened = True
        return self

    async def __aenter__(self) -> RedisAioKV:
        return await self.open()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, traceback: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections. Idempotent; nothing is held, nothing to flush."""
        self._closed = True
        await self._executor.close()

    @overload
    async def get(self, key: str) -> Stored: ...

    @overload
    async def get(self, key: str, default: Default) -> Stored | Default: ...

    async def get(self, key: str, default: object = None) -> object:
        self._check_open()
        return await self._run(plans.get(self._names, self._target.display, key, default))

    async def set(self, key: str, value: object = NOW, ttl: float | None = None) -> None:
        self._check_open()
        if value is NOW:
            value = _now()
        await self._run(plans.set_(self._names, key, value, ttl))

    async def add(self, key: str, value: object = NOW, ttl: float | None = None) -> bool:
        self._check_open()
        if value is NOW:
            value = _now()
        return await self._run(plans.add(self._names, key, value, ttl))

    async def delete(self, key: str) -> bool:
        self._check_open()
        key = check_key(key)
        try:
            return await self._run(plans.delete(self._names, key))
        except OSError:
            logger.exception("aiokv: delete(%r) on %s failed", key, self._target.display)
            return False

    async def pop(self, key: str, default: object = None) -> Any:
        self._check_open()
        return await self._run(plans.pop(self._names, self._target.display, key, default))

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        self._check_open()
        return await self._run(plans.get_many(self._names, self._target.display, keys))

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        self._check_open()
        return await self._run(plans.incr(self._names, self._target.display, key, amount,
                                          ttl))

    async def set_many(self, mapping: Mapping[str, object] | Iterable[tuple[str, object]],
                       ttl: float | None = None) -> None:
        """All the pairs in one script: atomic (see docs/redis.md)."""
        batch = self._new_batch()
        batch.set_all(mapping, ttl)
        await self._commit(batch)

    async def _commit(self, batch: WriteBatch) -> int:
        """Apply ``batch``; the keys its incrs read take turns, as update()'s."""
        async with contextlib.AsyncExitStack() as turns:
            for key in sorted(batch.keys_to_read()):  # one order: no two wait on each other
                await turns.enter_async_context(self._turns.turn(key))
            return await self._run(plans.commit_batch(self._names, self._target.display,
                                                      batch))

    async def _update_key(self, key: str, fn: Callable[[Any], Any], default: Any = None, *,
                          ttl: float | None = None) -> Any:
        self._check_open()
        async with self._turns.turn(check_key(key)):
            return await self._run(self._update_plan(key, fn, default, ttl))

    async def count(self) -> int:
        """How many keys the store has (a SCAN of its namespace)."""
        self._check_open()
        return len(await self._run(plans.scan(self._names)))

    async def keys(self, pattern: str = "*") -> list[str]:
        self._check_open()
        return await self._run(plans.keys(self._names, pattern))

    async def exists(self, key: str) -> bool:
        self._check_open()
        return await self._run(plans.exists(self._names, key))

    async def ttl(self, key: str) -> int:
        self._check_open()
        return await self._run(plans.ttl(self._names, key))

    async def expire(self, key: str, ttl: float | None) -> bool:
        self._check_open()
        return await self._run(plans.expire(self._names, key, ttl))

    async def get_all(self) -> dict[str, object]:
        self._check_open()
        return await self._run(plans.get_all(self._names, self._target.display))

    async def clear(self) -> bool:
        self._check_open()
        try:
            return await self._run(plans.clear(self._names))
        except OSError:
            logger.exception("aiokv: clear() of %s failed", self._target.display)
            return False

    async def flush(self) -> None:
        """Return once the server has what was acknowledged, fsynced where it
        can say so (WAITAOF; see docs/redis.md)."""
        self._check_open()
        await self._run(plans.flush(self._names))

    async def compact(self) -> None:
        """Nothing to do: the server rewrites its own files (see docs/redis.md)."""
        self._check_open()
        if not self._opened:
            await self.open()

    async def stats(self) -> Stats:
        self._check_open()
        return self._stats(await self._run(plans.count(self._names)))


class RedisKV(_ServerStore, BlockingMapping):
    """``KV``'s methods on a Redis or Valkey server, safe from any number of
    threads (connections come from a pool that waits when all are in use)."""

    def __init__(self, target: ServerTarget, durability: str | None = None) -> None:
        super().__init__(target, durability)
        self._executor = sync_executor(target)
        self._opened = False
        self._turns = _KeyTurns()

    def _run(self, plan: Generator[plans.Request, Any, T]) -> T:
        if not self._opened:
            self.open()
        return self._executor.run(plan)

    def open(self) -> RedisKV:
        """Connect and check the server (its durability against the level asked)."""
        self._check_open()
        if not self._opened:
            self._kept = self._executor.run(
                plans.server_durability(self._target.display, self._wanted))
            self._opened = True
        return self

    def __enter__(self) -> RedisKV:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections. Idempotent; nothing is held, nothing to flush."""
        self._closed = True
        self._executor.close()

    @overload
    def get(self, key: str) -> Stored: ...

    @overload
    def get(self, key: str, default: Default) -> Stored | Default: ...

    def get(self, key: str, default: object = None) -> object:
        self._check_open()
        return self._run(plans.get(self._names, self._target.display, key, default))

    def set(self, key: str, value: object = NOW, ttl: float | None = None) -> None:
        self._check_open()
        if value is NOW:
            value = _now()
        self._run(plans.set_(self._names, key, value, ttl))

    def add(self, key: str, value: object = NOW, ttl: float | None = None) -> bool:
        self._check_open()
        if value is NOW:
            value = _now()
        return self._run(plans.add(self._names, key, value, ttl))

    def delete(self, key: str) -> bool:
        self._check_open()
        key = check_key(key)
        try:
            return self._run(plans.delete(self._names, key))
        except OSError:
            logger.exception("aiokv: delete(%r) on %s failed", key, self._target.display)
            return False

    def pop(self, key: str, default: object = None) -> Any:
        self._check_open()
        return self._run(plans.pop(self._names, self._target.display, key, default))

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        self._check_open()
        return self._run(plans.get_many(self._names, self._target.display, keys))

    def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        self._check_open()
        return self._run(plans.incr(self._names, self._target.display, key, amount, ttl))

    def set_many(self, mapping: Mapping[str, object] | Iterable[tuple[str, object]],
                 ttl: float | None = None) -> None:
        batch = self._new_batch()
        batch.set_all(mapping, ttl)
        self._commit(batch)

    def _commit(self, batch: WriteBatch) -> int:
        """As ``RedisAioKV._commit``."""
        with contextlib.ExitStack() as turns:
            for key in sorted(batch.keys_to_read()):
                turns.enter_context(self._turns.turn(key))
            return self._run(plans.commit_batch(self._names, self._target.display, batch))

    def _update_key(self, key: str, fn: Callable[[Any], Any], default: Any = None, *,
                    ttl: float | None = None) -> Any:
        self._check_open()
        with self._turns.turn(check_key(key)):
            return self._run(self._update_plan(key, fn, default, ttl))

    def count(self) -> int:
        self._check_open()
        return len(self._run(plans.scan(self._names)))

    def keys(self, pattern: str = "*") -> list[str]:  # type: ignore[override]
        self._check_open()
        return self._run(plans.keys(self._names, pattern))

    def exists(self, key: str) -> bool:
        self._check_open()
        return self._run(plans.exists(self._names, key))

    def ttl(self, key: str) -> int:
        self._check_open()
        return self._run(plans.ttl(self._names, key))

    def expire(self, key: str, ttl: float | None) -> bool:
        self._check_open()
        return self._run(plans.expire(self._names, key, ttl))

    def get_all(self) -> dict[str, object]:
        self._check_open()
        return self._run(plans.get_all(self._names, self._target.display))

    def clear(self) -> bool:  # type: ignore[override]
        self._check_open()
        try:
            return self._run(plans.clear(self._names))
        except OSError:
            logger.exception("aiokv: clear() of %s failed", self._target.display)
            return False

    def flush(self) -> None:
        self._check_open()
        self._run(plans.flush(self._names))

    def compact(self) -> None:
        self._check_open()
        if not self._opened:
            self.open()

    def stats(self) -> Stats:
        self._check_open()
        return self._stats(self._run(plans.count(self._names)))


def _now() -> int:
    """What ``set(key)`` stores on a server: this machine's Unix time, as an int."""
    return int(time.time())
