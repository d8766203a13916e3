"""The systems that ``compare.py`` measures, and the workloads that run in its children.

Each system is one adapter class with the same small API (open, set, get,
incr, get_all, compact, close), async or blocking as the system itself is.
``python benchmarks/systems.py --child PARAMS_JSON`` runs one workload on one
system in this fresh process and prints one JSON object on stdout; on failure
the first line of stderr says what went wrong. The driver (``compare.py``)
decides what to run, repeats it and reports; nothing here prints a verdict.

Stores are directories: every adapter keeps all its files inside the
directory it is given, so that "bytes on disk" is the size of that directory.
"""

from __future__ import annotations

import asyncio
import ctypes
import dbm
import importlib
import importlib.util
import json
import os
import random
import shelve
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

FILL_KEYS = 5000
"""W1-W4 stores hold the keys ``user:0`` .. ``user:4999`` before the timed part."""

WARMUP_OPS = 300
"""Untimed operations before every timed part (also capped at a quarter of the budget)."""

REDIS_READY_TIMEOUT = 300.0
"""Seconds a redis-server may take to start and load its AOF."""

FLOAT = struct.Struct("<d")


def load(module: str) -> Any:
    """Import a store's module in the child that uses it, so no other process pays for it."""
    return importlib.import_module(module)

SetFunction = Callable[[str, float], Any]
KeyFunction = Callable[[str], Any]


def key_names(count: int, modulo: int) -> list[str]:
    """``user:{i % modulo}`` for i < count, built before any timed loop."""
    return [f"user:{i % modulo}" for i in range(count)]


def random_key_names(count: int, store_keys: int, seed: int = 7) -> list[str]:
    """``count`` keys drawn at random (repeatably) from a store of ``store_keys``."""
    draw = random.Random(seed).randrange
    return [f"user:{draw(store_keys)}" for _ in range(count)]


def directory_bytes(directory: str) -> int:
    """Bytes of every file under ``directory``: a store's whole footprint."""
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except FileNotFoundError:
                pass
    return total


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory (VmRSS in /proc/PID/status) in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line in /proc status")


# -- durability descriptions ------------------------------------------------


@dataclass(frozen=True)
class Durability:
    """What an acknowledged write survives, as the system is configured here."""

    configuration: str
    kill9: str  # starts with "yes", "no" or "partly"
    power_loss: str
    loads_into_memory: str  # "yes", "no" or "keys only"


# -- adapters ---------------------------------------------------------------


class AsyncAdapter(ABC):
    """A store used from a coroutine; every call is awaited."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    @abstractmethod
    async def open(self) -> None:
        """Open the store in ``directory`` (created empty when missing)."""

    @abstractmethod
    def setter(self) -> Callable[[str, float], Awaitable[object]]:
        """The function a user awaits to set a float (the bare method where possible)."""

    @abstractmethod
    def getter(self) -> Callable[[str], Awaitable[object]]:
        """The function a user awaits to read one value."""

    @abstractmethod
    def incrementer(self) -> Callable[[str], Awaitable[object]]:
        """The function a user awaits to add 1 to an integer counter."""

    @abstractmethod
    async def get_all(self) -> dict[str, object]:
        """Every item, read into a dict."""

    async def compact(self) -> None:
        """Rewrite the store without garbage (W8); not every system has one."""
        raise NotImplementedError(f"{type(self).__name__} has no compaction")

    @abstractmethod
    async def close(self) -> None:
        """Close, leaving every acknowledged write in the store's files."""

    def pid(self) -> int | None:
        """The process holding the data, when it is not this one (Redis)."""
        return None


class SyncAdapter(ABC):
    """A store with a blocking API."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    @abstractmethod
    def open(self) -> None:
        """Open the store in ``directory`` (created empty when missing)."""

    @abstractmethod
    def setter(self) -> Callable[[str, float], object]:
        """The function a user calls to set a float (the bare method where possible)."""

    @abstractmethod
    def getter(self) -> Callable[[str], object]:
        """The function a user calls to read one value."""

    @abstractmethod
    def incrementer(self) -> Callable[[str], object]:
        """The function a user calls to add 1 to an integer counter."""

    @abstractmethod
    def get_all(self) -> dict[str, object]:
        """Every item, read into a dict."""

    def compact(self) -> None:
        """Rewrite the store without garbage (W8); not every system has one."""
        raise NotImplementedError(f"{type(self).__name__} has no compaction")

    @abstractmethod
    def close(self) -> None:
        """Close, leaving every acknowledged write in the store's files."""

    def pid(self) -> int | None:
        """The process holding the data, when it is not this one (Redis)."""
        return None


class ForwardingAdapter(SyncAdapter):
    """A blocking store whose object's own set, get and incr are what a user calls.

    ``open`` sets ``self.store`` to that object.
    """

    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        self.store: Any = None

    def setter(self) -> Callable[[str, float], object]:
        return self.store.set  # type: ignore[no-any-return]

    def getter(self) -> Callable[[str], object]:
        return self.store.get  # type: ignore[no-any-return]

    def incrementer(self) -> Callable[[str], object]:
        return self.store.incr  # type: ignore[no-any-return]

    def close(self) -> None:
        self.store.close()


class OwnMethodsAdapter(AsyncAdapter):
    """An async adapter whose set, get and incr are its own coroutines."""

    @abstractmethod
    async def set(self, key: str, value: object) -> object: ...

    @abstractmethod
    async def get(self, key: str) -> object: ...

    @abstractmethod
    async def incr(self, key: str) -> object: ...

    def setter(self) -> Callable[[str, float], Awaitable[object]]:
        return self.set

    def getter(self) -> Callable[[str], Awaitable[object]]:
        return self.get

    def incrementer(self) -> Callable[[str], Awaitable[object]]:
        return self.incr


Adapter = AsyncAdapter | SyncAdapter


# aiokv ---------------------------------------------------------------------


class AiokvAsync(AsyncAdapter):
    """``aiokv.AioKV(path, durability=...)``."""

    def __init__(self, directory: str, durability: str) -> None:
        super().__init__(directory)
        self.durability = durability
        self.kv: Any = None

    async def open(self) -> None:
        self.kv = load("aiokv").AioKV(os.path.join(self.directory, "store.kv"),
                              durability=self.durability)
        await self.kv.open()

    def setter(self) -> Callable[[str, float], Awaitable[object]]:
        return self.kv.set  # type: ignore[no-any-return]

    def getter(self) -> Callable[[str], Awaitable[object]]:
        return self.kv.get  # type: ignore[no-any-return]

    def incrementer(self) -> Callable[[str], Awaitable[object]]:
        return self.kv.incr  # type: ignore[no-any-return]

    async def get_all(self) -> dict[str, object]:
        return await self.kv.get_all()  # type: ignore[no-any-return]

    async def compact(self) -> None:
        await self.kv.compact()

    async def close(self) -> None:
        await self.kv.close()


