"""Recovery, the part of open() that touches files: it brings a store's
files to a state that can be appended to, and fills the engine's table and
chain from them.

The replay itself is pure and lives elsewhere: one file's bytes in
``_recovery``, the chain of files in ``_chain``. What is here acts on its
verdict: claim the base file, remove log files that cannot be replayed,
fsync what a kill left unsynced, cut a torn tail, log the keys that expired
while the store was closed, keep damaged files aside (recovery="salvage"),
convert a JSON state file, or create a new base. Read-only opens take the
same verdict and touch nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ._chain import ChainReplay, first_log, follows_of, holds_records, replay_chain
from ._errors import CorruptionError
from ._files import FileSystem
from ._format import HEADER_SIZE, Value, encode_delete, encode_header, encode_value
from ._legacy import INTS_AS_STRINGS_HINT, ints_as_strings, parse_legacy_json
from ._log_files import LogFiles, OnDisk
from ._log_writer import LogWriter
from ._recovery import Damage, is_log, new_entries
from ._snapshot import snapshot_frames
from ._store_files import StoreFiles
from ._table import Table

logger = logging.getLogger("aiokv")

REWRITE_EXPIRED_BYTES = 640 * 1024
"""Keys expired while the store was closed are deleted in the log at open;
past this many bytes of DELETE records a new base is cheaper: that."""


class FileRecovery:
    """Opens a store's files and fills the engine's parts from them.

    Used by ``Engine.open`` (with the engine's ``_open_lock`` held, before
    any other thread of the engine exists: no lock of its own), and by
    ``Engine.recreate_base`` after clear() (with ``io`` and ``lock`` held).
    It writes the entries into ``table``, the chain into ``store`` and the
    file appended to into ``log``; the engine then vouches and seals.
    """

    def __init__(self, disk: LogFiles, files: FileSystem, table: Table, store: StoreFiles,
                 log: LogWriter, *, salvage: bool, clock: Callable[[], float]) -> None:
        self._disk = disk
        self._files = files
        self._table = table
        self._store = store
        self._log = log
        self._salvage_damage = salvage
        self._clock = clock
        self.legacy_ints_as_strings = False
        """Store a JSON state file's ints beyond 64 bits as strings when
        converting it (``aiokv migrate --ints-as-strings``)."""

    @property
    def _path(self) -> str:
        return self._disk.path

    # -- read-only ------------------------------------------------------------

    def read_only(self) -> None:
        """Hold what the files hold, touching nothing: no lock (the store may
        be open elsewhere), no cut, no write. A torn tail is left out, damage
        raises (or, with recovery="salvage", is skipped), a JSON state file
        is read as it is, and no file is an empty store."""
        found = self._disk.read()
        data = found.base or b""
        entries: dict[str, Value] = new_entries()
        expiries: dict[str, float] = {}
        if not is_log(data):
            legacy = parse_legacy_json(data)
            if legacy is None:
                raise CorruptionError(self._path, 0, "neither an aiokv log nor a JSON object")
            entries = self._legacy_entries(legacy)
        elif data:
            self._refuse_log_file(found)
            chain = replay_chain(data, found.logs, salvage=self._salvage_damage)
            if chain.corruption is not None and not self._salvage_damage:
                raise self._corruption(chain.corruption)
            self._take_counters(chain)
            entries, expiries = chain.entries, chain.expiries
            self._store.adopt(None, [number for number, _ in chain.files[1:]],
                              chain.before_last, log_floor(found.logs[:len(chain.files) - 1]),
                              found.next_number)
            self._log.end = chain.last[1].end
        self._table.take(entries, expiries)
        self._table.live_bytes = self._table.estimate_live_bytes()

    # -- open ---------------------------------------------------------------

    def recover(self) -> None:
        """Claim the base file, then bring the store back: replay, repair, or create it.

        The base is locked before anything is read or changed (see
        ``LogFiles.claim``); a new base replacing it is locked before it is
        put in place, and the old one is let go only then. On return the
        log is open and fsynced as far as ``log.synced_end`` says.
        """
        claimed = self._disk.claim()
        try:
            self._recover_claimed(claimed)
        finally:
            if claimed is not None and self._store.base_fd != claimed:
                self._disk.close_quietly(claimed)  # a new base replaced it, or opening failed

    def _recover_claimed(self, claimed: int | None) -> None:
        self._disk.remove_leftover_temps()
        if claimed is None:
            stale = self._disk.log_numbers()
            if stale:
                logger.warning("aiokv: %s: log files without their base file (%s); they "
                               "follow nothing and are removed", self._path,
                               ", ".join(map(self._disk.log_path, stale)))
            self.create_base({}, {}, new=True)
            return
        # Every file written from now on (new bases, log files, a backup, a
        # damaged copy) gets these, not the 0600 of a new store.
        self._disk.permissions = self._files.permissions(claimed)
        found = self._disk.read()
        data = found.base or b""
        if not is_log(data):
            legacy = parse_legacy_json(data)
            if legacy is None:
                raise CorruptionError(self._path, 0, "neither an aiokv log nor a JSON object")
            self._migrate_legacy(data, legacy)
            return
        self._refuse_log_file(found)
        chain = replay_chain(data, found.logs, salvage=self._salvage_damage)
        if chain.header is None and chain.corruption is None:
            if data:
                logger.warning("aiokv: %s held only an unfinished header (%d bytes); "
                               "starting an empty store", self._path, len(data))
            self.create_base({}, {})
            return
        if chain.corruption is not None and not self._salvage_damage:
            raise self._corruption(chain.corruption)
        if chain.skipped or chain.corruption is not None:
            self._salvage(found, chain)
            return
        self._remove_unusable(found, chain)
        kept = found.logs[:len(chain.files) - 1]
        floor = log_floor(kept)
        expired = self._adopt(chain, kept, floor)
        self._reopen_last(found, chain, claimed, floor, expired)

    def _remove_unusable(self, found: OnDisk, chain: ChainReplay) -> None:
        """Remove the files that cannot be replayed, before anything is
        appended: a log file left after the one appended to would be taken
        for its successor at the next open."""
        unusable = found.beyond + chain.dropped
        if chain.dropped:
            logger.warning("aiokv: %s: %s; leaving out %s", self._path, chain.dropped_reason,
                           ", ".join(map(self._disk.log_path, chain.dropped)))
        if found.beyond:
            logger.warning("aiokv: %s: log files that follow no file of the store (%s) are "
                           "removed", self._path, ", ".join(map(self._disk.log_path,
                                                                  found.beyond)))
        for number in unusable:
            self._files.remove(self._disk.log_path(number))
        if unusable:
            self._files.fsync_dir(self._disk.directory)
        self._disk.remove_logs(found.below)  # their records are in the base

    def _reopen_last(self, found: OnDisk, chain: ChainReplay, claimed: int, floor: int,
                     expired: list[str]) -> None:
        """Open the last file of a replayed chain to append to: cut its torn
        tail, fsync what no SYNCED frame vouches for, log the expired keys."""
        number, result = chain.last
        name = self._file_of(number)
        if result.torn_tail:
            self._log_torn_tail(name, result.end, result.torn_tail, result.dropped_frames,
                                dict(found.logs)[number] if number else found.base or b"")
        assert result.header is not None
        vouched = result.header.vouched
        # Appended frames no SYNCED frame vouches for (the writer was killed
        # before it could write one): fsync them, and vouch for them at once.
        unvouched = vouched and result.end > result.durable_end
        # The files before the last, fsynced before it ever is (as when
        # appends moved on): a kill may have come before the compaction did it.
        for earlier, _ in chain.files[:-1]:
            self._fsync_file(claimed if earlier == 0 else None, self._file_of(earlier))
        logs = [n for n, _ in chain.files[1:]]
        assert chain.header is not None
        self._store.adopt(claimed, logs, chain.before_last, floor,
                          logs[-1] + 1 if logs else first_log(chain.header))
        fd = claimed if number == 0 else self._files.open_append(name)
        self._log.fd = fd  # closed with the others should what follows fail
        if result.torn_tail:
            self._files.truncate(fd, result.end)
        # The expired keys the replay dropped: their removal goes into the log
        # as the sweep's does, durable before the store is used; so many that
        # a new base is cheaper: that.
        deletes = b"".join(map(encode_delete, expired))
        if len(deletes) > REWRITE_EXPIRED_BYTES:
            if fd != claimed:
                self._disk.close_quietly(fd)
            self._log.fd = self._store.base_fd = None  # claimed: closed by recover()
            self.create_base(self._table.entries, self._table.expiries)
            return
        end = result.end + len(deletes)
        if deletes:
            self._files.write_synced(fd, deletes)
        elif result.torn_tail or unvouched:
            self._files.fsync(fd)
        self._log.end = end
        synced = end if result.torn_tail or unvouched or deletes else result.durable_end
        self._log.vouch_from(synced, vouched, result.durable_end)

    def _log_torn_tail(self, name: str, end: int, torn: int, dropped_frames: int,
                       data: bytes) -> None:
        if dropped_frames:
            logger.warning(
                "aiokv: %s: bytes from offset %d were never fsynced and did not all "
                "reach the disk (a power loss); truncating %d bytes, %d records after "
                "the gap included", name, end, torn, dropped_frames)
        elif data.count(0, end) == torn:
            logger.info("aiokv: %s ends in %d zero bytes at offset %d (space reserved "
                        "for appends, or a torn write); truncating them", name, torn, end)
        else:
            logger.warning("aiokv: %s ended in a torn record; truncating %d bytes at "
                           "offset %d", name, torn, end)

    def _fsync_file(self, fd: int | None, path: str) -> None:
        """fsync the file open at ``fd``, or else the one at ``path``."""
        if fd is not None:
            self._files.fsync(fd)
            return
        opened = self._files.open_append(path)
        try:
            self._files.fsync(opened)
        finally:
            self._disk.close_quietly(opened)

    def _take_counters(self, chain: ChainReplay) -> None:
        if chain.header is not None:
            self._store.compactions = chain.header.compactions
            self._store.last_compaction = chain.header.compacted_at or None

    def _adopt(self, chain: ChainReplay, kept: list[tuple[int, bytes]], floor: int
               ) -> list[str]:
        """Take the entries of a replayed chain, minus those already expired,
        which it returns. ``kept``: the log files replayed; ``floor``: what
        the last starts with."""
        assert chain.header is not None
        self._take_counters(chain)
        table = self._table
        dropped = table.take(chain.entries, chain.expiries)
        base = chain.files[0][1]
        if (base.end == chain.header.compacted_length and not dropped
                and not any(holds_records(log) for _, log in kept)):
            # Nothing was appended since a compaction wrote the base, and
            # nothing expired since: every byte is live.
            table.live_bytes = chain.before_last + chain.last[1].end - floor
        else:
            table.live_bytes = table.estimate_live_bytes()
        return dropped

    # -- what the chain cannot give ---------------------------------------------

    def _refuse_log_file(self, found: OnDisk) -> None:
        """A log file given as the store: its records mean nothing alone."""
        if found.header is not None and found.header.log_file:
            raise CorruptionError(self._path, 0, "this is a log file of a store (it follows a "
                                  "base file), not a store: open the base file")

    def _file_of(self, number: int) -> str:
        """The path of a file of the chain (0: the base)."""
        return self._disk.file if number == 0 else self._disk.log_path(number)

    def _corruption(self, where: tuple[int, Damage]) -> CorruptionError:
        number, damage = where
        return CorruptionError(self._file_of(number), damage.offset, damage.reason)

    def _legacy_entries(self, legacy: dict[str, object]) -> dict[str, Value]:
        """The entries of a JSON state file, as the store holds them.

        JSON has no limit on ints and msgpack stores 64 bits: a bigger one
        raises ValueError (the file is not corrupt), naming the key and the
        way through, unless ``legacy_ints_as_strings`` says to store it as
        its decimal string.
        """
        if self.legacy_ints_as_strings:
            legacy = {key: ints_as_strings(value)[0] for key, value in legacy.items()}
        entries = new_entries()
        for key, value in legacy.items():
            try:
                entries[key] = encode_value(value)
            except (TypeError, ValueError, RecursionError) as exc:
                hint = ""
                if not self.legacy_ints_as_strings and ints_as_strings(value)[1]:
                    hint = f"; {INTS_AS_STRINGS_HINT}"
                raise ValueError(f"{self._path}: the JSON state file cannot be stored as it "
                                 f"is: key {key!r}: {exc}{hint}") from None
        return entries

    def _migrate_legacy(self, data: bytes, legacy: dict[str, object]) -> None:
        entries = self._legacy_entries(legacy)
        backup = self._disk.free_name(self._disk.file + ".bak", data)
        if backup is not None:
            self._disk.write_atomically(backup, [data])
        self.create_base(entries, {})
        logger.warning("aiokv: converted the JSON state file %s (%d entries) to the log "
                       "format; the original is kept as %s", self._path, len(entries),
                       backup or self._disk.file + ".bak")

    def _keep_aside(self, path: str, data: bytes, stamp: str) -> str:
        """A copy of a damaged file beside it; its name (or a note that an
        identical copy is there already)."""
        aside = self._disk.free_name(f"{path}.corrupt-{stamp}", data)
        if aside is not None:
            self._disk.write_atomically(aside, [data])
        return aside or "(an identical earlier copy)"

    def _salvage(self, found: OnDisk, chain: ChainReplay) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self._clock()))
        damage = list(chain.skipped)
        if chain.corruption is not None:
            damage.append(chain.corruption)
        contents = {0: found.base or b"", **dict(found.logs)}
        kept: dict[int, str] = {}
        for number in dict.fromkeys(number for number, _ in damage):
            kept[number] = self._keep_aside(self._file_of(number), contents[number], stamp)
        # Log files the replay could not place (the base's header, which
        # names its first, is damaged): kept aside before the new base
        # replaces the chain and they go.
        for number in found.beyond:
            path = self._disk.log_path(number)
            kept[number] = self._keep_aside(path, self._files.read(path) or b"", stamp)
            logger.warning("aiokv: salvaging %s: %s follows no file that could be read; "
                           "its records are not kept in the store", self._path, path)
        for number, item in damage:
            logger.warning("aiokv: salvaging %s: skipped bytes %d-%d (%s)",
                           self._file_of(number), item.offset, item.end, item.reason)
        if chain.header is not None:
            self._store.compactions = chain.header.compactions
        self._table.take(chain.entries, chain.expiries)
        self.create_base(self._table.entries, self._table.expiries)
        logger.warning("aiokv: salvaged %s: kept %d entries; the damaged files are kept as %s",
                       self._path, len(chain.entries), ", ".join(kept.values()))

    # -- a new base ---------------------------------------------------------

    def create_base(self, entries: dict[str, Value], expiries: dict[str, float], *,
                    new: bool = False) -> None:
        """Atomically write a base file holding ``entries``, appended to from
        now on; adopt and open it. The log files of the chain it replaces go.

        ``new``: no file is there to replace (see LogFiles.write_atomically).
        """
        frames = list(snapshot_frames(entries, expiries))
        length = HEADER_SIZE + sum(map(len, frames))
        self._put_base(frames, length, new=new)
        self._table.take(entries, expiries)
        self._table.live_bytes = length
        self._log.vouch_from(length)

    def create_empty_base(self) -> None:
        """Create the base file again after clear(); memory is left as it is."""
        self._put_base([], HEADER_SIZE, new=True)
        self._log.vouch_from(HEADER_SIZE)

    def _put_base(self, frames: list[bytes], length: int, *, new: bool) -> None:
        """Put a base file holding ``frames`` in place, appended to from now on.

        Its first log file is numbered past every log file there is, so
        that none of them can be taken for one that follows it; they are
        removed once it is in place (or at the next open).
        """
        stale = self._disk.log_numbers()
        first = max([self._store.next_log, *(number + 1 for number in stale)])
        header = encode_header(self._store.compactions, self._store.last_compaction or 0.0,
                               length, first)
        fd = self._disk.write_atomically(self._disk.file, [header, *frames], as_log=True,
                                         new=new)
        self.close_files()
        assert fd is not None
        self._store.new_base(fd, first)
        self._log.fd = fd
        self._log.end = length
        self._disk.remove_logs(stale)

    def close_files(self, *, quietly: bool = True) -> None:
        """Close every descriptor of the chain (the log, the base, retired ones)."""
        fds = self._store.let_go(self._log.fd)
        self._log.fd = None
        for fd in fds:
            if quietly:
                self._disk.close_quietly(fd)
            else:
                self._files.close(fd)


def log_floor(logs: list[tuple[int, bytes]]) -> int:
    """The bytes the last of ``logs`` starts with (see StoreFiles.log_floor)."""
    if not logs:
        return 0
    opening = follows_of(logs[-1][1])
    return HEADER_SIZE if opening is None else opening.end
