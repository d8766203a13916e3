"""The byte format of an aiokv log, as pure functions over ``bytes``.

Nothing in this module opens a file. ``docs/format.md`` describes the same
layout in prose; the constants below are the single source of truth for it.

A log is a fixed-size header followed by frames. Every frame is itself one
msgpack array of six elements, so a whole intact log can be streamed by
``msgpack.Unpacker`` at C speed::

    [length: uint32, kind: int, a, b, c, checksum: uint32]

The checksum is chosen so that ``zlib.crc32(frame, SEED) == SEED`` for every
intact frame, where ``SEED`` is the CRC-32 residue. Because each frame brings
the CRC register back to the same value, a run of intact frames also satisfies
``zlib.crc32(frames, SEED) == SEED``: one C call checks a whole log, and the
frame-by-frame walk is only needed to locate damage.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Union, cast
from zlib import crc32

import msgpack

MAGIC: Final = b"\x89aiokv\r\n"
FORMAT_VERSION: Final = 3
"""The version new files are written with. Version 2 added BULK and SYNCED
frames; version 3 the log files that follow a base file (LOG_FILE, FOLLOWS)
and BATCH frames."""
READABLE_VERSIONS: Final = frozenset({1, 2, 3})

# magic, version, flags, compactions, compacted_at, compacted_length,
# log_number (reserved, zero, before version 3)
_HEADER_BODY: Final = struct.Struct(">8sHHIdQI")
_HEADER_CRC: Final = struct.Struct(">I")
HEADER_SIZE: Final = _HEADER_BODY.size + _HEADER_CRC.size  # 40

# The CRC-32 residue: crc32(x + crc32(x, s).to_bytes(4, "little"), s) == SEED
# for every byte string x when s == SEED.
SEED: Final = 0x2144DF1C

FRAME_START: Final = b"\x96\xce"  # msgpack: fixarray(6), then uint32
_CHECKSUM_TAG: Final = b"\xce"  # msgpack uint32, holding the checksum
_PREFIX_SIZE: Final = 6  # FRAME_START + 4-byte length
_SUFFIX_SIZE: Final = 5  # checksum tag + 4-byte checksum
MIN_FRAME_SIZE: Final = _PREFIX_SIZE + 4 + _SUFFIX_SIZE  # four 1-byte objects
MAX_FRAME_SIZE: Final = 1 << 30
"""A length field claiming more than this is damage, never an allocation."""

SET: Final = 1
"""a = key, b = value (a msgpack scalar), c = expiry time or nil."""
SET_ENCODED: Final = 2
"""a = key, b = bin holding the msgpack encoding of a list or map, c = expiry."""
DELETE: Final = 3
"""a = key, b = nil, c = nil."""
SNAPSHOT: Final = 4
"""a = map key -> scalar, b = map key -> encoded container, c = map key -> expiry."""
EXPIRE: Final = 5
"""a = key, b = nil, c = new expiry time or nil (the key then never expires)."""
BULK: Final = 6
"""a = array of keys, b = array of as many scalar values, c = map key -> expiry.

What compaction writes for scalar values: two arrays replay into the store's
dict with one ``dict.update(zip(a, b))``, about twice as fast as a map.
"""

SYNCED: Final = 7
"""a = an offset of this file, b = nil, c = nil: every byte before the offset
had been fsynced when this record was written.

It changes no entry. Recovery uses it to tell a power loss from damage: a
stretch of bytes that never reached the disk can only lie past the last
offset a SYNCED record vouches for (see ``_recovery``).
"""

FOLLOWS: Final = 8
"""a = the number of the file this log file follows (0: the base file),
b = that file's length when appends moved here, c = the base file's
compaction count at that moment.

The first frame of every log file (version 3). It changes no entry; recovery
uses it to tell whether the file before it lost bytes it held when appends
moved on (see ``_chain``).
"""

BATCH: Final = 9
"""a = map key -> scalar, b = map key -> encoded container, c = an array of
two: a map key -> expiry, and an array of the keys removed (version 3).

