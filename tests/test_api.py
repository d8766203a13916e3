"""The public API of AioKV, as the original aiokv README documents it."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import stat
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from on_disk import store_size
from scripted_files import ScriptedFiles, store_on

import aiokv
from aiokv import AioKV, Durability
from aiokv._async_kv import YIELD_EVERY
from aiokv._recovery import replay

if TYPE_CHECKING:
    pass


def test_the_public_names_are_exactly_these() -> None:
    assert sorted(aiokv.__all__) == sorted([
        "AioKV", "AioKVError", "AsyncStore", "ClosedError", "CorruptionError", "Durability",
        "ForkedError",
        "KV", "LockedError", "OutcomeUnknownError", "ReadOnlyError", "Recovery", "Stats", "Store",
        "UnavailableError", "WriteBatch",
        "__version__", "aiocache",
    ])
    assert aiokv.__version__.count(".") == 2


def test_aiocache_is_the_same_class_as_aiokv() -> None:
    assert aiokv.aiocache is AioKV


def test_the_exceptions_share_one_base_class() -> None:
    for error in (aiokv.CorruptionError, aiokv.LockedError, aiokv.ClosedError,
                  aiokv.ForkedError, aiokv.UnavailableError, aiokv.OutcomeUnknownError,
                  aiokv.ReadOnlyError):
        assert issubclass(error, aiokv.AioKVError)


async def test_the_seed_usage_block_runs_as_written(store_path: str) -> None:
    kv = AioKV(store_path)
    before = int(time.time())
    await kv.set("last_command", "ping")
    await kv.set("seen_ran_cleanup")  # value omitted -> stores int(time.time())
    cmd = await kv.get("last_command")
    when = await kv.get("seen_ran_cleanup")
    miss = await kv.get("absent", default=0)
    assert cmd == "ping"
    assert isinstance(when, int) and before <= when <= int(time.time())
    assert miss == 0
    assert await kv.delete("last_command") is True
    assert await kv.delete("last_command") is True  # absent is fine too
    everything = await kv.get_all()
    assert everything == {"seen_ran_cleanup": when}
    assert await kv.clear() is True
    assert not os.path.exists(store_path)
    await kv.close()


def test_constructing_a_store_does_no_io(tmp_path: Path) -> None:
    kv = AioKV(tmp_path / "state.kv")
    assert os.listdir(tmp_path) == []
    assert kv.path == str(tmp_path / "state.kv")


async def test_a_path_may_be_a_str_or_a_pathlike(tmp_path: Path) -> None:
    async with AioKV(tmp_path / "a.kv") as kv:
        await kv.set("k", 1)
    async with AioKV(str(tmp_path / "a.kv")) as kv:
        assert await kv.get("k") == 1


def test_bad_options_are_refused_at_construction(store_path: str) -> None:
    with pytest.raises(ValueError, match="durability"):
        AioKV(store_path, durability="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="recovery"):
        AioKV(store_path, recovery="hope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fsync_interval"):
        AioKV(store_path, fsync_interval=0)
    with pytest.raises(TypeError):
        AioKV(12345)  # type: ignore[arg-type]


async def test_open_and_async_with_and_close_twice(store_path: str) -> None:
    kv = AioKV(store_path)
    assert await kv.open() is kv
    await kv.set("k", 1)
    await kv.close()
    await kv.close()  # a no-op
    async with AioKV(store_path) as again:
        assert await again.get("k") == 1


async def test_every_operation_after_close_raises_closed_error_until_open(
        store_path: str) -> None:
    kv = AioKV(store_path)
    await kv.set("k", 1)
    await kv.close()
    for operation in (kv.get("k"), kv.set("k", 2), kv.delete("k"), kv.get_all(), kv.clear(),
                      kv.flush(), kv.compact(), kv.stats()):
        with pytest.raises(aiokv.ClosedError):
            await operation
    async with AioKV(store_path) as again:
        assert await again.get_all() == {"k": 1}


async def test_a_closed_store_opens_again_as_an_app_lifespan_would(store_path: str) -> None:
    kv = AioKV(store_path)
    for round_ in range(3):  # startup ... shutdown, three times, one instance
        async with kv:
            await kv.set(f"round{round_}", round_)
            assert len(await kv.get_all()) == round_ + 1
    await kv.open()
    assert await kv.get_all() == {"round0": 0, "round1": 1, "round2": 2}
    await kv.close()
    blocking = aiokv.KV(store_path)
    for _ in range(2):
        with blocking:
            blocking.incr("n")
    assert blocking.open().get("n") == 2
    blocking.close()


def test_a_store_collected_without_close_releases_its_lock_and_keeps_its_writes(
        store_path: str) -> None:
    for shell in (AioKV, aiokv.KV):
        kv: Any = shell(store_path)
        if shell is AioKV:
            asyncio.run(kv.set("k", shell.__name__))
        else:
            kv.set("k", shell.__name__)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del kv
            gc.collect()
        assert any("was never closed; it was closed when collected" in str(w.message)
                   and w.category is ResourceWarning for w in caught)
        with aiokv.KV(store_path) as again:  # the lock is free: no LockedError
            assert again.get("k") == shell.__name__


def test_a_store_in_a_missing_directory_names_the_store_not_its_lock_file(
        tmp_path: Path) -> None:
    path = tmp_path / "missing" / "state.kv"
    with pytest.raises(FileNotFoundError) as raised:
        aiokv.KV(path).open()
    assert raised.value.filename == str(path)
    assert ".lock" not in str(raised.value)
    assert "directory of the store does not exist" in str(raised.value)
    assert not (tmp_path / "missing").exists()


def test_a_directory_given_as_the_store_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError) as raised:
        aiokv.KV(tmp_path).open()
    assert raised.value.filename == str(tmp_path)
    assert str(tmp_path) in str(raised.value)


def test_locked_error_names_the_process_that_holds_the_store(store_path: str) -> None:
    program = ("import sys, time\nfrom aiokv import KV\nkv = KV(sys.argv[1]).open()\n"
               "print('open', flush=True)\ntime.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", program, store_path],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with pytest.raises(aiokv.LockedError) as raised:
            aiokv.KV(store_path).open()
        assert raised.value.holder == holder.pid
        assert f"is open in process {holder.pid}" in str(raised.value)
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    with aiokv.KV(store_path) as first, pytest.raises(aiokv.LockedError,
                                                       match="another instance in this process"):
        aiokv.KV(store_path).open()
        first.get("k")


async def test_clear_removes_the_file_and_a_later_set_creates_it_again(
    store_path: str,
) -> None:
    async with AioKV(store_path) as kv:
        await kv.set("a", 1)
        assert await kv.clear() is True
        assert not os.path.exists(store_path)
        assert await kv.get_all() == {}
        await kv.set("b", 2)
        assert os.path.exists(store_path)
    async with AioKV(store_path) as kv:
        assert await kv.get_all() == {"b": 2}


async def test_new_files_are_created_with_mode_0600(store_path: str) -> None:
    async with AioKV(store_path) as kv:
        await kv.set("token", "secret")
        await kv.compact()
    for path in (store_path, store_path + ".lock"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


async def test_stats_report_keys_bytes_and_compactions(store_path: str) -> None:
    async with AioKV(store_path) as kv:
        for i in range(100):
            await kv.set(f"k{i % 10}", i)
        stats = await kv.stats()
        assert isinstance(stats, aiokv.Stats)
        assert stats.keys == 10
        # The log's length; while the store is open the file may be longer:
        # space reserved for appends, cut off at close.
        assert stats.file_bytes == replay(Path(store_path).read_bytes()).end
        assert stats.dead_bytes == stats.file_bytes - stats.live_bytes > 0
        assert (stats.compactions, stats.last_compaction) == (0, None)
        assert stats.durability == "flush"
        await kv.compact()
        after = await kv.stats()
        assert after.compactions == 1 and after.last_compaction is not None
        # The base file and the log file appends moved to, both live.
        assert after.file_bytes == store_size(store_path) == after.live_bytes
        assert after.dead_bytes == 0
    async with AioKV(store_path) as kv:  # the header remembers compactions
        assert (await kv.stats()).compactions == 1


async def test_a_reopened_compacted_store_counts_its_whole_file_as_live(
    store_path: str,
) -> None:
    now = [1_000_000.0]
    async with AioKV(store_path, clock=lambda: now[0]) as kv:
        for i in range(3000):
            await kv.set(f"k{i}", "x" * (i % 50))
        await kv.set("short-lived", "y" * 500, ttl=10)
        await kv.compact()
    size = store_size(store_path)
    async with AioKV(store_path, clock=lambda: now[0]) as kv:
        stats = await kv.stats()
        assert (stats.file_bytes, stats.live_bytes, stats.dead_bytes) == (size, size, 0)
    now[0] += 60  # the entry expired: its record is in the file, no longer live
    async with AioKV(store_path, clock=lambda: now[0]) as kv:
        stats = await kv.stats()
        assert stats.keys == 3000
        # The open logged the removal (a delete record, and the SYNCED frame
        # vouching for it): a clock set back must not bring the key back.
        assert size < stats.file_bytes < size + 100
        assert stats.live_bytes < size - 500


# -- values --------------------------------------------------------------------

STORABLE: list[object] = [
    None, True, False, 0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, float("inf"), "",
    "héllo ✓", b"", b"\x00\xff", [], {}, [1, "two", [3.0, None]],
    {"nested": {"list": [b"bytes", {"deep": True}]}, "": 0},
]


@pytest.mark.parametrize("value", STORABLE, ids=repr)
async def test_every_msgpack_native_value_round_trips_through_a_reopen(
    store_path: str, value: object
) -> None:
    async with AioKV(store_path) as kv:
        await kv.set("k", value)
        assert await kv.get("k") == value
    async with AioKV(store_path) as kv:
        assert await kv.get("k") == value


async def test_a_tuple_reads_back_as_a_list(store_path: str) -> None:
    async with AioKV(store_path) as kv:
        await kv.set("k", (1, (2, 3)))
        assert await kv.get("k") == [1, [2, 3]]
    async with AioKV(store_path) as kv:
        assert await kv.get("k") == [1, [2, 3]]


async def test_values_are_independent_copies(store_path: str) -> None:
    async with AioKV(store_path) as kv:
        value: dict[str, object] = {"list": [1, 2]}
        await kv.set("k", value)
        value["list"].append(3)  # type: ignore[attr-defined]
        value["new"] = True
        got = await kv.get("k")
        assert isinstance(got, dict) and got == {"list": [1, 2]}
        got["list"].append(99)
        everything = await kv.get_all()
        assert isinstance(everything["k"], dict)
        everything["k"]["list"].append(100)
        assert await kv.get("k") == {"list": [1, 2]}


BAD_VALUES: list[tuple[object, type[Exception]]] = [
    (object(), TypeError),
    ({1, 2}, TypeError),
    (2**64, ValueError),
    (-(2**63) - 1, ValueError),
    ([1, [2, object()]], TypeError),
    ({"a": {"b": {3}}}, TypeError),
    ({"k": 2**70}, ValueError),
    ({(1, 2): "tuple key"}, ValueError),
    ("lone \ud800 surrogate", ValueError),
    (["nested \udfff"], ValueError),
]


@pytest.mark.parametrize(("value", "error"), BAD_VALUES, ids=repr)
async def test_a_value_that_cannot_be_stored_raises_naming_the_key_and_changes_nothing(
    store_path: str, value: object, error: type[Exception]
) -> None:
    async with AioKV(store_path) as kv:
        await kv.set("the-key", "before")
        before = Path(store_path).read_bytes()
        with pytest.raises(error, match="the-key"):
            await kv.set("the-key", value)
        assert await kv.get("the-key") == "before"
        assert Path(store_path).read_bytes() == before
    async with AioKV(store_path) as kv:
        assert await kv.get_all() == {"the-key": "before"}


async def test_a_key_that_cannot_be_encoded_raises_value_error_naming_it(
    store_path: str,
) -> None:
    async with AioKV(store_path) as kv:
        with pytest.raises(ValueError, match="bad"):
            await kv.set("bad \ud800", 1)
        assert await kv.get_all() == {}
        assert await kv.delete("bad \ud800") is True  # never stored, so absent


@pytest.mark.parametrize("key", [1, b"bytes", None, ("t",), 1.5], ids=repr)
async def test_a_key_that_is_not_a_str_raises_type_error_naming_it(
    store_path: str, key: object
) -> None:
    async with AioKV(store_path) as kv:
        for operation in (kv.set(key, 1), kv.get(key), kv.delete(key)):  # type: ignore[arg-type, call-overload]
            with pytest.raises(TypeError, match="key must be a str"):
                await operation
        assert await kv.get_all() == {}


# -- concurrency and event loops ------------------------------------------------


@pytest.mark.parametrize("durability", ["flush", "fsync", "buffered"])
async def test_concurrent_tasks_lose_no_acknowledged_update(
    store_path: str, durability: Durability
) -> None:
    async with AioKV(store_path, durability=durability) as kv:

        async def writer(task: int) -> None:
            for i in range(50):
                await kv.set(f"task{task}:{i}", i)
                await kv.set("shared", (task, i))
                if i % 10 == 0:
                    await asyncio.sleep(0)

        await asyncio.gather(*(writer(task) for task in range(40)))
        everything = await kv.get_all()
    assert len(everything) == 40 * 50 + 1
    assert everything["shared"] == [everything["shared"][0], 49]  # type: ignore[index]
    async with AioKV(store_path) as kv:
        assert await kv.get_all() == everything


_module_level_store: AioKV | None = None


def test_one_instance_keeps_working_across_successive_event_loops(store_path: str) -> None:
    global _module_level_store
    _module_level_store = AioKV(store_path, durability="fsync")

    async def first() -> None:
        assert _module_level_store is not None
        await _module_level_store.set("runs", 1)

    async def second() -> None:
        assert _module_level_store is not None
        assert await _module_level_store.get("runs") == 1
        await _module_level_store.set("runs", 2)
        await _module_level_store.close()

    async def check() -> None:
        async with AioKV(store_path) as kv:
            assert await kv.get("runs") == 2

    asyncio.run(first())
    asyncio.run(second())
    asyncio.run(check())


async def test_a_second_instance_on_the_same_path_raises_locked_error(
    store_path: str,
) -> None:
    async with AioKV(store_path) as kv:
        await kv.set("k", 1)
        other = AioKV(store_path)
        with pytest.raises(aiokv.LockedError) as raised:
            await other.get("k")
        assert raised.value.path == store_path
        assert store_path in str(raised.value)
        assert await kv.get("k") == 1
    async with other:  # the lock was released by close()
        assert await other.get("k") == 1


def test_a_second_process_on_the_same_path_raises_locked_error(store_path: str) -> None:
    child = textwrap.dedent(f"""
        import asyncio, sys, aiokv
        async def main():
            try:
                await aiokv.AioKV({store_path!r}).get("k")
            except aiokv.LockedError:
                sys.exit(3)
        asyncio.run(main())
    """)

    async def hold_and_try() -> int:
        async with AioKV(store_path) as kv:
            await kv.set("k", 1)
            process = await asyncio.create_subprocess_exec(sys.executable, "-c", child)
            return await process.wait()

    assert asyncio.run(hold_and_try()) == 3
    assert subprocess.run([sys.executable, "-c", child], check=False).returncode == 0


def test_the_lock_is_released_when_the_owning_process_dies(store_path: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import asyncio, sys, aiokv
            async def main():
                kv = aiokv.AioKV({store_path!r})  # held: one collected would close
                await kv.set("k", 1)
                print("locked", flush=True)
                await asyncio.sleep(60)
            asyncio.run(main())
        """)],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"locked\n"
        with pytest.raises(aiokv.LockedError):
            asyncio.run(AioKV(store_path).get("k"))
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()

    async def read() -> object:
        async with AioKV(store_path) as kv:
            return await kv.get("k")

    assert asyncio.run(read()) == 1


