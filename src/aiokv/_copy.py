"""``aiokv copy SRC DST``: move a store between a local log and a server.

Either end is a path or a URL (``from_url``'s forms). The source is read
whole (a local one under its lock: a store open elsewhere is refused,
unless ``live``: then its files are read as they are, read-only), its
expired entries left out; the entries go to the destination a thousand at a
time, each with its expiry time; a key the destination already holds is
left as it is unless ``overwrite``; at the end every copied value is read
back from the destination and compared with the source's, types included.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from . import _redis_plans as plans
from ._blocking_kv import KV
from ._errors import LockedError
from ._redis_client import SyncClusterExecutor, SyncExecutor, sync_executor
from ._target import LocalTarget, ServerTarget, Target, parse_target

CHUNK = 1000
"""Entries written (and read back) per round trip."""

Item = tuple[str, object, float | None]
"""A key, its value and its expiry time (Unix seconds) or None."""


@dataclass
class CopyReport:
    copied: int = 0
    """Entries written to the destination."""
    existing: list[str] = field(default_factory=list)
    """Keys the destination held already, left as they were."""
    expired: int = 0
    """Entries of the source that expired before they could be written."""
    mismatched: list[str] = field(default_factory=list)
    """Keys whose value in the destination differs from the source's at the end."""
    seconds: float = 0.0


class CopyError(Exception):
    """The copy could not start or finish; the message says why."""


def copy_store(source: str, destination: str, *, overwrite: bool = False,
               relative_ttl: bool = False, live: bool = False,
               progress: Callable[[int, int], None] | None = None) -> CopyReport:
    """Copy every live entry of ``source`` into ``destination``.

    ``live``: a local source open in another process (a running program's
    store, to back it up) is read from its files without its lock, as
    ``readonly=True`` reads them: everything its writer has written to them
    (at "flush" and "fsync", every write it acknowledged; at "buffered",
    what its writer thread has written so far).
    """
    started = time.monotonic()
    src, dst = parse_target(source), parse_target(destination)
    if _same(src, dst):
        raise CopyError(f"{source!r} and {destination!r} are the same store")
    items = _read_all(src, source, live)
    report = CopyReport()
    with _Destination(dst) as writer:
        done = 0
        for chunk in _chunks(items):
            now = time.time()
            unexpired = [item for item in chunk if item[2] is None or item[2] > now]
            report.expired += len(chunk) - len(unexpired)
            left = writer.put(unexpired, overwrite=overwrite, absolute=not relative_ttl)
            report.existing.extend(left)
            report.copied += len(unexpired) - len(left)
            done += len(chunk)
            if progress is not None:
                progress(done, len(items))
        existing = set(report.existing)
        for chunk in _chunks([item for item in items if item[0] not in existing]):
            keys = [key for key, _, _ in chunk]
            for (key, value, expires), held in zip(chunk, writer.values(keys), strict=True):
                if held is plans.MISSING_VALUE and expires is not None and expires <= time.time():
                    continue  # expired meanwhile, as it should
                if _typed(held) != _typed(value):
                    report.mismatched.append(key)
    report.seconds = time.monotonic() - started
    return report


def _same(src: Target, dst: Target) -> bool:
    if isinstance(src, LocalTarget) and isinstance(dst, LocalTarget):
        return os.path.realpath(src.path) == os.path.realpath(dst.path)
    if isinstance(src, ServerTarget) and isinstance(dst, ServerTarget):
        return (src.url, src.nodes, src.service, src.prefix) == (
            dst.url, dst.nodes, dst.service, dst.prefix)
    return False


def _read_all(src: Target, given: str, live: bool) -> list[Item]:
    if isinstance(src, LocalTarget):
        if not os.path.exists(src.path):
            raise CopyError(f"{given}: no such store")
        try:
            with KV(src.path) as kv:
                return kv._engine.items_with_expiry()
        except LockedError:
            if not live:
                raise CopyError(f"{given} is open in another process: stop the writer "
                                "first, so that the copy is the whole store, or copy what "
                                "its files hold now with --live") from None
        with KV(src.path, readonly=True) as kv:
            return kv._engine.items_with_expiry()
    executor = sync_executor(src)
    try:
        return executor.run(plans.items_with_expiry(_names(src), src.display))
    finally:
        executor.close()


def _names(target: ServerTarget) -> plans.Names:
    return plans.Names(target.prefix, cluster=target.kind == "cluster", spread=target.spread)


class _Destination:
    """Where the entries go: a local store, or a server in one namespace."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.kv: KV | None = None
        self.executor: SyncExecutor | SyncClusterExecutor | None = None

    def __enter__(self) -> _Destination:
        if isinstance(self.target, LocalTarget):
            try:
                self.kv = KV(self.target.path).open()
            except LockedError:
                raise CopyError(f"{self.target.path} is open in another process") from None
        else:
            self.executor = sync_executor(self.target)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.kv is not None:
            self.kv.close()
        if self.executor is not None:
            self.executor.close()

    def put(self, items: list[Item], *, overwrite: bool, absolute: bool) -> list[str]:
        """Write ``items``; the keys left because they existed."""
        if self.kv is not None:
            left = []
            now = time.time()
            for key, value, expires in items:
                ttl = None if expires is None else max(0.001, expires - now)
                if overwrite:
                    self.kv.set(key, value, ttl)
                elif not self.kv.add(key, value, ttl):
                    left.append(key)
            return left
        assert self.executor is not None and isinstance(self.target, ServerTarget)
        if not items:
            return []
        return self.executor.run(plans.put_many(_names(self.target), items,
                                                overwrite=overwrite, absolute=absolute))

    def values(self, keys: list[str]) -> list[object]:
        if self.kv is not None:
            return [self.kv.get(key, plans.MISSING_VALUE) for key in keys]
        assert self.executor is not None and isinstance(self.target, ServerTarget)
        return self.executor.run(plans.values_of(_names(self.target), self.target.display,
                                                 keys))


def _chunks(items: list[Item]) -> Iterator[list[Item]]:
    for start in range(0, len(items), CHUNK):
        yield items[start:start + CHUNK]


def _typed(value: object) -> object:
    """A value with its types spelled out (1, 1.0 and True differ; NaN is itself)."""
    if isinstance(value, dict):
        return ("dict", [(_typed(k), _typed(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return ("list", [_typed(item) for item in value])
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, value)
