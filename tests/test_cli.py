"""The ``aiokv`` command, run for real in a subprocess (``python -m aiokv``)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from on_disk import store_size

import aiokv
from aiokv import KV, CorruptionError, _cli
from aiokv._format import HEADER_SIZE
from aiokv._torture import Report, TortureResult

SUBCOMMANDS = ["demo", "dump", "get", "set", "delete", "keys", "stats", "check", "repair",
               "compact", "migrate"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiokv", *args],
        capture_output=True, text=True, timeout=60, cwd=cwd, check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int = 1) -> None:
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("aiokv: error: ")


def make_store(path: Path, items: dict[str, object]) -> list[tuple[int, int]]:
    """Write ``items`` one record each, opening and closing the store for each.

    Returns where each record's frame starts and ends (each close() adds a
    SYNCED frame after it). The lock file the store leaves is removed, so
    tests can tell whether a command created one.
    """
    frames = []
    for key, value in items.items():
        with KV(path) as kv:
            start = kv.stats().file_bytes
            kv.set(key, value)
            frames.append((start, kv.stats().file_bytes))
    Path(f"{path}.lock").unlink()
    return frames


ITEMS: dict[str, object] = {f"key{i}": {"n": i, "text": "x" * i} for i in range(6)}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "state.kv"


# -- dump ---------------------------------------------------------------------


def test_dump_prints_live_entries_with_the_bytes_marker(store: Path) -> None:
    with KV(store) as kv:
        kv.set("n", 42)
        kv.set("raw", b"\x00\xffbin")
        kv.set("nested", {"list": [1, b"\x01"], "s": "text"})
        kv.set("gone", "soon", ttl=0.01)
    time.sleep(0.05)
    result = run("dump", str(store))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "n": 42,
        "raw": {"$bytes": base64.b64encode(b"\x00\xffbin").decode()},
        "nested": {"list": [1, {"$bytes": "AQ=="}], "s": "text"},
    }


def test_dump_jsonl_gives_the_expiry_time(store: Path) -> None:
    before = time.time()
    with KV(store) as kv:
        kv.set("a", [1, 2])
        kv.set("b", "temporary", ttl=100)
    result = run("dump", "--jsonl", str(store))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["key"] for row in rows] == ["a", "b"]
    assert rows[0] == {"key": "a", "value": [1, 2], "expires": None}
    assert rows[1]["value"] == "temporary"
    assert before + 100 <= rows[1]["expires"] <= time.time() + 100


def test_dump_works_while_the_store_is_open_elsewhere(store: Path) -> None:
    with KV(store) as kv:
        kv.set("a", 1)
        kv.flush()
        assert store.stat().st_size > kv.stats().file_bytes  # space reserved for appends
        result = run("dump", str(store))
        checked = run("check", str(store))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"a": 1}
    # The zeros reserved after the last record are no torn record: one verdict.
    assert result.stderr == ""
    assert checked.returncode == 0 and "clean" in checked.stdout


# -- get / set / delete / keys ------------------------------------------------


def test_set_get_delete_keys_round_trip(store: Path) -> None:
    assert run("set", str(store), "n", "42").returncode == 0
    assert run("set", str(store), "obj", '{"a": [1, null, true]}').returncode == 0
    assert run("set", str(store), "word", "hello world").returncode == 0  # not JSON
    assert run("set", str(store), "quoted", '"7"').returncode == 0
    assert run("set", str(store), "blob", '{"$bytes": "AAE="}').returncode == 0
    assert run("set", str(store), "user:1", "x").returncode == 0
    assert json.loads(run("get", str(store), "n").stdout) == 42
    assert json.loads(run("get", str(store), "obj").stdout) == {"a": [1, None, True]}
    assert json.loads(run("get", str(store), "word").stdout) == "hello world"
    assert json.loads(run("get", str(store), "quoted").stdout) == "7"
    assert json.loads(run("get", str(store), "blob").stdout) == {"$bytes": "AAE="}
    with KV(store) as kv:  # the values are real ones, not their JSON text
        assert kv.get("n") == 42
        assert kv.get("blob") == b"\x00\x01"
        assert kv.get("quoted") == "7"
    keys = run("keys", str(store))
    assert keys.returncode == 0
    assert keys.stdout.splitlines() == ["blob", "n", "obj", "quoted", "user:1", "word"]
    assert run("keys", str(store), "user:*").stdout.splitlines() == ["user:1"]
    deleted = run("delete", str(store), "n")
    assert deleted.returncode == 0
    assert "deleted" in deleted.stdout
    assert run("delete", str(store), "n").returncode == 0  # absent is fine
    missing = run("get", str(store), "n")
    assert_one_line_error(missing)
    assert "'n'" in missing.stderr


def test_set_with_ttl(store: Path) -> None:
    assert run("set", "--ttl", "60", str(store), "t", "1").returncode == 0
    with KV(store) as kv:
        assert 59 <= kv.ttl("t") <= 60
    assert run("set", "--ttl", "0.05", str(store), "short", "1").returncode == 0
    time.sleep(0.1)
    assert run("keys", str(store)).stdout.splitlines() == ["t"]


def test_bad_values_are_one_line_errors(store: Path) -> None:
    assert_one_line_error(run("set", "--ttl", "-1", str(store), "k", "1"))
    assert_one_line_error(run("set", str(store), "k", str(1 << 70)))
    assert_one_line_error(run("set", str(store), "k", '{"$bytes": "not base64!"}'))


def test_reading_commands_refuse_a_missing_file(store: Path) -> None:
    for command in ["get", "delete"]:
        assert_one_line_error(run(command, str(store), "k"))
    for command in ["keys", "stats", "dump", "compact", "repair", "migrate"]:
        assert_one_line_error(run(command, str(store)))
    assert not store.exists()


def test_writes_to_a_store_open_elsewhere_are_refused_naming_its_process(
        store: Path) -> None:
    with KV(store) as kv:
        kv.set("a", 1)
        for args in [("set", "a", "2"), ("delete", "a"), ("compact",), ("repair",)]:
            result = run(args[0], str(store), *args[1:])
            assert_one_line_error(result)
            assert f"is open in process {os.getpid()}" in result.stderr
        assert kv.get("a") == 1


def test_reads_of_a_store_open_elsewhere_work_and_change_nothing(store: Path) -> None:
    with KV(store) as kv:
        kv.set("a", 1)
        kv.flush()
        before = store.read_bytes()
        assert run("get", str(store), "a").stdout == "1\n"
        assert run("keys", str(store)).stdout == "a\n"
        assert "keys: 1" in run("stats", str(store)).stdout
        assert store.read_bytes() == before
        assert kv.get("a") == 1


def test_quick_edits_refuse_a_legacy_json_file(store: Path) -> None:
    store.write_text('{"a": 1}')
    result = run("get", str(store), "a")
    assert_one_line_error(result)
    assert "migrate" in result.stderr
    assert store.read_text() == '{"a": 1}'


# -- stats --------------------------------------------------------------------


def test_stats_human_and_json(store: Path) -> None:
    with KV(store) as kv:
        kv.set("a", 1)
        kv.set("a", 2)
        kv.set("t", "x", ttl=100)
    human = run("stats", str(store))
    assert human.returncode == 0, human.stderr
    lines = dict(line.split(": ", 1) for line in human.stdout.splitlines())
    assert lines["keys"] == "2"
    assert lines["TTL keys"] == "1"
    assert lines["compactions"] == "0"
    assert lines["last compaction"] == "never"
    assert lines["file bytes"] == str(store.stat().st_size)
    assert lines["records"] == "3"  # three sets, no compaction yet
    assert {"live bytes", "dead bytes"} <= lines.keys()
    as_json = json.loads(run("stats", "--json", str(store)).stdout)
    assert as_json["keys"] == 2
    assert as_json["ttl_keys"] == 1
    assert as_json["file_bytes"] == store.stat().st_size
    assert as_json["live_bytes"] + as_json["dead_bytes"] == as_json["file_bytes"]
    assert as_json["last_compaction"] is None


# -- check --------------------------------------------------------------------


def check_untouched(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``check`` and assert it changed nothing and created no lock file."""
    before = path.read_bytes() if path.exists() else None
    result = run("check", str(path), *args)
    assert "Traceback" not in result.stderr
    assert (path.read_bytes() if path.exists() else None) == before
    assert not Path(f"{path}.lock").exists()
    return result


