"""Programs that fork with a store open, run by ``tests/test_fork.py``.

``python tests/fork_programs.py PROGRAM SHELL DURABILITY DIRECTORY`` runs one
program against a store in DIRECTORY through ``KV`` or ``AioKV`` and prints
one JSON object: what each process saw. Each runs in a fresh interpreter, so
the test process itself never forks with the store's threads running.

Every program opens the store in the parent, writes ``WRITES`` keys (all
acknowledged), then forks the way real programs do. The test then checks
from outside what the owner's file holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import multiprocessing
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from aiokv import KV, AioKV, ForkedError, LockedError
from aiokv._arguments import as_durability

WRITES = 3000
"""Keys the owner writes before the fork (w0 ... w2999)."""
AFTER = 1000
"""Keys the owner writes after its child did its part (a0 ... a999)."""

Report = dict[str, Any]


class Store:
    """One calling style over both shells, so every program runs on each."""

    def __init__(self, shell: str, path: str, durability: str) -> None:
        self.shell = shell
        self.path = path
        self.durability = durability
        self.store: KV | AioKV = (KV if shell == "KV" else AioKV)(
            path, durability=as_durability(durability))

    def call(self, name: str, *args: object, **options: object) -> object:
        if name == "batch":  # a block: the batch's changes are its arguments
            self._batch(*args)
            return None
        method: Callable[..., Any] = getattr(self.store, name)
        if self.shell == "KV":
            return method(*args, **options)
        return asyncio.run(method(*args, **options))

    def _batch(self, *changes: object) -> None:
        kv = self.store
        if isinstance(kv, KV):
            with kv.batch() as batch:
                for key in changes:
                    batch.set(str(key), 1)
            return

        async def block() -> None:
            async with kv.batch() as batch:
                for key in changes:
                    batch.set(str(key), 1)

        asyncio.run(block())


def write_keys(store: Store, prefix: str, count: int) -> None:
    if store.shell == "KV":
        kv = store.store
        assert isinstance(kv, KV)
        for i in range(count):
            kv.set(f"{prefix}{i}", i)
        return

    async def writes() -> None:
        kv = store.store
        assert isinstance(kv, AioKV)
        for i in range(count):
            await kv.set(f"{prefix}{i}", i)

    asyncio.run(writes())


OPERATIONS: list[tuple[str, str, tuple[object, ...], dict[str, object]]] = [
    ("set", "set", ("c", 1), {}), ("get", "get", ("w1",), {}),
    ("delete", "delete", ("w2",), {}), ("incr", "incr", ("n",), {}),
    ("exists", "exists", ("w1",), {}), ("ttl", "ttl", ("w1",), {}),
    ("expire", "expire", ("w1", 5), {}), ("keys", "keys", (), {}),
    ("get_all", "get_all", (), {}), ("stats", "stats", (), {}),
    ("flush", "flush", (), {}), ("compact", "compact", (), {}),
    ("clear", "clear", (), {}), ("open", "open", (), {}),
    # Every kind of write the hot path takes, since the owner's writes left
    # it open at the fork: each must meet the fork's mark, not the room.
    ("set a float", "set", ("f", 1.5), {}), ("set now", "set", ("t",), {}),
    ("set with a ttl", "set", ("s", "token", 60), {}),
    ("set a dict", "set", ("d", {"user": "bob", "n": 1}), {}),
    ("incr with a ttl", "incr", ("w3", 1), {"ttl": 60}),
    ("add", "add", ("a", 1, 60), {}),
    ("pop", "pop", ("w1",), {}), ("get_many", "get_many", (["w1", "w2"],), {}),
    ("set_many", "set_many", ({"m1": 1, "m2": 2},), {}),
    ("delete_many", "delete_many", (["w1", "w2"],), {}),
    ("batch", "batch", ("b1", "b2"), {}), ("count", "count", (), {}),
    ("update", "update", ("n", abs, 0), {}), ("update a mapping", "update", ({"u": 1},), {}),
]
"""Every call a child could make (label, method, arguments); each must raise
ForkedError at once."""


def try_every_operation(store: Store) -> dict[str, str]:
    """What each operation did in a forked child: the exception's name."""
    seen = {}
    for name, method, args, options in OPERATIONS:
        try:
            store.call(method, *args, **options)
        except ForkedError:
            seen[name] = "ForkedError"
        except Exception as exc:
            seen[name] = f"{type(exc).__name__}: {exc}"
        else:
            seen[name] = "returned"
    return seen


def child_exit(report: Report, code: int = 0) -> None:
    """End a forked child, printing its report first, as a real child would
    end: ``sys.exit`` runs the exit handlers (the store's among them)."""
    _say({"child": report})
    sys.exit(code)


def _say(message: Report) -> None:
    """One line on stdout in one write(2): children print at the same time."""
    sys.stdout.flush()
    os.write(1, (json.dumps(message) + "\n").encode())


