"""Fuzz target: the record decoder and log replay, on bytes.

Invariant: for ANY input, ``read_frame`` returns a Frame, Incomplete or
Invalid and ``replay`` returns a Replay (damage is reported in it, never
raised); neither raises, hangs, or allocates from a forged length field.
The same for ``replay_chain`` with the input as a base file followed by an
intact log file, and as the log file that follows an intact base.

Run for hours with atheris (see fuzz/README.md)::

    python fuzz/fuzz_replay.py fuzz/corpus -max_total_time=3600
"""

from __future__ import annotations

from harness import fuzz

from aiokv._chain import ChainReplay, replay_chain
from aiokv._format import HEADER_SIZE, encode_follows, encode_header, encode_set
from aiokv._recovery import Frame, Incomplete, Invalid, Replay, read_frame, replay

HEADER = encode_header(0, 0.0, HEADER_SIZE)
BASE = HEADER + encode_set("base", 1)
"""An intact base file, appended to, whose first log file is number 1."""
LOG_HEADER = encode_header(0, 0.0, HEADER_SIZE, 1, log_file=True)
LOG = LOG_HEADER + encode_follows(0, len(BASE), 0) + encode_set("log", 2)
"""An intact log file 1 that follows BASE."""


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
    for base, logs in ((data, [(1, LOG)]), (BASE, [(1, data)]), (BASE, [(1, LOG_HEADER + data)])):
        for salvage in (False, True):
            chain = replay_chain(base, logs, salvage=salvage)
            assert isinstance(chain, ChainReplay)
            assert all(type(key) is str for key in chain.entries)
            assert 1 <= len(chain.files) <= 1 + len(logs)
            assert chain.dropped == [] or chain.files[-1][0] == 0
            if salvage:
                assert chain.corruption is None or chain.corruption[0] == 0


if __name__ == "__main__":
    fuzz(check)
