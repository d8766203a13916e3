"""The ``aiokv`` command on a store of several files (format 3): a base file,
then the log files ``<base>.log-N`` a compaction moves appends to (see
aiokv._chain). ``dump``, ``check``, ``stats`` and ``repair`` read them all;
run for real in a subprocess, as in test_cli."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from on_disk import replay_store, store_files, store_size
from test_cli import assert_one_line_error, run

from aiokv import KV, _cli
from aiokv._format import (
    FOLLOWS,
    HEADER_SIZE,
    SYNCED,
    decode_value,
    encode_follows,
    encode_header,
    encode_set,
)
from aiokv._log_files import LogFiles, OnDisk
from aiokv._recovery import Frame, read_frame
from aiokv._torture import _Store

BEFORE: dict[str, object] = {f"before{i}": {"n": i, "text": "b" * i} for i in range(5)}
"""Written before the compaction: held by the base file."""
AFTER: dict[str, object] = {f"after{i}": [i, "a" * i] for i in range(5)}
"""Written after it: held by the log file appends moved to."""


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "state.kv"


def log_1(store: Path) -> Path:
    return Path(f"{store}.log-1")


def make_chain(path: Path, before: dict[str, object] | None = None,
               after: dict[str, object] | None = None) -> None:
    """A store whose records are in two files: ``before`` in the base file
    (compacted), ``after`` appended to log file 1 once the compaction moved
    appends there. The lock file is removed, as test_cli's stores do."""
    with KV(path) as kv:
        for key, value in (BEFORE if before is None else before).items():
            kv.set(key, value)
        kv.compact()
        for key, value in (AFTER if after is None else after).items():
            kv.set(key, value)
    Path(f"{path}.lock").unlink()
    assert store_files(path) == [str(path), str(log_1(path))]


def frames(data: bytes) -> list[tuple[int, int, int]]:
    """(start, end, kind) of each frame after the header of an intact file."""
    found = []
    offset = HEADER_SIZE
    while offset < len(data):
        frame = read_frame(data, offset)
        assert isinstance(frame, Frame), (offset, frame)
        found.append((offset, frame.end, frame.kind))
        offset = frame.end
    return found


def records(data: bytes) -> list[tuple[int, int]]:
    """Where each record of an intact file is (the FOLLOWS and SYNCED frames aside)."""
    return [(start, end) for start, end, kind in frames(data) if kind not in (FOLLOWS, SYNCED)]


def flip(path: Path, offset: int) -> bytes:
    """Flip one byte of ``path``; the damaged bytes."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    return bytes(data)


def files_of(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (links followed), by relative name."""
    return {str(entry.relative_to(directory)): entry.read_bytes()
            for entry in sorted(directory.rglob("*")) if entry.is_file()}


