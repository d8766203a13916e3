"""Which files make up an open store, and the descriptors it holds on them.

A store is its base file followed by the log files of its chain (see
``_chain``); appends go to the last of them, through the engine's
``LogWriter``, which holds that file's descriptor. This part keeps the rest:
the base file's descriptor (it holds the store's claim, a flock), the numbers
of the log files, the bytes of every file before the one appended to, and the
descriptors of the files appends moved away from, which must be fsynced
before the file appended to ever is, and stay open until a base that holds
them is in place.
"""

from __future__ import annotations


class StoreFiles:
    """The chain of an open store, as the engine holds it.

    Every field is guarded by the engine's ``lock``; closing a descriptor
    also takes ``io`` (the engine does that, with what these methods hand
    back). No file call is made here.
    """

    def __init__(self) -> None:
        self.base_fd: int | None = None
        """The base file's descriptor: the store's claim on it."""
        self.chain: list[int] = []
        """Numbers of the log files after the base; appends go to the last."""
        self.chain_bytes = 0
        """Bytes of the files before the one appended to (stats, compaction rule)."""
        self.log_floor = 0
        """The bytes a log file starts with (header, FOLLOWS frame): live, as
        the smallest chain holding the entries has them (0: appends go to
        the base file)."""
        self.next_log = 1
        """The number of the log file appends move to at the next compaction."""
        self.retired: list[int] = []
        """Descriptors of earlier log files of the chain, open until removed."""
        self.retired_unsynced: list[int] = []
        """Those of them (or the base's) not yet fsynced since appends moved on."""
        self.dir_unsynced = False
        """The directory's entries changed (a compaction's rename) and are not
        yet fsynced: the next fsync of the log does it too."""
        self.compactions = 0
        """Compactions the base has gone through (its header says so)."""
        self.last_compaction: float | None = None
        """Unix time of the last compaction (its header), None if never."""

    def adopt(self, base_fd: int | None, chain: list[int], chain_bytes: int, log_floor: int,
              next_log: int) -> None:
        """The chain as an open found it (or as read-only reads it)."""
        self.base_fd = base_fd
        self.chain, self.chain_bytes, self.log_floor = chain, chain_bytes, log_floor
        self.next_log = next_log

    def new_base(self, fd: int, first: int) -> None:
        """A base appended to itself was put in place; its first log file is ``first``."""
        self.adopt(fd, [], 0, 0, first)

    def total(self, log_end: int) -> int:
        """The bytes of every file, the one appended to ending at ``log_end``."""
        return self.chain_bytes + log_end

    def previous(self) -> int:
        """The number of the file appended to (0: the base), as FOLLOWS names it."""
        return self.chain[-1] if self.chain else 0

    def moved(self, old_fd: int, old_end: int, number: int, start: int) -> None:
        """Appends moved from the file open at ``old_fd`` (``old_end`` bytes) to
        log file ``number``, which starts with ``start`` bytes."""
        if old_fd != self.base_fd:
            self.retired.append(old_fd)
        self.retired_unsynced.append(old_fd)
        self.chain_bytes += old_end
        self.chain.append(number)
        self.log_floor = start
        self.next_log = number + 1

    def synced(self, fd: int) -> None:
        """The file open at ``fd``, appended to no more, was fsynced."""
        if fd in self.retired_unsynced:
            self.retired_unsynced.remove(fd)

    def compacted(self, base_fd: int, first: int, base_bytes: int
                  ) -> tuple[int | None, list[int], list[int]]:
        """A compaction put a base of ``base_bytes`` in place, open at
        ``base_fd``, whose first log file is ``first``. Returns what to let
        go: the old base's descriptor, the retired descriptors, and the
        numbers of the log files the new base holds."""
        old_base, self.base_fd = self.base_fd, base_fd
        done = [number for number in self.chain if number < first]
        retired, self.retired, self.retired_unsynced = self.retired, [], []
        self.chain = [number for number in self.chain if number >= first]
        self.chain_bytes = base_bytes
        return old_base, retired, done

    def cleared(self) -> list[int]:
        """clear() removed the base: the numbers of the log files to remove."""
        chain = self.chain
        self.chain, self.chain_bytes, self.log_floor = [], 0, 0
        return chain

    def let_go(self, log_fd: int | None) -> list[int]:
        """Forget every descriptor (and ``log_fd``, the one appended to):
        returns each once, for the caller to close."""
        fds = [fd for fd in dict.fromkeys([log_fd, self.base_fd, *self.retired])
               if fd is not None]
        self.base_fd = None
        self.retired, self.retired_unsynced = [], []
        return fds
