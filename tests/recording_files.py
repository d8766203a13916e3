"""A FileSystem that records every call: which one, on which thread, when."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Buffer

from aiokv import AioKV
from aiokv._engine import Engine
from aiokv._files import FileSystem, Window


@dataclass(frozen=True)
class Call:
    name: str
    thread: int
    time: float
    size: int = 0


class RecordingFiles(FileSystem):
    def __init__(self, *, mapping: bool = True) -> None:
        self.calls: list[Call] = []
        self.mapping = mapping
        """False: appends at "flush" go through write(2) instead of a map."""
        self._lock = threading.Lock()

    def can_map(self, path: str) -> bool:
        return self.mapping and super().can_map(path)

    def _note(self, name: str, size: int = 0) -> None:
        with self._lock:
            self.calls.append(Call(name, threading.get_ident(), time.monotonic(), size))

    def names(self) -> list[str]:
        with self._lock:
            return [call.name for call in self.calls]

    def clear_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    def read(self, path: str) -> bytes | None:
        self._note("read")
        return super().read(path)

    def open_append(self, path: str) -> int:
        self._note("open_append")
        return super().open_append(path)

    def create(self, path: str) -> int:
        self._note("create")
        return super().create(path)

    def write(self, fd: int, data: Buffer) -> int:
        self._note("write", len(memoryview(data)))
        return super().write(fd, data)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        self._note("pwrite", len(data))
        return super().pwrite(fd, data, offset)

    def allocate(self, fd: int, offset: int, length: int) -> None:
        self._note("allocate", length)
        super().allocate(fd, offset, length)

    def map(self, fd: int, offset: int, length: int) -> Window:
        self._note("map", length)
        return super().map(fd, offset, length)

    def fsync(self, fd: int) -> None:
        self._note("fsync")
        super().fsync(fd)

    def truncate(self, fd: int, length: int) -> None:
        self._note("truncate")
        super().truncate(fd, length)

    def close(self, fd: int) -> None:
        self._note("close")
        super().close(fd)

    def replace(self, source: str, target: str) -> None:
        self._note("replace")
        super().replace(source, target)

    def remove(self, path: str) -> None:
        self._note("remove")
        super().remove(path)

    def listdir(self, directory: str) -> list[str]:
        self._note("listdir")
        return super().listdir(directory)

    def fsync_dir(self, directory: str) -> None:
        self._note("fsync_dir")
        super().fsync_dir(directory)

    def lock(self, path: str) -> int | None:
        self._note("lock")
        return super().lock(path)

    def lock_open_file(self, fd: int) -> bool:
        self._note("lock_open_file")
        return super().lock_open_file(fd)

    def same_file(self, fd: int, path: str) -> bool:
        self._note("same_file")
        return super().same_file(fd, path)

    def mode(self, path: str) -> int | None:
        self._note("mode")
        return super().mode(path)

    def link(self, source: str, target: str) -> bool:
        self._note("link")
        return super().link(source, target)

    def unlock(self, fd: int) -> None:
        self._note("unlock")
        super().unlock(fd)


def store_on(files: FileSystem, path: str, **options: object) -> AioKV:
    """An AioKV whose engine performs its file effects through ``files``."""
    store = AioKV(path, **options)  # type: ignore[arg-type]
    store._engine = Engine(path, files=files, **options)  # type: ignore[arg-type]
    return store
