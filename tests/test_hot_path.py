"""set()'s and incr()'s hot path: a frame copied into the mapped window.

While ``Engine._fast_end`` leaves room, such a set only copies its frame and
updates the entries. These tests hold it to doing exactly what the general
path does: the same bytes in the log, the same accounting, and nothing
skipped that the store owes (an fsync, a SYNCED frame, a compaction's copy
of the write, removing an expiry). The state machine in test_state_machine
checks ``hot_path_is_sound`` (engine_invariants) after every step as well.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_invariants import hot_path_is_sound, hot_path_room
from on_disk import replay_store, store_size
from scripted_files import ScriptedFiles

from aiokv import _compaction
from aiokv._commit import Commit
from aiokv._engine import Engine
from aiokv._format import Value
from aiokv._recovery import replay

SCALARS: list[object] = [1.5, "text", b"\x00bytes", True, None, -0.0, float("inf"),
                         "a longer value " * 10, 2.5, 0, -1, 1_765_000_000, (1 << 64) - 1,
                         -(1 << 63), 200, -40_000]
"""Every type the hot path takes, ints at the edges of msgpack's forms included."""


def sets(engine: Engine) -> None:
    keys = ["a", "b", "ключ", "a key longer than thirty-one bytes!"]
    for i in range(400):
        engine.set(keys[i % len(keys)], SCALARS[i % len(SCALARS)])
        engine.set(f"new{i}", SCALARS[(i * 7) % len(SCALARS)])
        engine.set(f"session{i % 7}", SCALARS[(i * 3) % len(SCALARS)], ttl=60)
        engine.incr(f"hits{i % 5}", ttl=60)
        engine.set(f"doc{i % 3}", {"user": "bob", "n": i, "ok": True})
        if i % 50 == 0:
            engine.set("counter", [i, (i,)])  # a nested list: the general path
            engine.set(f"session{i % 7}", i)  # removes that key's expiry


@contextlib.contextmanager
def opened(path: Path) -> Iterator[Engine]:
    """The store at ``path``, opened again (as after a restart), closed at the end."""
    engine = Engine(str(path))
    engine.open()
    try:
        yield engine
    finally:
        engine.close()