def test_check_clean(store: Path) -> None:
    make_store(store, ITEMS)
    result = check_untouched(store)
    assert result.returncode == 0, result
    assert "clean" in result.stdout


def test_check_torn_tail(store: Path) -> None:
    frames = make_store(store, ITEMS)
    start, end = frames[-1]
    os.truncate(store, end - 3)
    result = check_untouched(store)
    assert result.returncode == 1, result
    assert "torn tail" in result.stdout
    assert f"offset {start}" in result.stdout
    assert f"{end - 3 - start} bytes" in result.stdout


def test_check_names_a_gap_a_power_loss_left_and_the_records_after_it(store: Path) -> None:
    with KV(store) as kv:
        kv.set("fsynced", 1)
        kv.flush()
        start = kv.stats().file_bytes
        for i in range(3):
            kv.set(f"late{i}", "x" * 40)
        image = bytearray(store.read_bytes()[:kv.stats().file_bytes])  # no reserved space
    Path(f"{store}.lock").unlink()
    # What a power loss may leave: the first unsynced bytes never reached the
    # disk, later ones did (the SYNCED frame before late0 is lost with them).
    image[start:start + 40] = bytes(40)
    store.write_bytes(bytes(image))
    result = check_untouched(store)
    assert result.returncode == 1, result
    assert f"offset {start}: a gap of bytes never fsynced" in result.stdout
    assert "then 2 record(s)" in result.stdout and "keeps 1 entry" in result.stdout


