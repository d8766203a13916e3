"""``readonly=True``: read what a file holds, whatever else holds the store,
touching nothing.

Before, even reading took the lock (so a store in a directory that cannot
be written could not be read at all, nor one open in another process), and
``aiokv get`` on a torn file truncated it and appended a frame.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aiokv import KV, AioKV, CorruptionError, ReadOnlyError

WRITES = [("set", ("k", 2)), ("add", ("new", 1)), ("delete", ("a",)), ("incr", ("n",)),
          ("expire", ("a", 60)), ("clear", ()), ("compact", ()), ("flush", ()),
          ("pop", ("a",)), ("set_many", ({"k": 2, "j": 3},)), ("delete_many", (["a"],)),
          ("update", ("a", abs)), ("update", ({"k": 2},))]
READS = {"get", "get_many", "get_all", "keys", "exists", "ttl", "stats", "count", "items",
         "values"}
"""Calls a read-only store answers."""
NOT_CALLS = {"open", "close", "from_url", "path", "durability", "readonly",
             "batch",  # a block, committed as set_many is (its own test below)
             "setdefault", "popitem"}  # MutableMapping's, made of get/set/pop


def test_every_call_is_a_read_or_a_write_tried_below() -> None:
    public = {name for name in dir(KV) if not name.startswith("_")}
    assert public - NOT_CALLS == READS | {name for name, _ in WRITES}


def test_a_batch_raises_read_only_error_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.kv"
    with KV(path) as kv:
        kv.set("a", 1)
    before = files_of(tmp_path)
    with KV(path, readonly=True) as reader, pytest.raises(ReadOnlyError), \
            reader.batch() as batch:
        batch.set("k", 1)
        batch.delete("a")
    assert files_of(tmp_path) == before


def files_of(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_a_store_open_elsewhere_reads_as_its_file_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "state.kv"
    with KV(path) as writer:
        writer.set("a", 1)
        writer.set("n", 5, ttl=60)
        before = files_of(tmp_path)
        with KV(path, readonly=True) as reader:  # no LockedError: it takes no lock
            assert reader.readonly
            assert reader.get_all() == {"a": 1, "n": 5}
            assert 59 <= reader.ttl("n") <= 60
            assert reader.keys("a*") == ["a"]
            assert reader.stats().keys == 2
        assert files_of(tmp_path) == before
        writer.set("a", 2)  # the writer goes on
    with KV(path, readonly=True) as reader:
        assert reader.get("a") == 2


@pytest.mark.parametrize(("method", "args"), WRITES,
                         ids=[f"{name}{args!r}"[:40] for name, args in WRITES])
def test_every_write_raises_read_only_error_and_changes_nothing(
        tmp_path: Path, method: str, args: tuple[object, ...]) -> None:
    path = tmp_path / "state.kv"
    with KV(path) as kv:
        kv.set("a", 1)
    before = files_of(tmp_path)
    reader = KV(path, readonly=True)
    with pytest.raises(ReadOnlyError, match="opened read-only"):
        getattr(reader, method)(*args)
    assert reader.get_all() == {"a": 1}  # still open, for reading
    reader.close()

    async def main() -> None:
        async with AioKV(path, readonly=True) as kv:
            with pytest.raises(ReadOnlyError):
                await getattr(kv, method)(*args)

    asyncio.run(main())
    assert files_of(tmp_path) == before


def test_a_torn_or_reserved_tail_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "state.kv"
    with KV(path) as kv:
        kv.set("a", 1)
        kv.set("b", "two")
    with open(path, "ab") as file:
        file.write(b"\x96\xce\x00\x00\x00\x40torn")  # a record cut short
    before = path.read_bytes()
    with KV(path, readonly=True) as kv:
        assert kv.get_all() == {"a": 1, "b": "two"}
    done = subprocess.run([sys.executable, "-m", "aiokv", "get", str(path), "b"],
                          capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout) == "two"
    assert path.read_bytes() == before  # aiokv get used to cut it and append a frame


def test_no_file_is_an_empty_store_and_none_is_created(tmp_path: Path) -> None:
    with KV(tmp_path / "missing.kv", readonly=True) as kv:
        assert kv.get_all() == {}
    assert list(tmp_path.iterdir()) == []


def test_a_json_state_file_is_read_as_it_is_not_converted(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"a": 1, "b": [1, 2]}')
    with KV(path, readonly=True) as kv:
        assert kv.get_all() == {"a": 1, "b": [1, 2]}
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_damage_raises_unless_salvage_which_reads_around_it(tmp_path: Path) -> None:
    path = tmp_path / "state.kv"
    with KV(path) as kv:
        kv.set("damaged", "x" * 40)
        kv.set("kept", 1)
    data = bytearray(path.read_bytes())
    data[60] ^= 0xFF  # inside the first record, which a valid record follows
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptionError):
        KV(path, readonly=True).open()
    with KV(path, readonly=True, recovery="salvage") as kv:
        assert kv.get("kept") == 1
    assert path.read_bytes() == bytes(data)
    assert sorted(os.listdir(tmp_path)) == ["state.kv", "state.kv.lock"]  # no copy aside


def test_a_store_in_a_directory_that_cannot_be_written_is_read(tmp_path: Path) -> None:
    directory = tmp_path / "frozen"
    directory.mkdir()
    with KV(directory / "state.kv") as kv:
        kv.set("a", 1)
    (directory / "state.kv.lock").unlink()
    if os.geteuid() == 0:  # root writes anywhere: a read-only bind mount stops it
        mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(directory),
                                  str(directory)], capture_output=True, check=False)
        if mounted.returncode != 0:
            pytest.skip(f"cannot make a read-only bind mount: {mounted.stderr!r}")
        subprocess.run(["mount", "-o", "remount,ro,bind", str(directory)], check=False)
    else:
        directory.chmod(0o555)
    try:
        with pytest.raises(OSError) as raised:
            KV(directory / "state.kv").open()
        assert raised.value.filename == str(directory / "state.kv")  # the store, not its .lock
        assert ".lock" not in str(raised.value) and "readonly=True" in str(raised.value)
        with KV(directory / "state.kv", readonly=True) as kv:
            assert kv.get("a") == 1
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(directory)], check=False)
        else:
            directory.chmod(0o755)
