"""The byte format and the recovery rule, tested on bytes alone (no files)."""

from __future__ import annotations

import enum
import json
import math
import sys
import zlib
from collections.abc import Callable
from unittest import mock

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiokv import _format
from aiokv._format import (
    BATCH,
    BULK,
    DELETE,
    HEADER_SIZE,
    MAGIC,
    MAX_FRAME_SIZE,
    SEED,
    SET,
    SET_ENCODED,
    SYNCED,
    UINT32_END,
    UINT32_MIN,
    Encoded,
    Value,
    decode_header,
    decode_value,
    encode_batch,
    encode_bulk,
    encode_delete,
    encode_encoded_set,
    encode_expire,
    encode_float_set,
    encode_header,
    encode_record,
    encode_scalar_set,
    encode_set,
    encode_snapshot,
    encode_synced,
    encode_uint32_set,
    encode_value,
    is_unfinished_header,
    size_change,
    value_size,
)
from aiokv._recovery import (
    READ_SIZE,
    Frame,
    Incomplete,
    Invalid,
    count_frames,
    holds_a_record,
    is_log,
    new_entries,
    read_frame,
    replay,
)

HEADER = encode_header(0, 0.0, HEADER_SIZE)

SAMPLE_FRAMES = [
    encode_set("a", 1),
    encode_set("float", 1.5),
    encode_set("text", "héllo"),
    encode_set("blob", b"\x00\x96\xce\xff"),
    encode_set("none", None),
    encode_set("flag", True),
    encode_set("big", 2**64 - 1),
    encode_set("negative", -(2**63)),
    encode_set("nested", encode_value({"list": [1, 2, {"x": b"y"}]})),
    encode_set("expiring", "soon", expires=1_900_000_000.5),
    encode_delete("a"),
    encode_expire("text", 1_800_000_000),
    encode_expire("text", None),
    encode_snapshot({"s": 1, "t": "two"}, {"e": Encoded(b"\x92\x01\x02")}, {"t": 2e9}),
    encode_bulk(("b1", "b2", "b3"), (1.5, None, b"\xce"), {"b2": 2.1e9}),
    encode_batch({"bs": 9, "bu": 1.5}, {"be": Encoded(b"\x91\x01")}, {"bu": 2.2e9},
                 ["negative", "flag"]),
    encode_set("", ""),
]


def log_of(*frames: bytes, compacted_length: int = HEADER_SIZE, synced: bool = False) -> bytes:
    """A log of these frames; ``synced``: then a SYNCED frame vouching for all of them.

    In a file with SYNCED frames, damage they vouch for is corruption; past
    them it may be a gap a power loss left (see the gap tests below).
    """
    log = encode_header(0, 0.0, compacted_length) + b"".join(frames)
    return log + encode_synced(len(log)) if synced else log


def records_state(frames: list[bytes]) -> tuple[dict[str, Value], dict[str, float]]:
    """What replaying exactly these intact frames must give."""
    result = replay(log_of(*frames))
    assert result.corruption is None and result.torn_tail == 0
    return result.entries, result.expiries


# -- frames -------------------------------------------------------------------


@pytest.mark.parametrize("frame", SAMPLE_FRAMES)
def test_every_frame_returns_the_crc_register_to_the_residue(frame: bytes) -> None:
    assert zlib.crc32(frame, SEED) == SEED