def test_check_of_a_store_open_at_flush_is_clean_despite_its_reserved_space(
    store: Path,
) -> None:
    make_store(store, ITEMS)
    with KV(store) as kv:
        kv.set("while open", 1)
        assert store.stat().st_size > kv.stats().file_bytes  # space reserved past the log
        result = run("check", str(store))
    assert result.returncode == 0, result
    assert "clean" in result.stdout and "zero bytes" in result.stdout


def test_check_corruption(store: Path) -> None:
    frames = make_store(store, ITEMS)
    data = bytearray(store.read_bytes())
    data[frames[2][0] + 10] ^= 0xFF  # inside the third record, with valid frames after it
    store.write_bytes(bytes(data))
    result = check_untouched(store)
    assert result.returncode == 4, result
    assert f"corrupt at byte {frames[2][0]}" in result.stdout
    assert "checksum" in result.stdout


def test_check_empty_file(store: Path) -> None:
    store.write_bytes(b"")
    result = check_untouched(store)
    assert result.returncode == 1, result
    assert "empty" in result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), (b'{"a": 1, "b": [2]}', "migrate"), (b"junk" * 50, "not an aiokv")],
    ids=["missing", "json", "junk"],
)
def test_check_cannot_check(store: Path, content: bytes | None, message: str) -> None:
    if content is not None:
        store.write_bytes(content)
    result = check_untouched(store)
    assert result.returncode == 8, result
    assert message in result.stderr


def test_check_header_damage_is_corruption(store: Path) -> None:
    make_store(store, ITEMS)
    data = bytearray(store.read_bytes())
    data[HEADER_SIZE - 8] ^= 0x01
    store.write_bytes(bytes(data))
    assert check_untouched(store).returncode == 4


# -- repair / compact / migrate -----------------------------------------------


def test_repair_keeps_the_valid_entries(store: Path) -> None:
    frames = make_store(store, ITEMS)
    data = bytearray(store.read_bytes())
    data[frames[2][0] + 10] ^= 0xFF  # damages key2
    store.write_bytes(bytes(data))
    result = run("repair", str(store))
    assert result.returncode == 0, result
    assert "kept 5 entries" in result.stdout
    copies = list(store.parent.glob("state.kv.corrupt-*"))
    assert len(copies) == 1
    assert copies[0].read_bytes() == bytes(data)
    assert str(copies[0]) in result.stdout
    assert run("check", str(store)).returncode == 0
    with KV(store) as kv:
        assert kv.get_all() == {key: value for key, value in ITEMS.items() if key != "key2"}


def three_thousand_records(path: Path) -> bytes:
    with KV(path) as kv:
        for i in range(3000):
            kv.set(f"k{i}", i)
    Path(f"{path}.lock").unlink()
    return path.read_bytes()


# Where one flipped byte (or two) leaves a header no longer valid, and
# how many of the 3,000 records stay intact.
HEADER_FLIPS = {
    "compactions counter": ([15], 3000),
    "magic": ([1], 3000),
    "header checksum": ([HEADER_SIZE - 1], 3000),
    "magic and the first record": ([1, HEADER_SIZE + 5], 2999),
}


@pytest.mark.parametrize("flip", list(HEADER_FLIPS))
def test_repair_keeps_every_intact_record_whatever_the_header_says(
        store: Path, flip: str) -> None:
    data = bytearray(three_thousand_records(store))
    offsets, intact = HEADER_FLIPS[flip]
    for offset in offsets:
        data[offset] ^= 0x01
    store.write_bytes(bytes(data))
    checked = check_untouched(store)
    assert checked.returncode == 4, checked
    assert f"would keep {intact} entries" in checked.stdout
    result = run("repair", str(store))
    assert result.returncode == 0, result
    assert f"kept {intact} entries" in result.stdout
    assert result.stderr == ""  # said once, by the command, not also by the store's log
    assert run("check", str(store)).returncode == 0
    with KV(store) as kv:
        assert kv.get_all() == {f"k{i}": i for i in range(3000 - intact, 3000)}