def sets_off_the_hot_path(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys of the sets without a ttl that take the general path, as they come."""
    general: list[str] = []
    set_framed = engine.writes._set_framed

    def counted(key: str, stored: Value, frame: bytes) -> Commit | None:
        general.append(key)
        return set_framed(key, stored, frame)

    monkeypatch.setattr(engine.writes, "_set_framed", counted)
    return general


@contextlib.contextmanager
def counting_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                    ) -> Iterator[tuple[Engine, list[str]]]:
    """An open engine with no fsync within the test (each one closes the hot
    path until the next set), and the keys of its sets that take the general
    path (see sets_off_the_hot_path); closed at the end."""
    engine = Engine(str(tmp_path / "s.kv"), files=ScriptedFiles(), fsync_interval=30.0)
    general = sets_off_the_hot_path(engine, monkeypatch)
    engine.open()
    try:
        yield engine, general
    finally:
        engine.close()


def test_the_hot_path_logs_and_counts_exactly_what_the_general_path_does(
    tmp_path: Path,
) -> None:
    mapped = Engine(str(tmp_path / "mapped.kv"), files=ScriptedFiles(mapping=True))
    written = Engine(str(tmp_path / "written.kv"), files=ScriptedFiles(mapping=False))
    for engine in (mapped, written):
        engine.open()
        sets(engine)
    try:
        assert mapped.log.map_appends and not written.log.map_appends
        assert mapped.items() == written.items()
        ours, theirs = mapped.stats(), written.stats()
        assert (ours.keys, ours.file_bytes, ours.live_bytes) == (
            theirs.keys, theirs.file_bytes, theirs.live_bytes)
        assert hot_path_is_sound(mapped)
    finally:
        mapped.close()
        written.close()
    # Both logs replay to the same entries.
    logs = [replay((tmp_path / name).read_bytes()) for name in ("mapped.kv", "written.kv")]
    assert logs[0].entries == logs[1].entries


def test_the_hot_path_opens_with_the_window_and_stays_open_across_other_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with counting_engine(tmp_path, monkeypatch) as (engine, general):
        engine.set("warm-up", 1.0)  # the general path maps a window and grants the room
        assert general == ["warm-up"]
        room = hot_path_room(engine)
        assert room > 0
        engine.set("k", 3.0)
        assert general == ["warm-up"]  # this one went through the hot path
        assert hot_path_room(engine) < room  # and took its bytes
        assert engine.get("k") == 3.0
        room = hot_path_room(engine)
        assert engine.incr("n") == (1, None)
        assert engine.delete("k") is None
        assert 0 < hot_path_room(engine) < room  # other appends leave it open
        engine.set("k", 4.0)
        assert general == ["warm-up"]  # still on the hot path
        assert engine.get("k") == 4.0 and engine.get("n") == 1


def test_a_set_after_each_fsync_is_fsynced_again_within_fsync_interval(
    tmp_path: Path,
) -> None:
    files = ScriptedFiles()
    engine = Engine(str(tmp_path / "s.kv"), files=files, fsync_interval=0.05)
    engine.open()
    try:
        for round_ in range(4):
            for i in range(100):
                engine.set(f"k{i}", float(round_))
            written_at = time.monotonic()
            deadline = written_at + 5.0
            while not any(call.name == "fsync" and call.time >= written_at
                          for call in files.calls):
                assert time.monotonic() < deadline, f"round {round_}: no fsync"
                time.sleep(0.01)
            assert hot_path_is_sound(engine)
    finally:
        engine.close()


def test_a_set_on_a_key_with_an_expiry_removes_the_expiry(tmp_path: Path) -> None:
    engine = Engine(str(tmp_path / "s.kv"))
    engine.open()
    try:
        for i in range(10):
            engine.set(f"k{i}", 1.0)  # the hot path is open
        engine.set("k3", 2.0, ttl=60)
        assert hot_path_is_sound(engine)
        engine.set("k3", 3.0)  # no ttl: the expiry goes, as Redis's SET does
        assert engine.ttl("k3") == -1
    finally:
        engine.close()
    with opened(tmp_path / "s.kv") as reopened:
        assert reopened.get("k3") == 3.0 and reopened.ttl("k3") == -1


def test_sets_while_a_compaction_runs_reach_the_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_compaction, "COMPACT_SLACK", 0)
    monkeypatch.setattr(_compaction, "COMPACTION_CHECK_BYTES", 2048)  # hot path in between
    path = str(tmp_path / "s.kv")
    engine = Engine(path)
    engine.open()
    unsound: list[int] = []

    def check() -> None:
        while not stop.is_set():
            if not hot_path_is_sound(engine):
                unsound.append(engine.log.fast_end)

    stop = threading.Event()
    checker = threading.Thread(target=check)
    checker.start()
    try:
        for i in range(20_000):
            engine.set(f"k{i % 500}", float(i))
    finally:
        stop.set()
        checker.join()
    try:
        # Started during the sets; under a busy writer its thread gets the GIL
        # once per switch interval (writes never wait for it), so it may end
        # after them.
        deadline = time.monotonic() + 10.0
        while engine.stats().compactions == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.stats().compactions > 0
        assert not unsound
        expected = {f"k{i % 500}": float(i) for i in range(20_000)}
        assert engine.items() == expected
    finally:
        engine.close()
    assert replay_store(path).entries == expected
    assert store_size(path) < 20_000 * 30  # compacted along the way


def test_an_int_beyond_64_bits_is_refused_on_the_hot_path_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    engine = Engine(str(tmp_path / "s.kv"), fsync_interval=30.0)
    engine.open()
    try:
        for i in range(3):
            engine.set("warm-up", float(i))  # the room is granted
        assert hot_path_room(engine) > 0
        before = engine.stats()
        for too_big in (1 << 64, -(1 << 63) - 1):
            with pytest.raises(ValueError, match=r"key 'n': int out of the 64-bit range"):
                engine.set("n", too_big)
        after = engine.stats()
        assert (after.file_bytes, after.live_bytes) == (before.file_bytes, before.live_bytes)
        assert engine.get("n") is None
    finally:
        engine.close()


def test_in_a_store_holding_ttl_keys_a_key_without_one_stays_on_the_hot_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with counting_engine(tmp_path, monkeypatch) as (engine, general):
        for i in range(100):
            engine.set(f"session:{i}", "token", ttl=3600)
        engine.set("warm-up", 1.0)
        engine.set("warm-up", 2.0)  # the general path grants the room
        general.clear()
        for i in range(50):
            engine.set(f"seen:{i}", float(i))
            engine.set(f"count:{i}", i)
        assert general == []
        assert hot_path_is_sound(engine)
        engine.set("session:7", "plain")  # has an expiry: the general path removes it
        assert general == ["session:7"]
        assert engine.ttl("session:7") == -1 and engine.ttl("session:8") > 3000
        assert engine.stats().ttl_keys == 99
    with opened(tmp_path / "s.kv") as reopened:
        assert reopened.get("seen:49") == 49.0 and reopened.get("count:49") == 49
        assert reopened.ttl("session:7") == -1 and reopened.stats().ttl_keys == 99


def test_sets_with_a_ttl_and_incrs_take_the_hot_path_while_it_is_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = Engine(str(tmp_path / "s.kv"), files=ScriptedFiles(), fsync_interval=30.0)
    general: list[str] = []
    write_put = engine.writes.write_put

    def counted(key: str, stored: Value, expires: float | None,
                frame: bytes | None = None) -> Commit | None:
        general.append(key)
        return write_put(key, stored, expires, frame)

    monkeypatch.setattr(engine.writes, "write_put", counted)
    engine.open()
    try:
        engine.set("warm-up", 1, ttl=60)  # the general path grants the room
        general.clear()
        for i in range(200):
            engine.set(f"cooldown:{i % 20}", i, ttl=3)
            assert engine.incr(f"rate:{i % 10}", ttl=60)[0] == i // 10 + 1
        assert general == []
        assert hot_path_is_sound(engine)
        assert engine.ttl("cooldown:0") == 3 and 0 < engine.ttl("rate:0") <= 60
        assert engine.stats().ttl_keys == 31
    finally:
        engine.close()
    with opened(tmp_path / "s.kv") as reopened:
        assert reopened.get("cooldown:19") == 199 and reopened.get("rate:9") == 20
        assert reopened.ttl("cooldown:19") == 3


def test_while_a_compaction_walks_sets_of_held_keys_stay_on_the_hot_path_and_new_keys_go_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with counting_engine(tmp_path, monkeypatch) as (engine, general):
        for i in range(10):
            engine.set(f"held{i}", float(i))
        with engine.lock:  # as a compaction's walk leaves it (Table.start_split)
            walk = engine.table.start_split()
        general.clear()
        engine.set("held3", 30.0)  # a key the table holds: the hot path
        assert general == []
        engine.set("new", 1.0)  # a new key: the general path puts it aside
        assert general == ["new"]
        assert "new" in engine.table.added and "new" not in engine.table.entries
        engine.set("held4", 40.0)  # the room is open again after the general path
        assert general == ["new"]
        assert hot_path_is_sound(engine)
        assert (engine.get("held3"), engine.get("held4"), engine.get("new")) == (30.0, 40.0, 1.0)
        list(walk)
        engine.compaction.fold_split()
        assert not engine.table.split and engine.table.entries["new"] == 1.0
    with opened(tmp_path / "s.kv") as reopened:
        assert reopened.get("held3") == 30.0 and reopened.get("new") == 1.0
