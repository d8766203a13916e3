"""SYNCED frames: the log vouches for what was fsynced, so a gap is told from damage.

docs/format.md: after each fsync, the next append (or close, or open) writes a
SYNCED frame naming how far the fsync reached. Damage that such a frame
vouches for is corruption; damage past every such offset may be a gap that a
power loss left (later blocks reached the disk, an earlier one did not), and
the log ends there. The rule itself is tested on bytes in test_format.py;
here, the frames the engine writes, and a gap in a real store's file.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import pytest
from on_disk import replay_store, store_files

import aiokv
from aiokv import Durability
from aiokv._format import (
    HEADER_SIZE,
    MAGIC,
    SYNCED,
    decode_header,
    encode_header,
    encode_set,
)
from aiokv._recovery import Frame, read_frame, replay


def frames_of(data: bytes) -> list[tuple[int, Frame]]:
    """(offset, frame) of every frame of a clean log (reserved zeros excluded)."""
    found = []
    offset = HEADER_SIZE
    while offset < len(data):
        frame = read_frame(data, offset)
        if not isinstance(frame, Frame):
            assert data.count(0, offset) == len(data) - offset, f"damage at {offset}"
            break
        found.append((offset, frame))
        offset = frame.end
    return found


def synced_frames(data: bytes) -> list[tuple[int, int]]:
    """(offset, offset named) of every SYNCED frame."""
    return [(offset, frame.a) for offset, frame in frames_of(data)  # type: ignore[misc]
            if frame.kind == SYNCED]


@pytest.mark.parametrize("durability", ["fsync", "flush", "buffered"])
async def test_close_ends_the_log_with_a_synced_frame_that_vouches_for_all_of_it(
    store_path: str, durability: Durability,
) -> None:
    async with aiokv.AioKV(store_path, durability=durability) as kv:
        for i in range(5):
            await kv.set(f"k{i}", i)
    data = Path(store_path).read_bytes()
    offset, frame = frames_of(data)[-1]
    assert frame.kind == SYNCED and frame.a == offset and frame.end == len(data)
    assert replay(data).durable_end == len(data)


async def test_reopening_and_closing_without_writes_adds_nothing(store_path: str) -> None:
    async with aiokv.AioKV(store_path) as kv:
        await kv.set("k", 1)
    size = Path(store_path).stat().st_size
    for _ in range(3):
        async with aiokv.AioKV(store_path) as kv:
            assert await kv.get("k") == 1
    assert Path(store_path).stat().st_size == size


async def test_at_fsync_each_batch_after_an_fsync_begins_with_a_synced_frame(
    store_path: str,
) -> None:
    async with aiokv.AioKV(store_path, durability="fsync") as kv:
        for i in range(4):
            await kv.set(f"k{i}", i)  # one at a time: a batch and an fsync each
    frames = frames_of(Path(store_path).read_bytes())
    kinds = [frame.kind for _, frame in frames]
    assert kinds == [1, SYNCED, 1, SYNCED, 1, SYNCED, 1, SYNCED]
    for (offset, frame) in frames:
        if frame.kind == SYNCED:
            assert frame.a == offset  # everything before it, nothing more


async def test_at_flush_the_first_append_after_an_fsync_names_how_far_it_reached(
    store_path: str,
) -> None:
    async with aiokv.AioKV(store_path) as kv:
        await kv.set("a", 1)
        await kv.set("b", 2)
        await kv.flush()
        synced = (await kv.stats()).file_bytes
        await kv.set("c", 3)
        await kv.set("d", 4)
        data = Path(store_path).read_bytes()
    assert synced_frames(data) == [(synced, synced)]


async def test_a_file_of_an_earlier_version_gets_synced_frames_once_compacted(
    store_path: str,
) -> None:
    body = MAGIC + (1).to_bytes(2, "big") + bytes(2) + encode_header(0, 0.0, HEADER_SIZE)[12:36]
    Path(store_path).write_bytes(body + zlib.crc32(body).to_bytes(4, "big")
                                 + encode_set("old", 1))
    async with aiokv.AioKV(store_path) as kv:
        await kv.set("a", 1)
        await kv.flush()
        await kv.set("b", 2)
    data = Path(store_path).read_bytes()
    assert not decode_header(data).vouched and synced_frames(data) == []
    async with aiokv.AioKV(store_path) as kv:
        await kv.compact()
        await kv.set("c", 3)
    base, log = store_files(store_path)  # appends moved to a log file
    assert decode_header(Path(base).read_bytes()).vouched
    data = Path(log).read_bytes()
    assert decode_header(data).vouched and synced_frames(data)
    assert replay_store(store_path).entries == {"old": 1, "a": 1, "b": 2, "c": 3}


async def test_a_gap_a_power_loss_left_in_the_unsynced_tail_is_cut_with_a_warning(
    store_path: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    kv = aiokv.AioKV(store_path)
    await kv.open()
    for i in range(10):
        await kv.set(f"synced{i}", i)
    await kv.flush()
    synced = (await kv.stats()).file_bytes
    for i in range(200):
        await kv.set(f"late{i}", "x" * 50)  # about 15 KB nobody fsynced
    image = bytearray(Path(store_path).read_bytes())  # what the page cache holds
    await kv.close()
    # A power loss: the sector 600 bytes past the fsynced part never reached
    # the disk (it reads as zeros), the ones after it did.
    start = synced + 600 - (synced + 600) % 512
    image[start:start + 512] = bytes(512)
    crashed = tmp_path / "crashed.kv"
    crashed.write_bytes(bytes(image))
    with caplog.at_level(logging.WARNING, logger="aiokv"):
        async with aiokv.AioKV(crashed) as reopened:
            entries = await reopened.get_all()
    late = [key for key in entries if key.startswith("late")]
    assert {key: entries[key] for key in entries if key.startswith("synced")} == {
        f"synced{i}": i for i in range(10)}
    assert 0 < len(late) < 200
    assert late == [f"late{i}" for i in range(len(late))]  # a prefix of the writes
    assert "never fsynced" in caplog.text and "a power loss" in caplog.text


async def test_the_same_damage_in_fsynced_and_vouched_bytes_raises(
    store_path: str, tmp_path: Path,
) -> None:
    async with aiokv.AioKV(store_path) as kv:
        for i in range(200):
            await kv.set(f"k{i}", "x" * 50)
    image = bytearray(Path(store_path).read_bytes())  # closed: all of it vouched for
    image[1024:1536] = bytes(512)
    damaged = tmp_path / "damaged.kv"
    damaged.write_bytes(bytes(image))
    with pytest.raises(aiokv.CorruptionError):
        await aiokv.AioKV(damaged).open()