def test_repair_of_a_file_with_no_intact_record_fails_and_leaves_it(store: Path) -> None:
    header = bytearray(three_thousand_records(store)[:HEADER_SIZE])
    header[15] ^= 0x01  # a damaged header, then no valid frame at all
    junk = bytes(header) + bytes(range(256)) * 40
    store.write_bytes(junk)
    checked = check_untouched(store)
    assert checked.returncode == 4
    assert "no intact record" in checked.stdout
    result = run("repair", str(store))
    assert_one_line_error(result)
    assert "no intact record was found" in result.stderr
    assert store.read_bytes() == junk
    assert sorted(p.name for p in store.parent.iterdir()) == ["state.kv"]


def test_compact_shrinks_an_overwritten_log(store: Path) -> None:
    with KV(store) as kv:
        for i in range(300):
            kv.set("counter", i)
    before = store_size(store)
    result = run("compact", str(store))
    assert result.returncode == 0, result
    after = store_size(store)  # the new base, and the log file appends moved to
    assert after < before // 10
    assert f"{before} bytes -> {after} bytes" in result.stdout
    with KV(store) as kv:
        assert kv.get_all() == {"counter": 299}


def test_migrate_converts_a_json_file_and_keeps_a_backup(store: Path) -> None:
    original = json.dumps({"a": 1, "b": [1, "two"], "c": {"d": None}}).encode()
    store.write_bytes(original)
    result = run("migrate", str(store))
    assert result.returncode == 0, result
    assert Path(f"{store}.bak").read_bytes() == original
    assert run("check", str(store)).returncode == 0
    assert json.loads(run("dump", str(store)).stdout) == json.loads(original)
    again = run("migrate", str(store))
    assert again.returncode == 0
    assert "already" in again.stdout


def test_migrate_says_once_what_it_converted(store: Path) -> None:
    store.write_text(json.dumps({"a": 1}))
    result = run("migrate", str(store))
    assert result.returncode == 0, result
    assert result.stdout.count("converted") == 1 and len(result.stdout.splitlines()) == 1
    assert result.stderr == ""


def test_migrate_of_an_int_beyond_64_bits_names_it_and_offers_a_way_through(
        store: Path) -> None:
    original = json.dumps({"a": 1, "big": 2**70, "nested": {"list": [1, -(2**64)]}})
    store.write_text(original)
    refused = run("migrate", str(store))
    assert_one_line_error(refused)
    assert "'big'" in refused.stderr and "64-bit" in refused.stderr
    assert "corrupt" not in refused.stderr
    assert "--ints-as-strings" in refused.stderr
    assert store.read_text() == original
    assert sorted(p.name for p in store.parent.iterdir()) == ["state.kv", "state.kv.lock"]

    result = run("migrate", "--ints-as-strings", str(store))
    assert result.returncode == 0, result
    assert "2 int(s) beyond 64 bits stored as strings" in result.stdout
    assert Path(f"{store}.bak").read_text() == original
    assert json.loads(run("dump", str(store)).stdout) == {
        "a": 1, "big": str(2**70), "nested": {"list": [1, str(-(2**64))]}}


def test_opening_a_json_file_with_an_int_beyond_64_bits_raises_value_error(
        store: Path) -> None:
    store.write_text(json.dumps({"big": 2**64}))
    with pytest.raises(ValueError, match="--ints-as-strings") as raised:
        KV(store).open()
    assert not isinstance(raised.value, CorruptionError)
    with pytest.raises(ValueError, match="'big'"):
        KV(store, readonly=True).open()
    assert json.loads(store.read_text()) == {"big": 2**64}


def test_migrate_of_an_empty_file_says_it_is_empty(store: Path) -> None:
    store.write_bytes(b"")
    result = run("migrate", str(store))
    assert result.returncode == 0, result
    assert "is empty" in result.stdout and "already" not in result.stdout
    assert store.read_bytes() == b""


def test_migrate_refuses_junk(store: Path) -> None:
    store.write_bytes(b"junk" * 10)
    assert_one_line_error(run("migrate", str(store)))
    assert store.read_bytes() == b"junk" * 10


# -- usage ------------------------------------------------------------------------


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help(command: str) -> None:
    result = run(command, "--help")
    assert result.returncode == 0
    assert f"aiokv {command}" in result.stdout


def test_help_documents_the_bytes_marker_and_exit_codes() -> None:
    assert "$bytes" in run("dump", "--help").stdout
    check_help = run("check", "--help").stdout
    for code in "0148":
        assert f"  {code}  " in check_help


