"""Fuzz target: opening a store whose file holds arbitrary bytes.

Invariant: for ANY file content, opening the store (strict or salvage)
either succeeds, yielding str keys, and a reopen gives the same entries; or
raises ``CorruptionError``; never another exception, never a hang. A file
refused in strict mode is left byte-for-byte untouched. The same when the
bytes are the log file that follows an intact base file.

Run for hours with atheris (see fuzz/README.md)::

    python fuzz/fuzz_open.py fuzz/corpus -max_total_time=3600
"""

from __future__ import annotations

import os
import shutil
import tempfile

from harness import fuzz

from aiokv._chain import log_path
from aiokv._engine import Engine
from aiokv._errors import CorruptionError
from aiokv._format import HEADER_SIZE, encode_header, encode_set

BASE = encode_header(0, 0.0, HEADER_SIZE) + encode_set("base", 1)
"""An intact base file whose first log file is number 1."""


def _open_and_read(path: str, recovery: str) -> dict[str, object]:
    engine = Engine(path, recovery=recovery)
    engine.open()
    try:
        return engine.items()
    finally:
        engine.close()


def check(data: bytes) -> None:
    """Raise AssertionError if the invariant above does not hold for ``data``."""
    _check_files(data, None)
    _check_files(BASE, data)


def _check_files(base: bytes, log: bytes | None) -> None:
    """Open a store of ``base`` (and ``log`` as its log file 1) both ways."""
    directory = tempfile.mkdtemp(prefix="aiokv-fuzz-")
    try:
        path = os.path.join(directory, "state.kv")
        for recovery in ("strict", "salvage"):
            written = {path: base} if log is None else {path: base, log_path(path, 1): log}
            for name, content in written.items():
                with open(name, "wb") as file:
                    file.write(content)
            try:
                entries = _open_and_read(path, recovery)
            except CorruptionError:
                if recovery == "strict":
                    for name, content in written.items():
                        with open(name, "rb") as file:
                            assert file.read() == content, f"a refused {name} was modified"
                continue
            assert all(type(key) is str for key in entries)
            assert _open_and_read(path, "strict") == entries
    finally:
        shutil.rmtree(directory)


if __name__ == "__main__":
    fuzz(check)
