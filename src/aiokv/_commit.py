"""A group commit: many writes made durable by one fsync.

Writers at the "fsync" level get a ``Commit`` back from the engine and wait on
it, from a thread (``wait``) or a coroutine (``wait_async``). The background
thread that writes and fsyncs the batch settles it once; waiting coroutines are
woken with one ``call_soon_threadsafe`` per event loop, not one per writer.
"""

from __future__ import annotations

import asyncio
import threading


class Commit:
    __slots__ = ("_done", "_error", "_event", "_futures", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = False
        self._error: BaseException | None = None
        self._event: threading.Event | None = None
        self._futures: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}

    @property
    def done(self) -> bool:
        return self._done

    def settle(self, error: BaseException | None = None) -> None:
        """Mark the batch durable (or failed with ``error``); wake every waiter."""
        with self._lock:
            if self._done:
                return
            self._done = True
            self._error = error
            event, futures = self._event, self._futures
            self._futures = {}
        if event is not None:
            event.set()
        for loop, waiting in futures.items():
            try:
                loop.call_soon_threadsafe(_resolve, waiting, error)
            except RuntimeError:  # that loop is closed: nobody is waiting there
                pass

    def wait(self) -> None:
        """Block the calling thread until settled; raise the batch's error."""
        with self._lock:
            if not self._done and self._event is None:
                self._event = threading.Event()
            event = self._event
        if event is not None:
            event.wait()
        if self._error is not None:
            raise self._error

    def wait_async(self) -> asyncio.Future[None]:
        """A future of the running event loop, done when the batch is settled,
        with the batch's error if it failed: await it.

        A plain function, not a coroutine: a writer at "fsync" calls it once
        per write, and awaiting the future directly saves a coroutine's cost.
        Cancelling the waiting task cancels only this future, never the
        write: it stays in the log and in memory, only the wait is abandoned.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiting = self._futures.get(loop)
        if waiting is not None:
            # No lock needed: if settle() has just taken this list, the
            # _resolve it scheduled runs on this loop, after this append.
            waiting.append(future)
            return future
        with self._lock:
            if not self._done:
                self._futures[loop] = [future]
                return future
        if self._error is None:
            future.set_result(None)
        else:
            future.set_exception(self._error)
        return future


def _resolve(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():  # its task was cancelled
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