@pytest.mark.parametrize("args", [(), ("frobnicate",), ("get", "only-a-file"),
                                  ("set", "f", "k", "v", "--ttl", "soon")])
def test_bad_usage_exits_2(args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "usage:" in result.stderr


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"aiokv {aiokv.__version__}"


@pytest.mark.parametrize(("args", "usage"), [
    (("stats", "f", "--bogus"), "usage: aiokv stats"),
    (("get", "only-a-file"), "usage: aiokv get"),
    (("set", "f", "k", "v", "--ttl", "soon"), "usage: aiokv set"),
    (("repair", "f", "extra"), "usage: aiokv repair"),
    (("migrate",), "usage: aiokv migrate"),
])
def test_a_usage_error_shows_the_subcommands_usage(args: tuple[str, ...], usage: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert result.stderr.startswith(usage), result.stderr


def test_the_demo_stores_reopens_and_shows_a_counter_a_countdown_and_dead_bytes(
        tmp_path: Path) -> None:
    path = tmp_path / "demo.kv"
    first = run("demo", "--path", str(path))
    assert first.returncode == 0, first
    assert "this demo has run 1 time(s)" in first.stdout
    assert "'session' expires in 60 s" in first.stdout
    countdown = re.findall(r"ttl\('cooldown'\) = (-?\d+)", first.stdout)
    assert countdown[-1] == "-2" and len(countdown) >= 2
    assert [int(left) for left in countdown[:-1]] == sorted(
        (int(left) for left in countdown[:-1]), reverse=True)
    assert "get() -> None, exists() -> False" in first.stdout
    assert "Dead bytes are the records" in first.stdout and "640 KiB" in first.stdout
    second = run("demo", "--path", str(path))
    assert "this demo has run 2 time(s)" in second.stdout  # incr, kept across runs
    assert "  session = 'started by run 1'" in second.stdout  # add() kept the first one
    with KV(path) as kv:
        assert kv.get("demo:runs") == 2
        assert 0 < kv.ttl("session") <= 60
        assert not kv.exists("cooldown")


# -- torture ------------------------------------------------------------------------


def test_torture_finds_no_violation_and_cleans_up(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aiokv", "torture", str(tmp_path), "--seconds", "5",
         "--seed", "12345"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result
    assert "seed 12345" in result.stdout
    counts = dict(line.split(": ", 1) for line in result.stdout.splitlines()[1:])
    assert int(counts["trials"]) > 0
    assert counts["kills"] == counts["trials"]
    assert int(counts["writes checked"]) > 0
    assert int(counts["compactions interrupted"]) >= 0
    assert int(counts["clears interrupted"]) >= 0
    assert counts["violations"] == "0"
    assert list(tmp_path.iterdir()) == [], "the stores of a clean run are deleted"


def test_torture_help() -> None:
    result = run("torture", "--help")
    assert result.returncode == 0
    assert "aiokv torture" in result.stdout
    assert "--seconds" in result.stdout and "--durability" in result.stdout


@pytest.mark.parametrize("args", [(), ("--seconds", "5"), ("{dir}", "--seconds", "0"),
                                  ("{dir}", "--seconds", "soon"), ("{dir}", "--seed", "x"),
                                  ("{dir}", "--durability", "always"), ("{file}",),
                                  ("{missing}",)])
def test_torture_bad_usage_exits_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    paths = {"dir": str(tmp_path), "file": str(tmp_path / "a-file"),
             "missing": str(tmp_path / "missing")}
    result = run("torture", *(arg.format(**paths) for arg in args))
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert "usage:" in result.stderr
    assert result.stdout == ""
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a-file"]


def test_torture_exits_1_and_prints_a_violation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # In-process: a real violation needs a broken store, so the run is faked.
    def broken_run(directory: object, seconds: float, durability: str, seed: int,
                   report: Report) -> TortureResult:
        report("trial 0: 'k001' lost its acknowledged write #5 (set)")
        return TortureResult(seed=seed, durability=durability, trials=1, kills=1,
                             writes_checked=5, violations=["trial 0: lost"],
                             kept=[tmp_path / "torture-x" / "store-0"])

    monkeypatch.setattr(_cli, "torture", broken_run)
    assert _cli.main(["torture", str(tmp_path), "--seconds", "1", "--seed", "9"]) == 1
    out = capsys.readouterr().out
    assert "'k001' lost its acknowledged write #5" in out
    assert "violations: 1" in out
    assert "kept for inspection:" in out and "--seed 9" in out