def test_importing_aiokv_has_no_side_effects(tmp_path: Path) -> None:
    probe = textwrap.dedent("""
        import logging, os, threading
        before = set(os.listdir("."))
        import aiokv
        assert threading.active_count() == 1, threading.enumerate()
        assert set(os.listdir(".")) == before
        assert logging.getLogger("aiokv").handlers == []
        import asyncio
        assert asyncio.events._get_running_loop() is None
        print("clean")
    """)
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                            text=True, check=False)
    assert result.stdout == "clean\n", result.stderr


async def test_delete_and_clear_return_false_and_log_on_an_io_error_as_the_seed_says(
    store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    files = ScriptedFiles(mapping=False)  # every append is a write(2), which fails
    kv = store_on(files, store_path)
    await kv.set("k", 1)
    failing = [files.fail(name, OSError(errno.EIO, "injected")) for name in ("write", "remove")]
    with caplog.at_level(logging.ERROR, logger="aiokv"):
        assert await kv.delete("k") is False
        assert await kv.clear() is False
        with pytest.raises(OSError):
            await kv.set("k", 2)  # set raises, as get/set/get_all do
    assert "delete('k')" in caplog.text and "clear()" in caplog.text
    assert await kv.get_all() == {"k": 1}  # nothing acknowledged changed
    for script in failing:
        files.unscript(script)
    await kv.close()
    async with AioKV(store_path) as again:
        assert await again.get_all() == {"k": 1}


async def test_a_long_run_of_sets_and_gets_lets_other_tasks_run(store_path: str) -> None:
    """Sets and gets at the default level complete without suspending, but
    every YIELD_EVERY-th of them yields once (docs/api.md)."""
    kv = AioKV(store_path)
    await kv.open()
    turns = 0
    done = False

    async def other_task() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_task())
    await asyncio.sleep(0)  # let it start
    started = turns
    calls = 20 * YIELD_EVERY
    for i in range(calls // 2):
        await kv.set(f"k{i % 100}", float(i))
        await kv.get(f"k{i % 100}")
    ran = turns - started
    done = True
    await other
    await kv.close()
    # One turn of the other task per yield, give or take the first and last.
    assert calls // YIELD_EVERY - 1 <= ran <= calls // YIELD_EVERY + 1


@pytest.mark.parametrize("durability", ["fsync", "flush", "buffered"])
async def test_a_popped_key_stays_gone_after_a_reopen_and_a_kept_one_stays(
    store_path: str, durability: Durability,
) -> None:
    async with AioKV(store_path, durability=durability) as kv:
        await kv.set("job", 1)
        await kv.set("kept", 2)
        assert await kv.pop("job") == 1
        assert await kv.get_many(["job", "kept"]) == {"kept": 2}
    async with AioKV(store_path, durability=durability) as kv:
        assert await kv.get_many(["job", "kept"]) == {"kept": 2}
        assert await kv.pop("job", "gone") == "gone"