class AiokvSync(ForwardingAdapter):
    """``aiokv.KV(path, durability=...)``."""

    def __init__(self, directory: str, durability: str) -> None:
        super().__init__(directory)
        self.durability = durability

    def open(self) -> None:
        self.store = load("aiokv").KV(os.path.join(self.directory, "store.kv"),
                                      durability=self.durability)
        self.store.open()

    def get_all(self) -> dict[str, object]:
        return self.store.get_all()  # type: ignore[no-any-return]

    def compact(self) -> None:
        self.store.compact()


def build_aiokv(directory: str, passes: Sequence[dict[str, object]], compacted: bool) -> None:
    """Write the log directly: a header, then one SET frame per key per pass.

    Written in one go, the store has no chance to compact while it is built,
    so ``passes > 1`` leaves a log with that many records per key. A compacted
    store is then made by aiokv's own ``compact()``.
    """
    aiokv = load("aiokv")
    fmt = load("aiokv._format")
    encode_set = fmt.encode_set

    path = os.path.join(directory, "store.kv")
    with open(path, "wb") as file:
        file.write(fmt.encode_header(0, 0.0, fmt.HEADER_SIZE))
        for items in passes:
            file.write(b"".join(encode_set(key, value) for key, value in items.items()))
    if compacted:
        kv = aiokv.KV(path)
        kv.compact()
        kv.close()


# the seed JSON design ------------------------------------------------------


class SeedJsonStore(OwnMethodsAdapter):
    """The design aiokv replaces: the whole dict rewritten as JSON on every set.

    Each set stores the value in an in-memory dict, then, under one
    ``asyncio.Lock`` and inside ``asyncio.to_thread``, ``json.dumps`` the whole
    dict into a temp file that is ``os.replace``d over the store (no fsync).
    Open is one ``json.load``. It has no incr: the adapter reads and sets.
    """

    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        self.path = os.path.join(directory, "store.json")
        self.data: dict[str, object] = {}
        self.lock = asyncio.Lock()

    async def open(self) -> None:
        if os.path.exists(self.path):
            self.data = await asyncio.to_thread(self._load)

    def _load(self) -> dict[str, object]:
        with open(self.path, encoding="utf-8") as file:
            data: dict[str, object] = json.load(file)
        return data

    async def set(self, key: str, value: object) -> None:
        async with self.lock:
            self.data[key] = value
            await asyncio.to_thread(self.rewrite)

    def rewrite(self) -> None:
        text = json.dumps(self.data)
        temp = self.path + ".tmp"
        with open(temp, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temp, self.path)

    async def get(self, key: str) -> object:
        return self.data.get(key)

    async def incr(self, key: str) -> object:
        value = int(self.data.get(key, 0)) + 1  # type: ignore[call-overload]
        await self.set(key, value)
        return value

    async def get_all(self) -> dict[str, object]:
        return dict(self.data)

    async def compact(self) -> None:
        """The seed's only rewrite: one save of the whole dict, under its lock."""
        async with self.lock:
            await asyncio.to_thread(self.rewrite)

    async def close(self) -> None:
        async with self.lock:
            pass


def build_seed(directory: str, passes: Sequence[dict[str, object]], compacted: bool) -> None:
    """One rewrite of the final dict: the file every set of the seed produces."""
    store = SeedJsonStore(directory)
    store.data = dict(passes[-1])
    store.rewrite()


# diskcache -----------------------------------------------------------------


class DiskcacheAdapter(ForwardingAdapter):
    """``diskcache.Cache(directory)`` with its defaults."""

    def open(self) -> None:
        self.store = load("diskcache").Cache(self.directory)

    def get_all(self) -> dict[str, object]:
        cache = self.store
        return {key: cache[key] for key in cache.iterkeys()}


def build_diskcache(directory: str, passes: Sequence[dict[str, object]], compacted: bool) -> None:
    """Ordinary ``cache.set`` calls, one transaction per pass to go faster."""
    with load("diskcache").Cache(directory) as cache:
        for items in passes:
            with cache.transact():
                for key, value in items.items():
                    cache.set(key, value)


# sqlitedict ----------------------------------------------------------------


class MappingAdapter(ForwardingAdapter):
    """A store used like a dict (sqlitedict, shelve); ``open`` sets ``self.store``."""

    def setter(self) -> Callable[[str, float], object]:
        return self.store.__setitem__  # type: ignore[no-any-return]

    def getter(self) -> Callable[[str], object]:
        return self.store.__getitem__  # type: ignore[no-any-return]

    def incrementer(self) -> Callable[[str], object]:
        db = self.store

        def incr(key: str) -> object:  # no incr in its API: read, then set
            value = db.get(key, 0) + 1
            db[key] = value
            return value

        return incr

    def get_all(self) -> dict[str, object]:
        return dict(self.store.items())


class SqlitedictAdapter(MappingAdapter):
    """``SqliteDict(path, autocommit=True)``: every set waits for its commit."""

    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        self.path = os.path.join(directory, "store.sqlite")

    def open(self) -> None:
        self.store = load("sqlitedict").SqliteDict(self.path, autocommit=True)


def build_sqlitedict(directory: str, passes: Sequence[dict[str, object]],
                     compacted: bool) -> None:
    """The same table and rows as autocommit use, with one commit per pass."""
    db = load("sqlitedict").SqliteDict(os.path.join(directory, "store.sqlite"), autocommit=False)
    try:
        for items in passes:
            db.update(items)
            db.commit()
    finally:
        db.close()


# shelve --------------------------------------------------------------------


class ShelveAdapter(MappingAdapter):
    """``shelve.open(path)``: flag "c", no writeback, on whatever dbm is here."""

    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        self.path = os.path.join(directory, "store")

    def open(self) -> None:
        self.store = shelve.open(self.path)  # noqa: SIM115 (open until close())


def build_shelve(directory: str, passes: Sequence[dict[str, object]], compacted: bool) -> None:
    """Ordinary sets, pass after pass (dbm has no bulk load)."""
    adapter = ShelveAdapter(directory)
    adapter.open()
    try:
        for items in passes:
            for key, value in items.items():
                adapter.store[key] = value
    finally:
        adapter.close()


def shelve_backend() -> str:
    """The dbm module ``shelve.open`` picks on this machine."""
    with tempfile.TemporaryDirectory(dir=".") as directory:
        path = os.path.join(directory, "probe")
        shelve.open(path).close()
        return str(dbm.whichdb(path))


# semidbm -------------------------------------------------------------------


class SemidbmAdapter(SyncAdapter):
    """``semidbm.open(path, "c")``: bytes keys and values, converted by the adapter.

    Keys are ``key.encode()`` and floats ``struct.pack('<d', v)`` (counters
    ``b"%d" % n``); the conversions are timed, as a user would have to make them.
    """

    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        self.path = os.path.join(directory, "store.semidbm")
        self.db: Any = None

    def open(self) -> None:
        self.db = load("semidbm").open(self.path, "c")

    def setter(self) -> Callable[[str, float], object]:
        put = self.db.__setitem__
        pack = FLOAT.pack

        def set_(key: str, value: float) -> None:
            put(key.encode(), pack(value))

        return set_

    def getter(self) -> Callable[[str], object]:
        read = self.db.__getitem__
        unpack = FLOAT.unpack

        def get(key: str) -> object:
            return unpack(read(key.encode()))[0]

        return get

    def incrementer(self) -> Callable[[str], object]:
        db = self.db

        def incr(key: str) -> object:  # no incr in its API: read, then set
            name = key.encode()
            try:
                value = int(db[name]) + 1
            except KeyError:
                value = 1
            db[name] = b"%d" % value
            return value

        return incr

    def get_all(self) -> dict[str, object]:
        db = self.db
        unpack = FLOAT.unpack
        return {name.decode(): unpack(db[name])[0] for name in db.keys()}  # noqa: SIM118

    def compact(self) -> None:
        self.db.compact()

    def close(self) -> None:
        self.db.close()