def test_a_run_of_frames_checks_with_one_crc_call() -> None:
    assert zlib.crc32(b"".join(SAMPLE_FRAMES), SEED) == SEED
    damaged = bytearray(b"".join(SAMPLE_FRAMES))
    damaged[len(damaged) // 2] ^= 0x01
    assert zlib.crc32(bytes(damaged), SEED) != SEED


@pytest.mark.parametrize("frame", SAMPLE_FRAMES)
def test_every_frame_decodes_whole(frame: bytes) -> None:
    decoded = read_frame(frame, 0)
    assert isinstance(decoded, Frame)
    assert decoded.end == len(frame)


@pytest.mark.parametrize("frame", SAMPLE_FRAMES)
def test_every_frame_fed_byte_by_byte_is_incomplete_until_its_last_byte(frame: bytes) -> None:
    for size in range(len(frame)):
        assert read_frame(frame[:size], 0) == Incomplete(), size
    assert isinstance(read_frame(frame, 0), Frame)


@pytest.mark.parametrize("frame", SAMPLE_FRAMES)
def test_every_frame_decodes_with_trailing_bytes(frame: bytes) -> None:
    decoded = read_frame(frame + b"\x96\xce trailing garbage", 0)
    assert isinstance(decoded, Frame)
    assert decoded.end == len(frame)


@pytest.mark.parametrize("frame", SAMPLE_FRAMES)
def test_every_single_bit_flip_in_a_frame_is_detected(frame: bytes) -> None:
    for position in range(len(frame)):
        for bit in (0x01, 0x80):
            damaged = bytearray(frame)
            damaged[position] ^= bit
            assert not isinstance(read_frame(bytes(damaged), 0), Frame), (position, bit)


def test_a_frame_is_one_msgpack_array_of_six() -> None:
    length, kind, key, value, expires, _checksum = msgpack.unpackb(encode_set("k", 2.5))
    assert (kind, key, value, expires) == (1, "k", 2.5, None)
    assert length == len(encode_set("k", 2.5))


def test_a_forged_huge_length_is_invalid_not_an_allocation() -> None:
    forged = b"\x96\xce" + (MAX_FRAME_SIZE + 1).to_bytes(4, "big") + b"\x00" * 20
    assert isinstance(read_frame(forged, 0), Invalid)
    claims_four_gib = b"\x96\xce\xff\xff\xff\xff" + b"\x00" * 20
    assert isinstance(read_frame(claims_four_gib, 0), Invalid)


def test_a_length_below_the_smallest_frame_is_invalid() -> None:
    assert isinstance(read_frame(b"\x96\xce\x00\x00\x00\x03" + b"\x00" * 20, 0), Invalid)


def forge(payload: bytes) -> bytes:
    """A frame around ``payload`` with a correct length and checksum."""
    body = b"\x96\xce" + (len(payload) + 11).to_bytes(4, "big") + payload + b"\xce"
    return body + zlib.crc32(body, SEED).to_bytes(4, "little")


def test_a_checksum_valid_frame_that_is_not_a_record_is_invalid() -> None:
    forged = forge(b"\x09\xa1k\xc0\xc0")  # kind 9
    assert zlib.crc32(forged, SEED) == SEED
    decoded = read_frame(forged, 0)
    assert isinstance(decoded, Invalid)
    assert "kind" in decoded.reason


def test_a_set_record_with_a_container_value_is_malformed() -> None:
    forged = forge(b"\x01\xa1k\x91\x01\xc0")  # value [1]
    assert isinstance(read_frame(forged, 0), Invalid)
    result = replay(log_of(forged, encode_set("after", 1), synced=True))
    assert result.corruption is not None


MALFORMED_BULK_FIELDS = {
    "fewer values than keys": (("a", "b"), (1,), {}),
    "a key that is not a string": (("a", 2), (1, 2), {}),
    "a list value": (("a",), ([1],), {}),
    "an expiry for a key it does not hold": (("a",), (1,), {"z": 2e9}),
    "an expiry that is not a number": (("a",), (1,), {"a": "soon"}),
    "expiries that are not a map": (("a",), (1,), None),
    "keys that are not an array": ({"a": 1}, (1,), {}),
    "a bytes key": ((b"a",), (1,), {}),
    "an ext value": (("a",), (msgpack.ExtType(5, b"x"),), {}),
    "a timestamp value": (("a",), (msgpack.Timestamp(1, 0),), {}),
    "a map value": (("a",), ({"b": 1},), {}),
    # Among numbers, which the replay checks with one sum() before the
    # check of every value's type.
    "a map value among numbers": (("a", "b", "c"), (1.5, {"b": 1}, 2), {}),
    "an array value among numbers": (("a", "b"), (1.5, (1, 2)), {}),
    "a timestamp value among numbers": (("a", "b"), (1, msgpack.Timestamp(1, 0)), {}),
    "an ext value among numbers": (("a", "b"), (True, msgpack.ExtType(5, b"x")), {}),
}
SURROUNDINGS = {
    "between plain sets": (encode_set("before", 1), encode_set("after", 1)),
    # A compacted file holds nothing else: no record's types are left to a
    # check after the replay.
    "between bulk records": (encode_bulk(("before",), (1,), {}),
                             encode_bulk(("after",), (1,), {})),
}


@pytest.mark.parametrize("around", SURROUNDINGS.values(), ids=SURROUNDINGS)
@pytest.mark.parametrize("fields", MALFORMED_BULK_FIELDS.values(), ids=MALFORMED_BULK_FIELDS)
def test_a_malformed_bulk_record_is_damage_like_any_other(
    fields: tuple[object, object, object], around: tuple[bytes, bytes],
) -> None:
    forged = encode_record(BULK, *fields)
    assert zlib.crc32(forged, SEED) == SEED
    assert isinstance(read_frame(forged, 0), Invalid)
    # Followed by a valid frame it is corruption, whichever replay path sees it.
    before, after = around
    result = replay(log_of(before, forged, after, synced=True))
    assert result.corruption is not None
    assert result.corruption.offset == HEADER_SIZE + len(before)


def test_a_delete_record_of_a_key_that_is_not_a_string_is_malformed() -> None:
    forged = encode_record(DELETE, 7, None, None)
    assert isinstance(read_frame(forged, 0), Invalid)
    result = replay(log_of(encode_set("before", 1), forged, encode_set("after", 1),
                           synced=True))
    assert result.corruption is not None
    assert result.corruption.offset == HEADER_SIZE + len(encode_set("before", 1))


def test_a_bulk_record_of_numbers_or_of_mixed_scalars_replays_intact() -> None:
    numbers = (1.5, -0.0, float("inf"), 2**64 - 1, -(2**63), True, 0)
    mixed = (1.5, "text", b"\x00", None, False, 7)
    data = log_of(encode_bulk(tuple(f"n{i}" for i in range(len(numbers))), numbers, {}),
                  encode_bulk(tuple(f"m{i}" for i in range(len(mixed))), mixed, {}))
    result = replay(data)
    assert result.corruption is None and result.torn_tail == 0
    assert [result.entries[f"n{i}"] for i in range(len(numbers))] == list(numbers)
    assert [result.entries[f"m{i}"] for i in range(len(mixed))] == list(mixed)


def test_a_bulk_record_sets_each_key_to_its_value_and_clears_older_expiries() -> None:
    result = replay(log_of(encode_set("k", "old", expires=2e9),
                           encode_bulk(("k", "n"), (1, 2), {"n": 3e9})))
    assert result.entries == {"k": 1, "n": 2}
    assert result.expiries == {"n": 3e9}


@given(st.text(max_size=40), st.floats(allow_nan=True, allow_infinity=True))
def test_the_hand_made_float_set_is_byte_for_byte_the_general_encoding(
    key: str, value: float,
) -> None:
    try:
        expected = encode_set(key, value)
    except ValueError:  # a lone surrogate: both refuse it
        with pytest.raises(ValueError):
            encode_float_set(key, value)
        return
    assert encode_float_set(key, value) == expected


@given(st.text(max_size=40), st.one_of(st.integers(UINT32_MIN, UINT32_END - 1),
                                      st.sampled_from([UINT32_MIN, UINT32_END - 1,
                                                       1_765_000_000])))
def test_the_hand_made_uint32_set_is_byte_for_byte_the_general_encoding(
    key: str, value: int,
) -> None:
    try:
        expected = encode_set(key, value)
    except ValueError:  # a lone surrogate: both refuse it
        with pytest.raises(ValueError):
            encode_uint32_set(key, value)
        return
    assert encode_uint32_set(key, value) == expected


# What encode_scalar_set lays out by hand: keys of every UTF-8 size from 0 to
# 255 bytes (fixstr and str8 headers) and just past it, ASCII or not; values at
# the edges of each msgpack form; expiries of every magnitude.
def _utf8_sized(size: int, char: str) -> str:
    """A str of ``size`` UTF-8 bytes: ``char`` repeated, then ASCII to fill."""
    width = len(char.encode())
    return char * (size // width) + "k" * (size % width)


class Level(enum.IntEnum):
    HIGH = 3


class Stamp(float):
    pass


class Name(str):
    __slots__ = ()


SURROGATES = st.characters(categories=["Cs"])
EDGE_KEYS = st.builds(_utf8_sized, st.sampled_from([0, 1, 30, 31, 32, 33, 254, 255, 256, 257]),
                      st.sampled_from(["k", "é", "€", "\U0001f600"]))
KEYS = st.one_of(st.text(max_size=40), st.text(max_size=300), EDGE_KEYS,
                 st.text(st.one_of(st.characters(), SURROGATES), max_size=8),
                 # Not an exact str: left to the general path.
                 st.builds(Name, st.text(max_size=4)), st.sampled_from([b"k", 7, None]))
INT_EDGES = [0, 1, 127, 128, 255, 256, 65535, 65536, UINT32_END - 1, UINT32_END, 2**63,
             2**64 - 1, 2**64, -1, -32, -33, -128, -129, -32768, -32769, -(2**31),
             -(2**31) - 1, -(2**63), -(2**63) - 1]
STR_EDGES = st.builds(_utf8_sized, st.sampled_from([0, 1, 30, 31, 32, 33, 200, 250, 255, 256]),
                      st.sampled_from(["v", "é", "€", "\U0001f600"]))
ODD_VALUES = st.sampled_from([Encoded(b"\x92\x01\x02"), [1, "two"], (3.5,), {"k": None},
                              bytearray(b"ab"), Level.HIGH, Stamp(1.5), Name("n"), object(),
                              1j])
VALUES = st.one_of(
    st.floats(), st.integers(-(2**65), 2**65), st.sampled_from(INT_EDGES), st.booleans(),
    st.none(), st.text(max_size=40), st.text(max_size=300), STR_EDGES,
    st.text(st.one_of(st.characters(), SURROGATES), max_size=8), st.binary(max_size=300),
    ODD_VALUES,
)
EXPIRIES = st.one_of(
    st.none(), st.floats(), st.floats(1e9, 1e10), st.floats(-1e-300, 1e-300),
    st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308, 1_765_000_060.5]),
    st.integers(-(2**64), 2**64), st.sampled_from([Stamp(2e9), True, "2e9"]),
)


