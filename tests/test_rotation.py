"""Compaction rotates the log (format 3): appends move to a new log file
``<base>.log-N`` when a compaction starts, the new base names it as its
first, and the files before it go. Through the engine, on real files."""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from on_disk import replay_store, store_files, store_size
from scripted_files import Call, ScriptedFiles, in_thread, nth

from aiokv import KV, CorruptionError, _compaction, _writes
from aiokv._chain import follows_of
from aiokv._engine import Engine
from aiokv._files import REAL_FILES
from aiokv._format import (
    FORMAT_VERSION,
    HEADER_SIZE,
    MAGIC,
    VOUCHED,
    Header,
    decode_header,
    encode_follows,
    encode_header,
    encode_set,
    encode_synced,
)

JOIN = 10.0
"""Longest a test waits for a thread it started (a hang fails the test)."""


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "s.kv")


def log(path: str, number: int) -> str:
    return f"{path}.log-{number}"


def header_of(name: str) -> Header:
    with open(name, "rb") as file:
        return decode_header(file.read(HEADER_SIZE))


def read(name: str) -> bytes:
    with open(name, "rb") as file:
        return file.read()


def write(name: str, data: bytes) -> None:
    with open(name, "wb") as file:
        file.write(data)


def assert_holds(path: str, model: dict[str, object]) -> None:
    """The store at ``path``, opened anew, holds exactly ``model``."""
    with KV(path) as kv:
        assert kv.get_all() == model


def set_keys(store: Engine | KV, model: dict[str, object], numbers: range) -> None:
    """Set ``k<i>`` to ``i`` for each number, in the store and in ``model``."""
    for i in numbers:
        store.set(f"k{i}", i)
        model[f"k{i}"] = i


def base_file(*frames: bytes, compactions: int = 0, first: int = 1) -> bytes:
    return encode_header(compactions, 0.0, HEADER_SIZE, first) + b"".join(frames)


def log_file(number: int, previous: int, length: int, *frames: bytes,
             base_compactions: int = 0) -> bytes:
    return (encode_header(base_compactions, 0.0, HEADER_SIZE, number, log_file=True)
            + encode_follows(previous, length, base_compactions) + b"".join(frames))


@pytest.fixture
def engine_on(path: str) -> Iterator[tuple[Engine, ScriptedFiles]]:
    """An open engine at ``path`` whose file calls go through ScriptedFiles."""
    files = ScriptedFiles()
    engine = Engine(path, files=files)
    engine.open()
    try:
        yield engine, files
    finally:
        files.unscript()
        engine.close()


