"""Every file effect of the store, behind one seam.

The engine never calls ``os`` for file work directly: it goes through a
``FileSystem``. Tests pass a subclass that fails the Nth call, or that
remembers only what was fsynced and "loses power".
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
from typing import NamedTuple, Protocol

MAPPABLE_FILE_SYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "tmpfs"})
"""File systems where space reserved by posix_fallocate stays allocated: a
store into a mapping of it never needs a new block, so it cannot fail with
"no space left" (which, through a mapping, would be a SIGBUS, not an error).
Copy-on-write file systems (btrfs, zfs) need new blocks for every write."""


class Permissions(NamedTuple):
    """Who may use a file: its permission bits, owner and group."""

    mode: int
    uid: int
    gid: int


class Window(Protocol):
    """A writable mapping of part of a file (``mmap.mmap`` in real use)."""

    def write(self, data: bytes, /) -> int:
        """Copy ``data`` at the current position and move past it."""
        ...

    def seek(self, position: int, /) -> None: ...

    def close(self) -> None: ...


def file_system_type(path: str) -> str | None:
    """The type of the file system holding ``path`` (Linux), or None."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
            lines = mounts.read().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, kind = "", None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def not_a_regular_file(path: str, mode: int) -> OSError:
    """The error for a store path that names something else than a regular file."""
    if stat.S_ISDIR(mode):
        return IsADirectoryError(errno.EISDIR, "a directory, not a store file", path)
    kind = ("a character device" if stat.S_ISCHR(mode) else
            "a block device" if stat.S_ISBLK(mode) else
            "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "something else than a regular file")
    return OSError(errno.EINVAL, f"{kind}, not a store file (a store is a regular file, "
                   "or none yet); nothing was read or changed", path)


def real_path(path: str) -> str:
    """Where the store at ``path`` really is: every symlink resolved, in the
    directories and at the end (a dangling link gives its target's path).

    The store works on that file: a compaction replaces it, clear() removes
    it, a new log is created there, and the lock is named after it, so every
    link to one log shares one lock and stays a link.
    """
    return os.path.realpath(path)


class FileSystem:
    """The real file system (POSIX)."""

    def mode(self, path: str) -> int | None:
        """``st_mode`` of what ``path`` names (links followed), or None if nothing."""
        try:
            return os.stat(path).st_mode
        except FileNotFoundError:
            return None

    def read(self, path: str) -> bytes | None:
        """The whole file, or None when there is no file at ``path``.

        Anything but a regular file raises (``not_a_regular_file``) without
        being read: a FIFO would block, a device would read as anything.
        """
        try:
            # O_NONBLOCK: opening a FIFO for reading would wait for a writer.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise not_a_regular_file(path, mode)
            # One read of the whole file, then small ones until the end (it
            # may have grown). A second whole-size read would allocate and
            # free a buffer as large as the file, and glibc would then keep
            # later allocations of that size on its heap, not in mappings,
            # and hold on to them once freed (seen: 42 MB more resident
            # after opening a 1M-key store).
            wanted = max(os.fstat(fd).st_size, 1 << 16)
            chunks = []
            while True:
                chunk = os.read(fd, wanted)
                if not chunk:
                    break
                chunks.append(chunk)
                wanted = 1 << 16
            return b"".join(chunks)
        finally:
            os.close(fd)

    def open_append(self, path: str) -> int:
        """Open an existing log for appending (readable too, for ``map``)."""
        return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)

    def create(self, path: str) -> int:
        """Create a new file (mode 0600) that must not exist yet."""
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)

    def permissions(self, fd: int) -> Permissions:
        """The permission bits, owner and group of the file open at ``fd``."""
        info = os.fstat(fd)
        return Permissions(stat.S_IMODE(info.st_mode) & 0o777, info.st_uid, info.st_gid)

    def give_permissions(self, fd: int, wanted: Permissions) -> None:
        """Make the new file at ``fd`` carry ``wanted``, the permissions of
        the file it is to replace, as far as this process and the file
        system allow: the owner only for root, the group only for one of
        ours, no mode on a file system that has none (vfat)."""
        have = self.permissions(fd)
        if (have.uid, have.gid) != (wanted.uid, wanted.gid):
            for uid in (wanted.uid, -1):  # the owner, or at least the group
                try:
                    os.fchown(fd, uid, wanted.gid)
                    break
                except PermissionError:
                    continue
        if have.mode != wanted.mode:
            try:
                os.fchmod(fd, wanted.mode)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise

    # The hot path of every set: the builtin itself, with no Python frame in
    # between. A subclass overrides it with an ordinary method.
    write = staticmethod(os.write)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def can_map(self, path: str) -> bool:
        """Whether appends to the log at ``path`` may go through ``map``."""
        return hasattr(os, "posix_fallocate") and (
            file_system_type(os.path.dirname(path)) in MAPPABLE_FILE_SYSTEMS)

    def allocate(self, fd: int, offset: int, length: int) -> None:
        """Reserve disk space for ``[offset, offset + length)``; the file
        grows to cover it, and the new bytes read as zeros."""
        os.posix_fallocate(fd, offset, length)

    def map(self, fd: int, offset: int, length: int) -> Window:
        """Map ``[offset, offset + length)`` of the file for writing, shared
        with the page cache: what is written there is in the file even if
        the process dies at once. ``offset`` must be a multiple of
        ``mmap.ALLOCATIONGRANULARITY``; the window's position starts at 0."""
        return mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                         offset=offset)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def write_synced(self, fd: int, data: bytes | memoryview) -> None:
        """Append all of ``data`` to the log open at ``fd`` and make it
        durable: ``write`` until all is written, then ``fsync``. On OSError
        an unknown part of ``data`` may be in the file."""
        view = memoryview(data)
        while view:
            written = self.write(fd, view)
            if written <= 0:
                raise OSError("write made no progress")
            view = view[written:]
        self.fsync(fd)

    def truncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def close(self, fd: int) -> None:
        os.close(fd)

    def replace(self, source: str, target: str) -> None:
        os.replace(source, target)

    def link(self, source: str, target: str) -> bool:
        """Give the file at ``source`` the name ``target`` too, only if no
        file has that name: FileExistsError if one has. False, with nothing
        done, where the file system has no hard links."""
        try:
            os.link(source, target)
        except FileExistsError:
            raise
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK,
                             errno.ENOSYS):
                return False
            raise
        return True

    def remove(self, path: str) -> None:
        os.remove(path)

    def listdir(self, directory: str) -> list[str]:
        return os.listdir(directory)

    def fsync_dir(self, directory: str) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def lock(self, path: str) -> int | None:
        """Take an exclusive lock on ``path`` (created 0600 if missing).

        Returns the descriptor holding the lock, or None if someone else
        holds it. ``flock`` locks belong to the open file description, so a
        second open in the same process is refused just like another process.
        """
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                     | os.O_NONBLOCK, 0o600)
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise not_a_regular_file(path, mode)
            if not self.lock_open_file(fd):
                os.close(fd)
                return None
            # Who holds it, for the message of the next opener (lock_holder).
            # A lock file that cannot be written still locks.
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError:
                pass
        except BaseException:
            os.close(fd)
            raise
        return fd

    def lock_holder(self, path: str) -> int | None:
        """The process id the lock file at ``path`` names, if it names one."""
        try:
            with open(path, "rb") as file:
                text = file.read(32)
        except OSError:
            return None
        first = text.split(b"\n", 1)[0].strip()
        return int(first) if first.isdigit() else None

    def lock_open_file(self, fd: int) -> bool:
        """Take an exclusive flock on the file open at ``fd``: False if
        someone else holds one. The store takes one on its log too, so that
        names it cannot see (a hard link, a lock file deleted meanwhile)
        still lead to one owner."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    def same_file(self, fd: int, path: str) -> bool:
        """Whether ``path`` still names the file open at ``fd``."""
        try:
            named = os.stat(path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def unlock(self, fd: int) -> None:
        os.close(fd)  # closing the description releases the flock


class OneCallFileSystem(FileSystem):
    """The real file system, where ``write_synced`` takes one system call.

    Linux's pwritev2 with RWF_DSYNC returns once the data is written and
    durable, as write(2) followed by fdatasync(2) would be. A group commit
    at "fsync" then gives up the GIL once per batch instead of twice: each
    time, getting it back can wait until the event loop's thread is idle.
    A kernel that refuses the flags gets the two calls from then on.
    """

    one_call = True

    def write_synced(self, fd: int, data: bytes | memoryview) -> None:
        if self.one_call:
            try:
                # Offset -1: at the file's end (RWF_APPEND), moving the offset.
                written = os.pwritev(fd, [data], -1, os.RWF_DSYNC | os.RWF_APPEND)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                self.one_call = False
            else:
                if written == len(data):
                    return
                data = memoryview(data)[written:]  # rare: the rest in two calls
        super().write_synced(fd, data)


REAL_FILES: FileSystem = (OneCallFileSystem() if hasattr(os, "RWF_DSYNC")
                          and hasattr(os, "RWF_APPEND") else FileSystem())
