"""Replay a log held in memory: the recovery rule as pure functions on bytes.

The rule, in the spirit of LevelDB's log reader and RocksDB's
``kTolerateCorruptedTailRecords``:

* A damaged frame (cut short, zero-filled, bad length, bad checksum, or a
  checksum-valid frame that is not a well-formed record) with **no valid frame
  anywhere after it** is a torn tail: the writer died while appending. The
  log ends where the last good frame ends and the rest may be cut.
* A damaged frame **followed by any valid frame** is corruption: something
  changed bytes that had been written completely. It is reported with its
  offset, never cut silently.
* Except past the last offset known fsynced: there a power loss may leave a
  gap (a page that never reached the disk, later pages that did). In a file
  whose header has the VOUCHED flag the writer records what it has fsynced
  in SYNCED frames; damage that no SYNCED frame (before or after it) vouches
  for is such a gap, and the log ends there like at a torn tail, the valid
  frames after it included: they were never fsynced, and keeping them would
  make the store no prefix of its writes. (Without the flag, written by an
  earlier version, the absence of SYNCED frames says nothing: such damage
  stays corruption.)
* The part of a file written by a compaction (up to the header's
  ``compacted_length``) was fsynced before the file was put in place, so no
  damage there can be a torn tail.

With ``salvage=True`` corruption is skipped instead of reported: every frame
that validates is applied, and the damaged ranges are listed.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import cast

import msgpack

from ._format import (
    BATCH,
    BULK,
    DELETE,
    EXPIRE,
    FOLLOWS,
    FORMAT_VERSION,
    FRAME_START,
    HEADER_SIZE,
    MAGIC,
    MAX_FRAME_SIZE,
    MIN_FRAME_SIZE,
    SCALAR_TYPES,
    SEED,
    SET,
    SET_ENCODED,
    SNAPSHOT,
    SYNCED,
    Encoded,
    Header,
    HeaderError,
    Value,
    decode_header,
    is_unfinished_header,
)

_NUMBER_TYPES = (int, float)
_NUMBER_SET = frozenset(_NUMBER_TYPES)
_CONTAINER_TYPES = frozenset({list, dict})


READ_SIZE = 256 * 1024
"""Bytes the unpacker takes from the log at a time while replaying. Fed the
whole log at once, it copies it into a buffer of its own: a second copy of a
20 MB log, whose fresh pages cost a compacted 1,000,000-key store's open
about 5,000 page faults (~3 % of it)."""


def new_entries() -> dict[str, Value]:
    """An empty dict for a store's entries, in the layout that keeps hashes.

    CPython (3.11 on) gives a dict that has only held str keys a compact
    table without the keys' hashes: each resize, and each probe that meets
    another key, then reads the hash from that key's string object, one
    cache miss a key in a large store. One non-str key, added and removed
    at once, switches the dict to the general table (hash beside each key)
    for good. Replaying a compacted 1,000,000-key store got ~60 ms (~19 %)
    faster for ~11 bytes more a key. Elsewhere the two lines are harmless:
    the layout never changes what the dict holds.
    """
    entries: dict[object, Value] = {None: None}
    del entries[None]
    return cast("dict[str, Value]", entries)


@dataclass(frozen=True)
class Damage:
    """Bytes ``[offset, end)`` that hold no valid frame."""

    offset: int
    end: int
    reason: str


@dataclass
class Replay:
    """What a log holds, and where it stops being valid."""

    header: Header | None
    """None when the file is empty or its header was never completely written."""
    entries: dict[str, Value] = field(default_factory=new_entries)
    expiries: dict[str, float] = field(default_factory=dict)
    """Expiry times (Unix seconds) of the entries that have one."""
    end: int = 0
    """Offset just past the last valid frame: where the next append belongs."""
    torn_tail: int = 0
    """Bytes after ``end`` that form a torn tail (0 when the log is clean)."""
    dropped_frames: int = 0
    """Valid frames in the torn tail: it began with a gap of unsynced bytes."""
    durable_end: int = 0
    """How far the log is known fsynced: the compacted part, or the furthest
    offset a SYNCED frame of the replayed part vouches for."""
    corruption: Damage | None = None
    """The first damage that is not a torn tail (strict replay stops there)."""
    skipped: list[Damage] = field(default_factory=list)
    """Salvage only: damaged ranges that were skipped."""


@dataclass(frozen=True)
class Frame:
    kind: int
    a: object
    b: object
    c: object
    end: int


@dataclass(frozen=True)
class Incomplete:
    """The bytes so far are a valid start of a frame that runs past the end."""


@dataclass(frozen=True)
class Invalid:
    reason: str


INCOMPLETE = Incomplete()


def _is_expiry_time(value: object) -> bool:
    """A finite int or float: what an expiry in a record must be (a bool is neither).

    Anything else would break ``ttl()`` (inf, NaN) or hide its key (NaN).
    """
    return type(value) in _NUMBER_TYPES and math.isfinite(cast(float, value))


def _is_expiry(value: object) -> bool:
    """An expiry time, or nil for none."""
    return value is None or _is_expiry_time(value)


def _are_expiry_times(values: Collection[object]) -> bool:
    """``_is_expiry_time`` of every value, in C: a compacted file holds many."""
    return not values or (
        set(map(type, values)) <= _NUMBER_SET
        and all(map(math.isfinite, cast("Collection[float]", values)))
    )


def _are_encoded_containers(values: Collection[object]) -> bool:
    """Whether each value is what the writer stores for a list or dict.

    That is a bin whose msgpack, decoded as every read of it decodes it
    (``decode_value``), gives a list or a map: a bin that does not decode
    would make each read of its key raise.
    """
    if not set(map(type, values)) <= {bytes}:
        return False
    try:
        decoded = [msgpack.unpackb(value, strict_map_key=False) for value in values]
    except Exception:  # whatever the decoder refuses (cut short, bad UTF-8, ...)
        return False
    return set(map(type, decoded)) <= _CONTAINER_TYPES


def _is_encoded_container(value: object) -> bool:
    return _are_encoded_containers((value,))


def _check_record(
    kind: object, a: object, b: object, c: object
) -> str | None:
    """Return why a decoded record is malformed, or None if it is well formed.

    Decided by type and value only: the replay's fast path leaves every
    record it cannot vouch for more cheaply to this function.
    """
    if type(kind) is not int:  # True and 1.0 equal SET, yet are no kind
        return f"unknown record kind {kind!r}"
    if kind == SET:
        ok = type(a) is str and type(b) in SCALAR_TYPES and _is_expiry(c)
    elif kind == SET_ENCODED:
        ok = type(a) is str and _is_encoded_container(b) and _is_expiry(c)
    elif kind == DELETE:
        ok = type(a) is str and b is None and c is None
    elif kind == EXPIRE:
        ok = type(a) is str and b is None and _is_expiry(c)
    elif kind == SNAPSHOT:
        # set(map(type, ...)) keeps the check in C: snapshots hold many entries.
        ok = (
            type(a) is dict
            and type(b) is dict
            and type(c) is dict
            and set(map(type, a)) <= {str}
            and set(map(type, a.values())) <= SCALAR_TYPES
            and set(map(type, b)) <= {str}
            and _are_encoded_containers(b.values())
            and _are_expiry_times(c.values())
            and c.keys() <= (a.keys() | b.keys())
        )
    elif kind == SYNCED:
        ok = type(a) is int and a >= HEADER_SIZE and b is None and c is None
    elif kind == FOLLOWS:
        ok = (type(a) is int and a >= 0 and type(b) is int and b >= HEADER_SIZE
              and type(c) is int and c >= 0)
    elif kind == BATCH:
        ok = _is_batch(a, b, c)
    elif kind == BULK:
        ok = (
            type(a) is tuple
            and type(b) is tuple
            and len(a) == len(b)
            and type(c) is dict
            and set(map(type, a)) <= {str}
            and set(map(type, b)) <= SCALAR_TYPES
            and _are_expiries_of(c, a)
        )
    else:
        return f"unknown record kind {kind!r}"
    return None if ok else f"malformed record of kind {kind}"


def _is_batch(a: object, b: object, c: object) -> bool:
    """Whether a BATCH record's fields are well formed (see ``_format.BATCH``)."""
    if not (type(a) is dict and type(b) is dict and type(c) is tuple and len(c) == 2):
        return False
    expiries, removed = c
    return (type(expiries) is dict and type(removed) is tuple
            and set(map(type, a)) <= {str} and set(map(type, b)) <= {str}
            and set(map(type, removed)) <= {str}
            and set(map(type, a.values())) <= SCALAR_TYPES
            and _are_encoded_containers(b.values())
            and _are_expiry_times(expiries.values())
            and expiries.keys() <= (a.keys() | b.keys())
            and not a.keys() & b.keys() and not (a.keys() | b.keys()) & set(removed)
            and len(set(removed)) == len(removed))


def _are_expiries_of(expiries: dict[object, object], keys: tuple[object, ...]) -> bool:
    """Whether a BULK frame's expiry map is well formed for its keys."""
    return not expiries or (
        _are_expiry_times(expiries.values()) and expiries.keys() <= set(keys)
    )


def read_frame(  # noqa: PLR0911
    data: bytes | memoryview, offset: int
) -> Frame | Incomplete | Invalid:
    """Decode the frame that starts at ``offset``.

    ``Incomplete`` means every byte present is consistent with a frame that
    continues past the end of ``data`` (more data would be needed).
    """
    available = len(data) - offset
    prefix = bytes(data[offset : offset + 6])
    if prefix[:2] != FRAME_START[: min(2, available)]:
        return Invalid("no frame starts here")
    if available < 6:
        return INCOMPLETE
    length = int.from_bytes(prefix[2:6], "big")
    if not MIN_FRAME_SIZE <= length <= MAX_FRAME_SIZE:
        return Invalid(f"frame length {length} out of range")
    if available < length:
        return INCOMPLETE
    end = offset + length
    frame = data[offset:end]
    if frame[length - 5] != 0xCE or zlib.crc32(frame, SEED) != SEED:
        return Invalid("checksum mismatch")
    try:
        fields = msgpack.unpackb(frame, use_list=False, strict_map_key=False)
    except Exception:  # any malformed msgpack inside a checksum-valid frame
        return Invalid("frame does not decode")
    if type(fields) is not tuple or len(fields) != 6 or fields[0] != length:
        return Invalid("frame does not decode to a record")
    _, kind, a, b, c, _ = fields
    reason = _check_record(kind, a, b, c)
    if reason is not None:
        return Invalid(reason)
    if kind == SYNCED and cast(int, a) > offset:
        return Invalid("a SYNCED record vouches for bytes after itself")
    return Frame(kind, a, b, c, end)