def compact_in_background(engine: Engine) -> tuple[threading.Thread, list[BaseException]]:
    """Start a compaction from a thread of the test's; its error, if any, is kept."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            engine.compact()
        except BaseException as exc:
            errors.append(exc)
    thread = threading.Thread(target=run, name="test-compact")
    thread.start()
    return thread, errors


# -- appends move; compaction never makes a writer wait ----------------------------


def test_a_write_never_sleeps_while_a_compaction_runs(
    path: str, engine_on: tuple[Engine, ScriptedFiles], monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, files = engine_on
    model: dict[str, object] = {}
    set_keys(engine, model, range(1000))
    # The compaction thread's second create is the temp file of the new base:
    # by then it has moved appends to log file 1 and started its walk.
    held = files.hold("create", when=nth(2, in_thread("aiokv-compact")))
    sleepers: list[int] = []
    real_sleep = time.sleep

    def recording_sleep(seconds: float) -> None:
        sleepers.append(threading.get_ident())
        real_sleep(seconds)
    # time.sleep of the time module the writes and the compaction use: every
    # thread's sleep is seen, and the test's thread (the writer here) must
    # not be among them.
    assert vars(_writes)["time"] is time and vars(_compaction)["time"] is time
    monkeypatch.setattr(time, "sleep", recording_sleep)
    me = threading.get_ident()

    compaction, errors = compact_in_background(engine)
    try:
        held.wait_reached()
        calls = [(call.name, os.path.basename(str(call.args[-1]))) for call in files.calls
                 if call.name in ("create", "link")
                 and call.thread_name.startswith("aiokv-compact")]
        # Log file 1 was put in place, then the held call began the new base.
        assert calls[1] == ("link", "s.kv.log-1")
        assert calls[2][0] == "create" and calls[2][1].startswith("s.kv.tmp-")
        assert store_files(path) == [path, log(path, 1)]

        for i in range(5000):
            key = f"k{i % 2000}"
            engine.set(key, float(i))
            model[key] = float(i)
        engine.delete("k1999")
        del model["k1999"]

        # Every write went through while the compaction is held...
        assert not held.released.is_set() and compaction.is_alive()
        assert me not in sleepers
        # ... into log file 1, after the base.
        on_disk = replay_store(path)
        assert [number for number, _ in on_disk.files] == [0, 1]
        assert on_disk.corruption is None and on_disk.entries == model
    finally:
        held.release()
        compaction.join(JOIN)
    assert not compaction.is_alive() and errors == []
    assert me not in sleepers
    assert engine.stats().compactions == 1
    engine.close()
    assert store_files(path) == [path, log(path, 1)]
    assert header_of(path).log_number == 1
    assert_holds(path, model)


def test_appends_move_to_a_new_log_file_when_a_compaction_starts(path: str) -> None:
    model: dict[str, object] = {f"k{i}": i for i in range(100)}
    with KV(path) as kv:
        for key, value in model.items():
            kv.set(key, value)
        kv.delete("k0")
        del model["k0"]
        assert store_files(path) == [path]
        old_end = replay_store(path).last[1].end

        kv.compact()

        assert store_files(path) == [path, log(path, 1)]
        base = read(path)
        header = decode_header(base)
        assert (header.version, header.compactions, header.log_number) == (FORMAT_VERSION, 1, 1)
        assert not header.log_file
        assert len(base) == header.compacted_length  # the snapshot, nothing appended
        opening = read(log(path, 1))
        log_header = decode_header(opening)
        assert log_header.log_file and log_header.log_number == 1
        follows = follows_of(opening)
        assert follows is not None
        assert (follows.previous, follows.length, follows.base_compactions) == (0, old_end, 0)

        set_keys(kv, model, range(100, 200))
        kv.delete("k1")
        del model["k1"]
        kv.flush()

        assert read(path) == base  # appends no longer go to the base
        chain = replay_store(path)
        assert [number for number, _ in chain.files] == [0, 1]
        assert chain.entries == model
        assert chain.last[1].end > follows.end  # the writes are in log file 1
    assert_holds(path, model)


def test_each_compaction_removes_the_log_files_its_base_holds(path: str) -> None:
    model: dict[str, object] = {}
    with KV(path) as kv:
        for round_ in range(1, 4):
            for i in range(50):
                kv.set(f"k{i}", (round_, i))
                model[f"k{i}"] = [round_, i]
            kv.set(f"round {round_}", round_)
            model[f"round {round_}"] = round_
            kv.compact()
            assert store_files(path) == [path, log(path, round_)]
            assert header_of(path).log_number == round_
            follows = follows_of(read(log(path, round_)))
            assert follows is not None
            # It follows the file appends went to before: the base at first.
            assert follows.previous == round_ - 1
            assert follows.base_compactions == round_ - 1
        assert kv.stats().compactions == 3
        kv.set("last", 1)
        model["last"] = 1
    assert store_files(path) == [path, log(path, 3)]
    assert header_of(path).compactions == 3
    assert_holds(path, model)


# -- files of format 2, and files a crash left ----------------------------------------


def version_2_header(compactions: int) -> bytes:
    """A header as aiokv wrote it in format 2: the log number's bytes reserved, zero."""
    body = struct.pack(">8sHHIdQI", MAGIC, 2, VOUCHED, compactions, 0.0, HEADER_SIZE, 0)
    return body + struct.pack(">I", zlib.crc32(body))


def test_a_store_of_format_2_opens_and_becomes_format_3_at_its_first_compaction(
    path: str,
) -> None:
    write(path, version_2_header(5) + encode_set("a", 1) + encode_set("b", "two")
          + encode_set("a", 3) + encode_synced(HEADER_SIZE))
    model: dict[str, object] = {"a": 3, "b": "two"}
    with KV(path) as kv:
        assert kv.get_all() == model
        kv.set("c", [1, 2])
        model["c"] = [1, 2]
        kv.flush()
        # Appends go on into the file of format 2 until it is compacted.
        assert store_files(path) == [path]
        assert header_of(path).version == 2
        assert replay_store(path).entries.keys() == model.keys()

        kv.compact()

        header = header_of(path)
        assert (header.version, header.compactions, header.log_number) == (3, 6, 1)
        assert store_files(path) == [path, log(path, 1)]
        follows = follows_of(read(log(path, 1)))
        assert follows is not None
        assert (follows.previous, follows.base_compactions) == (0, 5)
        kv.set("d", None)
        model["d"] = None
    assert_holds(path, model)