def outcome(encode: Callable[[], bytes]) -> bytes | tuple[type[BaseException], tuple[object, ...]]:
    """The bytes ``encode()`` returns, or the type and arguments of what it raises."""
    try:
        return encode()
    except Exception as exc:  # what encode_record raises, which the other must match
        return type(exc), exc.args


@settings(max_examples=1000)
@given(KEYS, VALUES, EXPIRIES)
def test_the_hand_made_scalar_set_is_byte_for_byte_the_general_encoding_or_its_error(
    key: str, value: object, expires: float | None,
) -> None:
    expected = outcome(lambda: encode_record(SET, key, value, expires))
    assert outcome(lambda: encode_scalar_set(key, value, expires)) == expected


def lays_out_by_hand(key: str, value: object, expires: float | None) -> bool:
    """Whether encode_scalar_set says it encodes these by hand (and they encode)."""
    if type(key) is not str or not (expires is None or type(expires) is float):
        return False
    try:
        raw, packed = key.encode(), msgpack.packb(value, use_bin_type=True)
    except (ValueError, OverflowError, TypeError):
        return False
    kind = type(value)
    return len(raw) < 256 and (
        value is None or kind is bool or kind is float
        or (kind is int and 0 <= value < 2**32)  # type: ignore[operator]
        or (kind is str and len(packed) <= 32)  # a fixstr: its header and 0 to 31 bytes
        or (kind in (int, str, bytes) and len(raw) + len(packed) < 256))


NOT_BY_HAND = (AssertionError, ("not by hand",))


@settings(max_examples=1000)
@given(KEYS, VALUES, EXPIRIES)
def test_the_hand_made_scalar_set_lays_out_what_it_says_and_leaves_the_rest_to_the_general_path(
    key: str, value: object, expires: float | None,
) -> None:
    expected = outcome(lambda: encode_record(SET, key, value, expires))
    with mock.patch.object(_format, "encode_record",
                           side_effect=AssertionError(*NOT_BY_HAND[1])):
        got = outcome(lambda: encode_scalar_set(key, value, expires))
    if lays_out_by_hand(key, value, expires):
        assert got == expected
    else:  # the general path's; or an error the hand-made path found first, the same
        assert got in (NOT_BY_HAND, expected)


def packing_into(total: int, key: str, make: Callable[[int], object]) -> object | None:
    """``make(m)`` for the m that packs, with ``key``, into ``total`` bytes (if any)."""
    for m in range(total + 1):
        value = make(m)
        if len(key.encode()) + len(msgpack.packb(value, use_bin_type=True)) == total:
            return value
    return None


# Keys and values that pack into about 256 bytes together: the edge of what
# encode_scalar_set joins into one field, for either key header.
ABOUT_256_BYTES = list(dict.fromkeys(
    ("k" * key_size, value)
    for key_size in (0, 1, 31, 32, 33, 100, 222, 223, 224, 253, 254, 255)
    for total in range(252, 259)
    for make in (lambda m: "v" * m, lambda m: b"b" * m, lambda m: "é" * m)
    if (value := packing_into(total, "k" * key_size, make)) is not None
))


@pytest.mark.parametrize(("key", "value"), ABOUT_256_BYTES, ids=[
    f"{len(key)}-byte key, {value[:1]!r} packed in {len(msgpack.packb(value))}"  # type: ignore[index]
    for key, value in ABOUT_256_BYTES])
@pytest.mark.parametrize("expires", [None, 2e9])
def test_the_hand_made_scalar_set_of_a_key_and_value_of_about_256_bytes_is_the_general_encoding(
    key: str, value: object, expires: float | None,
) -> None:
    assert encode_scalar_set(key, value, expires) == encode_record(SET, key, value, expires)


