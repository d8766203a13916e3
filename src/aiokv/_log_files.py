"""The files of one store on disk: the log, found through its links, and the
files written beside it (temporary files, copies kept aside, new logs).

Every file call goes through the ``FileSystem`` seam (``_files``), so that
tests can make any of them fail. Nothing here knows the format or the
engine's state: a new log is handed back as a locked descriptor, and the
engine decides what to do with it.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from ._chain import first_log, log_numbers, log_path, peek_header
from ._errors import LockedError
from ._files import FileSystem, Permissions, real_path
from ._format import Header

logger = logging.getLogger("aiokv")

TEMP_INFIX = ".tmp-"
"""Temporary files are named ``<log>.tmp-<pid>-<n>``; an open removes leftovers."""
READ_ATTEMPTS = 5
"""Reads of a store's files before a gap in the log numbers is believed."""
WRITE_CHUNK = 256 * 1024
"""``write_at`` writes this many bytes at a time: each write releases the GIL,
which a busy event loop's thread may then keep for a whole switch interval,
so few large writes keep a compaction moving."""


@dataclass
class OnDisk:
    """The files of a store as read at one moment (``LogFiles.read``)."""

    base: bytes | None
    """The base file's bytes (None: there is none)."""
    header: Header | None
    logs: list[tuple[int, bytes]] = field(default_factory=list)
    """The consecutive log files that follow the base, from its first."""
    below: list[int] = field(default_factory=list)
    """Log files numbered below the base's first: their records are in the
    base (left by a crash after a compaction put it in place)."""
    beyond: list[int] = field(default_factory=list)
    """Log files past a gap in the numbers, or with no base: they follow a
    file that is gone, and nothing can replay them."""

    @property
    def next_number(self) -> int:
        """The number for the log file appends move to next."""
        if self.logs:
            return self.logs[-1][0] + 1
        return first_log(self.header) if self.header is not None else 1


