"""``from_url``: which store a string names, and what it refuses, without I/O.

The parsing (``aiokv._target``) is pure; these tests run it on strings, and
check that creating a store from a URL does nothing until its first call.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aiokv import KV, AioKV
from aiokv._redis_store import RedisAioKV, RedisKV
from aiokv._target import LocalTarget, ServerTarget, parse_target


@pytest.mark.parametrize(("given", "path"), [
    ("state.kv", "state.kv"),
    ("dir/state.kv", "dir/state.kv"),
    ("/abs/state.kv", "/abs/state.kv"),
    ("file:///abs/state%20one.kv", "/abs/state one.kv"),
    ("file://localhost/abs/x.kv", "/abs/x.kv"),
    ("./odd://name", "./odd://name"),
])
def test_a_path_or_a_file_url_names_a_local_store(given: str, path: str) -> None:
    assert parse_target(given) == LocalTarget(path)


def test_from_url_of_a_path_gives_the_local_store_with_its_options(tmp_path: Path) -> None:
    store = AioKV.from_url(tmp_path / "a.kv", durability="fsync")
    assert isinstance(store, AioKV) and store.durability == "fsync"
    blocking = KV.from_url(f"file://{tmp_path}/b.kv")
    assert isinstance(blocking, KV) and blocking.path == str(tmp_path / "b.kv")
    assert list(tmp_path.iterdir()) == []  # nothing opened yet


@pytest.mark.parametrize(("given", "kind", "url", "prefix"), [
    ("redis://localhost:6379/2?prefix=bot:", "server", "redis://localhost:6379/2", "bot:"),
    ("redis://h/0?socket_timeout=5&prefix=a&ssl_cert_reqs=none", "server",
     "redis://h/0?socket_timeout=5&ssl_cert_reqs=none", "a"),
    ("rediss://user:secret@h:6380/0?prefix=a", "server", "rediss://user:secret@h:6380/0", "a"),
    ("unix:///run/redis.sock?db=3&prefix=x", "server", "unix:///run/redis.sock?db=3", "x"),
    ("redis://h/?whole_database=1", "server", "redis://h/", ""),
    ("redis+cluster://h1:7000,h2:7001/?prefix=app", "cluster", "redis://h1:7000", "app"),
    ("rediss+cluster://u:p@h1:7000/?prefix=app", "cluster", "rediss://u:p@h1:7000", "app"),
    ("redis+sentinel://s1:26379,s2/mymaster/1?prefix=p", "sentinel", "redis://s1:26379/1", "p"),
])
def test_a_server_url_names_a_server_store_and_aiokvs_own_parameters_are_taken_out(
        given: str, kind: str, url: str, prefix: str) -> None:
    target = parse_target(given)
    assert isinstance(target, ServerTarget)
    assert (target.kind, target.url, target.prefix) == (kind, url, prefix)
    assert "prefix=" not in target.url and "whole_database" not in target.url


def test_the_password_never_shows_in_the_stores_path() -> None:
    for given in ("redis://user:secret@h/0?prefix=a", "redis://:secret@h/0?prefix=a",
                  "redis://h/0?prefix=a&password=secret",
                  "redis+cluster://u:secret@h1:7000,h2:7001/?prefix=a"):
        target = parse_target(given)
        assert isinstance(target, ServerTarget)
        assert "secret" not in target.display
        assert "secret" not in repr(RedisKV(target))
        assert "secret" not in RedisAioKV(target).path


def test_cluster_and_sentinel_urls_list_their_nodes() -> None:
    cluster = parse_target("redis+cluster://h1:7000,[::1]:7001,h3/?prefix=a")
    assert isinstance(cluster, ServerTarget)
    assert cluster.nodes == (("h1", 7000), ("::1", 7001), ("h3", 6379))
    sentinel = parse_target("redis+sentinel://s1,s2:5000/svc?prefix=a")
    assert isinstance(sentinel, ServerTarget)
    assert (sentinel.nodes, sentinel.service, sentinel.db) == (
        (("s1", 26379), ("s2", 5000)), "svc", 0)


@pytest.mark.parametrize(("given", "says"), [
    ("redis://localhost:6379/0", "names no namespace: add ?prefix="),
    ("redis://h/?prefix=a&whole_database=1", "exclude each other"),
    ("redis://h/?prefix=a&whole_database=maybe", "takes 1 or 0"),
    ("redis://h/?prefix=a&prefix=b", "given twice"),
    ("redis://h/?prefix=a&spread=1", "spread= is for a cluster"),
    ("redis+sentinel://s1/?prefix=a", "ends in /service"),
    ("redis+cluster://h1:7000/5?prefix=a", "has only database 0"),
    ("redis+cluster://h1:99999/?prefix=a", "bad port"),
    ("memcached://h/?prefix=a", "unknown scheme"),
    ("file://relative/path", "needs an absolute path"),
])
def test_a_url_that_names_nothing_usable_is_refused_saying_why(given: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_target(given)
    with pytest.raises(ValueError, match=re.escape(says)):
        AioKV.from_url(given)


@pytest.mark.parametrize("shell", [AioKV, KV])
@pytest.mark.parametrize("url", ["redis://localhost/0?prefix=a", "file:///tmp/x.kv"])
def test_the_constructor_refuses_a_url_and_names_from_url(shell: type, url: str) -> None:
    with pytest.raises(ValueError, match=r"use from_url\(\)"):
        shell(url)


def test_options_of_a_local_store_are_refused_for_a_server() -> None:
    with pytest.raises(ValueError, match="fsync_interval: options of a local store"):
        AioKV.from_url("redis://h/?prefix=a", fsync_interval=2.0)
    with pytest.raises(ValueError, match="durability must be one of"):
        KV.from_url("redis://h/?prefix=a", durability="always")
    with pytest.raises(TypeError, match="unknown option"):
        KV.from_url("redis://h/?prefix=a", colour="blue")


def test_creating_a_server_store_does_no_io() -> None:
    # Port 9 (discard) on loopback: nothing listens; no connection is tried yet.
    AioKV.from_url("redis://127.0.0.1:9/0?prefix=a")
    KV.from_url("redis://127.0.0.1:9/0?prefix=a")


def test_without_redis_py_a_clear_error_names_the_extra() -> None:
    program = textwrap.dedent("""
        import sys
        sys.modules["redis"] = None  # as if the extra were not installed
        from aiokv import KV
        store = KV("local.kv")  # the local store needs nothing more
        try:
            KV.from_url("redis://localhost/0?prefix=a")
        except ImportError as exc:
            print(exc)
    """)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60, check=True)
    assert "pip install 'aiokv[redis]'" in done.stdout


def test_a_program_typed_against_the_protocols_passes_mypy_strict(tmp_path: Path) -> None:
    program = tmp_path / "uses_either.py"
    program.write_text(textwrap.dedent("""
        import asyncio
        import os

        from aiokv import KV, AioKV, AsyncStore, Store


        async def count_visit(kv: AsyncStore, user: str) -> int:
            await kv.set(f"last:{user}")
            if await kv.add(f"first:{user}", ttl=3600):
                await kv.expire(f"last:{user}", 60)
            return await kv.incr(f"visits:{user}")


        def report(kv: Store) -> dict[str, object]:
            with kv:
                return kv.get_all()


        async def main() -> None:
            target = os.environ.get("STATE", "state.kv")
            async with AioKV.from_url(target) as kv:
                await count_visit(kv, "bob")
            print(report(KV.from_url(target)))


        asyncio.run(main())
    """))
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           str(program)], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr

