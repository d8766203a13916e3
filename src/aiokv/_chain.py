"""A store on disk as a chain of files, replayed as pure functions on bytes.

Since format 3 a store is a **base file** (the user's path: a header, a
snapshot, and appended frames until its first compaction) followed by **log
files** ``<base>.log-<n>``, numbered on from the base header's
``log_number``: ``<base>.log-F``, ``<base>.log-F+1``... while present. A
compaction moves appends to the next log file the moment it starts (as Redis
7's multi-part AOF and LevelDB's log per memtable do), writes the new base
from memory, and puts it in place naming that log file as its first; the
files before it are then removed. So appends never wait for a compaction,
and a compaction never copies what was appended while it ran.

Each log file opens with a FOLLOWS record: the file appends came from, its
length at that moment, and the base's compaction count. The old file is
fsynced before the new one ever is, so a power loss can only lose a suffix
of the chain; the rule below drops a log file that follows a file which no
longer holds what it held when appends moved on (its pages never reached
the disk), unless a SYNCED frame shows the log file itself was fsynced:
then the earlier file lost fsynced bytes, which is corruption.

A torn tail may end the last file only; damage elsewhere is corruption
(or, with ``salvage``, skipped), as in a single file (``_recovery``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ._format import (
    FOLLOWS,
    HEADER_SIZE,
    SYNCED,
    Header,
    HeaderError,
    Value,
    decode_header,
    is_unfinished_header,
)
from ._recovery import Damage, Frame, Replay, Spoiled, new_entries, read_frame, replay

LOG_INFIX = ".log-"
"""Log files are named ``<base>.log-<n>``, n a decimal number from 1."""
SMALL_LOG = 4096
"""A log file this short is checked for records by a walk (see ``holds_records``)."""


def log_path(base: str, number: int) -> str:
    return f"{base}{LOG_INFIX}{number}"


def log_numbers(base_name: str, names: Iterable[str]) -> list[int]:
    """The numbers of the log files of ``base_name`` among ``names``, sorted.

    Only the canonical spelling counts (``.log-7``, not ``.log-07``): a
    name this store never writes is never taken for one of its files.
    """
    pattern = re.compile(re.escape(base_name + LOG_INFIX) + r"([1-9][0-9]{0,17})\Z")
    return sorted(int(match.group(1)) for name in names if (match := pattern.match(name)))


def first_log(header: Header) -> int:
    """The number of the first log file after a base with this header (files
    of versions 1 and 2 name none: their first compaction starts at 1)."""
    return header.log_number or 1


def peek_header(data: bytes) -> Header | None:
    """The header of ``data`` if it decodes, else None."""
    try:
        return decode_header(data)
    except HeaderError:
        return None


@dataclass(frozen=True)
class Follows:
    """What a log file's FOLLOWS record says."""

    previous: int
    """The number of the file appends came from (0: the base file)."""
    length: int
    """That file's length when they moved here."""
    base_compactions: int
    end: int
    """Where the record ends: the log file's first byte after it."""


def follows_of(data: bytes) -> Follows | None:
    """The FOLLOWS record opening a log file, if its first frame is one."""
    frame = read_frame(data, HEADER_SIZE) if len(data) > HEADER_SIZE else None
    if not isinstance(frame, Frame) or frame.kind != FOLLOWS:
        return None
    return Follows(frame.a, frame.b, frame.c, frame.end)  # type: ignore[arg-type]  # read_frame checked


def holds_records(data: bytes) -> bool:
    """Whether a log file may hold a change (any record but FOLLOWS and SYNCED).

    Walked only when the file is short; a longer one is taken to hold some.
    """
    if len(data) > SMALL_LOG:
        return True
    offset = HEADER_SIZE
    while offset < len(data):
        frame = read_frame(data, offset)
        if not isinstance(frame, Frame):
            return offset < len(data)
        if frame.kind not in (FOLLOWS, SYNCED):
            return True
        offset = frame.end
    return False


def _fsynced_past_follows(data: bytes) -> bool:
    """Whether a SYNCED frame of a log file vouches for bytes past its
    header: the file was fsynced after appends moved to it."""
    offset = HEADER_SIZE
    while offset < len(data):
        frame = read_frame(data, offset)
        if not isinstance(frame, Frame):
            return False
        if frame.kind == SYNCED and frame.a > HEADER_SIZE:  # type: ignore[operator]
            return True
        offset = frame.end
    return False


@dataclass
class ChainReplay:
    """What a chain of files holds, file by file."""

    header: Header | None
    """The base file's header (None: empty, or its header unfinished or damaged)."""
    entries: dict[str, Value] = field(default_factory=new_entries)
    expiries: dict[str, float] = field(default_factory=dict)
    files: list[tuple[int, Replay]] = field(default_factory=list)
    """Each file replayed, in order: (0 for the base, or the log number, its replay)."""
    dropped: list[int] = field(default_factory=list)
    """Log files left out: they follow a file that lost, in a power loss,
    bytes it held when appends moved on; nothing in them was fsynced."""
    dropped_reason: str = ""
    corruption: tuple[int, Damage] | None = None
    """The first damage that is not a torn tail of the last file: which file, where."""
    skipped: list[tuple[int, Damage]] = field(default_factory=list)
    """Salvage only: damaged ranges skipped, by file."""

    @property
    def last(self) -> tuple[int, Replay]:
        """The file appends continue in, and its replay."""
        return self.files[-1]

    @property
    def before_last(self) -> int:
        """The bytes of every file before the last (their valid lengths)."""
        return sum(result.end for _, result in self.files[:-1])


def replay_chain(base: bytes, logs: Sequence[tuple[int, bytes]], *,
                 salvage: bool = False) -> ChainReplay:
    """Replay a base file, then its consecutive log files ``logs`` (number, bytes).

    Never raises for any content: damage is reported in the result.
    """
    try:
        return _replay_chain(base, logs, salvage, walk=False)
    except Spoiled:  # a crafted log file fooled the fast path: walk the log files
        return _replay_chain(base, logs, salvage, walk=True)


def _replay_chain(base: bytes, logs: Sequence[tuple[int, bytes]], salvage: bool, *,  # noqa: PLR0911
                  walk: bool) -> ChainReplay:
    first = replay(base, salvage=salvage)
    chain = ChainReplay(header=first.header, entries=first.entries, expiries=first.expiries,
                        files=[(0, first)])
    if first.corruption is not None:
        if not salvage:
            chain.corruption = (0, first.corruption)
            return chain
        chain.skipped.append((0, first.corruption))
    chain.skipped.extend((0, damage) for damage in first.skipped)
    if first.header is None or first.header.log_file:
        return chain  # nothing can follow: the caller says why
    if first.header.has_log and (not logs or logs[0][0] != first_log(first.header)):
        damage = Damage(0, HEADER_SIZE, f"its log file {first_log(first.header)}, which "
                        "holds what was written since this base was, is missing (the base "
                        "moved or copied without its log files?)")
        if not salvage:
            chain.corruption = (0, damage)
            return chain
        chain.skipped.append((0, damage))
    for index, (number, data) in enumerate(logs):
        previous, held = chain.files[-1]
        header = peek_header(data)
        if header is not None and (not header.log_file or header.log_number != number):
            damage = Damage(0, HEADER_SIZE, f"log file {number} has the header of another "
                            "file")
            if not salvage:
                chain.corruption = (number, damage)
                return chain
            chain.skipped.append((number, damage))
            chain.dropped = [n for n, _ in logs[index:]]
            chain.dropped_reason = damage.reason
            return chain
        if header is None and is_unfinished_header(data):
            # Log files are put in place whole: this one holds nothing.
            chain.dropped = [n for n, _ in logs[index:]]
            chain.dropped_reason = f"log file {number} holds no complete header"
            return chain
        follows = follows_of(data)
        if follows is not None and follows.previous == previous and (
                previous != 0 or follows.base_compactions == first.header.compactions):
            if held.end < follows.length:
                reason = (f"log file {number} follows {_name(previous)} at offset "
                          f"{follows.length}, which holds only {held.end} valid bytes")
                if _fsynced_past_follows(data):  # the earlier file lost fsynced bytes
                    damage = Damage(held.end, follows.length, reason)
                    if not salvage:
                        chain.corruption = (previous, damage)
                        return chain
                    chain.skipped.append((previous, damage))
                else:
                    chain.dropped = [n for n, _ in logs[index:]]
                    chain.dropped_reason = reason + " (never fsynced: a power loss)"
                    return chain
            if held.end > follows.length:
                damage = Damage(follows.length, held.end,
                                f"{_name(previous)} holds frames past offset {follows.length}"
                                f", where appends moved to log file {number}")
                if not salvage:
                    chain.corruption = (previous, damage)
                    return chain
                chain.skipped.append((previous, damage))
        result = replay(data, salvage=salvage, onto=(chain.entries, chain.expiries), walk=walk)
        chain.files.append((number, result))
        if result.corruption is not None:
            if not salvage:
                chain.corruption = (number, result.corruption)
                return chain
            chain.skipped.append((number, result.corruption))
        chain.skipped.extend((number, damage) for damage in result.skipped)
    return chain


def _name(number: int) -> str:
    return "the base file" if number == 0 else f"log file {number}"
