"""The Python protocols every store offers on top of its calls, written once
for the local and the server store: ``MutableMapping`` for the blocking
stores (``kv[k]``, ``del kv[k]``, ``len(kv)``...), ``async for`` and
``count()`` for the async ones, and ``update``'s two forms, ``delete_many`` and ``batch()``.

``update`` is both ``MutableMapping.update(other, **pairs)``, which here
stores the pairs as one atomic batch, and the store's read-modify-write
``update(key, fn, default)``: two positional arguments or more mean the
latter (no mapping update takes two). Each store provides ``set_many``,
``get``, ``set``, ``pop``, ``exists``, ``keys``, ``count``, ``_update_key``,
``_new_batch`` and ``_commit`` (a batch, applied); nothing here holds state
or a lock.
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from collections.abc import (
    AsyncIterator,
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    MutableMapping,
    ValuesView,
)
from typing import TYPE_CHECKING, Any, overload

from ._batch import WriteBatch

if TYPE_CHECKING:
    from _typeshed import SupportsKeysAndGetItem

_MISSING = object()


def _pairs(args: tuple[Any, ...], pairs: dict[str, Any]) -> list[tuple[str, Any]]:
    """The pairs of a mapping update's arguments, as ``dict.update`` takes them."""
    if len(args) > 1:
        raise TypeError(f"update expected at most 1 positional argument for a mapping, "
                        f"got {len(args)}")
    merged: dict[str, Any] = dict(*args)
    merged.update(pairs)
    return list(merged.items())


class BlockingMapping(MutableMapping[str, Any]):
    """``KV`` and ``RedisKV`` as a ``MutableMapping[str, Any]``.

    ``kv[key]`` raises KeyError for an absent or expired key; ``del kv[key]``
    too (it is a ``pop``: one step). Iteration and ``len`` work on a snapshot
    of the live keys taken when they start. ``keys(pattern)`` and
    ``clear()`` keep the store's own forms: a list, and True/False. Two
    stores are equal only if they are the same object (comparing contents
    would read them whole), and a store is hashable.
    """

    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        if self.pop(key, _MISSING) is _MISSING:
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return self.exists(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return self.count()

    def items(self) -> ItemsView[str, Any]:
        """A view of a snapshot of the entries (``get_all()``), taken now."""
        return ItemsView(self.get_all())

    def values(self) -> ValuesView[Any]:
        """A view of a snapshot of the values (``get_all()``), taken now."""
        return ValuesView(self.get_all())

    @overload
    def update(self, key: str, fn: Callable[[Any], Any], default: Any = None, /, *,
               ttl: float | None = None) -> Any: ...

    @overload
    def update(self, other: SupportsKeysAndGetItem[str, Any], /, **pairs: Any) -> None: ...

    @overload
    def update(self, other: Iterable[tuple[str, Any]], /, **pairs: Any) -> None: ...

    @overload
    def update(self, /, **pairs: Any) -> None: ...

    def update(self, /, *args: Any, **pairs: Any) -> Any:
        """``update(key, fn, default=None, *, ttl=None)``: store ``fn(value)``
        as one step and return it (see docs/api.md); ``update(other, **pairs)``:
        store the pairs as ``set_many`` does, all or none."""
        if len(args) >= 2:
            return self._update_key(*args, **pairs)
        self.set_many(_pairs(args, pairs))
        return None

    # What each store provides.

    @abstractmethod
    def set(self, key: str, value: Any = ..., ttl: float | None = None) -> None: ...

    @abstractmethod
    def set_many(self, mapping: Iterable[tuple[str, Any]], ttl: float | None = None
                 ) -> None: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def get_all(self) -> dict[str, object]: ...

    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def _update_key(self, key: str, fn: Callable[[Any], Any], default: Any = None, *,
                    ttl: float | None = None) -> Any: ...

    @abstractmethod
    def _new_batch(self) -> WriteBatch: ...

    @abstractmethod
    def _commit(self, batch: WriteBatch) -> int: ...

    # Batches, made of the above.

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` as one atomic batch; how many of them were there."""
        batch = self._new_batch()
        batch.delete_all(keys)
        return self._commit(batch)

    @contextlib.contextmanager
    def batch(self) -> Iterator[WriteBatch]:
        """``with kv.batch() as b:`` then ``b.set()``, ``b.delete()``,
        ``b.incr()``: applied as one atomic step when the block ends,
        nothing if it raises; no other thread sees any of it before."""
        batch = self._new_batch()
        try:
            yield batch
        finally:
            batch.seal()
        self._commit(batch)


class AsyncMapping:
    """What fits asyncio of the mapping protocol, for ``AioKV`` and
    ``RedisAioKV``: ``async for key in kv`` (a snapshot of the live keys),
    ``await kv.count()``, and ``update``'s two forms."""

    async def __aiter__(self) -> AsyncIterator[str]:
        for key in await self.keys():
            yield key

    @abstractmethod
    async def keys(self, pattern: str = "*") -> list[str]: ...

    @abstractmethod
    async def set_many(self, mapping: Iterable[tuple[str, Any]], ttl: float | None = None
                       ) -> None: ...

    @abstractmethod
    async def _update_key(self, key: str, fn: Callable[[Any], Any], default: Any = None, *,
                          ttl: float | None = None) -> Any: ...

    @abstractmethod
    def _new_batch(self) -> WriteBatch: ...

    @abstractmethod
    async def _commit(self, batch: WriteBatch) -> int: ...

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` as one atomic batch; how many of them were there."""
        batch = self._new_batch()
        batch.delete_all(keys)
        return await self._commit(batch)

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[WriteBatch]:
        """``async with kv.batch() as b:`` then ``b.set()``, ``b.delete()``,
        ``b.incr()``: applied as one atomic step when the block ends,
        nothing if it raises; no other task sees any of it before."""
        batch = self._new_batch()
        try:
            yield batch
        finally:
            batch.seal()
        await self._commit(batch)

    @overload
    async def update(self, key: str, fn: Callable[[Any], Any], default: Any = None, /, *,
                     ttl: float | None = None) -> Any: ...

    @overload
    async def update(self, other: SupportsKeysAndGetItem[str, Any], /,
                     **pairs: Any) -> None: ...

    @overload
    async def update(self, other: Iterable[tuple[str, Any]], /, **pairs: Any) -> None: ...

    @overload
    async def update(self, /, **pairs: Any) -> None: ...

    async def update(self, /, *args: Any, **pairs: Any) -> Any:
        """As ``KV.update``: ``update(key, fn, default=None, *, ttl=None)``
        or ``update(other, **pairs)``."""
        if len(args) >= 2:
            return await self._update_key(*args, **pairs)
        await self.set_many(_pairs(args, pairs))
        return None
