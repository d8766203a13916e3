"""Opening damaged, cut and foreign files: the recovery rule on real files."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

import aiokv
from aiokv._files import REAL_FILES
from aiokv._format import HEADER_SIZE, MAGIC, SYNCED, encode_header, encode_set, encode_synced


async def write_store(path: str, items: dict[str, object]) -> None:
    async with aiokv.AioKV(path) as kv:
        for key, value in items.items():
            await kv.set(key, value)


def frame_ends(path: str) -> list[int]:
    """Offsets just past each frame of an uncompacted log written by set().

    SYNCED frames (close() ends the log with one) hold no entry: skipped.
    """
    data = Path(path).read_bytes()
    ends = []
    offset = HEADER_SIZE
    while offset < len(data):
        kind = data[offset + 6]
        offset += int.from_bytes(data[offset + 2 : offset + 6], "big")
        if kind != SYNCED:
            ends.append(offset)
    return ends


ITEMS: dict[str, object] = {f"key{i}": {"n": i, "text": "x" * i} for i in range(12)}


async def test_truncation_at_every_offset_opens_to_the_records_before_the_cut(
    store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    await write_store(store_path, ITEMS)
    original = Path(store_path).read_bytes()
    ends = frame_ends(store_path)
    keys = list(ITEMS)
    for cut in range(HEADER_SIZE, len(original) + 1):
        Path(store_path).write_bytes(original[:cut])
        complete = sum(1 for end in ends if end <= cut)
        async with aiokv.AioKV(store_path) as kv:
            assert await kv.get_all() == {k: ITEMS[k] for k in keys[:complete]}, cut
            await kv.set("after-the-cut", cut)
        async with aiokv.AioKV(store_path) as kv:
            assert await kv.get("after-the-cut") == cut
            assert len(await kv.get_all()) == complete + 1


async def test_a_torn_tail_is_truncated_with_a_warning_naming_the_byte_count(
    store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    await write_store(store_path, ITEMS)
    cut = frame_ends(store_path)[-1] - 7  # inside the last set's frame
    with open(store_path, "r+b") as file:
        file.truncate(cut)
    last_end = frame_ends(store_path)[-2]
    with caplog.at_level(logging.WARNING, logger="aiokv"):
        async with aiokv.AioKV(store_path) as kv:
            assert len(await kv.get_all()) == len(ITEMS) - 1
    # What opening found is fsynced, and a SYNCED frame says so.
    assert os.path.getsize(store_path) == last_end + len(encode_synced(last_end))
    assert f"truncating {cut - last_end} bytes" in caplog.text


async def test_a_zero_filled_tail_is_cut_and_new_appends_follow_the_last_good_frame(
    store_path: str,
) -> None:
    await write_store(store_path, ITEMS)
    size = os.path.getsize(store_path)
    with open(store_path, "ab") as file:
        file.write(b"\x00" * 8192)
    async with aiokv.AioKV(store_path) as kv:
        await kv.set("new", 1)
    end = size + len(encode_set("new", 1))
    assert os.path.getsize(store_path) == end + len(encode_synced(end))
    async with aiokv.AioKV(store_path) as kv:
        assert await kv.get("new") == 1 and len(await kv.get_all()) == len(ITEMS) + 1


async def test_a_flipped_byte_before_the_last_frame_raises_and_leaves_the_file_untouched(
    store_path: str,
) -> None:
    await write_store(store_path, ITEMS)
    data = bytearray(Path(store_path).read_bytes())
    ends = frame_ends(store_path)
    for position in range(HEADER_SIZE, ends[-2]):
        damaged = data.copy()
        damaged[position] ^= 0x20
        Path(store_path).write_bytes(damaged)
        kv = aiokv.AioKV(store_path)
        with pytest.raises(aiokv.CorruptionError) as raised:
            await kv.open()
        assert raised.value.path == store_path
        assert raised.value.offset <= position
        assert Path(store_path).read_bytes() == damaged
        if position > HEADER_SIZE + 40:
            break  # the rest is covered byte by byte in test_format.py


async def test_a_corrupt_store_stays_unopened_and_can_be_retried(store_path: str) -> None:
    await write_store(store_path, ITEMS)
    original = Path(store_path).read_bytes()
    damaged = bytearray(original)
    damaged[HEADER_SIZE + 10] ^= 0x01
    Path(store_path).write_bytes(damaged)
    kv = aiokv.AioKV(store_path)
    with pytest.raises(aiokv.CorruptionError):
        await kv.get("key1")
    Path(store_path).write_bytes(original)  # e.g. restored from a backup
    assert await kv.get("key1") == ITEMS["key1"]
    await kv.close()


async def test_salvage_copies_the_damaged_file_aside_and_keeps_every_valid_frame(
    store_path: str,
) -> None:
    await write_store(store_path, ITEMS)
    damaged = bytearray(Path(store_path).read_bytes())
    ends = frame_ends(store_path)
    damaged[ends[2] + 9] ^= 0x01  # inside the fourth record
    Path(store_path).write_bytes(damaged)
    async with aiokv.AioKV(store_path, recovery="salvage") as kv:
        recovered = await kv.get_all()
    expected = dict(ITEMS)
    del expected["key3"]
    assert recovered == expected
    copies = [p for p in os.listdir(os.path.dirname(store_path)) if ".corrupt-" in p]
    assert len(copies) == 1
    aside = Path(os.path.dirname(store_path), copies[0]).read_bytes()
    assert aside == damaged
    async with aiokv.AioKV(store_path) as kv:  # the rewritten log is clean
        assert await kv.get_all() == expected


async def test_damage_inside_a_compacted_file_is_corruption_even_at_its_end(
    store_path: str,
) -> None:
    await write_store(store_path, ITEMS)
    async with aiokv.AioKV(store_path) as kv:
        await kv.compact()
    damaged = bytearray(Path(store_path).read_bytes())
    damaged[-3] ^= 0x01
    Path(store_path).write_bytes(damaged)
    with pytest.raises(aiokv.CorruptionError, match="compacted"):
        await aiokv.AioKV(store_path).open()
    assert Path(store_path).read_bytes() == damaged


@pytest.mark.parametrize("size", [0, 1, 7, 8, 20, HEADER_SIZE - 1])
async def test_an_empty_file_or_a_header_cut_short_opens_as_an_empty_store(
    store_path: str, size: int
) -> None:
    Path(store_path).write_bytes(encode_header(0, 0.0, HEADER_SIZE)[:size])
    async with aiokv.AioKV(store_path) as kv:
        assert await kv.get_all() == {}
        await kv.set("k", "v")
    async with aiokv.AioKV(store_path) as kv:
        assert await kv.get_all() == {"k": "v"}


async def test_a_file_that_is_neither_a_log_nor_json_is_refused_and_never_overwritten(
    store_path: str,
) -> None:
    for content in (b"hello world", b"[1, 2, 3]", b'{"cut": ', MAGIC + b"\x00" * 40,
                    b"\x00" * 100, b"{" + b"[" * 100_000, b'{"deep": ' + b"[" * 5000 + b"]" * 5000
                    + b"}"):
        Path(store_path).write_bytes(content)
        with pytest.raises(aiokv.CorruptionError):
            await aiokv.AioKV(store_path).open()
        assert Path(store_path).read_bytes() == content


async def test_a_json_state_file_of_the_original_aiokv_is_converted_and_kept_as_bak(
    store_path: str,
) -> None:
    legacy = {"last_command": "ping", "seen_ran_cleanup": 1700000000,
              "nested": {"a": [1, 2.5, None, True]}}
    original = json.dumps(legacy).encode()
    Path(store_path).write_bytes(original)
    async with aiokv.AioKV(store_path) as kv:
        assert await kv.get_all() == legacy
        await kv.set("added", 1)
    assert Path(store_path + ".bak").read_bytes() == original
    assert Path(store_path).read_bytes().startswith(MAGIC)
    async with aiokv.AioKV(store_path) as kv:
        assert await kv.get_all() == {**legacy, "added": 1}


async def test_a_json_value_that_msgpack_cannot_hold_refuses_the_conversion(
    store_path: str,
) -> None:
    original = json.dumps({"huge": 2**70}).encode()
    Path(store_path).write_bytes(original)
    # Not corrupt: a value the log cannot hold, named, with the way through.
    with pytest.raises(ValueError, match=r"huge.*--ints-as-strings") as raised:
        await aiokv.AioKV(store_path).open()
    assert not isinstance(raised.value, aiokv.CorruptionError)
    assert Path(store_path).read_bytes() == original
    assert not os.path.exists(store_path + ".bak")


async def test_leftover_temp_files_of_a_crashed_compaction_are_removed_at_open(
    store_path: str,
) -> None:
    await write_store(store_path, ITEMS)
    leftover = store_path + ".tmp-12345-0"
    Path(leftover).write_bytes(b"half a compaction")
    unrelated = store_path + ".notes"
    Path(unrelated).write_bytes(b"keep me")
    async with aiokv.AioKV(store_path) as kv:
        assert len(await kv.get_all()) == len(ITEMS)
    assert not os.path.exists(leftover)
    assert os.path.exists(unrelated)


def test_reading_a_log_allocates_one_file_sized_buffer_then_small_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second file-sized read (for the end of file) would make glibc keep
    later buffers of that size on its heap and hold on to them once freed."""
    path = tmp_path / "store.kv"
    content = os.urandom(300_000)
    path.write_bytes(content)
    asked: list[int] = []
    real_read = os.read

    def spy(fd: int, size: int) -> bytes:
        asked.append(size)
        return real_read(fd, size)

    monkeypatch.setattr(os, "read", spy)
    assert REAL_FILES.read(str(path)) == content
    assert asked == [300_000, 1 << 16]
