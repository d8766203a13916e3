"""``KV``: the blocking shell over the engine, for threads and scripts.

Every method is a thin wrapper that may be called from any number of threads
at once; the engine serializes them. It shares the file format, recovery,
durability levels and lock with ``AioKV``: a store written by one opens in
the other (not both at once: the lock admits one owner).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, overload

from ._arguments import NOW, Default, Stored
from ._batch import WriteBatch
from ._engine import Engine, Stats
from ._mapping import BlockingMapping
from ._protocols import Store
from ._redis_store import RedisKV, check_server_options
from ._shell import Shell
from ._target import LocalTarget, parse_target

logger = logging.getLogger("aiokv")


class KV(Shell, BlockingMapping):
    """A key-value store in an append-only log at ``path``, with blocking calls.

    Same options and semantics as ``AioKV`` (see docs/api.md); creating it
    does no I/O, the first call opens the store. It is also a
    ``MutableMapping[str, Any]`` (see ``BlockingMapping``).
    """

    @classmethod
    def from_url(cls, target: str | os.PathLike[str], **options: Any) -> Store:
        """The store ``target`` names, with blocking calls: see ``AioKV.from_url``."""
        parsed = parse_target(target)
        if isinstance(parsed, LocalTarget):
            return cls(parsed.path, **options)
        durability = check_server_options(parsed, options)
        return RedisKV(parsed, durability)

    def _ready(self) -> Engine:
        engine = self._engine
        if not engine.is_open:
            engine.open()
        return engine

    def open(self) -> KV:
        """Open the store now (otherwise the first call does); after close(),
        open it again."""
        engine = self._engine_to_open()
        if not engine.is_open:
            engine.open()
        return self

    def __enter__(self) -> KV:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Write and fsync everything and release the lock. Idempotent."""
        self._engine.close()

    @overload
    def get(self, key: str) -> Stored: ...

    @overload
    def get(self, key: str, default: Default) -> Stored | Default: ...

    def get(self, key: str, default: object = None) -> object:
        return self._ready().get(key, default)

    def set(self, key: str, value: object = NOW, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``; without a value, the current Unix time."""
        engine = self._ready()
        if value is NOW:
            value = int(engine.clock())  # engine.timestamp(), a call less
        commit = engine.set(key, value, ttl)
        if commit is not None:
            commit.wait()

    def delete(self, key: str) -> bool:
        """True when removed or absent, False (logged) on an I/O error."""
        try:
            commit = self._ready().delete(key)
            if commit is not None:
                commit.wait()
        except OSError:
            logger.exception("aiokv: delete(%r) on %s failed", key, self._engine.path)
            return False
        return True

    def get_all(self) -> dict[str, object]:
        return self._ready().items()

    def clear(self) -> bool:  # type: ignore[override]
        """Remove every entry and the file: True, or False (logged) on error."""
        try:
            self._ready().clear()
        except OSError:
            logger.exception("aiokv: clear() of %s failed", self._engine.path)
            return False
        return True

    def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        value, commit = self._ready().incr(key, amount, ttl)
        if commit is not None:
            commit.wait()
        return value

    def pop(self, key: str, default: object = None) -> Any:
        """Remove ``key`` and return its value (``default`` if absent or
        expired), as one step: of threads racing for one key, one gets it."""
        value, commit = self._ready().pop(key, default)
        if commit is not None:
            commit.wait()
        return value

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The present ones of ``keys`` with their values (fresh copies)."""
        return self._ready().get_many(keys)

    def set_many(self, mapping: Mapping[str, object] | Iterable[tuple[str, object]],
                 ttl: float | None = None) -> None:
        """Store every pair as one atomic batch (see ``AioKV.set_many``)."""
        commit = self._ready().set_many(mapping, ttl)
        if commit is not None:
            commit.wait()

    def _commit(self, batch: WriteBatch) -> int:
        removed, commit = self._ready().commit_batch(batch)
        if commit is not None:
            commit.wait()
        return removed

    def _update_key(self, key: str, fn: Callable[[Any], Any], default: Any = None, *,
                    ttl: float | None = None) -> Any:
        value, commit = self._ready().update(key, fn, default, ttl)
        if commit is not None:
            commit.wait()
        return value

    def count(self) -> int:
        """How many live keys the store holds (``len(kv)``)."""
        return self._ready().count()

    def add(self, key: str, value: object = NOW, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` is absent or expired; whether it did
        (atomic, like ``AioKV.add``)."""
        while True:
            engine = self._ready()
            if value is NOW:
                value = int(engine.clock())  # engine.timestamp(), a call less
            added, commit = engine.add(key, value, ttl)
            if commit is None:
                return added
            if added:
                commit.wait()
                return True
            try:
                commit.wait()
            except OSError:
                continue  # the write that held the key was undone: ask again
            return False

    def keys(self, pattern: str = "*") -> list[str]:  # type: ignore[override]
        """Live keys matching a glob: a list (a snapshot), not a KeysView."""
        return self._ready().keys(pattern)

    def exists(self, key: str) -> bool:
        return self._ready().exists(key)

    def ttl(self, key: str) -> int:
        return self._ready().ttl(key)

    def expire(self, key: str, ttl: float | None) -> bool:
        existed, commit = self._ready().expire(key, ttl)
        if commit is not None:
            commit.wait()
        return existed

    def flush(self) -> None:
        self._ready().flush()

    def compact(self) -> None:
        self._ready().compact()

    def stats(self) -> Stats:
        return self._ready().stats()
