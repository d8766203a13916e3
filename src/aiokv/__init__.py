"""aiokv: an async key-value store for one process's local state.

Entries live in memory and in an append-only log of msgpack records that is
replayed on open, compacted in the background and recovered after a crash.
"""

from ._arguments import Durability, Recovery
from ._async_kv import AioKV, aiocache
from ._batch import WriteBatch
from ._blocking_kv import KV
from ._engine import Stats
from ._errors import (
    AioKVError,
    ClosedError,
    CorruptionError,
    ForkedError,
    LockedError,
    OutcomeUnknownError,
    ReadOnlyError,
    UnavailableError,
)
from ._protocols import AsyncStore, Store
from ._version import __version__

__all__ = [
    "KV",
    "AioKV",
    "AioKVError",
    "AsyncStore",
    "ClosedError",
    "CorruptionError",
    "Durability",
    "ForkedError",
    "LockedError",
    "OutcomeUnknownError",
    "ReadOnlyError",
    "Recovery",
    "Stats",
    "Store",
    "UnavailableError",
    "WriteBatch",
    "__version__",
    "aiocache",
]