def find_next_frame(data: bytes | memoryview, start: int) -> int | None:
    """Offset of the first valid frame at or after ``start``, if any."""
    raw = data if isinstance(data, bytes) else bytes(data)
    position = raw.find(FRAME_START, start)
    while position != -1:
        if isinstance(read_frame(raw, position), Frame):
            return position
        position = raw.find(FRAME_START, position + 1)
    return None


def holds_a_record(data: bytes) -> bool:
    """Whether an intact record (a valid frame other than SYNCED) stands
    anywhere after the header, whatever the damage around it."""
    position = find_next_frame(data, HEADER_SIZE)
    while position is not None:
        frame = read_frame(data, position)
        assert isinstance(frame, Frame)  # find_next_frame found it valid
        if frame.kind != SYNCED:
            return True
        position = find_next_frame(data, frame.end)
    return False


def count_frames(data: bytes) -> int:
    """How many records (SYNCED frames aside) follow the header of a clean log.

    Walks the length fields only: meant for a file just opened (and so
    recovered) by the store, not for judging damage (``replay`` does that).
    """
    count = 0
    offset = HEADER_SIZE
    while offset + 7 <= len(data) and data[offset : offset + 2] == FRAME_START:
        length = int.from_bytes(data[offset + 2 : offset + 6], "big")
        if length < MIN_FRAME_SIZE:
            break
        count += data[offset + 6] != SYNCED
        offset += length
    return count


def apply(frame: Frame, entries: dict[str, Value], expiries: dict[str, float]) -> None:
    """Apply one valid frame (see ``read_frame``) to the replayed state."""
    kind = frame.kind
    if kind in (SYNCED, FOLLOWS):
        return
    if kind == SNAPSHOT:
        _apply_sets(frame, cast("dict[str, float]", frame.c), entries, expiries)
        return
    if kind == BATCH:
        kept, removed = cast("tuple[dict[str, float], tuple[str, ...]]", frame.c)
        for key in removed:
            entries.pop(key, None)
            expiries.pop(key, None)
        _apply_sets(frame, kept, entries, expiries)
        return
    if kind == BULK:
        keys = cast("tuple[str, ...]", frame.a)
        if expiries:
            for key in keys:
                expiries.pop(key, None)
        entries.update(zip(keys, cast("tuple[Value, ...]", frame.b), strict=True))
        expiries.update(cast("dict[str, float]", frame.c))
        return
    key = cast(str, frame.a)
    expires = cast("float | None", frame.c)
    if kind == DELETE:
        entries.pop(key, None)
        expiries.pop(key, None)
        return
    if kind == EXPIRE:
        if key not in entries:
            return
    elif kind == SET_ENCODED:
        entries[key] = Encoded(cast(bytes, frame.b))
    else:
        entries[key] = cast(Value, frame.b)
    if expires is None:
        expiries.pop(key, None)
    else:
        expiries[key] = expires


def _apply_sets(frame: Frame, kept: dict[str, float], entries: dict[str, Value],
                expiries: dict[str, float]) -> None:
    """The sets of a SNAPSHOT or BATCH frame: ``a`` scalars, ``b`` encoded
    containers; each key loses its expiry unless ``kept`` gives it one."""
    scalars = cast("dict[str, Value]", frame.a)
    encoded = cast("dict[str, bytes]", frame.b)
    for key in scalars.keys() | encoded.keys():
        expiries.pop(key, None)
    entries.update(scalars)
    for key, value in encoded.items():
        entries[key] = Encoded(value)
    expiries.update(kept)


STAND_IN_HEADER = Header(version=FORMAT_VERSION, compactions=0, compacted_at=0.0,
                         compacted_length=HEADER_SIZE, vouched=False)
"""What salvage assumes of a log whose header is damaged: nothing vouched."""


def is_log(data: bytes) -> bool:
    """Whether ``data`` is an aiokv log, however damaged: the rule every
    opener and every command shares.

    A log starts with the magic (as far as the file goes), or is all zeros
    (a header cut short while being created), or, its header damaged,
    still holds a valid frame after it. A JSON state file never passes for
    one: in UTF-8 text 0xCE (a frame's second byte) is followed by a byte
    of 0x80 or more, never a frame length's first (at most 0x40), and a
    frame's checksum makes a chance match in any other text negligible.
    """
    if data.startswith(MAGIC[: min(len(data), len(MAGIC))]) or data.count(0) == len(data):
        return True
    if len(data) > HEADER_SIZE and isinstance(read_frame(data, HEADER_SIZE), Frame):
        return True  # the first frame where a log's first one stands: the common case
    return find_next_frame(data, HEADER_SIZE) is not None


class Spoiled(Exception):
    """Replaying onto given entries, the fast path changed them before it
    found a record it leaves to the walk: the caller must start again from
    entries it still has (``replay_chain`` does, walking every log file)."""


def replay(data: bytes, *, salvage: bool = False,
           onto: tuple[dict[str, Value], dict[str, float]] | None = None,
           walk: bool = False) -> Replay:
    """Rebuild the entries that the log ``data`` holds.

    ``onto``: entries and expiries to apply the records to (a log file
    following a base file), changed in place and returned in the result.
    ``walk``: frame by frame, never the fast path (which raises Spoiled
    when it gives up after changing ``onto``).

    Never raises for any content of ``data`` otherwise: problems are
    reported in the returned ``Replay`` (``corruption``, ``torn_tail``,
    ``skipped``).
    """
    entries, expiries = onto if onto is not None else (new_entries(), {})
    if is_unfinished_header(data):
        return Replay(header=None, entries=entries, expiries=expiries)
    try:
        header = decode_header(data)
    except HeaderError as exc:
        damage = Damage(0, min(len(data), HEADER_SIZE), f"the header is damaged: {exc}")
        if not salvage or len(data) <= HEADER_SIZE:
            return Replay(header=None, entries=entries, expiries=expiries, corruption=damage)
        # Whatever the header says (a flipped byte in its counter or its
        # magic), the frames after it carry their own checksums: keep each.
        result = _replay_frame_by_frame(data, STAND_IN_HEADER, True, onto)
        result.skipped.insert(0, damage)
        return result
    if not walk:
        fast = _replay_intact(data, header, onto)
        if fast is not None:
            return fast
        if onto is not None and _frames_intact(data, header):
            raise Spoiled
    return _replay_frame_by_frame(data, header, salvage, onto)


def _frames_intact(data: bytes, header: Header) -> bool:
    """Whether every frame checks out as one run (see ``_format``)."""
    return header.compacted_length <= len(data) and zlib.crc32(
        memoryview(data)[HEADER_SIZE:], SEED) == SEED


def _replay_intact(  # noqa: PLR0911
    data: bytes, header: Header,
    onto: tuple[dict[str, Value], dict[str, float]] | None = None,
) -> Replay | None:
    """The fast path for a log with no damage at all, or None to walk it.

    One CRC over every frame (see ``_format``), then one msgpack stream.
    ``onto``: see ``replay``; changed only once the CRC holds. It
    returns None wherever the walk would find damage, so that both give the
    same result for every log: each record is held to ``read_frame``'s rule,
    by cheaper means where records are common (the comments say which). The
    one CRC stands in for each frame's own checksum and framing bytes.
    """
    if not _frames_intact(data, header):
        return None
    body = memoryview(data)[HEADER_SIZE:]
    entries, expiries = onto if onto is not None else (new_entries(), {})
    stream = io.BytesIO(data)  # shares the bytes of ``data``: no copy
    stream.seek(HEADER_SIZE)
    limit = max(len(body), 1)
    unpacker = msgpack.Unpacker(stream, read_size=min(READ_SIZE, limit), use_list=False,
                                strict_map_key=False, max_buffer_size=limit)
    # Locals: this loop runs once per record of the log. Kinds are compared
    # by identity: CPython has one object for each small int, which is what
    # msgpack returns, so a kind of True or 1.0 never passes for SET; a kind
    # that is not the very constant (or an int on another interpreter) gets
    # the checked branch at the end, which decides by type and value.
    plain_set, encoded_set, delete, bulk = SET, SET_ENCODED, DELETE, BULK
    scalar_types = SCALAR_TYPES
    max_frame_size = MAX_FRAME_SIZE
    end = 0  # the sum of the length fields so far
    each_length = len(body) > max_frame_size
    durable_end = header.compacted_length
    # Whether a record's key was stored without a look at its type. A key
    # that is not a str stays in ``entries`` to the end (only a DELETE, of a
    # str, removes keys), so one look at every key after the loop finds it.
    # Values and expiries can be overwritten: they are checked as they come.
    keys_unchecked = False
    try:
        for length, kind, key, value, expires, _ in unpacker:
            # The length fields must add up to the log's size (checked after
            # the loop), and none may exceed 2^30, which only a log larger
            # than that can hide. A field that is not its frame's size is
            # then caught unless another lies by the opposite amount: a
            # crafted file (format.md's caveat). Telling each record's end
            # instead (unpacker.tell()) costs ~35 ns a record, ~18 % of
            # replaying a log of small sets; this costs ~5 ns.
            end += length
            if each_length and length > max_frame_size:
                return None
            # The common record first: a plain set of a float (a timestamp:
            # one identity test), no expiry in sight.
            if (kind is plain_set and expires is None and not expiries
                    and (type(value) is float or type(value) in scalar_types)):
                entries[key] = value
                keys_unchecked = True
                continue
            # Then what a compacted file is made of: key and value arrays,
            # whose element types are checked while they are in the CPU's
            # cache. join() raises TypeError on any key that is not a str.
            if kind is bulk and not expires and not expiries:
                if type(key) is not tuple or type(value) is not tuple or len(key) != len(
                        value) or type(expires) is not dict:
                    return None
                "".join(key)
                try:
                    # Adds only numbers (int, float, bool: scalars all), the
                    # values of timestamps and counters, at a few ns each;
                    # anything else raises and gets the check of each type.
                    sum(value)
                except TypeError:
                    if not set(map(type, value)) <= scalar_types:
                        return None
                entries.update(zip(key, value, strict=True))
                continue
            if kind is plain_set:  # with an expiry, or after one
                if type(value) not in scalar_types or (
                        expires is not None and not _is_expiry_time(expires)):
                    return None
                entries[key] = value
                keys_unchecked = True
            elif kind is encoded_set:
                if not _is_encoded_container(value) or not _is_expiry(expires):
                    return None
                entries[key] = Encoded(value)
                keys_unchecked = True
            elif kind is delete:
                if type(key) is not str or value is not None or expires is not None:
                    return None
                entries.pop(key, None)
                expiries.pop(key, None)
                continue
            else:  # any other record: the walk's own check
                if _check_record(kind, key, value, expires) is not None:
                    return None
                if kind == SYNCED:
                    frame_start = HEADER_SIZE + end - length
                    if key > frame_start:
                        return None
                    durable_end = max(durable_end,
                                      _vouched_by(key, frame_start, HEADER_SIZE + end))
                    continue
                apply(Frame(kind, key, value, expires, 0), entries, expiries)
                continue
            if expires is None:
                expiries.pop(key, None)
            else:
                expiries[key] = expires
    except Exception:  # malformed despite a valid checksum: walk to locate it
        return None
    # The frames fill the log exactly: no length field lies alone, and no
    # object is cut short by the end of the log (the stream stops before it).
    if end != len(body):
        return None
    if keys_unchecked and not set(map(type, entries)) <= {str}:
        return None
    return Replay(header=header, entries=entries, expiries=expiries, end=len(data),
                  durable_end=durable_end)


def _replay_frame_by_frame(
    data: bytes, header: Header, salvage: bool,
    onto: tuple[dict[str, Value], dict[str, float]] | None = None,
) -> Replay:
    result = Replay(header=header)
    if onto is not None:
        result.entries, result.expiries = onto
    offset = HEADER_SIZE
    size = len(data)
    protected_end = header.compacted_length
    durable_end = protected_end
    while offset < size:
        frame = read_frame(data, offset)
        if isinstance(frame, Frame):
            apply(frame, result.entries, result.expiries)
            if frame.kind == SYNCED:
                durable_end = max(durable_end, _vouched_by(cast(int, frame.a), offset, frame.end))
            offset = frame.end
            continue
        result.durable_end = durable_end
        reason = "frame cut short" if isinstance(frame, Incomplete) else frame.reason
        following = find_next_frame(data, offset + 1)
        if following is None:
            if offset < protected_end:
                damage = Damage(offset, size, f"{reason} inside the compacted part")
                if not salvage:
                    result.corruption = damage
                    result.end = offset
                    return result
                result.skipped.append(damage)
            else:
                result.torn_tail = size - offset
            result.end = offset
            return result
        if header.vouched:
            later = _frames_from(data, following)
            vouched = [cast(int, f.a) for f in later if f.kind == SYNCED]
            if offset >= max([durable_end, *vouched]):
                # Nothing vouches for these bytes: a gap left by a power loss.
                result.torn_tail = size - offset
                result.dropped_frames = len(later)
                result.end = offset
                return result
        damage = Damage(offset, following, f"{reason}, followed by a valid frame at {following}")
        if not salvage:
            result.corruption = damage
            result.end = offset
            return result
        result.skipped.append(damage)
        offset = following
    result.end = offset
    result.durable_end = durable_end
    if size < protected_end:
        damage = Damage(size, protected_end, "file ends inside the compacted part")
        if salvage:
            result.skipped.append(damage)
        else:
            result.corruption = damage
    return result


def _vouched_by(synced: int, start: int, end: int) -> int:
    """How far a SYNCED frame at ``[start, end)`` naming ``synced`` vouches.

    Up to ``synced``; and when it starts right there, up to its own end: the
    writer needs no later frame to vouch for a frame that only vouches.
    """
    return end if synced == start else synced


def _frames_from(data: bytes, offset: int) -> list[Frame]:
    """Every valid frame at or after ``offset`` (a valid one), skipping damage."""
    frames = []
    position: int | None = offset
    while position is not None and position < len(data):
        frame = read_frame(data, position)
        if isinstance(frame, Frame):
            frames.append(frame)
            position = frame.end
        else:
            position = find_next_frame(data, position + 1)
    return frames