def build_semidbm(directory: str, passes: Sequence[dict[str, object]], compacted: bool) -> None:
    """Ordinary sets, pass after pass: one appended record per set."""
    db = load("semidbm").open(os.path.join(directory, "store.semidbm"), "c")
    try:
        for items in passes:
            for key, value in items.items():
                data = b"%d" % value if isinstance(value, int) else FLOAT.pack(value)
                db[key.encode()] = data
    finally:
        db.close()


# pickledb ------------------------------------------------------------------


class PickledbAdapter(OwnMethodsAdapter):
    """``pickledb.PickleDB(path)`` used from a coroutine, with ``save()`` after every set.

    In a running loop its dual methods return coroutines, which are awaited.
    ``set()`` only changes its dict; ``save()`` writes the whole dict with
    orjson to ``path.tmp`` (aiofiles, no fsync) and ``os.replace``s it.
    """

    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        self.path = os.path.join(directory, "store.json")
        self.db: Any = None

    async def open(self) -> None:
        self.db = load("pickledb").PickleDB(self.path)
        await self.db.load()

    async def set(self, key: str, value: object) -> None:
        await self.db.set(key, value)
        await self.db.save()

    async def get(self, key: str) -> object:
        return await self.db.get(key)

    async def incr(self, key: str) -> object:
        value = int(await self.db.get(key, 0)) + 1
        await self.set(key, value)
        return value

    def getter(self) -> Callable[[str], Awaitable[object]]:
        return self.db.get  # type: ignore[no-any-return]

    async def get_all(self) -> dict[str, object]:
        get = self.db.get
        return {key: await get(key) for key in await self.db.all()}

    async def close(self) -> None:
        self.db = None


def build_pickledb(directory: str, passes: Sequence[dict[str, object]], compacted: bool) -> None:
    """Sets in memory, then one ``save()``: the file a save after every set leaves."""
    pickledb = load("pickledb")

    async def build() -> None:
        db = pickledb.PickleDB(os.path.join(directory, "store.json"))
        for key, value in passes[-1].items():
            await db.set(key, value)
        await db.save()

    asyncio.run(build())


# aiosqlite -----------------------------------------------------------------

SQLITE_SCHEMA = "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value)"
SQLITE_SET = "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)"
SQLITE_GET = "SELECT value FROM kv WHERE key = ?"
SQLITE_INCR = ("INSERT INTO kv (key, value) VALUES (?, 1) "
               "ON CONFLICT(key) DO UPDATE SET value = value + 1")


class AiosqliteAdapter(OwnMethodsAdapter):
    """One aiosqlite connection, WAL + synchronous=NORMAL, a commit after each set."""

    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        self.path = os.path.join(directory, "store.sqlite")
        self.db: Any = None

    async def open(self) -> None:
        self.db = db = await load("aiosqlite").connect(self.path)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute(SQLITE_SCHEMA)
        await db.commit()

    async def set(self, key: str, value: object) -> None:
        await self.db.execute(SQLITE_SET, (key, value))
        await self.db.commit()

    async def get(self, key: str) -> object:
        rows = await self.db.execute_fetchall(SQLITE_GET, (key,))
        return next(iter(rows))[0] if rows else None

    async def incr(self, key: str) -> object:
        """One atomic UPSERT ``value = value + 1`` and a commit (no value returned)."""
        await self.db.execute(SQLITE_INCR, (key,))
        await self.db.commit()
        return None

    async def get_all(self) -> dict[str, object]:
        rows = await self.db.execute_fetchall("SELECT key, value FROM kv")
        return dict(rows)

    async def compact(self) -> None:
        """``VACUUM``: SQLite's rewrite, queued on the connection's thread.

        VACUUM fails inside a transaction, and a concurrent set may have
        begun one: commit it and try again.
        """
        sqlite3_error = load("sqlite3").OperationalError
        while True:
            try:
                await self.db.execute("VACUUM")
                return
            except sqlite3_error as exc:
                if "within a transaction" not in str(exc):
                    raise
                await self.db.commit()

    async def close(self) -> None:
        await self.db.close()


def build_aiosqlite(directory: str, passes: Sequence[dict[str, object]],
                    compacted: bool) -> None:
    """The same table, in WAL mode, one transaction per pass (sqlite3 directly)."""
    connection = sqlite3.connect(os.path.join(directory, "store.sqlite"))
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(SQLITE_SCHEMA)
        for items in passes:
            connection.executemany(SQLITE_SET, items.items())
            connection.commit()
    finally:
        connection.close()


# Redis ---------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def die_with_parent() -> None:
    """In the forked redis-server: receive SIGTERM if this child process dies (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class RedisServer:
    """A private redis-server on 127.0.0.1, keeping its AOF in ``directory``."""

    def __init__(self, directory: str, appendfsync: str) -> None:
        self.directory = os.path.abspath(directory)  # redis-server changes into it
        self.appendfsync = appendfsync
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.directory + ".redis.log"

    def start(self) -> None:
        """Start it and return once it answers PING with its data loaded."""
        os.makedirs(self.directory, exist_ok=True)
        self.port = free_port()
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                   "--dir", self.directory, "--save", "", "--appendonly", "yes",
                   "--appendfsync", self.appendfsync, "--auto-aof-rewrite-percentage", "0",
                   "--logfile", self.log, "--daemonize", "no"]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        preexec_fn=die_with_parent)  # noqa: PLW1509
        self.wait_ready()

    def wait_ready(self) -> None:
        redis = load("redis")
        client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.perf_counter() + REDIS_READY_TIMEOUT
        try:
            while time.perf_counter() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {self.last_log_line()}")
                try:
                    if client.ping() and client.info("persistence").get("loading") == 0:
                        return
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
                time.sleep(0.002)
            raise TimeoutError("redis-server did not become ready")
        finally:
            client.close()

    def last_log_line(self) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as log:
                lines = [line.strip() for line in log if line.strip()]
        except OSError:
            return "no log"
        return lines[-1] if lines else "empty log"

    def stop(self) -> None:
        """SIGTERM (Redis flushes its AOF and exits), then SIGKILL if it hangs."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_rewrite(client: Any) -> None:
    """Block until a BGREWRITEAOF has finished (sync client)."""
    while True:
        info = client.info("persistence")
        if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
            return
        time.sleep(0.01)