def test_leftover_log_files_below_the_bases_first_are_removed_at_open(path: str) -> None:
    model: dict[str, object] = {}
    with KV(path) as kv:
        kv.set("k", "old")
        kv.compact()
        kv.set("k", "in log file 1")
        kv.flush()
        leftover = read(log(path, 1))
        kv.compact()
        kv.set("k", "new")
        model["k"] = "new"
    assert store_files(path) == [path, log(path, 2)]
    # A crash after the second compaction put its base in place, before it
    # removed log file 1: the base holds its records.
    write(log(path, 1), leftover)
    assert store_files(path) == [path, log(path, 1), log(path, 2)]

    with KV(path) as kv:
        assert store_files(path) == [path, log(path, 2)]
        assert kv.get_all() == model
        kv.set("after", 1)
        model["after"] = 1
    assert_holds(path, model)


def test_log_files_past_a_gap_are_removed_at_open(
    path: str, caplog: pytest.LogCaptureFixture,
) -> None:
    base = base_file(encode_set("k", 1))
    write(path, base)
    write(log(path, 2), log_file(2, 1, HEADER_SIZE, encode_set("k", "beyond")))
    with caplog.at_level(logging.WARNING, logger="aiokv"), KV(path) as kv:
        assert kv.get_all() == {"k": 1}
        assert store_files(path) == [path]
        kv.set("j", 2)
    assert "follow no file of the store" in caplog.text
    assert_holds(path, {"k": 1, "j": 2})


def lose_last_frame(name: str, frame: bytes) -> None:
    """The file ``name`` lost its last frame, ``frame``, in a power loss."""
    data = read(name)
    assert data.endswith(frame)
    write(name, data[: -len(frame)])


@pytest.mark.parametrize("previous", [0, 1], ids=["the-base", "log-file-1"])
def test_a_dropped_log_file_is_removed_before_appends_continue_in_the_file_before_it(
    path: str, previous: int, caplog: pytest.LogCaptureFixture,
) -> None:
    lost = encode_set("lost", "never fsynced")
    base = base_file(encode_set("k", 0), *([lost] if previous == 0 else []))
    write(path, base)
    log_1 = log_file(1, 0, len(base), encode_set("k", 1), *([lost] if previous == 1 else []))
    write(log(path, 1), log_1)
    if previous == 1:
        write(log(path, 2), log_file(2, 1, len(log_1), encode_set("k", 2)))
    # The file appends moved away from lost its unsynced last frame; the one
    # after it holds no SYNCED frame: nothing in it was fsynced either.
    lose_last_frame(path if previous == 0 else log(path, 1), lost)
    kept = [path, log(path, 1)][: previous + 1]

    files = ScriptedFiles()
    engine = Engine(path, files=files)
    with caplog.at_level(logging.WARNING, logger="aiokv"):
        engine.open()
    try:
        assert "never fsynced" in caplog.text and log(path, previous + 1) in caplog.text
        assert store_files(path) == kept
        assert engine.get("k") == previous and engine.get("lost") is None
        # The dropped file went before anything was written to the one before it.
        names = [(call.name, call.args[0] if call.name == "remove" else None)
                 for call in files.calls]
        removed = names.index(("remove", log(path, previous + 1)))
        writes = [i for i, (name, _) in enumerate(names)
                  if name in ("write", "pwrite", "write_synced", "truncate", "allocate", "map")]
        assert all(i > removed for i in writes)
        engine.set("after", "reopen")
    finally:
        engine.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aiokv"):
        assert_holds(path, {"k": previous, "after": "reopen"})
        assert_holds(path, {"k": previous, "after": "reopen"})
    assert caplog.text == ""
    assert store_files(path) == kept