READABLE_VALUES = st.one_of(
    st.floats(allow_nan=False), st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([edge for edge in INT_EDGES if -(2**63) <= edge < 2**64]),
    st.booleans(), st.none(), st.text(max_size=40), STR_EDGES, st.binary(max_size=300),
)
READABLE_EXPIRIES = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False),
                              st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308]))


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=300), EDGE_KEYS), READABLE_VALUES, READABLE_EXPIRIES)
def test_a_hand_made_scalar_set_reads_back_as_its_key_value_and_expiry(
    key: str, value: Value, expires: float | None,
) -> None:
    frame = encode_scalar_set(key, value, expires)
    decoded = read_frame(frame, 0)
    assert isinstance(decoded, Frame) and decoded.end == len(frame)
    assert (decoded.kind, decoded.a, decoded.b, decoded.c) == (SET, key, value, expires)
    assert type(decoded.b) is type(value) and type(decoded.c) is type(expires)
    if type(value) is float:  # -0.0 == 0.0: compare the bits too
        assert math.copysign(1, decoded.b) == math.copysign(1, value)  # type: ignore[arg-type]
    result = replay(log_of(encode_set(key, "before", 1.0), frame, synced=True))
    assert result.corruption is None and result.torn_tail == 0
    assert result.entries == {key: value}
    assert result.expiries == ({} if expires is None else {key: expires})


@pytest.mark.parametrize(("key", "value"), [
    ("\ud800", 1.5), ("k", "\udfff"), ("\ud800", "\udfff"), ("k", 2**64), ("k", -(2**63) - 1),
    ("\ud800", 2**64), ("k", object()), ("k" * 300, 2**64), ("k", "x" * 300 + "\ud800"),
])
@pytest.mark.parametrize("expires", [None, 2e9])
def test_the_hand_made_scalar_set_refuses_what_the_general_path_refuses_with_its_error(
    key: str, value: object, expires: float | None,
) -> None:
    expected = outcome(lambda: encode_record(SET, key, value, expires))
    assert isinstance(expected, tuple)
    assert outcome(lambda: encode_scalar_set(key, value, expires)) == expected


# -- header -------------------------------------------------------------------


def test_header_round_trips() -> None:
    header = decode_header(encode_header(7, 1_700_000_000.25, 12345))
    assert (header.compactions, header.compacted_at, header.compacted_length) == (
        7, 1_700_000_000.25, 12345)
    assert len(encode_header(0, 0.0, HEADER_SIZE)) == HEADER_SIZE


def test_an_empty_file_or_a_header_cut_short_is_an_unfinished_header() -> None:
    for size in range(HEADER_SIZE):
        assert is_unfinished_header(HEADER[:size])
        assert replay(HEADER[:size]).header is None
        assert replay(HEADER[:size]).corruption is None
    assert is_unfinished_header(b"\x00" * 10)
    assert not is_unfinished_header(b"{}")
    assert not is_unfinished_header(HEADER)


def test_a_header_with_a_bad_checksum_is_corruption() -> None:
    damaged = bytearray(HEADER)
    damaged[13] ^= 0xFF
    result = replay(bytes(damaged) + encode_set("k", 1))
    assert result.corruption is not None and result.corruption.offset == 0


def test_an_unknown_format_version_is_refused() -> None:
    result = replay(MAGIC + b"\x00\x63" + HEADER[10:])
    assert result.corruption is not None


def header_of_version(version: int) -> bytes:
    """A header of ``version``; version 1 (aiokv 0.2) had no flags."""
    flags = HEADER[10:12] if version >= 2 else b"\0\0"
    body = MAGIC + version.to_bytes(2, "big") + flags + HEADER[12 : HEADER_SIZE - 4]
    return body + zlib.crc32(body).to_bytes(4, "big")


def test_files_of_format_version_1_written_by_aiokv_0_2_still_replay() -> None:
    assert header_of_version(3) == HEADER  # the version new files get
    result = replay(header_of_version(1) + encode_set("k", 1) + encode_delete("x"))
    assert result.corruption is None and result.entries == {"k": 1}
    assert decode_header(header_of_version(1)).version == 1
    assert replay(header_of_version(4) + encode_set("k", 1)).corruption is not None


# -- replay: the recovery rule ------------------------------------------------


def test_an_intact_log_replays_every_record_in_order() -> None:
    result = replay(log_of(*SAMPLE_FRAMES))
    assert result.corruption is None and result.torn_tail == 0
    assert "a" not in result.entries
    assert result.entries["float"] == 1.5
    assert result.entries["blob"] == b"\x00\x96\xce\xff"
    assert result.entries["big"] == 2**64 - 1
    assert isinstance(result.entries["nested"], Encoded)
    assert result.entries["s"] == 1 and result.entries["e"] == encode_value([1, 2])
    assert result.entries["b1"] == 1.5 and result.entries["b3"] == b"\xce"
    assert "b2" in result.entries and result.entries["b2"] is None
    assert "negative" not in result.entries and "flag" not in result.entries
    assert result.entries["bs"] == 9 and result.entries["be"] == encode_value([1])
    assert result.expiries == {"expiring": 1_900_000_000.5, "t": 2_000_000_000.0,
                               "b2": 2_100_000_000.0, "bu": 2_200_000_000.0}


