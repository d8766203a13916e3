"""Calling something that might block, from a test, without hanging the test."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def returns_within(seconds: float, function: Callable[[], Any],
                   unblock: Path | None = None) -> Any:
    """``function()``'s result, run in a thread; its exception is raised here.

    Fails the test if the call has not returned in ``seconds``. ``unblock``:
    a path that may be a FIFO, opened for writing first in that case, so that
    a call stuck opening it for reading goes on (a regression must fail the
    test, not hang the interpreter's exit).
    """
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(function())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive() and unblock is not None and stat.S_ISFIFO(os.lstat(unblock).st_mode):
        os.close(os.open(unblock, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(seconds)
        pytest.fail(f"{function} blocked on the FIFO {unblock}")
    assert not thread.is_alive(), f"{function} did not return within {seconds} s"
    if errors:
        raise errors[0]
    return result[0] if result else None
