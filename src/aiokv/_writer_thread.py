"""What the engine's writer thread decides each round, as plain code.

The thread itself (``Engine._sync_loop``) takes the engine's lock, asks
``plan_round`` what is due, and does it: write held frames ("buffered"),
commit a batch ("fsync"), fsync the log, or wait. The decision depends only
on times and flags, so it is tested here without a thread or a clock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger("aiokv")


@dataclass(frozen=True)
class RoundPlan:
    write: bool
    """Write the held frames now (at "fsync": commit them as a batch)."""
    sync: bool
    """fsync the log now."""
    wait: float | None
    """When nothing is due: how long to wait for a wake-up (None: until one)."""


def plan_round(now: float, *, group_commit: bool, queued_since: float | None,
               flush_interval: float, unsynced_since: float | None, fsync_interval: float,
               sweep_in: float | None) -> RoundPlan:
    """What one round does.

    ``queued_since``: when the oldest held frame was queued (None: none);
    ``unsynced_since``: since when the log holds writes not fsynced (None:
    none); ``sweep_in``: seconds until the expiry sweep wants to run again.
    At "fsync" (``group_commit``) queued frames are committed at once; at
    "buffered" they wait ``flush_interval``; written data is fsynced
    ``fsync_interval`` after the first unsynced write.
    """
    wait = sweep_in
    write = sync = False
    if queued_since is not None:
        if group_commit:
            write = True
        else:
            due = queued_since + flush_interval
            write = now >= due
            if not write:
                wait = due - now if wait is None else min(wait, due - now)
    if unsynced_since is not None:
        due = unsynced_since + fsync_interval
        sync = now >= due
        if not sync:
            wait = due - now if wait is None else min(wait, due - now)
    return RoundPlan(write, sync, None if write or sync else wait)


class FailureLog:
    """Logs a failure of the writer thread's duties: in full the first time a
    duty fails in a way, briefly while it goes on failing so (a retry every
    50 ms must not flood the log). Used by the writer thread only (and by
    the thread that starts a compaction, under the engine's lock)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._last: tuple[str, type[BaseException], str] | None = None

    def report(self, duty: str, error: BaseException) -> None:
        signature = (duty, type(error), str(error))
        if signature == self._last:
            logger.debug("aiokv: %s of %s failed again: %s", duty, self._path, error)
            return
        self._last = signature
        logger.error("aiokv: %s of %s failed; it is retried: %s", duty, self._path, error,
                     exc_info=error)

    def succeeded(self) -> None:
        """A round went through: the next failure is news again."""
        self._last = None