def a_log_file_fsynced_after_the_base_lost_bytes(path: str) -> None:
    """A base whose last frame is gone, and a log file that follows it at its
    old length and was fsynced (a SYNCED frame vouches for its records)."""
    lost = encode_set("lost", 1)
    base = base_file(encode_set("k", 0), lost)
    write(path, base)
    opening = log_file(1, 0, len(base), encode_set("k", 1), encode_set("j", 1))
    write(log(path, 1), opening + encode_synced(len(opening)))
    lose_last_frame(path, lost)


def test_a_log_file_fsynced_after_the_base_lost_bytes_makes_the_store_corrupt(
    path: str,
) -> None:
    a_log_file_fsynced_after_the_base_lost_bytes(path)

    with pytest.raises(CorruptionError) as raised, KV(path) as kv:
        kv.get("k")
    assert path in str(raised.value)  # the base lost fsynced bytes
    assert store_files(path) == [path, log(path, 1)]  # nothing was changed


def test_salvage_keeps_a_log_file_fsynced_after_the_base_lost_bytes(path: str) -> None:
    """recovery="salvage" keeps every valid record and sets the damaged file
    aside: the records of a log file that was fsynced are no power loss."""
    a_log_file_fsynced_after_the_base_lost_bytes(path)

    with KV(path, recovery="salvage") as kv:
        assert kv.get_all() == {"k": 1, "j": 1}
    assert any(".corrupt-" in name for name in os.listdir(os.path.dirname(path)))


# -- clear, readonly, stats ------------------------------------------------------------


def test_clear_removes_every_file_of_the_chain(path: str) -> None:
    base = base_file(encode_set("a", 1))
    log_1 = log_file(1, 0, len(base), encode_set("b", 2))
    log_2 = log_file(2, 1, len(log_1), encode_set("c", 3))
    write(path, base)
    write(log(path, 1), log_1)
    write(log(path, 2), log_2)
    with KV(path) as kv:
        assert kv.get_all() == {"a": 1, "b": 2, "c": 3}
        assert kv.clear()
        assert store_files(path) == []
        assert kv.get_all() == {}
        kv.set("new", 1)
        assert store_files(path) == [path]
        kv.compact()  # numbered past every log file the store had
        assert store_files(path) == [path, log(path, 3)]
    assert_holds(path, {"new": 1})


def test_clear_removes_the_log_file_appends_moved_to_during_a_compaction(
    path: str, engine_on: tuple[Engine, ScriptedFiles],
) -> None:
    engine, files = engine_on
    engine.set("a", 1)
    held = files.hold("create", when=nth(2, in_thread("aiokv-compact")))
    compaction, errors = compact_in_background(engine)
    try:
        held.wait_reached()
        engine.set("b", 2)
        assert store_files(path) == [path, log(path, 1)]
        engine.clear()
        assert store_files(path) == []
    finally:
        held.release()
        compaction.join(JOIN)
    assert errors == []  # voided by the clear, not failed
    assert store_files(path) == []
    assert [name for name in os.listdir(os.path.dirname(path)) if ".tmp-" in name] == []
    engine.set("c", 3)
    engine.close()
    assert store_files(path) == [path]
    assert_holds(path, {"c": 3})


def test_readonly_reads_records_in_every_log_file(
    path: str, engine_on: tuple[Engine, ScriptedFiles],
) -> None:
    engine, files = engine_on
    model: dict[str, object] = {}

    def write_some(tag: str) -> None:
        for i in range(20):
            engine.set(f"{tag}{i % 7}", f"{tag}{i}")
            model[f"{tag}{i % 7}"] = f"{tag}{i}"
        engine.delete(f"{tag}0")
        del model[f"{tag}0"]

    write_some("base")
    engine.compact()
    write_some("one")
    engine.flush()
    assert store_files(path) == [path, log(path, 1)]
    with KV(path, readonly=True) as reader:
        assert reader.get_all() == model

    # A compaction under way: the base, the log file it moved appends from,
    # and the one it moved them to.
    held = files.hold("create", when=nth(2, in_thread("aiokv-compact")))
    compaction, errors = compact_in_background(engine)
    try:
        held.wait_reached()
        write_some("two")
        engine.flush()
        assert store_files(path) == [path, log(path, 1), log(path, 2)]
        with KV(path, readonly=True) as reader:
            assert reader.get_all() == model
            assert reader.stats().file_bytes == sum(
                result.end for _, result in replay_store(path).files)
    finally:
        held.release()
        compaction.join(JOIN)
    assert errors == []
    with KV(path, readonly=True) as reader:
        assert reader.get_all() == model