class RedisAsync(AsyncAdapter):
    """A private redis-server, driven with ``redis.asyncio.Redis`` (one pool)."""

    def __init__(self, directory: str, appendfsync: str) -> None:
        super().__init__(directory)
        self.server = RedisServer(directory, appendfsync)
        self.client: Any = None

    async def open(self) -> None:
        try:
            await asyncio.to_thread(self.server.start)
        except BaseException:
            self.server.stop()
            raise
        self.client = load("redis.asyncio").Redis(host="127.0.0.1", port=self.server.port,
                                          max_connections=256)

    async def get(self, key: str) -> object:
        value = await self.client.get(key)
        return None if value is None else float(value)

    def setter(self) -> Callable[[str, float], Awaitable[object]]:
        return self.client.set  # type: ignore[no-any-return]

    def getter(self) -> Callable[[str], Awaitable[object]]:
        return self.get

    def incrementer(self) -> Callable[[str], Awaitable[object]]:
        return self.client.incr  # type: ignore[no-any-return]

    async def get_all(self) -> dict[str, object]:
        """SCAN in pages of 1,000 keys, MGET each page, floats decoded."""
        items: dict[str, object] = {}
        cursor = 0
        while True:
            cursor, names = await self.client.scan(cursor, count=1000)
            if names:
                values = await self.client.mget(names)
                items.update((name.decode(), float(value))
                             for name, value in zip(names, values, strict=True))
            if cursor == 0:
                return items

    async def compact(self) -> None:
        """``BGREWRITEAOF`` (a forked child rewrites), awaited until it is done."""
        await self.client.bgrewriteaof()
        while True:
            info = await self.client.info("persistence")
            if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
                return
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        try:
            if self.client is not None:
                await self.client.aclose()
        finally:
            self.server.stop()

    def pid(self) -> int | None:
        return None if self.server.process is None else self.server.process.pid


class RedisSync(SyncAdapter):
    """A private redis-server, driven with the blocking ``redis.Redis`` (one pool)."""

    def __init__(self, directory: str, appendfsync: str) -> None:
        super().__init__(directory)
        self.server = RedisServer(directory, appendfsync)
        self.client: Any = None

    def open(self) -> None:
        try:
            self.server.start()
        except BaseException:
            self.server.stop()
            raise
        self.client = load("redis").Redis(host="127.0.0.1", port=self.server.port,
                                           max_connections=256)

    def get(self, key: str) -> object:
        value = self.client.get(key)
        return None if value is None else float(value)

    def setter(self) -> Callable[[str, float], object]:
        return self.client.set  # type: ignore[no-any-return]

    def getter(self) -> Callable[[str], object]:
        return self.get

    def incrementer(self) -> Callable[[str], object]:
        return self.client.incr  # type: ignore[no-any-return]

    def get_all(self) -> dict[str, object]:
        items: dict[str, object] = {}
        cursor = 0
        while True:
            cursor, names = self.client.scan(cursor, count=1000)
            if names:
                values = self.client.mget(names)
                items.update((name.decode(), float(value))
                             for name, value in zip(names, values, strict=True))
            if cursor == 0:
                return items

    def compact(self) -> None:
        self.client.bgrewriteaof()
        wait_for_rewrite(self.client)

    def close(self) -> None:
        try:
            if self.client is not None:
                self.client.close()
        finally:
            self.server.stop()

    def pid(self) -> int | None:
        return None if self.server.process is None else self.server.process.pid


def build_redis(directory: str, passes: Sequence[dict[str, object]], compacted: bool) -> None:
    """Pipelined SETs (the AOF logs each one as a SET), then BGREWRITEAOF if compacted."""
    store = RedisSync(directory, "everysec")
    store.open()
    try:
        for items in passes:
            pipe = store.client.pipeline(transaction=False)
            for count, (key, value) in enumerate(items.items(), 1):
                pipe.set(key, value)
                if count % 5000 == 0:
                    pipe.execute()
            pipe.execute()
        if compacted:
            store.compact()
    finally:
        store.close()


# -- the catalogue of systems -----------------------------------------------


Builder = Callable[[str, Sequence[dict[str, object]], bool], None]