class LogFiles:
    """Where a store's files are, and the file procedures every writer shares.

    ``path`` is what the user gave (absolute); ``file`` the log itself, with
    its links resolved at each open (``resolve``); ``directory`` holds it and
    every file written beside it. ``permissions`` are those of the log found
    at open (None: a new store, created 0600), given to each file that
    replaces it or sits beside it.

    No lock of its own: ``resolve`` and ``permissions`` change only while the
    store opens (under the engine's ``_open_lock``); every other method is a
    procedure on descriptors its caller holds, safe from any thread.
    """

    def __init__(self, path: str, files: FileSystem) -> None:
        self.path = path
        self._files = files
        self.file = path
        self.directory = os.path.dirname(path)
        self.permissions: Permissions | None = None
        self._temp_counter = itertools.count()

    def resolve(self) -> None:
        """Find the log anew: the user's path with its links resolved (real_path)."""
        self.file = real_path(self.path)
        self.directory = os.path.dirname(self.file)

    def claim(self) -> int | None:
        """Open the existing log and lock it (None if there is none).

        The lock file is named after the path; this flock is on the file
        itself, so that a second opener through a name the lock file does not
        cover (a hard link, or after someone deleted the lock file) is
        refused before it reads or cuts anything: LockedError.
        """
        for _ in range(100):
            try:
                fd = self._files.open_append(self.file)
            except FileNotFoundError:
                return None
            try:
                if not self._files.lock_open_file(fd):
                    raise LockedError(self.path)
                if self._files.same_file(fd, self.file):
                    return fd
            except BaseException:
                self._files.close(fd)
                raise
            # Replaced between our open and our lock (the owner's compaction):
            # the file there now is the one to claim.
            self._files.close(fd)
        raise LockedError(self.path)

    def log_path(self, number: int) -> str:
        """Where log file ``number`` of this store is (beside the base file)."""
        return log_path(self.file, number)

    def log_numbers(self) -> list[int]:
        """The numbers of every log file of this store there is, sorted."""
        return log_numbers(os.path.basename(self.file), self._files.listdir(self.directory or "."))

    def read(self) -> OnDisk:
        """Read the base file and the log files that follow it.

        A file found past a gap may mean that the owner's compaction put a
        new base in place and removed the old log files between two reads
        here (readonly=True, the tools): then all is read again.
        """
        for _ in range(READ_ATTEMPTS - 1):
            found = self._read_once()
            if not found.beyond or found.base is None:
                return found
        return self._read_once()

    def _read_once(self) -> OnDisk:
        base = self._files.read(self.file)
        header = None if base is None else peek_header(base)
        numbers = self.log_numbers()
        if header is None or header.log_file:
            return OnDisk(base, header, beyond=numbers)
        found = OnDisk(base, header)
        expected = first_log(header)
        for number in numbers:
            if number < first_log(header):
                found.below.append(number)
                continue
            data = self._files.read(self.log_path(number)) if number == expected else None
            if data is None:
                found.beyond.append(number)
                continue
            found.logs.append((number, data))
            expected += 1
        return found

    def remove_logs(self, numbers: Iterable[int]) -> None:
        """Remove these log files; a failure is logged (the next open retries)."""
        for number in numbers:
            try:
                self._files.remove(self.log_path(number))
            except FileNotFoundError:
                pass
            except OSError as exc:
                logger.warning("aiokv: could not remove %s: %s", self.log_path(number), exc)

    def free_name(self, base: str, data: bytes) -> str | None:
        """``base``, or ``base.N`` if taken; None if a copy of ``data`` is there."""
        for attempt in range(1000):
            candidate = base if attempt == 0 else f"{base}.{attempt}"
            existing = self._files.read(candidate)
            if existing is None:
                return candidate
            if existing == data:
                return None
        raise FileExistsError(f"no free name for a copy of {self.path!r} next to {base!r}")

    def remove_leftover_temps(self) -> None:
        prefix = os.path.basename(self.file) + TEMP_INFIX
        for name in self._files.listdir(self.directory or "."):
            if name.startswith(prefix):
                self._files.remove(os.path.join(self.directory, name))

    def temp_path(self) -> str:
        return f"{self.file}{TEMP_INFIX}{os.getpid()}-{next(self._temp_counter)}"

    def write_atomically(self, path: str, chunks: Iterable[bytes], *,
                               as_log: bool = False, new: bool = False) -> int | None:
        """Write a whole file through a temp file, fsync, rename, fsync dir.

        With ``as_log``: the new file is the store's log; returns a
        descriptor open on it for appending, locked (``lock_open_file``)
        before the rename puts it in place, so there is no moment when the
        log is in place and unclaimed. With ``new``: there is no file at
        ``path`` to replace, and if one appeared meanwhile (another opener,
        let in because the lock file was deleted), it is left alone and
        LockedError raised: the temp file is linked, not renamed, into place
        (renamed where the file system has no hard links).
        """
        temp = self.temp_path()
        fd = self._files.create(temp)
        log_fd = None
        try:
            if self.permissions is not None:
                self._files.give_permissions(fd, self.permissions)
            for chunk in chunks:
                self.write_all(fd, chunk)
            self._files.fsync(fd)
            if as_log:
                log_fd = self._files.open_append(temp)
                if not self._files.lock_open_file(log_fd):
                    raise LockedError(self.path)  # a file only this store knows of
        except BaseException:
            if log_fd is not None:
                self.close_quietly(log_fd)
            self._files.close(fd)
            self._files.remove(temp)
            raise
        self._files.close(fd)
        try:
            if new:
                self.put_in_place_if_absent(temp, path)
            else:
                self._files.replace(temp, path)
        except BaseException:
            if log_fd is not None:
                self.close_quietly(log_fd)
            raise
        try:
            self._files.fsync_dir(self.directory)
        except BaseException:
            if log_fd is not None:
                self.close_quietly(log_fd)
            if new:
                self.take_back(path)
            raise
        return log_fd

    def put_in_place_if_absent(self, temp: str, path: str) -> None:
        """Rename ``temp`` to ``path`` unless a file is there: then LockedError."""
        try:
            linked = self._files.link(temp, path)
        except BaseException as exc:
            self._files.remove(temp)
            if isinstance(exc, FileExistsError):
                raise LockedError(self.path) from None
            raise
        if not linked:
            self._files.replace(temp, path)
            return
        try:
            self._files.remove(temp)
        except BaseException:
            self.take_back(path)
            raise

    def take_back(self, path: str) -> None:
        """A new file was put at ``path`` but creating it failed after: remove
        it again, so that the next attempt finds no file there (and does not
        take its own for another opener's). A temp name left behind is
        removed at the next open."""
        try:
            self._files.remove(path)
        except OSError as exc:
            logger.warning("aiokv: could not remove %s after failing to create it: %s",
                           path, exc)

    def write_all(self, fd: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        written = self._files.write(fd, view)
        while written < len(view):
            if written <= 0:
                raise OSError("write made no progress")
            view = view[written:]
            written = self._files.write(fd, view)

    def close_quietly(self, fd: int) -> None:
        """Close a descriptor whose file is no longer needed; log a failure."""
        try:
            self._files.close(fd)
        except OSError as exc:
            logger.warning("aiokv: closing a descriptor of %s failed: %s", self.path, exc)

    def write_at(self, fd: int, offset: int, frames: Iterable[bytes]) -> int:
        """pwrite ``frames`` one after another from ``offset``, WRITE_CHUNK
        bytes at a time; return the end."""
        chunk: list[bytes] = []
        size = 0
        for frame in frames:
            chunk.append(frame)
            size += len(frame)
            if size >= WRITE_CHUNK:
                offset = self.pwrite_all(fd, offset, b"".join(chunk))
                chunk, size = [], 0
        if chunk:
            offset = self.pwrite_all(fd, offset, b"".join(chunk))
        return offset

    def pwrite_all(self, fd: int, offset: int, data: bytes) -> int:
        view = memoryview(data)
        while view:
            written = self._files.pwrite(fd, view, offset)
            if written <= 0:
                raise OSError("write made no progress")
            offset += written
            view = view[written:]
        return offset
