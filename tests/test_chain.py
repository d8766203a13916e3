"""A store as a chain of files (format 3), tested on bytes alone: a base file,
then log files ``<base>.log-<n>``, each opening with a FOLLOWS record (see
aiokv._chain). Only the LogFiles tests touch files, in a temporary directory."""

from __future__ import annotations

import itertools
import os
import struct
import zlib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from aiokv._chain import first_log, follows_of, log_numbers, log_path, replay_chain
from aiokv._files import REAL_FILES, FileSystem
from aiokv._format import (
    HEADER_SIZE,
    MAGIC,
    VOUCHED,
    Value,
    decode_header,
    encode_delete,
    encode_expire,
    encode_follows,
    encode_header,
    encode_set,
    encode_synced,
    encode_value,
)
from aiokv._log_files import LogFiles
from aiokv._recovery import replay


def base_file(*frames: bytes, compactions: int = 0, first: int = 1) -> bytes:
    """A base file (format 3) whose first log file is ``first``, holding
    ``frames`` appended after its header."""
    return encode_header(compactions, 0.0, HEADER_SIZE, first) + b"".join(frames)


def log_file(number: int, previous: int, length: int, *frames: bytes,
             base_compactions: int = 0) -> bytes:
    """Log file ``number``: its header, the FOLLOWS record naming ``previous``
    (0: the base) at ``length``, then ``frames``."""
    return (encode_header(base_compactions, 0.0, HEADER_SIZE, number, log_file=True)
            + encode_follows(previous, length, base_compactions) + b"".join(frames))


def version_2_header(compactions: int = 0) -> bytes:
    """A header as aiokv wrote it in format 2: the log number's bytes reserved, zero."""
    body = struct.pack(">8sHHIdQI", MAGIC, 2, VOUCHED, compactions, 0.0, HEADER_SIZE, 0)
    return body + struct.pack(">I", zlib.crc32(body))


def cut(data: bytes, frame: bytes, keep: int = 3) -> bytes:
    """``data`` ending in ``frame``, with only the first ``keep`` bytes of it left:
    the tail of a write that never fully reached the disk."""
    assert data.endswith(frame)
    return data[: len(data) - len(frame) + keep]


# -- replaying a chain -----------------------------------------------------------


def test_a_chain_replays_the_base_then_each_log_file_in_order() -> None:
    base = base_file(encode_set("k", 1), encode_set("kept", "base"),
                     encode_set("timed", 1.0, 2e9))
    log_1 = log_file(1, 0, len(base), encode_set("k", 2), encode_set("j", 3),
                     encode_set("timed", 2.0))
    log_2 = log_file(2, 1, len(log_1), encode_delete("k"), encode_set("j", 4),
                     encode_expire("kept", 3e9))

    chain = replay_chain(base, [(1, log_1), (2, log_2)])

    assert chain.corruption is None and chain.dropped == [] and chain.skipped == []
    assert chain.entries == {"kept": "base", "j": 4, "timed": 2.0}
    # The set in log file 1 took the expiry away; the expire in log file 2 gave one.
    assert chain.expiries == {"kept": 3e9}
    assert [number for number, _ in chain.files] == [0, 1, 2]
    assert [result.end for _, result in chain.files] == [len(base), len(log_1), len(log_2)]
    assert chain.last[0] == 2
    assert chain.before_last == len(base) + len(log_1)
    assert chain.header == decode_header(base)


def test_a_base_without_log_files_replays_as_a_single_file() -> None:
    base = base_file(encode_set("k", 1), encode_delete("gone"), encode_set("j", 2))
    chain = replay_chain(base, [])
    alone = replay(base)
    assert chain.corruption is None
    assert chain.entries == alone.entries == {"k": 1, "j": 2}
    assert chain.last == (0, alone)
    assert chain.before_last == 0


def test_a_log_file_that_follows_a_base_which_lost_bytes_is_dropped_as_a_power_loss() -> None:
    last = encode_set("lost", "never fsynced")
    whole = base_file(encode_set("k", 1), last)
    log_1 = log_file(1, 0, len(whole), encode_set("k", 2))
    log_2 = log_file(2, 1, len(log_1), encode_set("k", 3))
    lost = cut(whole, last)  # the base's last page never reached the disk

    chain = replay_chain(lost, [(1, log_1), (2, log_2)])

    assert chain.corruption is None
    assert chain.dropped == [1, 2]
    assert "never fsynced" in chain.dropped_reason
    assert str(len(whole)) in chain.dropped_reason
    assert chain.entries == {"k": 1}
    # Appends continue in the base, where its torn tail is reported.
    assert [number for number, _ in chain.files] == [0]
    assert chain.last[1].end == len(whole) - len(last)
    assert chain.last[1].torn_tail == 3


def test_a_log_file_that_follows_a_log_file_which_lost_bytes_is_dropped_with_those_after() -> None:
    base = base_file(encode_set("k", 1))
    last = encode_set("lost", 1)
    log_1 = log_file(1, 0, len(base), encode_set("k", 2), last)
    log_2 = log_file(2, 1, len(log_1), encode_set("k", 3))
    log_3 = log_file(3, 2, len(log_2), encode_set("k", 4))
    lost = log_1[: len(log_1) - len(last)]  # lost exactly its last frame

    chain = replay_chain(base, [(1, lost), (2, log_2), (3, log_3)])

    assert chain.corruption is None
    assert chain.dropped == [2, 3]
    assert chain.entries == {"k": 2}
    assert chain.last[0] == 1
    assert chain.last[1].torn_tail == 0 and chain.last[1].end == len(lost)


def test_a_log_file_fsynced_after_its_predecessor_lost_bytes_is_corruption() -> None:
    last = encode_set("lost", 1)
    whole = base_file(encode_set("k", 1), last)
    opening = log_file(1, 0, len(whole), encode_set("k", 2))
    log_1 = opening + encode_synced(len(opening))  # the log file was fsynced
    lost = cut(whole, last)

    chain = replay_chain(lost, [(1, log_1)])

    assert chain.dropped == []
    assert chain.corruption is not None
    where, damage = chain.corruption
    assert where == 0  # the base lost fsynced bytes
    assert (damage.offset, damage.end) == (len(whole) - len(last), len(whole))


def test_a_synced_frame_vouching_only_for_the_header_does_not_make_a_lost_tail_corruption(
) -> None:
    """A SYNCED frame naming the header's end says nothing of what followed:
    the log file was not fsynced after appends moved to it."""
    last = encode_set("lost", 1)
    whole = base_file(encode_set("k", 1), last)
    log_1 = log_file(1, 0, len(whole)) + encode_synced(HEADER_SIZE)
    chain = replay_chain(cut(whole, last), [(1, log_1)])
    assert chain.corruption is None and chain.dropped == [1]


def test_salvage_keeps_the_records_of_a_log_file_fsynced_after_its_predecessor_lost_bytes(
) -> None:
    """Salvage keeps every frame that validates and reports what it skipped:
    the records of a log file that was fsynced are no power loss to drop."""
    last = encode_set("lost", 1)
    whole = base_file(encode_set("k", 1), last)
    opening = log_file(1, 0, len(whole), encode_set("k", 2), encode_set("j", 3))
    log_1 = opening + encode_synced(len(opening))

    chain = replay_chain(cut(whole, last), [(1, log_1)], salvage=True)

    assert chain.corruption is None
    assert chain.dropped == []
    assert chain.entries == {"k": 2, "j": 3}
    assert [(where, damage.offset, damage.end) for where, damage in chain.skipped] == [
        (0, len(whole) - len(last), len(whole))]


def test_a_predecessor_holding_frames_past_the_recorded_length_is_corruption() -> None:
    base = base_file(encode_set("k", 1))
    extra = encode_set("k", "after the move")
    log_1 = log_file(1, 0, len(base), encode_set("j", 2))

    chain = replay_chain(base + extra, [(1, log_1)])

    assert chain.corruption is not None
    where, damage = chain.corruption
    assert (where, damage.offset, damage.end) == (0, len(base), len(base) + len(extra))
    assert "past offset" in damage.reason
    assert chain.dropped == []

    salvaged = replay_chain(base + extra, [(1, log_1)], salvage=True)
    assert salvaged.corruption is None
    assert [(where, damage.offset) for where, damage in salvaged.skipped] == [(0, len(base))]
    assert salvaged.entries["j"] == 2  # the log file's records are kept


def test_the_first_log_after_a_compacted_base_is_not_checked_against_it() -> None:
    """A crash after a compaction put its base in place, before the old files
    went: log file 1 follows the old base, whose length means nothing here."""
    old_base_length = 10_000
    base = base_file(encode_set("k", 1), compactions=1)
    log_1 = log_file(1, 0, old_base_length, encode_set("k", 2))  # base_compactions 0

    chain = replay_chain(base, [(1, log_1)])

    assert chain.corruption is None and chain.dropped == [] and chain.skipped == []
    assert chain.entries == {"k": 2}
    # Nor is a shorter length than the new base's a sign of damage.
    shorter = replay_chain(base, [(1, log_file(1, 0, HEADER_SIZE, encode_set("j", 1)))])
    assert shorter.corruption is None and shorter.entries == {"k": 1, "j": 1}


def test_the_first_log_after_a_base_of_the_same_compaction_is_checked_against_it() -> None:
    base = base_file(encode_set("k", 1), compactions=4)
    log_1 = log_file(1, 0, len(base) + 1, encode_set("k", 2), base_compactions=4)
    assert replay_chain(base, [(1, log_1)]).dropped == [1]


def test_a_log_file_with_the_header_of_another_file_is_corruption() -> None:
    base = base_file(encode_set("k", 1))
    follows = encode_follows(0, len(base), 0) + encode_set("k", 2)
    impostors = {
        "a base file": encode_header(0, 0.0, HEADER_SIZE, 1) + follows,
        "log file 2": encode_header(0, 0.0, HEADER_SIZE, 2, log_file=True) + follows,
    }
    for name, data in impostors.items():
        chain = replay_chain(base, [(1, data)])
        assert chain.corruption is not None, name
        where, damage = chain.corruption
        assert (where, damage.offset, damage.end) == (1, 0, HEADER_SIZE), name
        assert "header of another file" in damage.reason
        assert chain.entries == {"k": 1}

        log_2 = log_file(2, 1, len(data), encode_set("j", 1))
        salvaged = replay_chain(base, [(1, data), (2, log_2)], salvage=True)
        assert salvaged.corruption is None
        assert [where for where, _ in salvaged.skipped] == [1]
        assert salvaged.dropped == [1, 2]  # nothing can follow a file that is not there
        assert salvaged.entries == {"k": 1}


def test_a_base_file_that_is_a_log_file_is_followed_by_nothing() -> None:
    log_1 = log_file(1, 0, HEADER_SIZE, encode_set("k", 1))
    chain = replay_chain(log_1, [(2, log_file(2, 1, len(log_1), encode_set("k", 2)))])
    assert chain.header is not None and chain.header.log_file
    assert [number for number, _ in chain.files] == [0]  # the caller refuses it


def test_a_torn_tail_is_allowed_in_the_last_file_only_and_reported_there() -> None:
    base = base_file(encode_set("k", 1))
    log_1 = log_file(1, 0, len(base), encode_set("k", 2))
    torn_frame = encode_set("k", "torn")
    log_2 = log_file(2, 1, len(log_1), encode_set("j", 1), torn_frame)

    # At the end of the last file: the writer died while appending.
    chain = replay_chain(base, [(1, log_1), (2, cut(log_2, torn_frame))])
    assert chain.corruption is None and chain.dropped == []
    assert chain.entries == {"k": 2, "j": 1}
    assert chain.last[0] == 2
    assert chain.last[1].torn_tail == 3
    assert chain.last[1].end == len(log_2) - len(torn_frame)
    assert [result.torn_tail for _, result in chain.files[:-1]] == [0, 0]

    # At the end of a file appends had moved away from: the files after it
    # are left out (nothing in them was fsynced), so it ends the chain, and
    # its torn tail is reported there...
    torn_1 = log_file(1, 0, len(base), encode_set("k", 2), torn_frame)
    log_2 = log_file(2, 1, len(torn_1), encode_set("j", 1))
    chain = replay_chain(base, [(1, cut(torn_1, torn_frame)), (2, log_2)])
    assert chain.corruption is None
    assert chain.dropped == [2]
    assert chain.last[0] == 1 and chain.last[1].torn_tail == 3
    assert chain.entries == {"k": 2}

    # ... or, where a file after it was fsynced, it is corruption.
    log_2 = log_2 + encode_synced(len(log_2))
    chain = replay_chain(base, [(1, cut(torn_1, torn_frame)), (2, log_2)])
    assert chain.corruption is not None and chain.corruption[0] == 1


