"""Runs a fuzz target's ``check`` under atheris (libFuzzer for Python)."""

from __future__ import annotations

import sys
from collections.abc import Callable


def fuzz(check: Callable[[bytes], None]) -> None:
    """Fuzz ``check`` with the command line's libFuzzer options; never returns."""
    import atheris  # noqa: PLC0415 (only a fuzzing run needs it)

    atheris.instrument_all()  # coverage feedback from the already imported aiokv
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()