@dataclass(frozen=True)
class System:
    """One row of the report: an adapter, how it is configured, what it survives."""

    key: str  # used on the command line (--only)
    name: str  # shown in the report
    family: str  # systems of one family share a file format and built stores
    api: str  # "async" or "sync"
    make: Callable[[str], Adapter]
    build: Builder
    durability: Durability
    notes: str = ""  # how incr etc. are done, shown below the tables
    requires: tuple[str, ...] = ()  # modules that must import
    needs_redis_server: bool = False
    has_compaction: bool = False  # W8 runs on it
    # A compaction may start by itself during a run of sets (aiokv): W9 then
    # compacts, untimed, before each run, so that none falls inside a timed part.
    compacts_by_itself: bool = False
    open_like: str = ""  # W5/W7 figures are those of this system (same file, same open)
    uncompacted: bool = True  # W5 (b) applies

    def unavailable(self) -> str:
        """Why this system cannot run here ("" when it can)."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return f"cannot import {module}"
        if self.needs_redis_server and shutil.which("redis-server") is None:
            return "no redis-server on PATH"
        return ""


AIOKV_LEVELS = {
    "flush": Durability(
        'durability="flush" (default): each record copied into a mapped window of the log '
        "(ext4: no system call) or write(2), fsync in the background within 1 s",
        "yes: the record is in the page cache before set() returns",
        "no: may lose the last ~1 s of writes (a suffix)", "yes"),
    "fsync": Durability(
        'durability="fsync": set() returns after its record is fsynced (group commit)',
        "yes", "yes: fsynced before set() returns", "yes"),
    "buffered": Durability(
        'durability="buffered": records held in memory up to 0.1 s, then written',
        "no: may lose the last ~0.1 s of writes", "no: may lose the last ~1.1 s of writes",
        "yes"),
}

REDIS_LEVELS = {
    "everysec": Durability(
        "redis-server, AOF on, appendfsync everysec, no RDB snapshots, no auto rewrite",
        "yes (kill -9 of the server): the AOF buffer is written before replies go out",
        "no: may lose about the last 1 s of writes (Redis persistence docs)", "yes"),
    "always": Durability(
        "redis-server, AOF on, appendfsync always, no RDB snapshots, no auto rewrite",
        "yes (kill -9 of the server)",
        "yes: the AOF is fsynced before the reply (Redis persistence docs)", "yes"),
}

SEED_DURABILITY = Durability(
    "seed JSON design: whole dict json.dumps'ed to a temp file, os.replace'd, per set "
    "(to_thread, one asyncio.Lock, no fsync)",
    "yes: the rename is done before set() returns",
    "no: nothing is fsynced; recent writes (or, on some file systems, the file's "
    "content) may be lost", "yes")

PICKLEDB_DURABILITY = Durability(
    "pickledb 1.x PickleDB(path), save() after every set: orjson of the whole dict to "
    "path.tmp, os.replace'd (no fsync)",
    "yes: save() has replaced the file before the set returns",
    "no: nothing is fsynced", "yes")

DISKCACHE_DURABILITY = Durability(
    "diskcache.Cache(dir) defaults: SQLite WAL, synchronous=NORMAL, a transaction per set",
    "yes: each set is a committed transaction",
    "no: the WAL is fsynced only at checkpoints; recent commits may roll back (SQLite docs)",
    "no")

SQLITEDICT_DURABILITY = Durability(
    "SqliteDict(file, autocommit=True): each set waits for its commit; sqlitedict sets "
    "journal_mode=DELETE, synchronous=OFF",
    "yes: a set returns after its commit",
    "no: synchronous=OFF never fsyncs; SQLite docs: may lose or corrupt the database",
    "no")

SEMIDBM_DURABILITY = Durability(
    "semidbm.open(path, 'c'): one appended write(2) per set, no fsync until sync()/close()",
    "yes: the record is written before the set returns",
    "no: no fsync; a torn last record can make the next open fail", "keys only (an index)")

AIOSQLITE_DURABILITY = Durability(
    "aiosqlite, table kv(key TEXT PRIMARY KEY, value), INSERT OR REPLACE + commit per set, "
    "journal_mode=WAL, synchronous=NORMAL",
    "yes: the commit is in the WAL (written) before the set returns",
    "no: WAL + NORMAL fsyncs only at checkpoints; recent commits may roll back (SQLite docs)",
    "no")


def shelve_durability() -> Durability:
    """Depends on the dbm backend shelve picks; only dbm.dumb was read closely."""
    backend = shelve_backend()
    if backend == "dbm.dumb":
        return Durability(
            "shelve.open(path) (flag 'c', no writeback) on dbm.dumb (the only dbm here)",
            "partly: new keys and overwrites that fit their slot are written at once; an "
            "overwrite that outgrows its slot is only in the in-memory index until "
            "sync()/close()",
            "no: nothing is fsynced", "keys only (the .dir index)")
    return Durability(f"shelve.open(path) on {backend}", "not checked", "not checked",
                      "no")


AIOKV_MODULES = ("aiokv", "aiokv._format")


def catalogue() -> list[System]:
    """Every system, in report order (aiokv async flush first: the reference row)."""
    systems: list[System] = []
    for level, durability in AIOKV_LEVELS.items():
        systems.append(System(
            f"aiokv-async-{level}", f"aiokv async {level}", "aiokv", "async",
            lambda d, level=level: AiokvAsync(d, level),  # type: ignore[misc]
            build_aiokv, durability, requires=AIOKV_MODULES, has_compaction=True,
            compacts_by_itself=True,
            open_like="" if level == "flush" else "aiokv-async-flush"))
    for level, durability in AIOKV_LEVELS.items():
        systems.append(System(
            f"aiokv-sync-{level}", f"aiokv sync {level}", "aiokv", "sync",
            lambda d, level=level: AiokvSync(d, level),  # type: ignore[misc]
            build_aiokv, durability, requires=AIOKV_MODULES, compacts_by_itself=True,
            open_like="" if level == "flush" else "aiokv-sync-flush"))
    systems += [
        System("seed-json", "seed JSON design", "seed", "async", SeedJsonStore, build_seed,
               SEED_DURABILITY, "incr: get + set (not atomic)", has_compaction=True,
               uncompacted=False),
        System("diskcache", "diskcache", "diskcache", "sync", DiskcacheAdapter,
               build_diskcache, DISKCACHE_DURABILITY, "incr: cache.incr (atomic)",
               requires=("diskcache",)),
        System("sqlitedict", "sqlitedict", "sqlitedict", "sync", SqlitedictAdapter,
               build_sqlitedict, SQLITEDICT_DURABILITY, "incr: get + set (not atomic)",
               requires=("sqlitedict",)),
        System("shelve", "shelve", "shelve", "sync", ShelveAdapter, build_shelve,
               Durability("shelve.open(path)", "", "", ""), "incr: get + set (not atomic)"),
        System("semidbm", "semidbm", "semidbm", "sync", SemidbmAdapter, build_semidbm,
               SEMIDBM_DURABILITY, "incr: get + set of b'%d' (not atomic)",
               requires=("semidbm",), has_compaction=True),
        System("pickledb", "pickledb", "pickledb", "async", PickledbAdapter, build_pickledb,
               PICKLEDB_DURABILITY, "incr: get + set + save (not atomic)",
               requires=("pickledb",), uncompacted=False),
        System("aiosqlite", "aiosqlite", "aiosqlite", "async", AiosqliteAdapter,
               build_aiosqlite, AIOSQLITE_DURABILITY,
               "incr: one UPSERT value = value + 1 and a commit (atomic)",
               requires=("aiosqlite",), has_compaction=True),
    ]
    for level, durability in REDIS_LEVELS.items():
        for api, adapter in (("async", RedisAsync), ("sync", RedisSync)):
            name = f"redis {level}" if api == "async" else f"redis {level} (sync client)"
            systems.append(System(
                f"redis-{level}" + ("" if api == "async" else "-sync"), name, "redis", api,
                lambda d, level=level, adapter=adapter: adapter(d, level),  # type: ignore[misc]
                build_redis, durability, "incr: INCR (atomic)",
                requires=("redis", "redis.asyncio"),
                needs_redis_server=True,
                has_compaction=api == "async" and level == "everysec",
                open_like="" if (api, level) == ("async", "everysec") else "redis-everysec"))
    return systems


def find_system(key: str) -> System:
    for system in catalogue():
        if system.key == key:
            return system
    raise KeyError(f"no system {key!r}")


def describe(system: System) -> Durability:
    """The system's durability, looked up on this machine where it depends on it."""
    return shelve_durability() if system.family == "shelve" else system.durability


# -- timed loops (budgeted) -------------------------------------------------


@dataclass
class Timed:
    """Operations done in a timed part, and how long they took."""

    ops: int
    seconds: float
    complete: bool  # False when the budget stopped the loop early

    def figure(self) -> dict[str, object]:
        return {"value": self.ops / self.seconds, "ops": self.ops, "complete": self.complete}


MAX_CHUNK = 512


class Budgeted:
    """The keys in chunks of 1, 2, 4 .. 512, until all are done or ``budget`` is spent.

    The clock is read after each chunk, so a slow system stops soon after its
    budget and a fast one pays almost nothing; ``timed()`` is the result.
    """

    def __init__(self, keys: Sequence[str], budget: float) -> None:
        self.keys = keys
        self.start = time.perf_counter()
        self.deadline = self.start + budget
        self.done = 0

    def __iter__(self) -> Iterator[Sequence[str]]:
        keys, chunk = self.keys, 1
        while self.done < len(keys):
            yield keys[self.done:self.done + chunk]
            self.done = min(len(keys), self.done + chunk)
            if time.perf_counter() > self.deadline:
                return
            chunk = min(chunk * 2, MAX_CHUNK)

    def timed(self) -> Timed:
        return Timed(self.done, time.perf_counter() - self.start,
                     self.done == len(self.keys))


async def timed_async_sets(set_: Callable[[str, float], Awaitable[object]],
                           keys: Sequence[str], budget: float) -> Timed:
    """One task awaiting ``set_(key, time.time())`` per key, until done or over budget."""
    now = time.time
    chunks = Budgeted(keys, budget)
    for chunk in chunks:
        for key in chunk:
            await set_(key, now())
    return chunks.timed()