def test_damage_followed_by_a_valid_frame_in_a_middle_file_is_corruption() -> None:
    base = base_file(encode_set("k", 1))
    opening = log_file(1, 0, len(base), encode_set("a", 1), encode_set("b", 2))
    log_1 = bytearray(opening + encode_synced(len(opening)))  # vouched for: no power loss
    log_1[len(opening) - len(encode_set("b", 2)) - 3] ^= 0xFF  # inside the frame of "a"
    log_2 = log_file(2, 1, len(log_1), encode_set("c", 3))

    chain = replay_chain(base, [(1, bytes(log_1)), (2, log_2)])

    assert chain.corruption is not None and chain.corruption[0] == 1
    assert chain.dropped == []
    assert "c" not in chain.entries


def test_an_unvouched_gap_in_a_middle_file_drops_the_files_after_it() -> None:
    """Damage no SYNCED frame vouches for is a gap a power loss left: the
    file ends before it, and so the files after it follow lost bytes."""
    base = base_file(encode_set("k", 1))
    log_1 = bytearray(log_file(1, 0, len(base), encode_set("a", 1), encode_set("b", 2)))
    log_1[len(log_1) - len(encode_set("b", 2)) - 3] ^= 0xFF  # inside the frame of "a"
    log_2 = log_file(2, 1, len(log_1), encode_set("c", 3))

    chain = replay_chain(base, [(1, bytes(log_1)), (2, log_2)])

    assert chain.corruption is None
    assert chain.dropped == [2]
    assert chain.entries == {"k": 1}
    assert chain.last[0] == 1 and chain.last[1].dropped_frames == 1


def test_reserved_zero_bytes_after_a_middle_file_are_not_damage() -> None:
    """Space reserved for a mapped window is zero; where appends moved on
    before it was cut off (or the cut never reached the disk), the file
    still ends in zeros past the length its successor recorded."""
    base = base_file(encode_set("k", 1))
    log_1 = log_file(1, 0, len(base), encode_set("k", 2))
    log_2 = log_file(2, 1, len(log_1), encode_set("j", 3))
    zeros = bytes(4096)

    assert replay(base + zeros).end == len(base)
    chain = replay_chain(base + zeros, [(1, log_1 + zeros), (2, log_2)])

    assert chain.corruption is None and chain.dropped == [] and chain.skipped == []
    assert chain.entries == {"k": 2, "j": 3}
    assert [result.end for _, result in chain.files] == [len(base), len(log_1), len(log_2)]
    assert chain.before_last == len(base) + len(log_1)  # the zeros are no part of the chain


def test_salvage_skips_a_damaged_log_file_and_keeps_the_others_records() -> None:
    base = base_file(encode_set("base", 1))
    opening = log_file(1, 0, len(base), encode_set("a", 1), encode_set("b", 2),
                       encode_set("c", 3))
    log_1 = bytearray(opening + encode_synced(len(opening)))
    log_1[len(opening) - len(encode_set("c", 3)) - 4] ^= 0xFF  # the frame of "b"
    log_2 = log_file(2, 1, len(log_1), encode_set("d", 4))

    strict = replay_chain(base, [(1, bytes(log_1)), (2, log_2)])
    assert strict.corruption is not None and strict.corruption[0] == 1

    chain = replay_chain(base, [(1, bytes(log_1)), (2, log_2)], salvage=True)
    assert chain.corruption is None and chain.dropped == []
    assert chain.entries == {"base": 1, "a": 1, "c": 3, "d": 4}
    assert [where for where, _ in chain.skipped] == [1]


def test_salvage_keeps_the_records_of_a_log_file_whose_header_is_damaged() -> None:
    base = base_file(encode_set("base", 1))
    log_1 = bytearray(log_file(1, 0, len(base), encode_set("a", 1)))
    log_1[0] ^= 0xFF  # the magic
    log_2 = log_file(2, 1, len(log_1), encode_set("b", 2))

    strict = replay_chain(base, [(1, bytes(log_1)), (2, log_2)])
    assert strict.corruption is not None and strict.corruption[0] == 1

    chain = replay_chain(base, [(1, bytes(log_1)), (2, log_2)], salvage=True)
    assert chain.corruption is None
    assert chain.entries == {"base": 1, "a": 1, "b": 2}
    assert [(where, damage.offset) for where, damage in chain.skipped] == [(1, 0)]


