"""``AioKV``: the async shell over the engine.

Every method is a thin wrapper. Reads and the default level's append run
inline (they never block); everything that can block runs in the event loop's
default executor. Nothing here is bound to one event loop, so a module-level
instance keeps working across successive ``asyncio.run()`` calls.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar, overload

from ._arguments import NOW, Default, Stored
from ._batch import WriteBatch
from ._commit import Commit
from ._engine import Engine, Stats
from ._mapping import AsyncMapping
from ._protocols import AsyncStore
from ._redis_store import RedisAioKV, check_server_options
from ._shell import Shell
from ._target import LocalTarget, parse_target

logger = logging.getLogger("aiokv")

_T = TypeVar("_T")


YIELD_EVERY = 256
"""Reads and default-level writes complete without suspending; every this
many of them, the calling task yields once so that a long run of them cannot
starve the other tasks of the event loop: at ~1 us a set, other tasks wait at
most ~0.3 ms. A yield costs ~1.7 us: 7 ns a call at 256, 27 ns at 64 (the
earlier value). Yielding less often also lengthens the loop's worst gap during
a compaction of a million keys, ~0.8 -> ~1.1 ms (docs/benchmarks.md, W8)."""


async def _in_thread(function: Callable[[], _T]) -> _T:
    return await asyncio.get_running_loop().run_in_executor(None, function)


class AioKV(Shell, AsyncMapping):
    """An async key-value store kept in an append-only log at ``path``.

    Creating an instance does no I/O: the first operation (or ``open()``)
    takes the lock and replays the log. See docs/api.md for every method's
    contract and docs/guarantees.md for what survives which failure.
    """

    _until_yield = YIELD_EVERY  # per instance once first decremented

    @classmethod
    def from_url(cls, target: str | os.PathLike[str], **options: Any) -> AsyncStore:
        """The store ``target`` names: a path or ``file://`` URL gives an
        ``AioKV``; ``redis://``, ``rediss://``, ``unix://``,
        ``redis+cluster://`` and ``redis+sentinel://`` give the same methods
        on that server (see docs/redis.md). No I/O until the first call."""
        parsed = parse_target(target)
        if isinstance(parsed, LocalTarget):
            return cls(parsed.path, **options)
        durability = check_server_options(parsed, options)
        return RedisAioKV(parsed, durability)

    @staticmethod
    async def _open(engine: Engine) -> None:
        engine.check_openable()  # ForkedError or ClosedError without a thread hop
        await _in_thread(engine.open)

    async def open(self) -> AioKV:
        """Open the store now (otherwise the first operation does); after
        close(), open it again."""
        engine = self._engine_to_open()
        if not engine.is_open:
            await self._open(engine)
        return self

    async def __aenter__(self) -> AioKV:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Write and fsync everything and release the lock. Idempotent.

        In a process forked from the one that opened the store it does
        nothing: the store is the owner's to close.
        """
        if self._engine.forked:
            return
        await _in_thread(self._engine.close)

    async def _ready_to_write(self) -> None:
        engine = self._engine
        if not engine.is_open:
            await self._open(engine)
        if engine.log_missing:
            await _in_thread(engine.ensure_log_file)

    async def _acknowledge(self, commit: Commit | None) -> None:
        """Wait for ``commit`` ("fsync"), or now and then let other tasks run.

        ``set()`` has this inlined: it is the hot path.
        """
        if commit is not None:
            await commit.wait_async()
            return
        self._until_yield -= 1
        if not self._until_yield:
            self._until_yield = YIELD_EVERY
            await asyncio.sleep(0)

    @overload
    async def get(self, key: str) -> Stored: ...

    @overload
    async def get(self, key: str, default: Default) -> Stored | Default: ...

    async def get(self, key: str, default: object = None) -> object:
        """The value stored under ``key`` (a fresh copy), or ``default``."""
        engine = self._engine
        if not engine.is_open:
            await self._open(engine)
        value = engine.get(key, default)
        self._until_yield -= 1
        if not self._until_yield:
            self._until_yield = YIELD_EVERY
            await asyncio.sleep(0)
        return value

    async def set(self, key: str, value: object = NOW, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``; without a value, the Unix time as an int.

        ``ttl``: seconds until the key expires (None or 0: never). A set
        without a ttl removes an earlier one.
        """
        engine = self._engine
        if value is NOW:
            value = int(engine.clock())  # engine.timestamp(), a call less
        if not engine.is_open or engine.log_missing:
            await self._ready_to_write()
        commit = engine.set(key, value, ttl)
        if commit is not None:
            await commit.wait_async()
            return
        self._until_yield -= 1
        if not self._until_yield:
            self._until_yield = YIELD_EVERY
            await asyncio.sleep(0)

    async def delete(self, key: str) -> bool:
        """Remove ``key``: True when removed or absent, False (logged) on I/O error."""
        engine = self._engine
        try:
            if not engine.is_open or engine.log_missing:
                await self._ready_to_write()
            commit = engine.delete(key)
            if commit is not None:
                await commit.wait_async()
        except OSError:
            logger.exception("aiokv: delete(%r) on %s failed", key, engine.path)
            return False
        return True

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """Add ``amount`` to the int at ``key`` (missing or expired: 0); the new value.

        Atomic. An existing key keeps its expiry; ``ttl`` applies only when
        this call creates the key (a fixed-window rate limit in one call).
        A value that is not an int raises TypeError and stays as it was.
        """
        engine = self._engine
        if not engine.is_open or engine.log_missing:
            await self._ready_to_write()
        value, commit = engine.incr(key, amount, ttl)
        await self._acknowledge(commit)
        return value

    async def pop(self, key: str, default: object = None) -> Any:
        """Remove ``key`` and return its value (``default`` if absent or
        expired), as one step: of tasks racing for one key, one gets it."""
        engine = self._engine
        if not engine.is_open or engine.log_missing:
            await self._ready_to_write()
        value, commit = engine.pop(key, default)
        await self._acknowledge(commit)
        return value

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The present ones of ``keys`` with their values (fresh copies)."""
        engine = self._engine
        if not engine.is_open:
            await self._open(engine)
        return engine.get_many(keys)

    async def set_many(self, mapping: Mapping[str, object] | Iterable[tuple[str, object]],
                       ttl: float | None = None) -> None:
        """Store every pair of ``mapping`` (or of an iterable of pairs) as one
        atomic batch: after any crash, all of them or none (docs/api.md)."""
        engine = self._engine
        if not engine.is_open or engine.log_missing:
            await self._ready_to_write()
        await self._acknowledge(engine.set_many(mapping, ttl))

    async def _commit(self, batch: WriteBatch) -> int:
        engine = self._engine
        if not engine.is_open or engine.log_missing:
            await self._ready_to_write()
        removed, commit = engine.commit_batch(batch)
        await self._acknowledge(commit)
        return removed

    async def _update_key(self, key: str, fn: Callable[[Any], Any], default: Any = None, *,
                          ttl: float | None = None) -> Any:
        """update(key, fn, default): ``fn`` runs under the store's lock, on
        this thread: it must not call the store."""
        engine = self._engine
        if not engine.is_open or engine.log_missing:
            await self._ready_to_write()
        value, commit = engine.update(key, fn, default, ttl)
        await self._acknowledge(commit)
        return value

    async def count(self) -> int:
        """How many live keys the store holds."""
        engine = self._engine
        if not engine.is_open:
            await self._open(engine)
        return engine.count()

    async def add(self, key: str, value: object = NOW, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` is absent or expired; whether it did.

        Atomic (Redis's ``SET NX``): of any number of concurrent adds of one
        key, exactly one returns True. Without a value, the Unix time as an
        int. ``ttl`` applies only when this call stores. At "fsync" a False
        is returned only once the write that made the key present is
        durable: should that write fail, the add is tried again.
        """
        engine = self._engine
        if value is NOW:
            value = int(engine.clock())  # engine.timestamp(), a call less
        while True:
            if not engine.is_open or engine.log_missing:
                await self._ready_to_write()
            added, commit = engine.add(key, value, ttl)
            if commit is None or added:
                await self._acknowledge(commit)
                return added
            try:
                await commit.wait_async()
            except OSError:
                continue  # the write that held the key was undone: ask again
            return False

    async def keys(self, pattern: str = "*") -> list[str]:
        """Live keys matching a glob pattern (``fnmatch.fnmatchcase`` rules)."""
        engine = self._engine
        if not engine.is_open:
            await self._open(engine)
        return engine.keys(pattern)

    async def exists(self, key: str) -> bool:
        """True if ``key`` is stored and not expired."""
        engine = self._engine
        if not engine.is_open:
            await self._open(engine)
        return engine.exists(key)

    async def ttl(self, key: str) -> int:
        """Seconds left (rounded up); -1 for no expiry; -2 if missing or expired."""
        engine = self._engine
        if not engine.is_open:
            await self._open(engine)
        return engine.ttl(key)

    async def expire(self, key: str, ttl: float | None) -> bool:
        """Set (None or 0: remove) the expiry of an existing key; whether it existed."""
        engine = self._engine
        if not engine.is_open or engine.log_missing:
            await self._ready_to_write()
        existed, commit = engine.expire(key, ttl)
        await self._acknowledge(commit)
        return existed

    async def get_all(self) -> dict[str, object]:
        """A new dict of every entry (values are fresh copies)."""
        engine = self._engine
        if not engine.is_open:
            await self._open(engine)
        return engine.items()

    async def clear(self) -> bool:
        """Remove every entry and the file: True, or False (logged) on I/O error."""
        engine = self._engine
        try:
            if not engine.is_open:
                await self._open(engine)
            await _in_thread(engine.clear)
        except OSError:
            logger.exception("aiokv: clear() of %s failed", engine.path)
            return False
        return True

    async def flush(self) -> None:
        """Return once everything acknowledged so far is fsynced."""
        engine = self._engine
        if not engine.is_open:
            await self._open(engine)
        await _in_thread(engine.flush)

    async def compact(self) -> None:
        """Rewrite the log with only the live entries, now."""
        engine = self._engine
        if not engine.is_open:
            await self._open(engine)
        await _in_thread(engine.compact)

    async def stats(self) -> Stats:
        """Counters of the store: keys, file and live bytes, compactions..."""
        engine = self._engine
        if not engine.is_open:
            await self._open(engine)
        return engine.stats()


aiocache = AioKV
"""The original name of AioKV, kept for legacy call sites."""

__all__ = ["AioKV", "aiocache"]
