"""A clock the tests move by hand, passed to a store as ``clock=``."""

from __future__ import annotations

START = 1_700_000_000.0
"""The fake clock's first reading: a plausible Unix time."""


class FakeClock:
    """Returns ``now``, which only the test moves."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