def test_a_format_2_base_is_followed_by_log_file_1() -> None:
    base = version_2_header(compactions=3) + encode_set("k", 1) + encode_set("j", 1)
    header = decode_header(base)
    assert header.version == 2 and header.log_number == 0 and not header.log_file
    assert first_log(header) == 1

    log_1 = log_file(1, 0, len(base), encode_set("k", 2), base_compactions=3)
    chain = replay_chain(base, [(1, log_1)])
    assert chain.corruption is None and chain.dropped == []
    assert chain.entries == {"k": 2, "j": 1}

    # Checked against the base as any first log file is.
    chain = replay_chain(base[:-2], [(1, log_1)])
    assert chain.dropped == [1] and chain.entries == {"k": 1}


def test_the_follows_record_of_a_log_file_is_read_back() -> None:
    log_1 = log_file(7, 6, 1234, encode_set("k", 1), base_compactions=5)
    follows = follows_of(log_1)
    assert follows is not None
    assert (follows.previous, follows.length, follows.base_compactions) == (6, 1234, 5)
    assert follows.end == HEADER_SIZE + len(encode_follows(6, 1234, 5))
    # A log file that opens with another record names nothing it follows.
    other = encode_header(0, 0.0, HEADER_SIZE, 7, log_file=True) + encode_set("k", 1)
    assert follows_of(other) is None
    assert follows_of(other[:HEADER_SIZE]) is None


def test_a_log_file_without_a_follows_record_is_replayed_unchecked() -> None:
    base = base_file(encode_set("k", 1))
    bare = encode_header(0, 0.0, HEADER_SIZE, 1, log_file=True) + encode_set("k", 2)
    chain = replay_chain(base, [(1, bare)])
    assert chain.corruption is None and chain.entries == {"k": 2}


# -- the names of log files ------------------------------------------------------


def test_log_numbers_take_only_the_canonical_names_of_this_store() -> None:
    names = [
        "s.kv", "s.kv.lock", "s.kv.log-12", "s.kv.log-3", "s.kv.log-07", "s.kv.log-",
        "s.kv.log-0", "s.kv.log-3.corrupt-20240101T000000", "s.kv.log-3.tmp-1-0",
        "s.kv.log-+4", "s.kv.log- 5", "s.kv.log-5 ", "s.kv.log-٣", "other.kv.log-1",
        "xs.kv.log-2", "s.kv.log-1x", "s.kvxlog-6", "s.kv.tmp-1-0", "s.kv.log-1" + "0" * 18,
    ]
    assert log_numbers("s.kv", names) == [3, 12]
    assert log_numbers("s.kv", ["s.kv.log-" + "9" * 18, "s.kv.log-10"]) == [10, 10**18 - 1]
    assert log_numbers("a.b", ["aXb.log-1"]) == []  # the name is no pattern
    assert log_path("/d/s.kv", 4) == "/d/s.kv.log-4"


# -- the files of a store on disk --------------------------------------------------


