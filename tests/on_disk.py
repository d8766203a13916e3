"""What a store holds on disk, read the way the store reads it: its base
file, then the log files that follow it (see aiokv._chain)."""

from __future__ import annotations

import os

from aiokv._chain import ChainReplay, replay_chain
from aiokv._files import REAL_FILES
from aiokv._log_files import LogFiles


def store_files(path: str | os.PathLike[str]) -> list[str]:
    """The base file and every log file of the store at ``path``, in order."""
    disk = LogFiles(os.path.abspath(path), REAL_FILES)
    base = [disk.file] if os.path.exists(disk.file) else []
    return base + [disk.log_path(number) for number in disk.log_numbers()]


def store_size(path: str | os.PathLike[str]) -> int:
    """The bytes of every file of the store at ``path``."""
    return sum(os.path.getsize(name) for name in store_files(path))


def replay_store(path: str | os.PathLike[str], *, salvage: bool = False) -> ChainReplay:
    """Replay the store at ``path`` as an open would, changing nothing."""
    found = LogFiles(os.path.abspath(path), REAL_FILES).read()
    return replay_chain(found.base or b"", found.logs, salvage=salvage)
