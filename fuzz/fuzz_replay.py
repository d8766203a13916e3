"""Fuzz target: the record decoder and log replay, on bytes.

Invariant: for ANY input, ``read_frame`` returns a Frame, Incomplete or
Invalid and ``replay`` returns a Replay (damage is reported in it, never
raised); neither raises, hangs, or allocates from a forged length field.

Run for hours with atheris (see fuzz/README.md)::

    python fuzz/fuzz_replay.py fuzz/corpus -max_total_time=3600
"""

from __future__ import annotations

from harness import fuzz

from aiokv._format import HEADER_SIZE, encode_header
from aiokv._recovery import Frame, Incomplete, Invalid, Replay, read_frame, replay

HEADER = encode_header(0, 0.0, HEADER_SIZE)


def check(data: bytes) -> None:
    """Raise AssertionError if the invariant above does not hold for ``data``."""
    decoded = read_frame(data, 0)
    assert isinstance(decoded, (Frame, Incomplete, Invalid))
    if isinstance(decoded, Frame):
        assert decoded.end <= len(data)
    for log in (data, HEADER + data):
        for salvage in (False, True):
            result = replay(log, salvage=salvage)
            assert isinstance(result, Replay)
            assert result.end <= len(log)
            assert all(type(key) is str for key in result.entries)
            if result.header is not None and result.corruption is None and not salvage:
                assert result.end + result.torn_tail == len(log)


if __name__ == "__main__":
    fuzz(check)