def write_files(directory: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (directory / name).write_bytes(data)


def test_log_files_are_read_as_below_the_first_the_chain_and_beyond_a_gap(
    tmp_path: Path,
) -> None:
    base = base_file(encode_set("k", 1), compactions=2, first=3)
    log_3 = log_file(3, 0, len(base), encode_set("k", 3), base_compactions=2)
    log_4 = log_file(4, 3, len(log_3), encode_set("k", 4), base_compactions=2)
    write_files(tmp_path, {
        "s.kv": base,
        "s.kv.log-1": log_file(1, 0, HEADER_SIZE),
        "s.kv.log-2": log_file(2, 1, HEADER_SIZE),
        "s.kv.log-3": log_3,
        "s.kv.log-4": log_4,
        "s.kv.log-6": log_file(6, 5, HEADER_SIZE),  # 5 is missing
        "s.kv.log-05": b"not one of the store's names",
        "other.kv.log-3": b"another store's",
    })

    found = LogFiles(str(tmp_path / "s.kv"), REAL_FILES).read()

    assert found.base == base
    assert found.header == decode_header(base)
    assert found.below == [1, 2]
    assert found.logs == [(3, log_3), (4, log_4)]
    assert found.beyond == [6]
    assert found.next_number == 5


def test_the_next_log_number_is_the_bases_first_when_no_log_file_follows_it(
    tmp_path: Path,
) -> None:
    write_files(tmp_path, {"s.kv": base_file(compactions=7, first=8), "s.kv.log-2": b"x"})
    found = LogFiles(str(tmp_path / "s.kv"), REAL_FILES).read()
    assert found.logs == [] and found.below == [2] and found.beyond == []
    assert found.next_number == 8


def test_a_gap_at_the_first_log_file_puts_every_later_one_beyond(tmp_path: Path) -> None:
    write_files(tmp_path, {"s.kv": base_file(first=2), "s.kv.log-3": b"", "s.kv.log-4": b""})
    found = LogFiles(str(tmp_path / "s.kv"), REAL_FILES).read()
    assert found.logs == [] and found.beyond == [3, 4]
    assert found.next_number == 2


def test_log_files_without_a_base_follow_nothing(tmp_path: Path) -> None:
    write_files(tmp_path, {"s.kv.log-1": log_file(1, 0, HEADER_SIZE), "s.kv.log-2": b""})
    found = LogFiles(str(tmp_path / "s.kv"), REAL_FILES).read()
    assert found.base is None and found.header is None
    assert found.logs == [] and found.beyond == [1, 2]
    assert found.next_number == 1


def test_log_files_after_a_log_file_given_as_the_base_follow_nothing(tmp_path: Path) -> None:
    write_files(tmp_path, {"s.kv": log_file(1, 0, HEADER_SIZE), "s.kv.log-1": b""})
    found = LogFiles(str(tmp_path / "s.kv"), REAL_FILES).read()
    assert found.header is not None and found.header.log_file
    assert found.logs == [] and found.beyond == [1]


def test_a_format_2_base_on_disk_is_followed_by_log_file_1(tmp_path: Path) -> None:
    base = version_2_header() + encode_set("k", 1)
    log_1 = log_file(1, 0, len(base), encode_set("k", 2))
    write_files(tmp_path, {"s.kv": base, "s.kv.log-1": log_1})
    found = LogFiles(str(tmp_path / "s.kv"), REAL_FILES).read()
    assert found.logs == [(1, log_1)] and found.below == [] and found.beyond == []
    assert found.next_number == 2
    assert replay_chain(base, found.logs).entries == {"k": 2}
    os.remove(tmp_path / "s.kv.log-1")
    assert LogFiles(str(tmp_path / "s.kv"), REAL_FILES).read().next_number == 1


# -- the property: a chain replays as its records in one file ----------------------


KEYS = st.sampled_from(["", "a", "b", "ключ", "k" * 40])
VALUES: st.SearchStrategy[Value] = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False), st.text(max_size=20), st.binary(max_size=20),
    st.lists(st.integers(0, 9), max_size=4).map(encode_value),
)
RECORDS = st.one_of(
    st.tuples(KEYS, VALUES, st.one_of(st.none(), st.floats(1e9, 3e9))).map(
        lambda record: encode_set(*record)),
    KEYS.map(encode_delete),
    st.tuples(KEYS, st.one_of(st.none(), st.floats(1e9, 3e9))).map(
        lambda record: encode_expire(*record)),
)


@settings(max_examples=200, deadline=None)
@given(records=st.lists(RECORDS, max_size=40), cuts=st.lists(st.integers(0, 40), max_size=5),
       compactions=st.integers(0, 5), first=st.integers(1, 1000),
       synced=st.lists(st.booleans(), min_size=6, max_size=6))