An atomic batch (``set_many``, ``delete_many``, ``batch()``): every change
of it in one frame under one checksum, so replay applies all of it or,
torn or damaged, none. Its keys are distinct: each key's end state. A key
set by it loses any earlier expiry unless ``c`` gives it one, as in a
SNAPSHOT.
"""

KINDS: Final = frozenset({SET, SET_ENCODED, DELETE, SNAPSHOT, EXPIRE, BULK, SYNCED, FOLLOWS,
                          BATCH})

SCALAR_TYPES: Final = frozenset({type(None), bool, int, float, str, bytes})
"""Value types kept in memory as they are: immutable, so never copied."""

# Packing exact built-in scalars, tuples of them and plain dicts of them runs
# in C without releasing the GIL, so one shared Packer is safe across threads.
# User containers (which may be subclasses calling back into Python) always go
# through a fresh msgpack.packb instead.
_pack = msgpack.Packer(use_bin_type=True).pack

# With strict types, a Packer packs only the exact types None, bool, int,
# float, str, bytes, bytearray, memoryview, dict and list (a subclass of any,
# or a tuple, is a TypeError), so it never calls back into Python either and
# one can be shared. What it packs also always reads back, as the same value
# but for bytearray and memoryview (bytes then): map keys are dict keys of
# those types, so hashable scalars (a list or dict is no dict key, a tuple is
# refused), and its nesting limit (1,024) is one msgpack's unpacker reads.
# So encode_value need not decode what it packs to prove it.
_strict_pack = msgpack.Packer(use_bin_type=True, strict_types=True).pack


class Encoded(bytes):
    """A list or dict value held in memory as its msgpack encoding.

    Storing the encoding makes every read an independent copy (it is decoded
    anew) and takes less memory than the Python objects would.
    """

    __slots__ = ()


Value = Union[None, bool, int, float, str, bytes, Encoded]  # noqa: UP007 (a runtime alias on 3.10)
"""A value as the store holds it in memory."""


@dataclass(frozen=True)
class Header:
    version: int
    compactions: int
    compacted_at: float
    """Unix time of the compaction that wrote this file, 0.0 for never."""
    compacted_length: int
    """End of the part that was fsynced before this file was put in place."""
    vouched: bool = False
    """Whether appends to this file are followed, after each fsync, by a SYNCED
    record (the VOUCHED flag): files written by versions before it are not."""
    log_number: int = 0
    """In a base file: the number of the first log file that follows it (0
    before version 3: none). In a log file (``log_file``): its own number."""
    log_file: bool = False
    """Whether this is a log file (``<base>.log-<n>``) rather than a base file."""
    has_log: bool = False
    """A base written by a compaction (HAS_LOG): its first log file existed
    before it was put in place, so the store is not whole without it."""


VOUCHED: Final = 0x0001
"""Header flag: the writer records each fsync of appended frames in a SYNCED
frame (see ``_recovery``). Every file this version creates has it."""
LOG_FILE: Final = 0x0002
"""Header flag (version 3): a log file holding appends that follow a base
file, never a store of its own."""
HAS_LOG: Final = 0x0004
"""Header flag (version 3): a base written by a compaction, whose first log
file was created before it; a store whose base has it and that log file is
missing has lost what was written since (a base moved or copied alone)."""
_KNOWN_FLAGS: Final = VOUCHED | LOG_FILE | HAS_LOG


def encode_header(compactions: int, compacted_at: float, compacted_length: int,
                  log_number: int = 1, *, log_file: bool = False,
                  has_log: bool = False) -> bytes:
    """A header. ``log_number``: see ``Header``; a base file names the log
    file its appends move to once a compaction starts (or, ``has_log``, the
    one they moved to when the compaction that wrote it started)."""
    flags = VOUCHED | (LOG_FILE if log_file else 0) | (HAS_LOG if has_log else 0)
    body = _HEADER_BODY.pack(
        MAGIC, FORMAT_VERSION, flags, compactions, compacted_at, compacted_length, log_number
    )
    return body + _HEADER_CRC.pack(zlib.crc32(body))


class HeaderError(ValueError):
    """The first bytes are not a valid aiokv header (message says why)."""


def is_unfinished_header(data: bytes) -> bool:
    """True for a file cut short while the store was being created.

    That is: shorter than a header, and either all zero bytes or a prefix of
    a header (its magic, as far as it goes).
    """
    if len(data) >= HEADER_SIZE:
        return False
    if data.count(0) == len(data):
        return True
    return data[: len(MAGIC)] == MAGIC[: len(data)]


def decode_header(data: bytes) -> Header:
    """Decode the header at the start of ``data``; raise HeaderError if bad."""
    if len(data) < HEADER_SIZE:
        raise HeaderError("file is shorter than an aiokv header")
    if data[: len(MAGIC)] != MAGIC:
        raise HeaderError("file does not start with the aiokv magic bytes")
    body = data[: _HEADER_BODY.size]
    (checksum,) = _HEADER_CRC.unpack_from(data, _HEADER_BODY.size)
    if zlib.crc32(body) != checksum:
        raise HeaderError("header checksum does not match")
    _, version, flags, compactions, compacted_at, compacted_length, log_number = (
        _HEADER_BODY.unpack(body))
    if version not in READABLE_VERSIONS:
        raise HeaderError(f"unsupported format version {version}")
    if (flags & ~_KNOWN_FLAGS or (flags and version < 2)
            or (flags & (LOG_FILE | HAS_LOG) and version < 3)):
        raise HeaderError(f"unknown header flags {flags:#x}")
    if compacted_length < HEADER_SIZE:
        raise HeaderError("compacted length points inside the header")
    if version < 3:
        log_number = 0  # reserved bytes, zero in every file written
    elif log_number < 1:
        raise HeaderError("log number 0 in a version 3 header")
    return Header(version, compactions, compacted_at, compacted_length,
                  vouched=bool(flags & VOUCHED), log_number=log_number,
                  log_file=bool(flags & LOG_FILE), has_log=bool(flags & HAS_LOG))


# The first six bytes of every frame shorter than 256 bytes, by length: most
# records are, and looking the prefix up is cheaper than building it.
_SMALL_PREFIXES: Final = tuple(FRAME_START + n.to_bytes(4, "big") for n in range(256))


def encode_record(kind: int, a: object, b: object, c: object) -> bytes:
    """One frame holding a record of ``kind`` with fields a, b, c."""
    payload: bytes = _pack((kind, a, b, c))
    # payload[0] is the fixarray(4) byte, replaced by the 6-byte prefix.
    length = len(payload) + _PREFIX_SIZE - 1 + _SUFFIX_SIZE
    if length < 256:
        body = _SMALL_PREFIXES[length] + payload[1:] + _CHECKSUM_TAG
    elif length <= MAX_FRAME_SIZE:
        body = FRAME_START + length.to_bytes(4, "big") + payload[1:] + _CHECKSUM_TAG
    else:
        raise ValueError(f"record of {length} bytes exceeds the {MAX_FRAME_SIZE}-byte limit")
    return body + zlib.crc32(body, SEED).to_bytes(4, "little")


def encode_follows(previous: int, length: int, base_compactions: int) -> bytes:
    """The FOLLOWS record that opens a log file."""
    return encode_record(FOLLOWS, previous, length, base_compactions)


def encode_synced(offset: int) -> bytes:
    """A SYNCED record: the file was fsynced up to ``offset`` before it was written."""
    return encode_record(SYNCED, offset, None, None)


# The most common SET records laid out by hand; encode_record gives the same
# bytes. A layout, per key size: the head (the frame prefix, the kind and
# the msgpack str header of the key), the packer of the body (head, key,
# value with its msgpack tag, expiry, checksum tag) and the packer of the
# frame (body, then its CRC). Two struct calls instead of five
# concatenations cut the encoding by about a quarter.
_NO_EXPIRY: Final = "H"  # nil, then the checksum tag: 0xC0CE
_FLOAT_EXPIRY: Final = "BdB"  # float64 tag, the expiry, the checksum tag
_STR_HEADERS: Final = tuple(bytes([0xA0 | n] if n < 32 else [0xD9, n]) for n in range(256))
"""The msgpack header of a str of n < 256 UTF-8 bytes: a fixstr's, else a str8's."""

_Layout = tuple[bytes, Callable[..., bytes], Callable[..., bytes]]


def _set_layout(key_size: int, value_format: str, expiry_format: str) -> _Layout:
    """The layout of a SET whose key packs as a str of ``key_size`` < 256 bytes,
    whose value packs by the struct format ``value_format`` (its msgpack tag
    included) and whose expiry by ``expiry_format``."""
    key_header = _STR_HEADERS[key_size]
    head_size = _PREFIX_SIZE + 1 + len(key_header)
    body_format = f">{head_size}s{key_size}s{value_format}{expiry_format}"
    size = struct.calcsize(body_format)
    head = FRAME_START + (size + 4).to_bytes(4, "big") + bytes([SET]) + key_header
    return head, struct.Struct(body_format).pack, struct.Struct(f"<{size}sI").pack


# Under a key of at most 31 UTF-8 bytes, a float without expiry (a
# timestamp under a short key: the most common record by far), and an int
# that msgpack packs as a uint32 (65,536 to 2**32 - 1), such as a Unix time
# in seconds: what ``set(key)`` stores.
_FLOAT_SET_LAYOUTS: Final = tuple(_set_layout(n, "Bd", _NO_EXPIRY) for n in range(32))
_UINT32_SET_LAYOUTS: Final = tuple(_set_layout(n, "BI", _NO_EXPIRY) for n in range(32))
UINT32_MIN: Final = 1 << 16
UINT32_END: Final = 1 << 32


def encode_uint32_set(key: str, value: int) -> bytes:
    """``encode_record(SET, key, value, None)`` for UINT32_MIN <= value < UINT32_END.

    Written out like encode_float_set rather than sharing a helper with it:
    the call would cost the float set ~30 ns, a tenth of its encoding.
    """
    raw = key.encode()
    if len(raw) > 31:
        return encode_record(SET, key, value, None)
    head, pack_body, pack_frame = _UINT32_SET_LAYOUTS[len(raw)]
    body = pack_body(head, raw, 0xCE, value, 0xC0CE)
    return pack_frame(body, zlib.crc32(body, SEED))


def encode_float_set(key: str, value: float) -> bytes:
    """``encode_record(SET, key, value, None)`` for a float, about twice as fast."""
    raw = key.encode()
    if len(raw) > 31:
        return encode_record(SET, key, value, None)
    head, pack_body, pack_frame = _FLOAT_SET_LAYOUTS[len(raw)]
    body = pack_body(head, raw, 0xCB, value, 0xC0CE)
    return pack_frame(body, zlib.crc32(body, SEED))


# A SET with an expiry that is a float (``clock() + ttl``) or none, under a
# key of fewer than 256 UTF-8 bytes (see encode_scalar_set). Both expiries
# pack with three arguments, so that one call serves both: nil then b""
# ("0s" packs nothing), or the float64 tag then the expiry; then the
# checksum tag. A layout's index is the key size, plus _FLOAT_EXPIRING for
# a float expiry. Layouts are made on first use: a store sees few key
# sizes, and making them all would take milliseconds and megabytes.
_EXPIRIES: Final = ("B0sB", _FLOAT_EXPIRY)
_FLOAT_EXPIRING: Final = 256

_Layouts = list[Union[_Layout, None]]  # noqa: UP007 (a runtime alias on 3.10)


def _new_layouts(size: int = 512) -> _Layouts:
    return [None] * size


def _scalar_layout(layouts: _Layouts, index: int, value_format: str) -> _Layout:
    """Make the layout at ``index`` of ``layouts``, for a value packed by
    ``value_format``."""
    layout = layouts[index] = _set_layout(index & 255, value_format, _EXPIRIES[index >> 8])
    return layout


# A float; an int of 0 to 2**32 - 1, by the form msgpack packs it in (a
# positive fixint, or a uint8, uint16 or uint32 after its tag); True, False
# or None (one byte, like a fixint).
_FLOAT_LAYOUTS: Final = _new_layouts()
_BYTE_LAYOUTS: Final = _new_layouts()
_UINT8_LAYOUTS: Final = _new_layouts()
_UINT16_LAYOUTS: Final = _new_layouts()
_UINT32_LAYOUTS: Final = _new_layouts()

# A str of fewer than 32 UTF-8 bytes (a fixstr), of ``m`` bytes at index
# << 5 | m: at most 16,384 layouts of ~0.5 KB, a few dozen of which a store
# with keys and values of a few sizes uses.
_STR_LAYOUTS: Final = _new_layouts(512 * 32)


def _str_layout(index: int) -> _Layout:
    layout = _STR_LAYOUTS[index] = _set_layout(index >> 5 & 255, f"B{index & 31}s",
                                               _EXPIRIES[index >> 13])
    return layout


# Any other str, bytes or int (within 64 bits): msgpack packs the value
# (the packer encode_record uses: the same bytes, the same errors), and the
# key then the value, of fewer than 256 bytes together, are joined into one
# field after the key's header (an argument: one byte for a fixstr, two for
# a str8). At that size, plus _FLOAT_EXPIRING for a float expiry, plus
# _STR8_KEY for a str8 header. At most 1,024 layouts.
_PACKED_TYPES: Final = frozenset({str, bytes, int})
_PACKED_LAYOUTS: Final = _new_layouts(1024)
_STR8_KEY: Final = 512
_KEY_HEADERS: Final = tuple((0xA0 | n, 0) if n < 32 else (0xD900 | n, _STR8_KEY)
                            for n in range(256))


def _packed_layout(index: int) -> _Layout:
    key_header = "H" if index & _STR8_KEY else "B"
    body_format = (f">{_PREFIX_SIZE + 1}s{key_header}{index & 255}s"
                   f"{_EXPIRIES[index >> 8 & 1]}")
    size = struct.calcsize(body_format)
    head = FRAME_START + (size + 4).to_bytes(4, "big") + bytes([SET])
    layout = _PACKED_LAYOUTS[index] = (head, struct.Struct(body_format).pack,
                                       struct.Struct(f"<{size}sI").pack)
    return layout


def encode_scalar_set(key: str, value: object, expires: float | None) -> bytes:  # noqa: PLR0911
    """``encode_record(SET, key, value, expires)``: the same bytes, or the same error.

    What set() with a ttl and incr() write, laid out by hand for an exact str
    key of fewer than 256 UTF-8 bytes and ``expires`` None or an exact float:
    a fifth to a third faster for a value that is an exact float, an exact
    int of 0 to 2**32 - 1, True, False, None or an exact str of fewer than
    32 UTF-8 bytes; about as fast for any other exact int, str or bytes that
    packs into fewer than 256 bytes with the key. Anything else is
    encode_record's to encode (or refuse), after a few checks. Written out,
    one branch per value type, for the same reason as encode_uint32_set.
    """
    if type(expires) is float:
        stamp: float | bytes = expires
        tag = 0xCB
        index = _FLOAT_EXPIRING
    elif expires is None:
        stamp = b""
        tag = 0xC0
        index = 0
    else:
        return encode_record(SET, key, value, expires)
    if type(key) is str:
        raw = key.encode()
        n = len(raw)
        if n < 256:
            index |= n
            kind = type(value)
            if kind is float:
                head, pack_body, pack_frame = (_FLOAT_LAYOUTS[index]
                                               or _scalar_layout(_FLOAT_LAYOUTS, index, "Bd"))
                body = pack_body(head, raw, 0xCB, value, tag, stamp, 0xCE)
                return pack_frame(body, crc32(body, SEED))
            if kind is int:
                if 0 <= value < UINT32_END:  # type: ignore[operator]
                    if value < 128:  # type: ignore[operator]
                        head, pack_body, pack_frame = (
                            _BYTE_LAYOUTS[index] or _scalar_layout(_BYTE_LAYOUTS, index, "B"))
                        body = pack_body(head, raw, value, tag, stamp, 0xCE)
                    elif value >= UINT32_MIN:  # type: ignore[operator]
                        head, pack_body, pack_frame = (
                            _UINT32_LAYOUTS[index]
                            or _scalar_layout(_UINT32_LAYOUTS, index, "BI"))
                        body = pack_body(head, raw, 0xCE, value, tag, stamp, 0xCE)
                    elif value < 256:  # type: ignore[operator]
                        head, pack_body, pack_frame = (
                            _UINT8_LAYOUTS[index] or _scalar_layout(_UINT8_LAYOUTS, index, "BB"))
                        body = pack_body(head, raw, 0xCC, value, tag, stamp, 0xCE)
                    else:
                        head, pack_body, pack_frame = (
                            _UINT16_LAYOUTS[index]
                            or _scalar_layout(_UINT16_LAYOUTS, index, "BH"))
                        body = pack_body(head, raw, 0xCD, value, tag, stamp, 0xCE)
                    return pack_frame(body, crc32(body, SEED))
            elif kind is str:
                if len(value) < 32:  # type: ignore[arg-type]  # else 32 bytes or more
                    packed = value.encode()  # type: ignore[attr-defined]
                    m = len(packed)
                    if m < 32:
                        at = index << 5 | m
                        head, pack_body, pack_frame = _STR_LAYOUTS[at] or _str_layout(at)
                        body = pack_body(head, raw, 0xA0 | m, packed, tag, stamp, 0xCE)
                        return pack_frame(body, crc32(body, SEED))
            elif value is None or kind is bool:
                head, pack_body, pack_frame = (_BYTE_LAYOUTS[index]
                                               or _scalar_layout(_BYTE_LAYOUTS, index, "B"))
                byte = 0xC0 if value is None else 0xC3 if value else 0xC2
                body = pack_body(head, raw, byte, tag, stamp, 0xCE)
                return pack_frame(body, crc32(body, SEED))
            if kind in _PACKED_TYPES and (kind is int or len(value) < 256):  # type: ignore[arg-type]
                packed = _pack(value)
                size = n + len(packed)
                if size < 256:
                    header, key_kind = _KEY_HEADERS[n]
                    index = (index & _FLOAT_EXPIRING) | key_kind | size
                    head, pack_body, pack_frame = (_PACKED_LAYOUTS[index]
                                                   or _packed_layout(index))
                    body = pack_body(head, header, raw + packed, tag, stamp, 0xCE)
                    return pack_frame(body, crc32(body, SEED))
    return encode_record(SET, key, value, expires)


# A SET_ENCODED (a dict or list value) under a key of fewer than 256 UTF-8
# bytes, of an encoding of fewer than 256 bytes: joined from its parts (a
# struct per key and value size would be no cheaper, and there would be
# 65,536 of them). The key's header per key size; the bin8 header per
# encoding size; the frame prefix and kind per size of the parts that vary
# in size (the key with its header, the encoding, the expiry with the
# checksum tag), which the rest (prefix, kind, bin8 header, checksum) adds
# 13 bytes to.
_BIN8_HEADERS: Final = tuple(bytes([0xC4, n]) for n in range(256))
_ENCODED_SET_PREFIXES: Final = tuple(
    FRAME_START + (13 + size).to_bytes(4, "big") + bytes([SET_ENCODED])
    for size in range(2 + 255 + 255 + 10 + 1))
_NO_EXPIRY_TAIL: Final = b"\xc0\xce"  # nil, the checksum tag
_pack_float_expiry_tail = struct.Struct(">BdB").pack


def encode_encoded_set(key: str, value: Encoded, expires: float | None) -> bytes:
    """``encode_record(SET_ENCODED, key, value, expires)``: the same bytes, or the same error.

    What set() of a dict or list writes, a quarter cheaper, for an exact str
    key of fewer than 256 UTF-8 bytes, an Encoded ``value`` of fewer than 256
    bytes and ``expires`` None or an exact float; anything else is
    encode_record's to encode (or refuse), after a few checks.
    """
    if expires is None:
        tail = _NO_EXPIRY_TAIL
    elif type(expires) is float:
        tail = _pack_float_expiry_tail(0xCB, expires, 0xCE)
    else:
        return encode_record(SET_ENCODED, key, value, expires)
    if type(key) is str and type(value) is Encoded:
        raw = key.encode()
        n = len(raw)
        size = len(value)
        if n < 256 and size < 256:
            header = _STR_HEADERS[n]
            body = b"".join((_ENCODED_SET_PREFIXES[len(header) + n + size + len(tail)],
                             header, raw, _BIN8_HEADERS[size], value, tail))
            return body + crc32(body, SEED).to_bytes(4, "little")
    return encode_record(SET_ENCODED, key, value, expires)


def encode_value(value: object) -> Value:
    """Return ``value`` as the store holds it, or raise TypeError/ValueError.

    Scalars of the exact built-in types are kept as they are. Anything else
    (lists, tuples, dicts, subclasses) is encoded, which both copies it and
    proves that it round-trips.
    """
    kind = type(value)
    if kind is dict or kind is list:
        # A dict or list made of exact built-in types only: see _strict_pack,
        # which refuses anything else (a tuple, a subclass), and whose every
        # encoding reads back; the proof below is left out.
        try:
            return Encoded(_strict_pack(value))
        except (TypeError, ValueError, OverflowError):
            pass  # packed below, which says why it cannot be stored, if it cannot
    elif kind is int:
        if not -(1 << 63) <= value < (1 << 64):  # type: ignore[operator]
            raise ValueError("int out of the 64-bit range msgpack can store")
        return value  # type: ignore[return-value]
    elif kind in SCALAR_TYPES:
        return cast(Value, value)
    try:
        encoded: bytes = msgpack.packb(value, use_bin_type=True)
    except OverflowError as exc:
        raise ValueError(f"int out of the 64-bit range msgpack can store ({exc})") from None
    except TypeError as exc:
        raise TypeError(f"value cannot be stored: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"value cannot be stored: {exc}") from None
    try:
        decoded = msgpack.unpackb(encoded, strict_map_key=False)
    except Exception as exc:  # e.g. a map key that decodes to a list
        raise ValueError(f"value does not read back as stored: {exc}") from None
    if type(decoded) in SCALAR_TYPES:
        # A subclass of a scalar type (an IntEnum, a str subclass) or a
        # bytearray: keep what a reopen would read back.
        return decoded  # type: ignore[no-any-return]
    return Encoded(encoded)


def decode_value(value: Value) -> object:
    """The value a reader gets: containers are decoded into fresh objects."""
    if type(value) is Encoded:
        return msgpack.unpackb(value, strict_map_key=False)
    return value


def encode_set(key: str, value: Value, expires: float | None = None) -> bytes:
    if type(value) is Encoded:
        return encode_record(SET_ENCODED, key, value, expires)
    return encode_record(SET, key, value, expires)


def encode_delete(key: str) -> bytes:
    return encode_record(DELETE, key, None, None)


def encode_expire(key: str, expires: float | None) -> bytes:
    return encode_record(EXPIRE, key, None, expires)


def encode_snapshot(
    scalars: dict[str, Value], encoded: dict[str, bytes], expiries: dict[str, float]
) -> bytes:
    return encode_record(SNAPSHOT, scalars, encoded, expiries)


def encode_bulk(
    keys: tuple[str, ...], values: tuple[Value, ...], expiries: dict[str, float]
) -> bytes:
    """A BULK frame: ``keys[i]`` holds the scalar ``values[i]``."""
    return encode_record(BULK, keys, values, expiries)


def encode_batch(scalars: dict[str, Value], encoded: dict[str, Encoded],
                 expiries: dict[str, float], removed: list[str]) -> bytes:
    """A BATCH frame: ``scalars`` and ``encoded`` set (with ``expiries``),
    ``removed`` deleted, all in one record; ValueError if it would exceed
    MAX_FRAME_SIZE or holds what msgpack cannot encode."""
    return encode_record(BATCH, scalars, encoded, (expiries, removed))


def _map_header_size(count: int) -> int:
    return 1 if count < 16 else 3 if count < 65536 else 5


def entries_size(entries: dict[str, Value]) -> int:
    """The sum of ``entry_size`` over ``entries``, by one pack in C."""
    return len(_pack(entries)) - _map_header_size(len(entries))


def batch_sets_size(frame: bytes, count: int) -> int:
    """``entries_size`` of the ``count`` scalars of a BATCH frame that holds
    nothing else (``encode_batch(scalars, {}, {}, [])``), from its length."""
    return len(frame) - _EMPTY_BATCH_SIZE + 1 - _map_header_size(count)


def _int_size(value: int) -> int:
    """Bytes msgpack packs ``value`` (an int within 64 bits) into."""
    if -32 <= value < 128:
        return 1
    if -128 <= value < 256:
        return 2
    if -32768 <= value < 65536:
        return 3
    return 5 if -(1 << 31) <= value < (1 << 32) else 9


def value_size(value: Value) -> int:
    """Bytes ``value`` takes in a snapshot or bulk frame."""
    if type(value) is float:
        return 9
    if type(value) is int:  # msgpack's smallest form, without packing it
        return _int_size(value)
    if type(value) is Encoded:
        n = len(value)
        return n + (2 if n < 256 else 3 if n < 65536 else 5)
    return len(_pack(value))


def size_change(new: Value, old: Value) -> int:
    """``value_size(new) - value_size(old)``, without sizing two values of one
    size class (floats; ints both in -32..127, or both uint32: a counter, a
    Unix time), which is most overwrites: sizing two ints costs ~0.3 us."""
    kind = type(new)
    if kind is type(old):
        if kind is float:
            return 0
        if kind is int:
            if ((-32 <= new < 128 and -32 <= old < 128)  # type: ignore[operator]
                    or (UINT32_MIN <= new < UINT32_END  # type: ignore[operator]
                        and UINT32_MIN <= old < UINT32_END)):  # type: ignore[operator]
                return 0
            if 0 <= new < UINT32_END and 0 <= old < UINT32_END:  # type: ignore[operator]
                # A positive fixint, uint8, uint16 or uint32: 1, 2, 3 or 5 bytes.
                return ((new > 127) + (new > 255) + 2 * (new > 65535)  # type: ignore[operator]
                        - (old > 127) - (old > 255) - 2 * (old > 65535))  # type: ignore[operator]
            return _int_size(new) - _int_size(old)  # type: ignore[arg-type]
    return value_size(new) - value_size(old)


def entry_size(key: str, value: Value) -> int:
    """Bytes one entry adds to a snapshot or bulk frame (its key and value)."""
    n = len(key)
    if n < 32 and key.isascii():
        return value_size(value) + 1 + n
    return value_size(value) + len(_pack(key))


EXPIRY_ENTRY_EXTRA: Final = 9
"""Bytes an expiry adds besides a second copy of the key (a float)."""

_EMPTY_BATCH_SIZE: Final = len(encode_batch({}, {}, {}, []))