def test_records_larger_than_a_read_and_records_across_reads_replay_intact() -> None:
    big = bytes(range(256)) * (3 * READ_SIZE // 256)  # three reads' worth
    small = [encode_set(f"k{i}", float(i)) for i in range(READ_SIZE // 20)]  # > 1 read
    data = log_of(*small, encode_set("big", big), *small[:10], encode_set("after", "x"))
    result = replay(data)
    assert result.corruption is None and result.torn_tail == 0 and result.end == len(data)
    assert result.entries["big"] == big and result.entries["after"] == "x"
    assert len(result.entries) == len(small) + 2
    cut = replay(data[:-1])  # the last record torn: everything before it stays
    assert cut.torn_tail > 0 and "after" not in cut.entries and cut.entries["big"] == big


KEEPS_HASHES_ONLY_IN_GENERAL_TABLES = pytest.mark.skipif(
    sys.implementation.name != "cpython" or sys.version_info < (3, 11),
    reason="CPython 3.11+ has the str-only dict table that leaves hashes out",
)


def str_only_copy(entries: dict[str, Value]) -> dict[str, Value]:
    """The same items in a dict that has only ever held str keys."""
    return {key: value for key, value in entries.items()}


@KEEPS_HASHES_ONLY_IN_GENERAL_TABLES
def test_a_new_entries_dict_is_empty_and_keeps_a_hash_beside_each_key() -> None:
    entries = new_entries()
    assert entries == {} and type(entries) is dict
    entries.update((f"key{i}", i) for i in range(100))
    assert entries == str_only_copy(entries)
    assert sys.getsizeof(entries) > sys.getsizeof(str_only_copy(entries))


@KEEPS_HASHES_ONLY_IN_GENERAL_TABLES
@pytest.mark.parametrize("path", ["one msgpack stream", "frame by frame"])
def test_replayed_entries_keep_a_hash_beside_each_key(path: str) -> None:
    """Either replay fills a dict from new_entries(): resizing a large one
    then reads no key's string object."""
    keys = tuple(f"key{i}" for i in range(100))
    log = log_of(encode_bulk(keys, tuple(range(100)), {}), encode_set("tail", 1.5))
    torn = encode_set("torn", 2.5)[:-3] if path == "frame by frame" else b""
    result = replay(log + torn)
    assert result.corruption is None and len(result.entries) == 101
    assert result.torn_tail == len(torn)
    assert sys.getsizeof(result.entries) > sys.getsizeof(str_only_copy(result.entries))


def test_truncation_at_every_offset_replays_exactly_the_records_before_the_cut() -> None:
    log = log_of(*SAMPLE_FRAMES)
    boundaries = [HEADER_SIZE]
    for frame in SAMPLE_FRAMES:
        boundaries.append(boundaries[-1] + len(frame))
    for cut in range(HEADER_SIZE, len(log) + 1):
        complete = sum(1 for end in boundaries[1:] if end <= cut)
        result = replay(log[:cut])
        expected_entries, expected_expiries = records_state(SAMPLE_FRAMES[:complete])
        assert result.corruption is None, cut
        assert result.entries == expected_entries, cut
        assert result.expiries == expected_expiries, cut
        assert result.end == boundaries[complete]
        assert result.torn_tail == cut - boundaries[complete]


def test_a_zero_filled_tail_is_a_torn_tail() -> None:
    log = log_of(*SAMPLE_FRAMES[:3])
    result = replay(log + b"\x00" * 4096)
    assert result.corruption is None
    assert result.end == len(log) and result.torn_tail == 4096


def test_a_final_frame_with_a_bad_checksum_is_a_torn_tail() -> None:
    last = bytearray(SAMPLE_FRAMES[3])
    last[-1] ^= 0xFF
    log = log_of(*SAMPLE_FRAMES[:3])
    result = replay(log + bytes(last))
    assert result.corruption is None
    assert (result.end, result.torn_tail) == (len(log), len(last))


def test_a_flipped_byte_followed_by_a_valid_frame_is_corruption_at_its_offset() -> None:
    log = bytearray(log_of(*SAMPLE_FRAMES, synced=True))
    position = HEADER_SIZE + len(SAMPLE_FRAMES[0]) + 3
    log[position] ^= 0x40
    result = replay(bytes(log))
    assert result.corruption is not None
    assert result.corruption.offset == HEADER_SIZE + len(SAMPLE_FRAMES[0])
    assert result.entries == {"a": 1}  # replay stopped at the damage


def test_damage_inside_the_compacted_part_is_corruption_even_at_the_end() -> None:
    frames = SAMPLE_FRAMES[:4]
    compacted = HEADER_SIZE + sum(map(len, frames))
    log = bytearray(log_of(*frames, compacted_length=compacted))
    log[-2] ^= 0x10  # the last frame, which a compaction fsynced
    result = replay(bytes(log))
    assert result.corruption is not None
    assert "compacted" in result.corruption.reason


def test_a_file_cut_inside_the_compacted_part_is_corruption() -> None:
    frames = SAMPLE_FRAMES[:4]
    compacted = HEADER_SIZE + sum(map(len, frames))
    log = log_of(*frames, compacted_length=compacted)
    assert replay(log[:-1]).corruption is not None
    assert replay(log).corruption is None


# -- gaps a power loss leaves past the last fsync ----------------------------------

A = encode_set("a", 1)
B = encode_set("b", "x" * 5000)  # reaches past the first page
C = encode_set("c", 3)


def zeroed(log: bytes, start: int, end: int) -> bytes:
    return log[:start] + bytes(end - start) + log[end:]


def test_a_gap_past_the_last_synced_offset_ends_the_log_like_a_torn_tail() -> None:
    """B and C were never fsynced: B's first page never reached the disk, C's did."""
    head = log_of(A)
    log = head + encode_synced(len(head)) + B + C
    b_start = len(head) + len(encode_synced(len(head)))
    gapped = zeroed(log, b_start, 4096)
    result = replay(gapped)
    assert result.corruption is None
    assert result.entries == {"a": 1}
    assert (result.end, result.torn_tail, result.dropped_frames) == (
        b_start, len(gapped) - b_start, 1)


def test_damage_that_a_later_synced_frame_vouches_for_is_corruption() -> None:
    log = log_of(A, B, C, synced=True)  # B and C were fsynced, then vouched for
    start = HEADER_SIZE + len(A)
    result = replay(zeroed(log, start, start + 100))
    assert result.corruption is not None and result.corruption.offset == start
    assert result.entries == {"a": 1}


def test_damage_before_an_earlier_synced_frame_is_corruption() -> None:
    head = log_of(A, B)
    log = head + encode_synced(len(head)) + C  # C unsynced, A and B vouched for
    start = HEADER_SIZE + len(A) + 10
    result = replay(zeroed(log, start, start + 50))
    assert result.corruption is not None and result.corruption.offset == HEADER_SIZE + len(A)


def test_without_the_vouched_flag_damage_followed_by_a_valid_frame_stays_corruption() -> None:
    """Files of earlier versions have no SYNCED frames: their absence says nothing."""
    log = header_of_version(1) + A + B + C
    start = HEADER_SIZE + len(A)
    result = replay(zeroed(log, start, start + 100))
    assert result.corruption is not None and result.corruption.offset == start


def test_a_synced_frame_changes_no_entry_on_either_replay_path() -> None:
    head = log_of(A)
    log = head + encode_synced(len(head)) + C
    intact = replay(log)
    assert intact.entries == {"a": 1, "c": 3} and intact.corruption is None
    walked = replay(log + C[:5])  # a torn tail: the frame-by-frame walk
    assert walked.entries == intact.entries and walked.torn_tail == 5


def test_the_replay_reports_how_far_the_log_is_vouched_for() -> None:
    head = log_of(A, B)
    mark = encode_synced(len(head))  # right where the vouched part ends: itself too
    assert replay(head + mark + C).durable_end == len(head) + len(mark)
    late = encode_synced(HEADER_SIZE + len(A))  # names less than what precedes it
    assert replay(head + late + C).durable_end == HEADER_SIZE + len(A)
    assert replay(head + late + C + C[:3]).durable_end == HEADER_SIZE + len(A)
    assert replay(log_of(A, compacted_length=HEADER_SIZE + len(A))).durable_end == (
        HEADER_SIZE + len(A))


@pytest.mark.parametrize("fields", [
    (HEADER_SIZE - 1, None, None), ("40", None, None), (True, None, None),
    (HEADER_SIZE, 1, None), (HEADER_SIZE, None, 2.0),
], ids=["inside the header", "a string", "a bool", "a value", "an expiry"])
def test_a_malformed_synced_record_is_damage(fields: tuple[object, object, object]) -> None:
    assert isinstance(read_frame(encode_record(SYNCED, *fields), 0), Invalid)


def test_a_synced_record_naming_bytes_after_itself_is_damage() -> None:
    head = log_of(A)
    boastful = encode_synced(len(head) + 1)
    assert isinstance(read_frame(head + boastful, len(head)), Invalid)
    assert replay(head + boastful).torn_tail == len(boastful)


def test_salvage_skips_damage_and_keeps_every_valid_frame() -> None:
    log = bytearray(log_of(*SAMPLE_FRAMES, synced=True))
    first = HEADER_SIZE + len(SAMPLE_FRAMES[0])
    log[first + 8] ^= 0x01  # the "float" frame
    result = replay(bytes(log), salvage=True)
    assert result.corruption is None
    assert [(d.offset, d.end) for d in result.skipped] == [
        (first, first + len(SAMPLE_FRAMES[1]))]
    assert "float" not in result.entries and result.entries["text"] == "héllo"
    assert len(result.entries) == len(replay(log_of(*SAMPLE_FRAMES)).entries) - 1


def test_salvage_of_a_torn_tail_only_cuts_the_tail() -> None:
    log = log_of(*SAMPLE_FRAMES)
    result = replay(log[:-3], salvage=True)
    assert result.skipped == [] and result.torn_tail > 0


@pytest.mark.parametrize("offsets", [[15], [1], [0, 1, 2, 3], [HEADER_SIZE - 1], [9]],
                         ids=["compactions", "magic", "all-magic", "checksum", "version"])
def test_salvage_keeps_every_frame_whatever_the_header_says(offsets: list[int]) -> None:
    log = bytearray(log_of(*SAMPLE_FRAMES))
    for offset in offsets:
        log[offset] ^= 0x01
    assert is_log(bytes(log))
    strict = replay(bytes(log))
    assert strict.corruption is not None and strict.corruption.offset == 0
    salvaged = replay(bytes(log), salvage=True)
    assert salvaged.entries == replay(log_of(*SAMPLE_FRAMES)).entries
    assert [(d.offset, d.end) for d in salvaged.skipped] == [(0, HEADER_SIZE)]


def test_a_log_damaged_in_its_header_and_first_frame_is_still_a_log() -> None:
    log = bytearray(log_of(*SAMPLE_FRAMES))
    log[1] ^= 0x01
    log[HEADER_SIZE + 3] ^= 0x01
    assert is_log(bytes(log))
    assert holds_a_record(bytes(log))
    salvaged = replay(bytes(log), salvage=True)
    assert salvaged.entries == replay(log_of(*SAMPLE_FRAMES[1:])).entries
    assert [d.offset for d in salvaged.skipped] == [0, HEADER_SIZE]


def test_what_is_a_log_and_what_is_not() -> None:
    assert is_log(b"") and is_log(bytes(17)) and is_log(MAGIC[:3])
    assert is_log(log_of(*SAMPLE_FRAMES))
    assert not is_log(b'{"a": 1}')
    assert not is_log(bytes(range(256)) * 4)
    assert not holds_a_record(log_of())
    assert not holds_a_record(log_of(encode_synced(HEADER_SIZE)))
    assert holds_a_record(log_of(encode_delete("gone")))


json_documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=10), json_documents, max_size=6),
       st.sampled_from([SAMPLE_FRAMES[0], SAMPLE_FRAMES[2], SAMPLE_FRAMES[3]]),
       st.booleans())