def test_stats_count_every_file_of_the_chain(path: str) -> None:
    with KV(path, durability="fsync") as kv:
        for i in range(300):
            kv.set(f"k{i % 100}", i)
        kv.compact()
        for i in range(300):
            kv.set(f"k{i % 150}", -i)
        kv.flush()
        stats = kv.stats()
        assert store_files(path) == [path, log(path, 1)]
        assert stats.file_bytes == store_size(path)
        assert stats.dead_bytes >= 0 and stats.live_bytes > 0
        assert stats.dead_bytes > 0  # 300 writes to 150 keys in log file 1
        assert stats.keys == 150
    with KV(path, durability="fsync") as kv:
        reopened = kv.stats()
        assert reopened.file_bytes == store_size(path)
        assert reopened.dead_bytes >= 0
        kv.compact()
        kv.flush()
        compacted = kv.stats()
        assert compacted.file_bytes == store_size(path)
        assert compacted.dead_bytes == 0


def test_stats_count_every_file_of_the_chain_while_a_compaction_runs(
    path: str,
) -> None:
    files = ScriptedFiles()
    engine = Engine(path, files=files, durability="fsync")
    engine.open()
    held = files.hold("create", when=nth(4, in_thread("aiokv-compact")))
    try:
        for i in range(200):
            engine.set(f"k{i % 50}", i)
        engine.compact()
        for i in range(200):
            engine.set(f"k{i % 60}", i)
        compaction, errors = compact_in_background(engine)
        try:
            held.wait_reached()
            for i in range(200):
                commit = engine.set(f"k{i % 70}", -i)
                if commit is not None:
                    commit.wait()
            engine.flush()
            assert store_files(path) == [path, log(path, 1), log(path, 2)]
            stats = engine.stats()
            assert stats.file_bytes == store_size(path)
            assert stats.dead_bytes >= 0
        finally:
            held.release()
            compaction.join(JOIN)
        assert errors == []
        engine.flush()
        assert engine.stats().file_bytes == store_size(path)
    finally:
        files.unscript()
        engine.close()


# -- failures -----------------------------------------------------------------------


@pytest.mark.parametrize("call", ["create", "link"])
def test_a_failed_creation_of_the_next_log_file_fails_only_that_compaction(
    path: str, engine_on: tuple[Engine, ScriptedFiles], call: str,
) -> None:
    engine, files = engine_on
    model: dict[str, object] = {}
    set_keys(engine, model, range(50))
    failure = files.fail(call, OSError(errno.ENOSPC, "No space left on device"),
                         when=nth(1, in_thread("aiokv-compact")))

    with pytest.raises(OSError, match="No space left"):
        engine.compact()

    assert failure.happened.is_set()
    assert store_files(path) == [path]
    assert sorted(os.listdir(os.path.dirname(path))) == ["s.kv", "s.kv.lock"]
    assert engine.stats().compactions == 0
    set_keys(engine, model, range(50, 100))
    assert engine.items() == model

    engine.compact()

    assert store_files(path) == [path, log(path, 1)]
    assert engine.stats().compactions == 1
    engine.set("after", 1)
    model["after"] = 1
    engine.close()
    assert_holds(path, model)


def test_a_compaction_that_fails_after_appends_moved_leaves_a_chain_the_next_one_compacts(
    path: str, engine_on: tuple[Engine, ScriptedFiles],
) -> None:
    engine, files = engine_on
    model: dict[str, object] = {}
    set_keys(engine, model, range(50))
    # The second create: the new base's temp file, after appends moved.
    files.fail("create", OSError(errno.ENOSPC, "No space left on device"),
               when=nth(2, in_thread("aiokv-compact")))

    with pytest.raises(OSError, match="No space left"):
        engine.compact()

    assert store_files(path) == [path, log(path, 1)]
    for i in range(25, 75):
        engine.set(f"k{i}", -i)
        model[f"k{i}"] = -i
    engine.flush()
    chain = replay_store(path)
    assert chain.corruption is None and chain.entries == model
    assert [number for number, _ in chain.files] == [0, 1]

    engine.compact()

    assert store_files(path) == [path, log(path, 2)]
    follows = follows_of(read(log(path, 2)))
    assert follows is not None and follows.previous == 1
    engine.close()
    assert_holds(path, model)


# -- reopening a chain a killed process left --------------------------------------------


