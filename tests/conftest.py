"""Test set-up: run ``async def`` tests, and fail any that stall the event loop.

Each coroutine test runs in a fresh event loop in debug mode; asyncio then
logs every callback that holds the loop longer than ``slow_callback_duration``,
and such a log record fails the test (in the spirit of anyio's own suite).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from servers import Servers

STALL_LIMIT = 0.5
"""Seconds a callback may hold the loop; generous, as CI machines are shared."""


class _StallRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.stalls: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "took" in message and "seconds" in message:
            self.stalls.append(message)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    function = pyfuncitem.obj
    if not inspect.iscoroutinefunction(function):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    arguments: dict[str, Any] = {name: pyfuncitem.funcargs[name] for name in names}
    recorder = _StallRecorder()
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(recorder)

    async def main() -> None:
        asyncio.get_running_loop().slow_callback_duration = STALL_LIMIT
        await function(**arguments)

    try:
        asyncio.run(main(), debug=True)
    finally:
        asyncio_logger.removeHandler(recorder)
    if recorder.stalls:
        pytest.fail("the event loop was blocked: " + "; ".join(recorder.stalls))
    return True


@pytest.fixture
def store_path(tmp_path: Any) -> Iterator[str]:
    """A path for a new store inside a fresh temporary directory."""
    yield str(tmp_path / "state.kv")


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Real servers (see tests/servers.py), stopped by PID at the end; tests
    share them, each in a namespace of its own (``servers.namespace_on``)."""
    started = Servers(tmp_path_factory)
    yield started
    for server in started.running.values():
        server.stop()
