"""Every file effect of the store, behind one seam.

The engine never calls ``os`` for file work directly: it goes through a
``FileSystem``. Tests pass a subclass that fails the Nth call, or that
remembers only what was fsynced and "loses power".
"""

from __future__ import annotations

import errno
import fcntl
import os


class FileSystem:
    """The real file system (POSIX)."""

    def read(self, path: str) -> bytes | None:
        """The whole file, or None when there is no file at ``path``."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size
            chunks = []
            while True:
                chunk = os.read(fd, max(size, 1 << 16))
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def open_append(self, path: str) -> int:
        """Open an existing log for appending."""
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)

    def create(self, path: str) -> int:
        """Create a new file (mode 0600) that must not exist yet."""
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)

    # The hot path of every set: the builtin itself, with no Python frame in
    # between. A subclass overrides it with an ordinary method.
    write = staticmethod(os.write)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def truncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def close(self, fd: int) -> None:
        os.close(fd)

    def replace(self, source: str, target: str) -> None:
        os.replace(source, target)

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
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        return fd

    def unlock(self, fd: int) -> None:
        os.close(fd)  # closing the description releases the flock


REAL_FILES = FileSystem()