def test_a_chain_replays_as_its_records_would_in_one_file(
    records: list[bytes], cuts: list[int], compactions: int, first: int, synced: list[bool],
) -> None:
    bounds = [0, *sorted(min(cut, len(records)) for cut in cuts), len(records)]
    parts = [records[start:end] for start, end in itertools.pairwise(bounds)]
    base = base_file(*parts[0], compactions=compactions, first=first)
    if synced[0]:
        base += encode_synced(len(base))
    logs: list[tuple[int, bytes]] = []
    previous, length = 0, len(base)
    for index, part in enumerate(parts[1:], start=1):
        number = first + index - 1
        data = log_file(number, previous, length, *part, base_compactions=compactions)
        if synced[index]:
            data += encode_synced(len(data))
        logs.append((number, data))
        previous, length = number, len(data)

    chain = replay_chain(base, logs)
    alone = replay(encode_header(compactions, 0.0, HEADER_SIZE, first) + b"".join(records))

    assert chain.corruption is None and chain.dropped == [] and chain.skipped == []
    assert alone.corruption is None
    assert chain.entries == alone.entries
    assert chain.expiries == alone.expiries
    assert [number for number, _ in chain.files] == [0, *(number for number, _ in logs)]
    assert all(result.torn_tail == 0 for _, result in chain.files)
    assert chain.before_last + chain.last[1].end == len(base) + sum(
        len(data) for _, data in logs)


def test_a_compacted_base_whose_first_log_file_is_missing_is_corruption() -> None:
    """A base a compaction wrote (HAS_LOG) existed only after its first log
    file did: without it, what was written since the compaction is gone (a
    base moved or copied alone), which a store must not open silently."""
    snapshot = encode_set("k", 1)
    base = encode_header(1, 0.0, HEADER_SIZE + len(snapshot), 4, has_log=True) + snapshot
    follows_a_gone_file = log_file(4, 3, 100, encode_set("k", 2), base_compactions=0)
    whole = replay_chain(base, [(4, follows_a_gone_file)])
    assert whole.corruption is None and whole.entries == {"k": 2}
    for logs in ([], [(5, log_file(5, 4, HEADER_SIZE))]):
        alone = replay_chain(base, logs)
        assert alone.corruption is not None
        number, damage = alone.corruption
        assert number == 0 and "log file 4" in damage.reason and "missing" in damage.reason
        salvaged = replay_chain(base, logs, salvage=True)
        assert salvaged.corruption is None and salvaged.entries == {"k": 1}
        assert [where for where, _ in salvaged.skipped] == [0]
    # A base written whole at open (appends go into it) names a log file
    # that does not exist yet: nothing is missing.
    plain = encode_header(1, 0.0, HEADER_SIZE + len(snapshot), 4) + snapshot
    assert replay_chain(plain, []).corruption is None


class CompactsBetweenReads(FileSystem):
    """Real files, and an owner that compacts right after a reader has read
    the base: the new base (first log file 2) is put in place and log
    file 1 removed before the reader lists the directory."""

    def __init__(self, base: str, new_base: bytes, new_log: bytes) -> None:
        self.base, self.new_base, self.new_log = base, new_base, new_log
        self.compacted = False

    def read(self, path: str) -> bytes | None:
        data = super().read(path)
        if path == self.base and not self.compacted:
            self.compacted = True
            Path(log_path(self.base, 2)).write_bytes(self.new_log)
            Path(self.base).write_bytes(self.new_base)
            os.remove(log_path(self.base, 1))
        return data


def test_a_reader_that_a_compaction_overtakes_reads_the_new_chain_whole(
    tmp_path: Path,
) -> None:
    """readonly=True and the tools read without the lock: a compaction may put
    a new base in place and remove the old log files between the read of the
    base and the read of its log files. The old base then seems to be
    followed by a gap: LogFiles.read reads again, and gets the new chain."""
    base = str(tmp_path / "s.kv")
    old_base = base_file(encode_set("k", 0))
    Path(base).write_bytes(old_base)
    Path(log_path(base, 1)).write_bytes(log_file(1, 0, len(old_base), encode_set("k", 1)))
    snapshot = encode_set("k", 1)
    new_base = encode_header(1, 0.0, HEADER_SIZE + len(snapshot), 2, has_log=True) + snapshot
    new_log = log_file(2, 1, 999, encode_set("k", 2))
    files = CompactsBetweenReads(base, new_base, new_log)
    found = LogFiles(base, files).read()
    assert files.compacted
    assert found.base == new_base and [n for n, _ in found.logs] == [2]
    assert not found.beyond and not found.below
    assert replay_chain(found.base, found.logs).entries == {"k": 2}