async def timed_async_calls(call: Callable[[str], Awaitable[object]], keys: Sequence[str],
                            budget: float) -> Timed:
    """One task awaiting ``call(key)`` per key (get, incr), until done or over budget."""
    chunks = Budgeted(keys, budget)
    for chunk in chunks:
        for key in chunk:
            await call(key)
    return chunks.timed()


def timed_sync_sets(set_: Callable[[str, float], object], keys: Sequence[str],
                    budget: float) -> Timed:
    """``set_(key, time.time())`` per key in a plain loop, until done or over budget."""
    now = time.time
    chunks = Budgeted(keys, budget)
    for chunk in chunks:
        for key in chunk:
            set_(key, now())
    return chunks.timed()


def timed_sync_calls(call: Callable[[str], object], keys: Sequence[str],
                     budget: float) -> Timed:
    """``call(key)`` per key in a plain loop (get, incr), until done or over budget."""
    chunks = Budgeted(keys, budget)
    for chunk in chunks:
        for key in chunk:
            call(key)
    return chunks.timed()


async def timed_concurrent_sets(set_: Callable[[str, float], Awaitable[object]],
                                keys: Sequence[str], tasks: int, budget: float) -> Timed:
    """``tasks`` tasks share the keys (task t takes t, t + tasks, ...), each awaiting sets.

    Every task stops at the budget's deadline; the rate is over the sets done.
    """
    counts = [0] * tasks
    deadline = time.perf_counter() + budget

    async def writer(task: int) -> None:
        for key in keys[task::tasks]:
            await set_(key, time.time())
            counts[task] += 1
            if time.perf_counter() > deadline:
                return

    start = time.perf_counter()
    await asyncio.gather(*(writer(task) for task in range(tasks)))
    seconds = time.perf_counter() - start
    return Timed(sum(counts), seconds, sum(counts) == len(keys))


def through_thread(set_: Callable[[str, float], object]
                   ) -> Callable[[str, float], Awaitable[object]]:
    """How an async program calls a blocking set: ``await asyncio.to_thread(set_, ...)``."""

    async def set_in_thread(key: str, value: float) -> object:
        return await asyncio.to_thread(set_, key, value)

    return set_in_thread


# -- workloads (each runs in a fresh child) ---------------------------------


@dataclass(frozen=True)
class Params:
    """What the driver asks one child to do (decoded from the --child JSON)."""

    system: str
    workload: str
    work: str  # a directory of the child's own
    budget: float = 2.0
    store: str = ""  # a built store to copy (W5, W7, W8, W9)
    keys: int = 0  # keys in that store
    ops: int = 0
    tasks: int = 100
    passes: int = 1  # build
    compacted: bool = True  # build
    counters: bool = False  # build: values are int 0


def copy_store(params: Params) -> str:
    """A private copy of the built store (untimed), so a measurement never changes it."""
    target = os.path.join(params.work, "store")
    shutil.copytree(params.store, target)
    return target


def pass_items(keys: int, passes: int, counters: bool) -> list[dict[str, object]]:
    """The items each build pass sets: every key, with a new float per pass (or 0)."""
    base = time.time()
    names = [f"user:{i}" for i in range(keys)]
    if counters:
        return [dict.fromkeys(names, 0) for _ in range(passes)]
    return [{name: base + p + i * 1e-6 for i, name in enumerate(names)} for p in range(passes)]


def prefilled(system: System, params: Params, counters: bool = False) -> str:
    """A store directory holding the 5,000 keys, built untimed by the family's builder."""
    directory = os.path.join(params.work, "store")
    os.makedirs(directory, exist_ok=True)
    system.build(directory, pass_items(FILL_KEYS, 1, counters), False)
    return directory


def warmup_budget(params: Params) -> float:
    return params.budget / 4


async def async_rate_workload(store: AsyncAdapter, params: Params) -> dict[str, object]:
    """W1-W4 on an open async store; W1 also reports the bytes on disk after close (W6)."""
    workload = params.workload
    warm = key_names(WARMUP_OPS, FILL_KEYS)
    keys = key_names(params.ops, FILL_KEYS)
    figures: dict[str, object] = {}
    if workload in ("w1", "w2"):
        set_ = store.setter()
        await timed_async_sets(set_, warm, warmup_budget(params))
        if workload == "w1":
            figures["w1"] = (await timed_async_sets(set_, keys, params.budget)).figure()
        else:
            timed = await timed_concurrent_sets(set_, keys, params.tasks, params.budget)
            figures["w2"] = timed.figure()
    elif workload == "w3":
        get = store.getter()
        await timed_async_calls(get, warm, warmup_budget(params))
        figures["w3"] = (await timed_async_calls(get, keys, params.budget)).figure()
        check_float(await get(keys[-1]))
    elif workload == "w4":
        incr = store.incrementer()
        await timed_async_calls(incr, warm, warmup_budget(params))
        figures["w4"] = (await timed_async_calls(incr, keys, params.budget)).figure()
    await store.close()
    if workload == "w1":
        figures["w6"] = {"value": directory_bytes(store.directory)}
    return figures


def sync_rate_workload(store: SyncAdapter, params: Params) -> dict[str, object]:
    """W1-W4 on an open blocking store (W2: 100 tasks calling it through to_thread)."""
    workload = params.workload
    warm = key_names(WARMUP_OPS, FILL_KEYS)
    keys = key_names(params.ops, FILL_KEYS)
    figures: dict[str, object] = {}
    if workload == "w1":
        set_ = store.setter()
        timed_sync_sets(set_, warm, warmup_budget(params))
        figures["w1"] = timed_sync_sets(set_, keys, params.budget).figure()
    elif workload == "w2":
        set_in_thread = through_thread(store.setter())

        async def run() -> Timed:
            await timed_concurrent_sets(set_in_thread, warm, params.tasks,
                                        warmup_budget(params))
            return await timed_concurrent_sets(set_in_thread, keys, params.tasks,
                                               params.budget)

        figures["w2"] = asyncio.run(run()).figure()
    elif workload == "w3":
        get = store.getter()
        timed_sync_calls(get, warm, warmup_budget(params))
        figures["w3"] = timed_sync_calls(get, keys, params.budget).figure()
        check_float(get(keys[-1]))
    elif workload == "w4":
        incr = store.incrementer()
        timed_sync_calls(incr, warm, warmup_budget(params))
        figures["w4"] = timed_sync_calls(incr, keys, params.budget).figure()
    store.close()
    if workload == "w1":
        figures["w6"] = {"value": directory_bytes(store.directory)}
    return figures


def check_float(value: object) -> None:
    """A get that returned the wrong thing would make its rate meaningless."""
    if not isinstance(value, float):
        raise RuntimeError(f"get returned {value!r}, expected a float")


def rate_workload(system: System, params: Params) -> dict[str, object]:
    """W1-W4: a 5,000-key store (counters for W4), then the timed part."""
    directory = prefilled(system, params, counters=params.workload == "w4")
    store = system.make(directory)
    if isinstance(store, AsyncAdapter):
        async def run() -> dict[str, object]:
            await store.open()
            try:
                return await async_rate_workload(store, params)
            except BaseException:
                await store.close()
                raise

        return asyncio.run(run())
    store.open()
    try:
        return sync_rate_workload(store, params)
    except BaseException:
        store.close()
        raise