def test_no_json_state_file_passes_for_a_log(
        document: dict[str, object], frame: bytes, ascii_only: bool) -> None:
    text = json.dumps(document, ensure_ascii=ascii_only).encode()
    assert not is_log(text)
    # Even one holding the bytes a frame starts with, as text can hold them.
    text = json.dumps({**document, "x": frame.decode("latin-1")}, ensure_ascii=False).encode()
    assert not is_log(text)


# -- properties ---------------------------------------------------------------

scalar_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False), st.text(max_size=20), st.binary(max_size=20),
)
keys = st.text(max_size=6)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("set"), keys, scalar_values),
        st.tuples(st.just("delete"), keys, st.none()),
    ),
    max_size=25,
)


def frames_for(ops: list[tuple[str, str, object]]) -> list[bytes]:
    return [encode_set(key, encode_value(value)) if op == "set" else encode_delete(key)
            for op, key, value in ops]


@settings(max_examples=150, deadline=None)
@given(operations, st.data())
def test_every_prefix_of_a_log_replays_to_a_prefix_of_its_records(
    ops: list[tuple[str, str, object]], data: st.DataObject
) -> None:
    frames = frames_for(ops)
    log = log_of(*frames)
    cut = data.draw(st.integers(HEADER_SIZE, len(log)))
    result = replay(log[:cut])
    assert result.corruption is None
    applied = 0
    end = HEADER_SIZE
    while applied < len(frames) and end + len(frames[applied]) <= cut:
        end += len(frames[applied])
        applied += 1
    assert result.entries == records_state(frames[:applied])[0]
    assert (result.end, result.torn_tail) == (end, cut - end)


