"""What the two shells, ``AioKV`` and ``KV``, have in common."""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from typing import Any, NoReturn

from ._arguments import Durability, Recovery
from ._batch import WriteBatch
from ._engine import Engine
from ._target import SERVER_SCHEMES

logger = logging.getLogger("aiokv")


def refuse_url(path: object) -> None:
    """A URL given where a path is expected: ValueError naming ``from_url``."""
    if isinstance(path, str) and "://" in path:
        scheme = path.split("://", 1)[0].lower()
        if scheme == "file" or scheme in SERVER_SCHEMES:
            raise ValueError(f"{path.split('?', 1)[0]!r} is a URL: the constructor takes a "
                             "path; use from_url() for a URL (file://, redis://...)")


class Shell:
    """Holds the engine a shell drives; creating one does no I/O."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "flush",
        fsync_interval: float = 1.0,
        flush_interval: float = 0.1,
        recovery: Recovery = "strict",
        clock: Callable[[], float] = time.time,
        readonly: bool = False,
    ) -> None:
        refuse_url(path)
        self._options: dict[str, Any] = {
            "durability": durability, "fsync_interval": fsync_interval,
            "flush_interval": flush_interval, "recovery": recovery, "clock": clock,
            "readonly": readonly}
        self._engine = Engine(path, **self._options)

    def _engine_to_open(self) -> Engine:
        """The engine, or a fresh one where close() spent it: a closed store
        may be opened again (an app's lifespan, a test fixture)."""
        if self._engine.closed:
            self._engine = Engine(self._engine.path, **self._options)
        return self._engine

    def __repr__(self) -> str:
        engine = self._engine
        return f"{type(self).__name__}({engine.path!r}, durability={engine.durability!r})"

    def __del__(self) -> None:
        """An instance collected while open is closed (flushed, its lock
        released), so that a new one on the same path can open it; a
        ResourceWarning says it should have been closed."""
        engine = getattr(self, "_engine", None)
        if engine is None or not engine.is_open or engine.forked:
            return
        if engine.in_own_thread():  # collected on the store's own thread: cannot join it
            warnings.warn(f"{self!r} was never closed; it is closed at exit",
                          ResourceWarning, stacklevel=2)
            return
        try:
            engine.close()
        except Exception:
            logger.exception("aiokv: closing %r, collected while open, failed", engine.path)
        warnings.warn(f"{self!r} was never closed; it was closed when collected",
                      ResourceWarning, stacklevel=2)

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            f"{type(self).__name__} cannot be pickled: a store belongs to the process that "
            "opens it; pass its path to the other process and open a store there")

    def _new_batch(self) -> WriteBatch:
        """An empty batch, on the store's clock (``b.set(key)``'s time)."""
        return WriteBatch(self._engine.clock)

    @property
    def path(self) -> str:
        """The log file's absolute path."""
        return self._engine.path

    @property
    def durability(self) -> str:
        return self._engine.durability

    @property
    def readonly(self) -> bool:
        """Whether the store was opened read-only (see docs/api.md)."""
        return self._engine.readonly