def check_untouched(path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``check``; assert it changed no file of the store and created none."""
    before = files_of(path.parent)
    result = run("check", str(path))
    assert "Traceback" not in result.stderr
    assert files_of(path.parent) == before
    return result


# -- dump ---------------------------------------------------------------------


def test_dump_shows_records_appended_after_a_compaction(store: Path) -> None:
    make_chain(store)
    result = run("dump", str(store))
    assert result.returncode == 0, result
    assert json.loads(result.stdout) == {**BEFORE, **AFTER}
    assert result.stderr == ""


def test_dump_shows_what_the_log_file_changed_in_the_base_file(store: Path) -> None:
    make_chain(store, after={"before1": "overwritten"})
    with KV(store) as kv:  # appends continue in log file 1: a delete, an expiry
        kv.delete("before2")
        kv.set("before3", "soon", ttl=1000)
    result = run("dump", "--jsonl", str(store))
    assert result.returncode == 0, result
    rows = {row["key"]: row for row in map(json.loads, result.stdout.splitlines())}
    assert sorted(rows) == ["before0", "before1", "before3", "before4"]
    assert rows["before1"]["value"] == "overwritten"
    assert rows["before3"]["value"] == "soon" and rows["before3"]["expires"] is not None


def test_dump_names_the_log_file_that_is_corrupt(store: Path) -> None:
    make_chain(store)
    start, _ = records(log_1(store).read_bytes())[1]
    flip(log_1(store), start + 10)  # inside a record, with valid frames after it
    result = run("dump", str(store))
    assert_one_line_error(result)
    assert f"{log_1(store)} is corrupt at byte {start}" in result.stderr
    assert result.stdout == ""


def test_dump_warns_of_a_torn_tail_in_the_last_log_file_naming_it(store: Path) -> None:
    make_chain(store)
    start, _ = records(log_1(store).read_bytes())[-1]
    os.truncate(log_1(store), start + 5)  # the last record cut short
    result = run("dump", str(store))
    assert result.returncode == 0, result
    assert json.loads(result.stdout) == {**BEFORE, **dict(list(AFTER.items())[:-1])}
    assert f"warning: {log_1(store)} ends in a torn record (5 bytes at offset {start})" in (
        result.stderr)


# -- stats --------------------------------------------------------------------


def stats_of(path: Path) -> dict[str, object]:
    result = run("stats", "--json", str(path))
    assert result.returncode == 0, result
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


def test_stats_counts_records_in_every_file_of_the_store(store: Path) -> None:
    make_chain(store, after={})
    compacted = stats_of(store)
    # The log file holds its FOLLOWS record and SYNCED frames only: no record.
    assert compacted["records"] == len(records(store.read_bytes())) >= 1
    with KV(store) as kv:
        for key, value in AFTER.items():
            kv.set(key, value)
        kv.delete("before0")
    stats = stats_of(store)
    assert stats["records"] == compacted["records"] + len(AFTER) + 1  # the sets, the delete
    assert stats["keys"] == len(BEFORE) + len(AFTER) - 1
    assert stats["file_bytes"] == store_size(store) > store.stat().st_size


# -- check --------------------------------------------------------------------


def test_check_of_a_store_of_several_files_is_clean_and_lists_each_with_its_size(
        store: Path) -> None:
    make_chain(store)
    result = check_untouched(store)
    assert result.returncode == 0, result
    assert (f"{store}: clean: {len(BEFORE) + len(AFTER)} entries, {store_size(store)} bytes "
            f"in 2 files") in result.stdout
    assert f"    {store}: {store.stat().st_size} bytes (the base file)\n" in result.stdout
    assert f"    {log_1(store)}: {log_1(store).stat().st_size} bytes\n" in result.stdout


def test_check_names_the_log_file_that_is_corrupt(store: Path) -> None:
    make_chain(store)
    start, _ = records(log_1(store).read_bytes())[1]
    flip(log_1(store), start + 10)
    result = check_untouched(store)
    assert result.returncode == 4, result
    assert f"{log_1(store)}: corrupt at byte {start}: checksum mismatch" in result.stdout
    # Salvage would keep every record but the damaged one, of both files.
    kept = len(BEFORE) + len(AFTER) - 1
    assert f"`aiokv repair {store}` would keep {kept} entries" in result.stdout
    assert f"    {log_1(store)}: {log_1(store).stat().st_size} bytes (corrupt)" in result.stdout
    assert f"    {store}: {store.stat().st_size} bytes (the base file)" in result.stdout


def test_check_reports_a_torn_tail_in_the_last_log_file_as_fixable(store: Path) -> None:
    make_chain(store)
    start, _ = records(log_1(store).read_bytes())[-1]
    os.truncate(log_1(store), start + 5)
    result = check_untouched(store)
    assert result.returncode == 1, result
    kept = len(BEFORE) + len(AFTER) - 1
    assert (f"{log_1(store)}: torn tail: 5 bytes at offset {start} (a record cut short by a "
            f"crash); opening the store truncates them and keeps {kept} entries") in (
        result.stdout)
    # What check foretold is what an open does.
    with KV(store) as kv:
        assert len(kv.get_all()) == kept
    assert run("check", str(store)).returncode == 0


def test_check_reports_log_files_a_power_loss_left_out_as_fixable(store: Path) -> None:
    # A compaction had moved appends to log file 1 when the power went: the
    # base's last record never reached the disk, nor anything of log file 1
    # past its header (no SYNCED frame in it vouches for more).
    lost = encode_set("lost", "never fsynced")
    whole = encode_header(0, 0.0, HEADER_SIZE, 1) + encode_set("k", 1) + lost
    store.write_bytes(whole[:len(whole) - len(lost) + 3])
    log_1(store).write_bytes(encode_header(0, 0.0, HEADER_SIZE, 1, log_file=True)
                             + encode_follows(0, len(whole), 0) + encode_set("k", 2))
    result = check_untouched(store)
    assert result.returncode == 1, result
    assert "never fsynced: a power loss" in result.stdout
    assert f"opening the store leaves out {log_1(store)}" in result.stdout
    assert f"{store}: torn tail: 3 bytes at offset {len(whole) - len(lost)}" in result.stdout
    assert "keeps 1 entry" in result.stdout
    assert f"    {log_1(store)}: " in result.stdout and "(left out: " in result.stdout
    dumped = run("dump", str(store))
    assert json.loads(dumped.stdout) == {"k": 1}
    assert f"left out {log_1(store)}" in dumped.stderr
    with KV(store) as kv:  # as check said
        assert kv.get_all() == {"k": 1}
    assert not log_1(store).exists()


def test_check_and_dump_of_a_store_open_elsewhere_take_its_reserved_space_for_no_damage(
        store: Path) -> None:
    make_chain(store)
    with KV(store) as kv:
        kv.set("while open", 1)
        kv.flush()
        valid = kv.stats().file_bytes
        assert store_size(store) > valid  # space reserved past the last record of log file 1
        checked = run("check", str(store))
        dumped = run("dump", str(store))
    assert checked.returncode == 0, checked
    assert (f"{store}: clean: {len(BEFORE) + len(AFTER) + 1} entries, {valid} bytes in 2 "
            f"files, then ") in checked.stdout
    assert f"zero bytes at the end of {log_1(store)}" in checked.stdout
    assert dumped.returncode == 0 and dumped.stderr == ""
    assert json.loads(dumped.stdout) == {**BEFORE, **AFTER, "while open": 1}


def test_check_calls_a_log_file_a_finished_compaction_left_behind_clean(store: Path) -> None:
    make_chain(store)
    old_log = log_1(store).read_bytes()
    with KV(store) as kv:
        kv.compact()  # the new base names log file 2 as its first, and log file 1 goes
    log_1(store).write_bytes(old_log)  # as if a crash came before it was removed
    result = check_untouched(store)
    assert result.returncode == 0, result
    assert "clean: 10 entries" in result.stdout
    assert (f"    {log_1(store)}: {len(old_log)} bytes (left by a compaction cut short: the "
            f"base file holds its records") in result.stdout
    assert json.loads(run("dump", str(store)).stdout) == {**BEFORE, **AFTER}


def test_check_reports_a_log_file_past_a_gap_in_the_numbers_as_fixable(store: Path) -> None:
    make_chain(store)
    stray = Path(f"{store}.log-3")
    stray.write_bytes(log_1(store).read_bytes())
    result = check_untouched(store)
    assert result.returncode == 1, result
    assert f"{stray} follow no file of the store" in result.stdout
    assert f"    {stray}: {stray.stat().st_size} bytes (follows no file of the store)" in (
        result.stdout)
    dumped = run("dump", str(store))
    assert json.loads(dumped.stdout) == {**BEFORE, **AFTER}
    assert f"left out {stray}" in dumped.stderr
    with KV(store):  # as check said
        pass
    assert not stray.exists()


def test_check_follows_a_link_to_the_log_files_beside_its_target(tmp_path: Path) -> None:
    target = tmp_path / "data" / "state.kv"
    target.parent.mkdir()
    make_chain(target)
    link = tmp_path / "link.kv"
    link.symlink_to(target)
    result = check_untouched(link)
    assert result.returncode == 0, result
    assert f"{link}: clean: {len(BEFORE) + len(AFTER)} entries" in result.stdout
    assert f"    {log_1(target)}: " in result.stdout
    assert json.loads(run("dump", str(link)).stdout) == {**BEFORE, **AFTER}


# -- a log file given as the store --------------------------------------------


def test_a_log_file_given_as_the_store_is_refused_with_the_base_it_belongs_to(
        store: Path) -> None:
    make_chain(store)
    log = str(log_1(store))
    before = files_of(store.parent)
    checked = run("check", log)
    assert checked.returncode == 8, checked
    assert (f"cannot check {log}: a log file of the store at {store}, not a store; "
            f"check {store} instead") in checked.stderr
    for args in [("dump", log), ("stats", log), ("keys", log), ("get", log, "after0"),
                 ("set", log, "k", "1"), ("delete", log, "after0"), ("compact", log),
                 ("repair", log)]:
        result = run(*args)
        assert_one_line_error(result)
        assert f"{log}: a log file of the store at {store}, not a store" in result.stderr, args
    assert files_of(store.parent) == before  # nothing written, no lock file created


def test_a_renamed_log_file_is_refused_as_a_log_file_too(store: Path) -> None:
    make_chain(store)
    renamed = store.parent / "copy-of-a-log"
    renamed.write_bytes(log_1(store).read_bytes())
    checked = run("check", str(renamed))
    assert checked.returncode == 8, checked
    assert "a log file of a store" in checked.stderr and "not a store" in checked.stderr


# -- repair -------------------------------------------------------------------


def test_repair_keeps_the_records_of_every_file_and_copies_the_damaged_one_aside(
        store: Path) -> None:
    make_chain(store)
    start, _ = records(log_1(store).read_bytes())[1]  # after1
    damaged = flip(log_1(store), start + 10)
    result = run("repair", str(store))
    assert result.returncode == 0, result
    assert result.stderr == ""  # said once, by the command
    assert f"{log_1(store)}: skipped 1 damaged range(s)" in result.stdout
    assert f"the first at byte {start}" in result.stdout
    assert "kept 9 entries" in result.stdout
    copies = list(store.parent.glob("state.kv.log-1.corrupt-*"))
    assert len(copies) == 1
    assert copies[0].read_bytes() == damaged
    assert f"the damaged original is kept as {copies[0]}" in result.stdout
    assert not list(store.parent.glob("state.kv.corrupt-*"))  # the base was intact
    assert run("check", str(store)).returncode == 0
    with KV(store) as kv:
        assert kv.get_all() == {key: value for key, value in {**BEFORE, **AFTER}.items()
                                if key != "after1"}


def test_repair_counts_the_damage_in_each_file_and_keeps_each_damaged_original(
        store: Path) -> None:
    before: dict[str, object] = {f"before{i}": i for i in range(1500)}  # several frames
    make_chain(store, before=before)
    base_start, _ = records(store.read_bytes())[0]
    log_start, _ = records(log_1(store).read_bytes())[1]
    damaged_base = flip(store, base_start + 10)
    damaged_log = flip(log_1(store), log_start + 10)
    salvaged = replay_store(store, salvage=True)
    assert "before1499" in salvaged.entries and "after4" in salvaged.entries
    assert len(salvaged.entries) < len(before) + len(AFTER)
    result = run("repair", str(store))
    assert result.returncode == 0, result
    assert f"{store}: skipped 2 damaged range(s) in 2 files" in result.stdout
    assert f"  {store}: skipped 1 damaged range(s)" in result.stdout
    assert f"the first at byte {base_start}" in result.stdout
    assert f"  {log_1(store)}: skipped 1 damaged range(s)" in result.stdout
    assert f"the first at byte {log_start}" in result.stdout
    assert f"kept {len(salvaged.entries)} entries" in result.stdout
    base_copies = list(store.parent.glob("state.kv.corrupt-*"))
    log_copies = list(store.parent.glob("state.kv.log-1.corrupt-*"))
    assert [copy.read_bytes() for copy in base_copies] == [damaged_base]
    assert [copy.read_bytes() for copy in log_copies] == [damaged_log]
    for copy in base_copies + log_copies:
        assert f"the damaged original is kept as {copy}" in result.stdout
    with KV(store) as kv:
        assert kv.get_all() == {key: decode_value(value)
                                for key, value in salvaged.entries.items()}


def test_repair_cuts_a_torn_tail_of_the_last_log_file_naming_it(store: Path) -> None:
    make_chain(store)
    start, _ = records(log_1(store).read_bytes())[-1]
    os.truncate(log_1(store), start + 5)
    result = run("repair", str(store))
    assert result.returncode == 0, result
    assert f"{log_1(store)}: cut a torn tail of 5 bytes at offset {start}" in result.stdout
    assert re.search(r"kept 9 entries \(0 with an expiry\), 2 files, \d+ bytes", result.stdout)
    assert not list(store.parent.glob("*.corrupt-*"))
    assert run("check", str(store)).returncode == 0


# -- compact, torture -----------------------------------------------------------


def test_compact_counts_the_bytes_of_every_file_of_the_store(store: Path) -> None:
    make_chain(store)
    with KV(store) as kv:  # overwrites, appended to log file 1
        for i in range(300):
            kv.set("counter", i)
    before = store_size(store)
    result = run("compact", str(store))
    assert result.returncode == 0, result
    after = store_size(store)
    assert after < before // 10
    assert f"{store}: {before} bytes -> {after} bytes" in result.stdout


def test_torture_keeps_every_file_of_the_store_as_the_kill_left_it(tmp_path: Path) -> None:
    kept = _Store(tmp_path)
    make_chain(kept.path)
    Path(f"{kept.as_killed}.log-7").write_bytes(b"from an earlier kill")
    kept.keep_as_killed()
    assert store_files(kept.as_killed) == [str(kept.as_killed), f"{kept.as_killed}.log-1"]
    assert Path(f"{kept.as_killed}.log-1").read_bytes() == log_1(kept.path).read_bytes()
    assert replay_store(kept.as_killed).entries == replay_store(kept.path).entries
    kept.forget_as_killed()
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["state.kv", "state.kv.log-1"]


# -- the tools on a store its program is writing --------------------------------

LIVE_WRITER = """
import sys
from aiokv import KV
with KV(sys.argv[1]) as kv:
    print("open", flush=True)
    i = 0
    while True:
        i += 1
        kv.set("counter", i)
        kv.set(f"k{i % 300}", "x" * 50)
        if i % 3000 == 0:
            kv.compact()
"""


def test_check_and_dump_of_a_store_its_program_is_writing_and_compacting_find_no_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Found by running ``aiokv check`` against a live store: about 1 check in
    100 caught a record half copied into the mapped window and called it a
    torn tail (exit 1). What a writer leaves for an instant (that, or a log
    file that moved on since it was read) is read again before it is
    reported; a crash's torn tail stays (test_check_reports_a_torn_tail...)."""
    path = str(tmp_path / "live.kv")
    writer = subprocess.Popen([sys.executable, "-c", LIVE_WRITER, path],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "open\n"
        codes: list[int] = []
        counters: list[int] = []
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            codes.append(_cli.main(["check", path]))
            checked = capsys.readouterr()
            assert codes[-1] == 0, checked.out + checked.err
            assert _cli.main(["dump", path]) == 0
            dumped = capsys.readouterr()
            assert "warning" not in dumped.err, dumped.err
            counters.append(json.loads(dumped.out)["counter"])
    finally:
        writer.kill()
        writer.wait()
        assert writer.stdout is not None
        writer.stdout.close()
    assert len(codes) > 20
    assert set(codes) == {0}, codes
    assert counters == sorted(counters) and counters[-1] > counters[0]
    with KV(path) as kv:  # and what the kill left opens
        assert kv.get("counter") >= counters[-1]


def test_a_record_half_copied_when_check_reads_is_read_again_not_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """The instant the live test above catches now and then, made certain:
    the first read sees the last record cut short, the next one whole."""
    path = str(tmp_path / "s.kv")
    with KV(path) as kv:
        kv.set("a", 1)
        kv.set("b", "the record being copied")
    real_read = LogFiles.read
    reads: list[int] = []

    def mid_copy(self: LogFiles) -> OnDisk:
        found = real_read(self)
        reads.append(1)
        if len(reads) == 1 and found.base is not None:
            found.base = found.base[:-7]  # its last 7 bytes not copied yet
        return found

    monkeypatch.setattr(LogFiles, "read", mid_copy)
    assert _cli.main(["check", path]) == 0
    assert "clean" in capsys.readouterr().out and len(reads) == 2
    reads.clear()
    monkeypatch.setattr(_cli, "SETTLE_READS", 1)  # read once: the instant is reported
    assert _cli.main(["check", path]) == 1
    assert "torn tail" in capsys.readouterr().out