@settings(max_examples=150, deadline=None)
@given(operations, st.binary(min_size=1, max_size=64))
def test_garbage_after_a_log_is_a_torn_tail_or_corruption_never_an_error(
    ops: list[tuple[str, str, object]], garbage: bytes
) -> None:
    frames = frames_for(ops)
    log = log_of(*frames)
    result = replay(log + garbage)
    expected = records_state(frames)[0]
    if result.corruption is None:
        assert result.entries == expected
        assert result.end + result.torn_tail == len(log) + len(garbage)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_replay_of_any_bytes_returns_a_result(data: bytes) -> None:
    for candidate in (data, HEADER + data):
        result = replay(candidate)
        assert result.corruption is not None or result.end + result.torn_tail == len(
            candidate) or result.header is None


def test_count_frames_counts_the_records_after_the_header() -> None:
    assert count_frames(log_of()) == 0
    assert count_frames(log_of(*SAMPLE_FRAMES)) == len(SAMPLE_FRAMES)


@settings(max_examples=500)
@given(st.one_of(st.integers(-(1 << 63), (1 << 64) - 1),
                 st.sampled_from([-(1 << 63), -(1 << 31) - 1, -(1 << 31), -32769, -32768, -129,
                                  -128, -33, -32, -1, 0, 127, 128, 255, 256, 65535, 65536,
                                  (1 << 32) - 1, 1 << 32, (1 << 64) - 1]),
                 st.floats(allow_nan=False), st.text(max_size=300), st.binary(max_size=300),
                 st.booleans(), st.none()))
def test_the_size_of_a_scalar_is_the_length_msgpack_packs_it_to(value: object) -> None:
    assert value_size(value) == len(msgpack.packb(value, use_bin_type=True))  # type: ignore[arg-type]


FLAT_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 63), (1 << 64) - 1),
                         st.floats(allow_nan=False), st.text(max_size=20), st.binary(max_size=20))


@settings(max_examples=300)
@given(st.one_of(st.dictionaries(st.text(max_size=10), FLAT_SCALARS, max_size=8),
                 st.lists(FLAT_SCALARS, max_size=8)))
def test_a_flat_dict_or_list_is_encoded_as_msgpack_packs_it_and_reads_back_equal(
        value: object) -> None:
    try:
        expected = msgpack.packb(value, use_bin_type=True)
    except ValueError:  # a lone surrogate: refused either way
        with pytest.raises(ValueError):
            encode_value(value)
        return
    encoded = encode_value(value)
    assert encoded == expected
    assert decode_value(encoded) == value


def test_values_that_would_not_read_back_are_still_refused() -> None:
    with pytest.raises(ValueError, match="does not read back"):
        encode_value({(1, 2): "a tuple key"})
    with pytest.raises(ValueError, match="64-bit"):
        encode_value({"n": 1 << 64})
    with pytest.raises(ValueError, match="64-bit"):
        encode_value([1 << 64])


# What encode_value is given: containers of the exact built-in types, nested,
# under keys of every hashable scalar type; and what the strict packer refuses
# inside them (tuples, subclasses, a tuple key), or neither packer packs (an
# int beyond 64 bits, a lone surrogate, an object).
class SubDict(dict):  # type: ignore[type-arg]
    pass


def _view(data: bytes) -> memoryview:
    return memoryview(data)


ANY_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**65), st.floats(), st.text(max_size=8),
    st.text(SURROGATES, min_size=1, max_size=1), st.binary(max_size=8),
    st.builds(bytearray, st.binary(max_size=4)),
    st.builds(_view, st.binary(max_size=4)),
    st.sampled_from([Level.HIGH, Stamp(2.5), Name("n"), Encoded(b"\x90"), object(), 1j]),
)
MAP_KEYS = st.one_of(st.text(max_size=6), st.integers(-(2**64), 2**64), st.floats(), st.none(),
                     st.booleans(), st.binary(max_size=4), st.sampled_from([Name("k"), (1, 2)]))
NESTED = st.recursive(
    ANY_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(MAP_KEYS, inner, max_size=4),
        st.builds(tuple, st.lists(inner, max_size=3)),
        st.builds(SubDict, st.dictionaries(st.text(max_size=3), inner, max_size=3))),
    max_leaves=12,
)


def stored(value: object) -> tuple[object, ...]:
    """What encode_value gives (its type, and its bytes or repr) or raises."""
    try:
        kept = encode_value(value)
    except Exception as exc:  # the error the general path's proof ends with, compared below
        return type(exc), exc.args
    return type(kept), bytes(kept) if type(kept) is Encoded else repr(kept)


@settings(max_examples=1000)
@given(NESTED)
def test_a_container_is_stored_as_the_general_path_that_decodes_it_stores_it_or_refused_alike(
    value: object,
) -> None:
    """The strict packer's shortcut stands in for packing then decoding (the
    general path, forced here by making the strict packer refuse everything)."""
    with mock.patch.object(_format, "_strict_pack", side_effect=TypeError):
        by_decoding = stored(value)
    assert stored(value) == by_decoding


@pytest.mark.parametrize("make", [lambda inner: [inner], lambda inner: {"k": inner},
                                  lambda inner: {1.5: [inner]}], ids=["lists", "dicts", "mixed"])