def open_workload(system: System, params: Params) -> dict[str, object]:
    """W5: time open until the first get is served ("open"), or open + every item ("all")."""
    directory = copy_store(params)
    store = system.make(directory)
    load_all = params.workload == "w5-all"
    if isinstance(store, AsyncAdapter):
        async def run() -> tuple[float, int]:
            start = time.perf_counter()
            await store.open()
            try:
                if load_all:
                    count = len(await store.get_all())
                else:
                    await store.getter()("user:0")
                    count = params.keys
                return time.perf_counter() - start, count
            finally:
                await store.close()

        seconds, count = asyncio.run(run())
    else:
        start = time.perf_counter()
        store.open()
        try:
            if load_all:
                count = len(store.get_all())
            else:
                store.getter()("user:0")
                count = params.keys
            seconds = time.perf_counter() - start
        finally:
            store.close()
    if count != params.keys:
        raise RuntimeError(f"read {count} items, expected {params.keys}")
    return {params.workload: {"value": seconds}}


def memory_workload(system: System, params: Params) -> dict[str, object]:
    """W7: resident memory added by opening the store and serving a first get, per key.

    For Redis the memory is the server's: its RSS on an empty directory is
    the "before", and its RSS with the store loaded the "after".
    """
    directory = copy_store(params)
    empty = os.path.join(params.work, "empty")
    os.makedirs(empty)
    store = system.make(directory)
    if isinstance(store, AsyncAdapter):
        async def run() -> tuple[int, int]:
            before = await async_baseline_rss(system, empty)
            await store.open()
            try:
                await store.getter()("user:0")
                return before, rss_bytes(store.pid() or "self")
            finally:
                await store.close()

        before, after = asyncio.run(run())
    else:
        before = sync_baseline_rss(system, empty)
        store.open()
        try:
            store.getter()("user:0")
            after = rss_bytes(store.pid() or "self")
        finally:
            store.close()
    return {"w7": {"value": (after - before) / params.keys}}


async def async_baseline_rss(system: System, empty: str) -> int:
    """RSS before the open: this process's, or an empty server's for Redis."""
    probe = system.make(empty)
    if not isinstance(probe, RedisAsync):
        return rss_bytes()
    await probe.open()
    try:
        return rss_bytes(probe.pid() or "self")
    finally:
        await probe.close()


def sync_baseline_rss(system: System, empty: str) -> int:
    probe = system.make(empty)
    if not isinstance(probe, RedisSync):
        return rss_bytes()
    probe.open()
    try:
        return rss_bytes(probe.pid() or "self")
    finally:
        probe.close()


def dict_memory_workload(params: Params) -> dict[str, object]:
    """W7 baseline: a plain dict of fresh key strings and float values, per key."""
    before = rss_bytes()
    base = time.time()
    data = {f"user:{i}": base + i for i in range(params.keys)}
    after = rss_bytes()
    if len(data) != params.keys:
        raise RuntimeError("dict size mismatch")
    return {"w7": {"value": (after - before) / params.keys}}


def group_commit_floor_workload(params: Params) -> dict[str, object]:
    """W2 baseline: a group commit with no store, one batch at a time.

    A "set" appends a 32-byte record to a list and awaits a future; one
    thread writes whatever is pending to a file, fdatasyncs it, and resolves
    those futures with one ``call_soon_threadsafe``. What is left is
    asyncio's cost of waking each waiting task, and the fsyncs: the same 100
    tasks and the same keys as W2. Each batch holds every waiting writer, so
    the disk and the event loop take turns; aiokv cuts a batch in two when
    that pays (docs/guarantees.md), which this baseline does not.
    """
    path = os.path.join(params.work, "floor.log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    record = b"x" * 32

    async def run() -> Timed:
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future[None]] = []
        lock = threading.Lock()
        wake = threading.Event()
        stop = False

        def resolve(futures: list[asyncio.Future[None]]) -> None:
            for future in futures:
                if not future.done():
                    future.set_result(None)

        def syncer() -> None:
            while not stop:
                wake.wait()
                with lock:
                    batch = pending[:]
                    pending.clear()
                    wake.clear()
                if batch:
                    os.write(fd, record * len(batch))
                    os.fdatasync(fd)
                    loop.call_soon_threadsafe(resolve, batch)

        thread = threading.Thread(target=syncer, daemon=True)
        thread.start()

        async def set_(key: str, value: float) -> None:
            future = loop.create_future()
            with lock:
                pending.append(future)
                wake.set()
            await future

        try:
            await timed_concurrent_sets(set_, key_names(WARMUP_OPS, FILL_KEYS), params.tasks,
                                        warmup_budget(params))
            return await timed_concurrent_sets(set_, key_names(params.ops, FILL_KEYS),
                                               params.tasks, params.budget)
        finally:
            stop = True
            wake.set()
            thread.join()

    try:
        timed = asyncio.run(run())
    finally:
        os.close(fd)
    return {"w2": timed.figure()}


def async_view(store: Adapter) -> AsyncAdapter:
    """An async face on a blocking store, calling it directly (it blocks the loop)."""
    if isinstance(store, AsyncAdapter):
        return store
    return BlockingInLoop(store)


class BlockingInLoop(AsyncAdapter):
    """A blocking store called straight from coroutines (W8 of stop-the-world peers)."""

    def __init__(self, store: SyncAdapter) -> None:
        super().__init__(store.directory)
        self.store = store

    async def open(self) -> None:
        self.store.open()

    def setter(self) -> Callable[[str, float], Awaitable[object]]:
        set_ = self.store.setter()

        async def set_now(key: str, value: float) -> object:
            return set_(key, value)

        return set_now

    def getter(self) -> Callable[[str], Awaitable[object]]:
        raise NotImplementedError

    def incrementer(self) -> Callable[[str], Awaitable[object]]:
        raise NotImplementedError

    async def get_all(self) -> dict[str, object]:
        return self.store.get_all()

    async def compact(self) -> None:
        self.store.compact()

    async def close(self) -> None:
        self.store.close()


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


async def compaction_under_load(store: AsyncAdapter, keys: Sequence[str],
                                warmup: float) -> dict[str, float]:
    """W8: compact while one task sets random keys and a ticker measures loop gaps.

    The writer times each awaited set and yields (``asyncio.sleep(0)``) after
    it; the ticker loops on ``asyncio.sleep(0)`` and keeps the widest gap
    between its wake-ups. Only sets made while the compaction ran count.
    """
    set_ = store.setter()
    warm_until = time.perf_counter() + warmup  # the seed design rewrites it all per set
    for key in keys[:WARMUP_OPS]:
        await set_(key, time.time())
        if time.perf_counter() > warm_until:
            break
    running = True
    worst_gap = 0.0

    async def ticker() -> None:
        nonlocal worst_gap
        last = time.perf_counter()
        while running:
            await asyncio.sleep(0)
            now = time.perf_counter()
            worst_gap = max(worst_gap, now - last)
            last = now

    async def compaction() -> float:
        start = time.perf_counter()
        await store.compact()
        return time.perf_counter() - start

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    compacting = asyncio.create_task(compaction())
    latencies: list[float] = []
    index = 0
    while not compacting.done():
        key = keys[index % len(keys)]
        index += 1
        start = time.perf_counter()
        await set_(key, time.time())
        latencies.append(time.perf_counter() - start)
        await asyncio.sleep(0)
    running = False
    await ticking
    duration = compacting.result()
    latencies.sort()
    if not latencies:
        latencies = [0.0]
    return {"value": percentile(latencies, 0.99), "p50": percentile(latencies, 0.5),
            "p99": percentile(latencies, 0.99), "max": latencies[-1], "gap": worst_gap,
            "duration": duration, "sets": float(index)}


