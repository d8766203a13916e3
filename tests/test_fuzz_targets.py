"""A short run of the fuzz targets in fuzz/: the seed corpus plus mutations.

The long runs use atheris (fuzz/README.md); this keeps the invariants of
both targets checked on every test run, with seeded random mutations of the
corpus (bit flips, cuts, insertions, splices, forged length fields).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
sys.path.insert(0, str(FUZZ))

import fuzz_open  # noqa: E402
import fuzz_replay  # noqa: E402

CORPUS = sorted((FUZZ / "corpus").iterdir())


def mutate(data: bytes, rng: random.Random, corpus: list[bytes]) -> bytes:
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(6)
        position = rng.randrange(len(buffer) + 1)
        if choice == 0 and buffer:
            buffer[min(position, len(buffer) - 1)] ^= 1 << rng.randrange(8)
        elif choice == 1:
            del buffer[position:]
        elif choice == 2:
            buffer[position:position] = rng.randbytes(rng.randint(1, 16))
        elif choice == 3:
            other = rng.choice(corpus)
            start = rng.randrange(len(other) + 1)
            buffer[position:] = other[start:]
        elif choice == 4 and len(buffer) >= position + 6:
            buffer[position:position + 6] = b"\x96\xce" + rng.randbytes(4)
        else:
            buffer[position:position] = b"\x00" * rng.randint(1, 64)
    return bytes(buffer)


@pytest.mark.parametrize(
    ("check", "runs"),
    [(fuzz_replay.check, 30_000), (fuzz_open.check, 600)],  # open: two stores a run
    ids=["replay", "open"],
)
def test_a_short_fuzz_run_finds_no_invariant_violation(
    check: Callable[[bytes], None], runs: int
) -> None:
    corpus = [path.read_bytes() for path in CORPUS]
    assert len(corpus) >= 10
    for data in corpus:
        check(data)
    rng = random.Random(20261123)
    for _ in range(runs):
        check(mutate(rng.choice(corpus), rng, corpus))
