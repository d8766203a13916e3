"""The exceptions aiokv raises, all under one base class."""

from __future__ import annotations

import os


class AioKVError(Exception):
    """Base class of every error specific to aiokv."""


class CorruptionError(AioKVError):
    """The file holds damage that recovery may not cut silently.

    Raised when opening a log whose bytes were changed after being written
    completely (damage followed by a valid frame, or damage inside the part a
    compaction fsynced), or a file that is neither an aiokv log nor a JSON
    object. The file is left byte-for-byte untouched and the store stays
    unopened; ``recovery="salvage"`` opens it instead (see docs/guarantees.md).
    """

    def __init__(self, path: str | os.PathLike[str] | None, offset: int, reason: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.offset = offset
        self.reason = reason
        where = f"{self.path!r}" if self.path is not None else "log"
        super().__init__(f"{where} is corrupt at byte {offset}: {reason}")


class LockedError(AioKVError):
    """Another AioKV or KV (in this process or another) has the store open.

    Raised by the first operation of the second opener; that instance stays
    unopened and may try again later. The owner is not affected. ``holder``
    is the owner's process id where the lock file says it, else None.
    """

    def __init__(self, path: str, holder: int | None = None) -> None:
        self.path = path
        self.holder = holder
        if holder is None:
            where = "in another AioKV instance or process"
        elif holder == os.getpid():
            where = f"by another instance in this process ({holder})"
        else:
            where = f"in process {holder}"
        super().__init__(f"{path!r} is open {where}")


class ForkedError(AioKVError):
    """The store was opened in another process before that process forked.

    A store belongs to the process that opened it. An instance inherited
    through ``fork()`` (multiprocessing's default start method on Linux,
    gunicorn ``--preload``, a daemon's double fork, a library's helper
    process) raises this from every operation. It touches nothing of the
    owner's: its copies of the owner's descriptors were closed at the fork,
    and ``close()``, garbage collection and exiting do nothing in this
    process. Open a new instance here, after the fork (while the owner keeps
    the store open, that one gets ``LockedError``).
    """

    def __init__(self, path: str, owner: int) -> None:
        self.path = path
        self.owner = owner
        super().__init__(
            f"store {path!r} was opened in process {owner} before a fork; this process "
            f"({os.getpid()}) cannot use it: open the store after the fork, in the process "
            "that uses it")


class ReadOnlyError(AioKVError):
    """A write was asked of a store opened with ``readonly=True``.

    Nothing is written; the store stays open for reading. Open it without
    ``readonly`` (where the file may be written and no one else has it open)
    to write.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"store {path!r} was opened read-only: it takes no writes")


class ClosedError(AioKVError):
    """An operation was called after ``close()``.

    Nothing is read or written; everything acknowledged before close() is
    safely on disk. Create a new instance to open the store again.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"store {path!r} is closed")


class UnavailableError(AioKVError, ConnectionError):
    """The server of a store (``from_url`` with a Redis or Valkey URL) could
    not be reached: the connection was refused, timed out or broke before the
    command was sent. Nothing happened on the server; the call may be made
    again. The message names the server (without its password)."""

    def __init__(self, where: str, cause: BaseException) -> None:
        self.where = where
        super().__init__(f"cannot reach the server of {where!r}: {cause}")


class OutcomeUnknownError(AioKVError, OSError):
    """A write was sent to the server, but its reply never came (the
    connection broke or timed out): it may or may not have happened.

    aiokv never sends such a write again by itself, since a repeated
    ``incr()`` or ``add()`` would count twice or answer wrongly; read the key
    to find out, or make the write again if doing it twice is harmless."""

    def __init__(self, where: str, command: str, cause: BaseException) -> None:
        self.where = where
        self.command = command
        super().__init__(f"{command} on {where!r} was sent, but no reply came ({cause}): "
                         "it may or may not have happened")
