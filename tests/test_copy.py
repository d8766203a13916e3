"""``aiokv copy`` between a local log and real servers, and the read-only
commands on a server URL.

Copies go log -> server, server -> log and server -> server (Redis to
Valkey), with every kind of value, expiry times, expired entries, keys the
destination holds already, a source open elsewhere, and a source and
destination that are one store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import KINDS, Servers, namespace_on

from aiokv import KV
from aiokv._cli import COPY_LEFT_EXISTING, main
from aiokv._copy import CopyError, copy_store

ENTRIES: dict[str, object] = {
    "int": 2**62 + 1, "neg": -7, "float": 1.25, "text": "ünï", "bytes": b"\x00\xff",
    "none": None, "bool": True, "list": [1, "two", [3.0]], "map": {"a": {"b": [None]}},
}


@pytest.fixture
def url_of(servers: Servers) -> Iterator[dict[str, str]]:
    """A fresh namespace on each kind of server: kind -> URL."""
    spaces = {kind: namespace_on(servers.get(kind)) for kind in KINDS}
    urls = {kind: f"{servers.get(kind).url}?prefix={space.__enter__()}"
            for kind, space in spaces.items()}
    yield urls
    for space in spaces.values():
        space.__exit__(None, None, None)


def fill(where: str, *, expiring: bool = True) -> None:
    with KV.from_url(where) as kv:
        for key, value in ENTRIES.items():
            kv.set(key, value)
        if expiring:
            kv.set("hour", "h", ttl=3600)
            kv.set("gone", "g", ttl=0.05)
    time.sleep(0.1)  # "gone" expires before the copy


def assert_holds_the_entries(where: str) -> None:
    with KV.from_url(where) as kv:
        held = kv.get_all()
        assert held == {**ENTRIES, "hour": "h"}
        assert [type(held[key]) for key in ENTRIES] == [type(v) for v in ENTRIES.values()]
        assert 3595 <= kv.ttl("hour") <= 3600
        assert kv.ttl("int") == -1


def test_a_local_store_copies_to_a_server_and_back(tmp_path: Path,
                                                   url_of: dict[str, str]) -> None:
    local = str(tmp_path / "state.kv")
    fill(local)
    report = copy_store(local, url_of["redis"])
    assert (report.copied, report.existing, report.mismatched) == (len(ENTRIES) + 1, [], [])
    assert_holds_the_entries(url_of["redis"])
    back = str(tmp_path / "back.kv")
    assert copy_store(url_of["redis"], back).copied == len(ENTRIES) + 1
    assert_holds_the_entries(back)


def test_a_server_store_copies_to_another_server(url_of: dict[str, str]) -> None:
    fill(url_of["redis"])
    assert copy_store(url_of["redis"], url_of["valkey"]).copied == len(ENTRIES) + 1
    assert_holds_the_entries(url_of["valkey"])


def test_keys_the_destination_holds_are_left_unless_overwrite(
        tmp_path: Path, url_of: dict[str, str]) -> None:
    local = str(tmp_path / "state.kv")
    fill(local, expiring=False)
    with KV.from_url(url_of["valkey"]) as kv:
        kv.set("text", "theirs")
    report = copy_store(local, url_of["valkey"])
    assert report.existing == ["text"] and report.copied == len(ENTRIES) - 1
    with KV.from_url(url_of["valkey"]) as kv:
        assert kv.get("text") == "theirs"
    assert copy_store(local, url_of["valkey"], overwrite=True).copied == len(ENTRIES)
    with KV.from_url(url_of["valkey"]) as kv:
        assert kv.get("text") == "ünï"


def test_a_source_open_elsewhere_or_the_same_store_is_refused(
        tmp_path: Path, url_of: dict[str, str]) -> None:
    local = str(tmp_path / "state.kv")
    with KV(local) as writer:
        writer.set("k", 1)
        with pytest.raises(CopyError, match="stop the writer first"):
            copy_store(local, url_of["redis"])
    with pytest.raises(CopyError, match="the same store"):
        copy_store(local, f"file://{local}")
    with pytest.raises(CopyError, match="no such store"):
        copy_store(str(tmp_path / "missing.kv"), url_of["redis"])


def test_a_live_copy_backs_up_a_store_its_program_has_open_after_compactions(
        tmp_path: Path) -> None:
    """docs/guarantees.md: back up a running program's store with a live copy:
    every acknowledged write, in the base and in its log files."""
    local, backup = str(tmp_path / "state.kv"), str(tmp_path / "backup.kv")
    with KV(local) as writer:
        for i in range(300):
            writer.set(f"k{i % 50}", i)
        writer.compact()
        writer.set("after the compaction", {"in": "the log file"}, ttl=3600)
        writer.delete("k0")
        report = copy_store(local, backup, live=True)
        expected = {**{f"k{i}": 250 + i for i in range(1, 50)},
                    "after the compaction": {"in": "the log file"}}
        assert report.copied == len(expected) and not report.mismatched
        writer.set("k1", "changed after the copy")
    with KV(backup) as copy:
        assert copy.get_all() == expected
        assert 3590 < copy.ttl("after the compaction") <= 3600
    with KV(local) as writer:  # the command, while the program has the store open
        other = str(tmp_path / "other.kv")
        assert main(["copy", local, other]) == 1  # without --live: refused
        assert main(["copy", "--live", "--quiet", local, other]) == 0
    with KV(other) as copy:
        assert copy.get("k1") == "changed after the copy"


def test_the_copy_command_reports_progress_and_its_exit_codes(
        tmp_path: Path, url_of: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    local = str(tmp_path / "state.kv")
    fill(local, expiring=False)
    assert main(["copy", local, url_of["redis"]]) == 0
    out, err = capsys.readouterr()
    assert f"copied {len(ENTRIES)} entries" in out and "verified" in out
    assert f"{len(ENTRIES)} of {len(ENTRIES)} entries" in err
    assert main(["copy", local, url_of["redis"], "--quiet"]) == COPY_LEFT_EXISTING
    out, err = capsys.readouterr()
    assert "copied 0 entries" in out and "--overwrite replaces them" in err
    assert main(["copy", local, local]) == 1
    assert "the same store" in capsys.readouterr().err


def test_the_read_only_commands_take_a_server_url(
        url_of: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    url = url_of["valkey"]
    fill(url)
    assert main(["keys", url, "[bhl]*"]) == 0
    assert capsys.readouterr().out.split() == ["bool", "bytes", "hour", "list"]
    assert main(["get", url, "map"]) == 0
    assert json.loads(capsys.readouterr().out) == {"a": {"b": [None]}}
    assert main(["get", url, "absent"]) == 1
    capsys.readouterr()
    assert main(["dump", url]) == 0
    dumped = json.loads(capsys.readouterr().out)
    assert dumped["bytes"] == {"$bytes": "AP8="} and dumped["hour"] == "h"
    assert main(["dump", url, "--jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    hour = next(line for line in lines if line["key"] == "hour")
    assert time.time() + 3500 < hour["expires"] <= time.time() + 3600
    assert main(["stats", url, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["keys"], stats["ttl_keys"]) == (len(ENTRIES) + 1, 1)
    assert stats["durability"].startswith("server: ")