def wait_for(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


# -- the programs -----------------------------------------------------------------


def owner_goes_on(store: Store, child: int) -> Report:
    """Once its child has ended, the owner writes AFTER more keys and closes."""
    status = wait_for(child)
    write_keys(store, "a", AFTER)
    store.call("close")
    return {"child_status": status}


def child_only_exits(store: Store) -> Report:
    """The child of a plain fork exits at once; the owner goes on writing."""
    pid = os.fork()
    if pid == 0:
        child_exit({})
    return owner_goes_on(store, pid)


def child_tries_everything(store: Store) -> Report:
    """The child calls every operation, then closes and collects the store."""
    pid = os.fork()
    if pid == 0:
        seen = try_every_operation(store)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            store.call("close")
            store.store = None  # type: ignore[assignment]
            gc.collect()
        child_exit({"operations": seen, "warnings": [str(w.message) for w in caught]})
    return owner_goes_on(store, pid)


def owner_exits_first(store: Store) -> Report:
    """The owner closes and exits while its child lives on; the child then
    tries the inherited store, and opens a store of its own once the owner
    is gone (the daemonize pattern)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(write)
        os.read(read, 1)  # the owner has closed
        time.sleep(0.05)
        seen = try_every_operation(store)
        own = Store(store.shell, store.path, store.durability)
        write_keys(own, "c", 100)
        own.call("close")
        child_exit({"operations": seen})
    os.close(read)
    write_keys(store, "a", AFTER)
    store.call("close")
    os.write(write, b"x")
    return {"child_status": wait_for(pid)}


def child_opens_its_own(store: Store) -> Report:
    """While the owner has the store open, a child's own instance is refused."""
    pid = os.fork()
    if pid == 0:
        own = Store(store.shell, store.path, store.durability)
        try:
            own.call("get", "w1")
        except LockedError:
            child_exit({"own": "LockedError"})
        child_exit({"own": "opened"})
    return owner_goes_on(store, pid)


def _pool_worker(argument: int) -> str:
    """A multiprocessing worker using the store it inherited (fork start method)."""
    store = INHERITED
    assert store is not None
    try:
        store.call("set", f"pool{argument}", argument)
    except ForkedError:
        return "ForkedError"
    return "stored"


INHERITED: Store | None = None


def multiprocessing_fork(store: Store) -> Report:
    """A multiprocessing pool started with "fork" while the store is open."""
    global INHERITED
    INHERITED = store
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.map(_pool_worker, range(4))
    write_keys(store, "a", AFTER)
    store.call("close")
    return {"pool": results}


def _forkserver_worker(path: str, shell: str, durability: str) -> str:
    """A forkserver worker: a fresh interpreter state, opening the store by path."""
    own = Store(shell, path, durability)
    try:
        own.call("set", "from-worker", 1)
    except LockedError:
        return "LockedError"
    own.call("close")
    return "stored"


def multiprocessing_forkserver(store: Store) -> Report:
    """A forkserver process can neither be sent the store nor open it while
    the owner has it; it can once the owner has closed it."""
    context = multiprocessing.get_context("forkserver")
    try:
        with context.Pool(1) as pool:
            pool.apply(len, (store.store,))
        sent = "sent"
    except TypeError as exc:
        sent = f"TypeError: {exc}"
    arguments = (store.path, store.shell, store.durability)
    with context.Pool(1) as pool:
        while_open = pool.apply(_forkserver_worker, arguments)
        write_keys(store, "a", AFTER)
        store.call("close")
        after_close = pool.apply(_forkserver_worker, arguments)
    return {"sent": sent, "while_open": while_open, "after_close": after_close}


def fork_without_handlers(store: Store) -> Report:
    """A fork made by C code (here libc's fork() through ctypes), which runs
    no Python fork handlers; the child exits through sys.exit."""
    libc = ctypes.CDLL(None, use_errno=True)
    pid = libc.fork()
    if pid == 0:
        with contextlib.suppress(Exception):
            store.call("close")
        child_exit({})
    return owner_goes_on(store, pid)


def fork_during_compaction(store: Store) -> Report:
    """Forks while a compaction thread holds the store's locks now and then:
    the child's calls must raise at once, never wait on a lock."""
    done = []
    compactor = None
    if store.shell == "KV":
        kv = store.store
        assert isinstance(kv, KV)

        def compact_often() -> None:
            for _ in range(20):
                kv.compact()
            done.append(True)

        compactor = threading.Thread(target=compact_often)
        compactor.start()
    children = []
    for _ in range(5):
        pid = os.fork()
        if pid == 0:
            child_exit({"operations": try_every_operation(store)})
        children.append(pid)
        time.sleep(0.01)
    statuses = [wait_for(pid) for pid in children]
    if compactor is not None:
        compactor.join()
    write_keys(store, "a", AFTER)
    store.call("close")
    return {"child_status": max(statuses, key=abs)}


PROGRAMS: dict[str, Callable[[Store], Report]] = {
    "child-only-exits": child_only_exits,
    "child-tries-everything": child_tries_everything,
    "owner-exits-first": owner_exits_first,
    "child-opens-its-own": child_opens_its_own,
    "multiprocessing-fork": multiprocessing_fork,
    "multiprocessing-forkserver": multiprocessing_forkserver,
    "fork-without-handlers": fork_without_handlers,
    "fork-during-compaction": fork_during_compaction,
}


def main() -> None:
    program, shell, durability, directory = sys.argv[1:5]
    store = Store(shell, os.path.join(directory, "state.kv"), durability)
    write_keys(store, "w", WRITES)
    report = PROGRAMS[program](store)
    _say({"owner": report})


if __name__ == "__main__":
    main()