def compaction_workload(system: System, params: Params) -> dict[str, object]:
    """W8 on a copy of the built store."""
    store = async_view(system.make(copy_store(params)))
    keys = random_key_names(200_000, params.keys)

    async def run() -> dict[str, float]:
        await store.open()
        try:
            return await compaction_under_load(store, keys, warmup_budget(params))
        finally:
            await store.close()

    return {"w8": asyncio.run(run())}


class GrowthKeys:
    """The keys W9 sets and gets in a store of ``params.keys`` keys (the same
    draws for every system and the plain dict)."""

    def __init__(self, params: Params) -> None:
        self.warm = random_key_names(WARMUP_OPS, params.keys, seed=3)
        self.spread = random_key_names(params.ops, params.keys)
        self.hot = random_key_names(params.ops, min(FILL_KEYS, params.keys), seed=5)
        self.read = random_key_names(params.ops, params.keys, seed=11)

    def parts(self, params: Params) -> list[tuple[str, list[str], float, str]]:
        """W9's parts in order: (operation, keys, budget, figure name); the
        name is "" for a warm-up, which reports nothing. "settle" is the
        untimed compaction of a store that compacts by itself: without it,
        one started by the sets of a 10,000-key store fell inside the hot
        keys' part (20 ms in a part of ~30 ms) and never at a million keys."""
        warm = warmup_budget(params)
        return [("settle", [], 0.0, ""),
                ("set", self.warm, warm, ""), ("set", self.spread, params.budget, "w9"),
                ("settle", [], 0.0, ""),
                ("set", self.hot[:WARMUP_OPS], warm, ""), ("set", self.hot, params.budget, "w9h"),
                ("get", self.warm, warm, ""), ("get", self.read, params.budget, "w9g")]

    async def timed_async(self, set_: Callable[[str, float], Awaitable[object]],
                          get: Callable[[str], Awaitable[object]], params: Params,
                          settle: Callable[[], Awaitable[object]] | None = None,
                          ) -> dict[str, object]:
        """The parts with every call awaited; the figures by name."""
        figures: dict[str, object] = {}
        for operation, keys, budget, name in self.parts(params):
            if operation == "settle":
                if settle is not None:
                    await settle()
                continue
            timed = (await timed_async_sets(set_, keys, budget) if operation == "set"
                     else await timed_async_calls(get, keys, budget))
            if name:
                figures[name] = timed.figure()
        return figures

    def timed_sync(self, set_: Callable[[str, float], object], get: Callable[[str], object],
                   params: Params, settle: Callable[[], object] | None = None,
                   ) -> dict[str, object]:
        """The parts with blocking calls; the figures by name."""
        figures: dict[str, object] = {}
        for operation, keys, budget, name in self.parts(params):
            if operation == "settle":
                if settle is not None:
                    settle()
                continue
            timed = (timed_sync_sets(set_, keys, budget) if operation == "set"
                     else timed_sync_calls(get, keys, budget))
            if name:
                figures[name] = timed.figure()
        return figures


def growth_workload(system: System, params: Params) -> dict[str, object]:
    """W9 on a copy of a store of ``keys`` keys: sequential sets of existing
    keys, then sequential gets.

    "w9": sets of keys drawn from the whole store; "w9h": from its first
    5,000 keys (the W1 working set of rate-limit timestamps, in a bigger
    store); "w9g": gets of keys drawn from the whole store, a draw of their
    own (the keys just set would still be in the CPU's caches).
    """
    store = system.make(copy_store(params))
    plan = GrowthKeys(params)
    if isinstance(store, AsyncAdapter):
        async def run() -> dict[str, object]:
            await store.open()
            try:
                return await plan.timed_async(
                    store.setter(), store.getter(), params,
                    store.compact if system.compacts_by_itself else None)
            finally:
                await store.close()

        return asyncio.run(run())
    store.open()
    try:
        return plan.timed_sync(store.setter(), store.getter(), params,
                               store.compact if system.compacts_by_itself else None)
    finally:
        store.close()


def dict_growth_workload(params: Params) -> dict[str, object]:
    """W9 baseline: what ``growth_workload`` does, on a plain dict of ``keys`` keys."""
    base = time.time()
    data = {f"user:{i}": base + i for i in range(params.keys)}
    figures = GrowthKeys(params).timed_sync(data.__setitem__, data.__getitem__, params)
    if len(data) != params.keys:
        raise RuntimeError("the sets added keys: they were meant to overwrite")
    return figures


def build_workload(system: System, params: Params) -> dict[str, object]:
    """Build a store of ``keys`` keys in ``work`` (untimed by the driver's figures)."""
    os.makedirs(params.work, exist_ok=True)
    start = time.perf_counter()
    system.build(params.work, pass_items(params.keys, params.passes, params.counters),
                 params.compacted)
    return {"build": {"value": time.perf_counter() - start,
                      "bytes": directory_bytes(params.work)}}


WORKLOADS: dict[str, Callable[[System, Params], dict[str, object]]] = {
    "w1": rate_workload, "w2": rate_workload, "w3": rate_workload, "w4": rate_workload,
    "w5-open": open_workload, "w5-all": open_workload, "w7": memory_workload,
    "w8": compaction_workload, "w9": growth_workload, "build": build_workload,
}


def run_child(params: Params) -> dict[str, object]:
    """Dispatch one workload; returns the figures the child reports."""
    if params.workload == "w7-dict":
        return dict_memory_workload(params)
    if params.workload == "w9-dict":
        return dict_growth_workload(params)
    if params.workload == "w2-floor":
        return group_commit_floor_workload(params)
    if params.workload not in WORKLOADS:
        raise ValueError(f"unknown workload {params.workload!r}")
    system = find_system(params.system)
    for module in system.requires:  # imported now, so that no timed part includes it
        load(module)
    return WORKLOADS[params.workload](system, params)


def child_main(argv: Sequence[str]) -> int:
    """``--child PARAMS_JSON``: one JSON object on stdout, or a one-line error first on stderr."""
    if len(argv) != 2 or argv[0] != "--child":
        print("usage: systems.py --child PARAMS_JSON (run by compare.py)", file=sys.stderr)
        return 2
    try:
        params = Params(**json.loads(argv[1]))
        result = run_child(params)
    except Exception as exc:
        first = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: {first}", file=sys.stderr)
        traceback.print_exc()
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
