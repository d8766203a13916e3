"""Fuzz target: opening a store whose file holds arbitrary bytes.

Invariant: for ANY file content, opening the store (strict or salvage)
either succeeds, yielding str keys, and a reopen gives the same entries; or
raises ``CorruptionError``; never another exception, never a hang. A file
refused in strict mode is left byte-for-byte untouched.

Run for hours with atheris (see fuzz/README.md)::

    python fuzz/fuzz_open.py fuzz/corpus -max_total_time=3600
"""

from __future__ import annotations

import os
import shutil
import tempfile

from harness import fuzz

from aiokv._engine import Engine
from aiokv._errors import CorruptionError


def _open_and_read(path: str, recovery: str) -> dict[str, object]:
    engine = Engine(path, recovery=recovery)
    engine.open()
    try:
        return engine.items()
    finally:
        engine.close()


def check(data: bytes) -> None:
    """Raise AssertionError if the invariant above does not hold for ``data``."""
    directory = tempfile.mkdtemp(prefix="aiokv-fuzz-")
    try:
        path = os.path.join(directory, "state.kv")
        for recovery in ("strict", "salvage"):
            with open(path, "wb") as file:
                file.write(data)
            try:
                entries = _open_and_read(path, recovery)
            except CorruptionError:
                if recovery == "strict":
                    with open(path, "rb") as file:
                        assert file.read() == data, "a refused file was modified"
                continue
            assert all(type(key) is str for key in entries)
            assert _open_and_read(path, "strict") == entries
    finally:
        shutil.rmtree(directory)


if __name__ == "__main__":
    fuzz(check)