def test_the_deepest_container_msgpack_packs_reads_back_and_one_level_more_is_refused_alike(
    make: Callable[[object], object],
) -> None:
    value: object = None
    while True:
        deeper = make(value)
        try:
            msgpack.packb(deeper, use_bin_type=True)
        except ValueError:
            break
        value = deeper
    encoded = encode_value(value)  # it reads back, and as the same (too deep for ==)
    assert type(encoded) is Encoded
    assert msgpack.packb(decode_value(encoded), use_bin_type=True) == encoded
    with mock.patch.object(_format, "_strict_pack", side_effect=TypeError):
        by_decoding = stored(deeper)
    assert stored(deeper) == by_decoding and by_decoding[0] is ValueError


CONTAINERS_STORED = st.builds(encode_value, st.one_of(
    st.dictionaries(st.text(max_size=10), FLAT_SCALARS, max_size=12),
    st.lists(FLAT_SCALARS, max_size=30),
    st.dictionaries(st.text(max_size=4), st.lists(FLAT_SCALARS, max_size=3), max_size=3)))
ENCODED_VALUES = st.one_of(
    CONTAINERS_STORED,
    st.builds(Encoded, st.binary(max_size=300)),  # as a frame holds it, whatever its bytes
    st.builds(lambda size: Encoded(b"\x90" * size), st.sampled_from([0, 1, 254, 255, 256, 257])),
)


@pytest.mark.parametrize("key", [_utf8_sized(size, "k") for size in (0, 31, 32, 255, 256)]
                         + [_utf8_sized(255, "\U0001f600")], ids=len)
@pytest.mark.parametrize("size", [0, 1, 255, 256, 65536])
@pytest.mark.parametrize("expires", [None, 2e9])
def test_the_hand_made_encoded_set_of_the_largest_key_and_encoding_is_the_general_encoding(
    key: str, size: int, expires: float | None,
) -> None:
    value = Encoded(b"\xc0" * size)
    assert encode_encoded_set(key, value, expires) == encode_record(SET_ENCODED, key, value,
                                                                    expires)


@settings(max_examples=1000)
@given(KEYS, st.one_of(ENCODED_VALUES, ENCODED_VALUES, VALUES), EXPIRIES)
def test_the_hand_made_encoded_set_is_byte_for_byte_the_general_encoding_or_its_error(
    key: str, value: Encoded, expires: float | None,
) -> None:
    expected = outcome(lambda: encode_record(SET_ENCODED, key, value, expires))
    with mock.patch.object(_format, "encode_record",
                           side_effect=AssertionError(*NOT_BY_HAND[1])):
        got = outcome(lambda: encode_encoded_set(key, value, expires))
    if got == NOT_BY_HAND:  # which it says it leaves to the general path
        assert not (type(value) is Encoded and len(value) < 256
                    and (expires is None or type(expires) is float)
                    and type(key) is str and len(key.encode()) < 256)
        got = outcome(lambda: encode_encoded_set(key, value, expires))
    assert got == expected


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=300), EDGE_KEYS), CONTAINERS_STORED, READABLE_EXPIRIES)
def test_a_hand_made_encoded_set_reads_back_as_its_key_value_and_expiry(
    key: str, value: Encoded, expires: float | None,
) -> None:
    frame = encode_encoded_set(key, value, expires)
    decoded = read_frame(frame, 0)
    assert isinstance(decoded, Frame) and decoded.end == len(frame)
    assert (decoded.kind, decoded.a, decoded.b, decoded.c) == (SET_ENCODED, key, value, expires)
    result = replay(log_of(encode_set(key, "before", 1.0), frame, synced=True))
    assert result.corruption is None and result.torn_tail == 0
    assert result.entries == {key: value} and type(result.entries[key]) is Encoded
    assert result.expiries == ({} if expires is None else {key: expires})


_SIZED_VALUES = st.one_of(
    st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
    st.integers(min_value=-40, max_value=70_000),
    st.sampled_from([0, 127, 128, 255, 256, 65535, 65536, (1 << 32) - 1, 1 << 32, -32, -33]),
    st.floats(allow_nan=False), st.booleans(), st.none(), st.text(max_size=40),
    st.binary(max_size=40), st.dictionaries(st.text(max_size=5), st.integers(0, 9), max_size=3),
)


@given(_SIZED_VALUES, _SIZED_VALUES)
def test_size_change_is_the_difference_of_the_two_values_sizes(new: object, old: object) -> None:
    stored_new, stored_old = encode_value(new), encode_value(old)
    assert size_change(stored_new, stored_old) == (value_size(stored_new)
                                                   - value_size(stored_old))


def test_a_batch_frame_removes_its_keys_then_sets_the_others_with_their_expiries() -> None:
    entries, expiries = records_state([
        encode_set("gone", 1, expires=3e9), encode_set("kept", "x", expires=3e9),
        encode_batch({"kept": "y", "new": 2}, {"list": Encoded(b"\x91\x01")}, {"new": 4e9},
                     ["gone", "never there"]),
    ])
    assert entries == {"kept": "y", "new": 2, "list": Encoded(b"\x91\x01")}
    assert expiries == {"new": 4e9}  # "kept" was set by the batch without one


@pytest.mark.parametrize(("a", "b", "c"), [
    ({"k": 1}, {}, ({}, ("k",))),  # set and removed at once
    ({"k": 1}, {"k": b"\x91\x01"}, ({}, ())),  # in both maps
    ({"k": 1}, {}, ({"other": 3e9}, ())),  # an expiry of a key it does not set
    ({"k": 1}, {}, ({}, ("d", "d"))),  # a key removed twice
    ({"k": 1}, {}, ({},)),  # c not a pair
    ({"k": [1]}, {}, ({}, ())),  # a container where a scalar belongs
    ({"k": 1}, {"e": b"\x01"}, ({}, ())),  # an "encoded" value that is no container
    ({"k": 1}, {}, ({"k": True}, ())),  # an expiry of True
])
def test_a_malformed_batch_frame_is_damage_not_a_part_of_a_batch(
    a: object, b: object, c: object,
) -> None:
    frame = encode_record(BATCH, a, b, c)
    result = replay(log_of(encode_set("before", 1), frame, encode_set("after", 2), synced=True))
    assert result.corruption is not None
    assert result.entries == {"before": 1}