def open_recording_descriptors(files: ScriptedFiles) -> dict[int, str]:
    """Make ``files`` note which file each descriptor opened for appending is."""
    names: dict[int, str] = {}

    def opener(call: Call) -> int:
        fd = REAL_FILES.open_append(call.args[0])
        names[fd] = call.args[0]
        return fd
    files.script("open_append", opener)
    return names


def killed_mid_compaction(path: str) -> bytes:
    """The files a process killed right after a compaction moved appends leaves:
    the base, whose last frames no fsync made durable yet, and log file 1
    holding a write. Returns the base's last frame."""
    unsynced = encode_set("j", "unsynced")
    base = base_file(encode_set("k", 0), unsynced)
    write(path, base)
    write(log(path, 1), log_file(1, 0, len(base), encode_set("k", 1)))
    return unsynced


def test_an_open_fsyncs_the_files_before_the_last_before_it_fsyncs_the_last(
    path: str,
) -> None:
    """The old file is fsynced before the new one ever is (aiokv._chain):
    after a reopen too, where nothing says the earlier files were."""
    killed_mid_compaction(path)
    files = ScriptedFiles()
    names = open_recording_descriptors(files)
    engine = Engine(path, files=files)
    engine.open()
    try:
        engine.set("after", 1)
        engine.flush()
    finally:
        engine.close()
    fsyncs = [names.get(call.args[0], "?") for call in files.calls
              if call.name in ("fsync", "write_synced")]
    assert log(path, 1) in fsyncs
    assert path in fsyncs[: fsyncs.index(log(path, 1))], fsyncs


def test_a_store_reopened_after_a_kill_mid_compaction_survives_a_power_loss(
    path: str,
) -> None:
    unsynced = killed_mid_compaction(path)
    files = ScriptedFiles()
    names = open_recording_descriptors(files)
    store = KV(path)
    store._engine = Engine(path, files=files)  # the store's file calls, recorded
    with store as kv:
        kv.set("after", 1)
        kv.flush()
        assert kv.get_all() == {"k": 1, "j": "unsynced", "after": 1}
    base_fsynced = any(call.name in ("fsync", "write_synced") and names.get(call.args[0]) == path
                       for call in files.calls)
    if not base_fsynced:
        lose_last_frame(path, unsynced)  # a power loss takes what no fsync made durable
    with KV(path) as kv:
        # A prefix of the writes: all of them, or those before the lost one.
        assert kv.get_all() in ({"k": 1, "j": "unsynced", "after": 1}, {"k": 0})


def test_salvage_of_a_base_with_a_damaged_header_keeps_a_copy_of_its_log_files(
    path: str,
) -> None:
    """The header names the first log file: damaged, no log file can be placed
    after the base. Salvage keeps the base's records and copies each log file
    aside before the new base replaces the chain (nothing is deleted unseen)."""
    with KV(path) as kv:
        kv.set("in the base", 1)
        kv.compact()
        kv.set("in the log file", 2)
    logged = read(log(path, 1))
    damaged = bytearray(read(path))
    damaged[13] ^= 0xFF  # the compaction count: the header's checksum fails
    write(path, bytes(damaged))
    with pytest.raises(CorruptionError):
        KV(path).open()
    with KV(path, recovery="salvage") as kv:
        assert kv.get_all() == {"in the base": 1}
    copies = [name for name in os.listdir(os.path.dirname(path))
              if name.startswith("s.kv.log-1.corrupt-")]
    assert len(copies) == 1
    assert read(os.path.join(os.path.dirname(path), copies[0])) == logged


def test_a_base_moved_without_its_log_file_is_refused_naming_the_missing_log_file(
    path: str, tmp_path: Path,
) -> None:
    with KV(path) as kv:
        kv.set("before", 1)
        kv.compact()
        kv.set("after", 2)  # in log file 1 only
    moved = str(tmp_path / "moved.kv")
    os.rename(path, moved)  # the base alone: its log file stays behind
    before = read(moved)
    with pytest.raises(CorruptionError, match=r"log file 1.*missing"):
        KV(moved).open()
    assert read(moved) == before  # refused, untouched
    with KV(moved, recovery="salvage") as kv:  # what the base alone holds
        assert kv.get_all() == {"before": 1}
    assert os.path.exists(log(path, 1))  # the log file is where it was, untouched
