"""Running plans (``_redis_plans``) on a server through redis-py: the I/O.

An executor sends each request a plan yields and sends the reply back in.
Two rules hold for every command, which redis-py's own retries break:

* a command that could not be sent (no connection could be made) raises
  ``UnavailableError``: nothing happened;
* a write that may have reached the server but got no reply raises
  ``OutcomeUnknownError`` and is never sent again; a read is tried once
  more on a fresh connection.

So an executor takes a connection from redis-py's pool itself (which
connects it), then sends and reads on it. The async executor keeps one pool
per event loop (redis.asyncio connections belong to the loop that made
them), so one store works across successive ``asyncio.run()`` calls. The
blocking one uses a pool that waits for a free connection, so that any
number of threads may share a ``KV``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, Generator
from typing import Any, TypeVar

from ._errors import OutcomeUnknownError, UnavailableError
from ._redis_plans import Batch, Command, Nodes, Request
from ._target import ServerTarget

T = TypeVar("T")

PROTOCOL = {"protocol": 2}
"""RESP2 unless the URL asks for another: the plans read its replies (lists
and strings), whatever redis-py's default is."""

MAX_CONNECTIONS = 32
"""Connections a store's pool opens at most (per event loop for the async
one); more threads or tasks wait for one to be free."""


def redis_module() -> Any:
    """redis-py, or an ImportError saying which extra installs it."""
    try:
        import redis  # noqa: PLC0415 (only stores on a server need it)
    except ImportError:
        raise ImportError("a store on a Redis or Valkey server needs redis-py: "
                          "pip install 'aiokv[redis]'") from None
    return redis


def _connection_errors(redis: Any) -> tuple[type[BaseException], ...]:
    return (redis.ConnectionError, redis.TimeoutError, OSError, EOFError)


def _give_up_or_retry(target: ServerTarget, command: Command, write: bool, attempt: int,
                      error: BaseException) -> None:
    """After a connection broke with a command on it: raise, or return to
    try once more. A write may have reached the server: never sent again."""
    if write:
        raise OutcomeUnknownError(target.display, _label(command), error) from None
    if attempt >= 2:
        raise UnavailableError(target.display, error) from None


def _label(command: Command) -> str:
    """The command, for a message: the API call of a script, else its name."""
    if command.script is not None:
        return command.script.name
    name = command.args[0]
    return name.decode() if isinstance(name, bytes) else str(name)


class SyncExecutor:
    """Runs plans on one server (or the master Sentinel names), blocking."""

    def __init__(self, target: ServerTarget) -> None:
        self.target = target
        self._redis = redis_module()
        self._pool: Any = None

    def _get_pool(self) -> Any:
        if self._pool is None:
            redis, target = self._redis, self.target
            if target.kind == "sentinel":
                self._pool = _sentinel_pool(redis, target, asynchronous=False)
            else:
                self._pool = redis.BlockingConnectionPool.from_url(
                    target.url, max_connections=MAX_CONNECTIONS, timeout=None,
                    **PROTOCOL)
        return self._pool

    def run(self, plan: Generator[Request, Any, T]) -> T:
        redis = self._redis
        try:
            request = next(plan)
            while True:
                try:
                    reply = self._request(request)
                except redis.ResponseError as exc:
                    request = plan.throw(exc)
                    continue
                request = plan.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _request(self, request: Request) -> Any:
        if isinstance(request, Nodes):
            return [None]
        commands = request.commands if isinstance(request, Batch) else (request,)
        redis = self._redis
        errors = _connection_errors(redis)
        write = any(command.write for command in commands)
        for attempt in (1, 2):
            pool = self._get_pool()
            try:
                connection = pool.get_connection()
            except errors as exc:
                raise UnavailableError(self.target.display, exc) from None
            try:
                if isinstance(request, Batch):
                    reply = self._batch(connection, commands)
                else:
                    reply = self._send(connection, request)
            except redis.ResponseError:
                pool.release(connection)
                raise
            except errors as exc:
                connection.disconnect()
                pool.release(connection)
                _give_up_or_retry(self.target, commands[0], write, attempt, exc)
                continue
            except BaseException:
                connection.disconnect()  # a reply may still be on its way
                pool.release(connection)
                raise
            pool.release(connection)
            return reply
        raise AssertionError("unreachable")

    def _batch(self, connection: Any, commands: tuple[Command, ...]) -> list[Any]:
        connection.send_packed_command(
            connection.pack_commands([command.args for command in commands]))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(connection.read_response())
            except self._redis.ResponseError as exc:
                replies.append(exc)
        return replies

    def _send(self, connection: Any, command: Command) -> Any:
        connection.send_command(*command.args)
        try:
            return connection.read_response()
        except self._redis.exceptions.NoScriptError:
            if command.script is None:
                raise
        # The server lacks the script (restarted, or SCRIPT FLUSH): it ran
        # nothing. Send it whole; EVAL loads it for the next EVALSHA.
        connection.send_command("EVAL", command.script.source, *command.args[2:])
        return connection.read_response()

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.disconnect()


class AsyncExecutor:
    """Runs plans on one server (or the master Sentinel names), with asyncio."""

    def __init__(self, target: ServerTarget) -> None:
        self.target = target
        self._redis = redis_module()
        self._asyncio_redis: Any = __import__("redis.asyncio", fromlist=["BlockingConnectionPool"])
        # Per event loop: its pool, and the async generator that closes it.
        self._pools: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[Any, AsyncGenerator[None, None]]] = (
            weakref.WeakKeyDictionary())

    async def _get_pool(self) -> Any:
        loop = asyncio.get_running_loop()
        entry = self._pools.get(loop)
        if entry is None:
            target = self.target
            if target.kind == "sentinel":
                pool = _sentinel_pool(self._redis, target, asynchronous=True)
            else:
                pool = self._asyncio_redis.BlockingConnectionPool.from_url(
                    target.url, max_connections=MAX_CONNECTIONS, timeout=None, **PROTOCOL)
            closer = _closed_with_the_loop(pool)
            await closer.__anext__()  # now the loop knows of it (see _closed_with_the_loop)
            entry = self._pools[loop] = (pool, closer)
        return entry[0]

    async def run(self, plan: Generator[Request, Any, T]) -> T:
        redis = self._redis
        try:
            request = next(plan)
            while True:
                try:
                    reply = await self._request(request)
                except redis.ResponseError as exc:
                    request = plan.throw(exc)
                    continue
                request = plan.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def _request(self, request: Request) -> Any:
        if isinstance(request, Nodes):
            return [None]
        commands = request.commands if isinstance(request, Batch) else (request,)
        redis = self._redis
        errors = _connection_errors(redis)
        write = any(command.write for command in commands)
        for attempt in (1, 2):
            pool = await self._get_pool()
            try:
                connection = await pool.get_connection()
            except errors as exc:
                raise UnavailableError(self.target.display, exc) from None
            try:
                if isinstance(request, Batch):
                    reply = await self._batch(connection, commands)
                else:
                    reply = await self._send(connection, request)
            except redis.ResponseError:
                await pool.release(connection)
                raise
            except errors as exc:
                await connection.disconnect()
                await pool.release(connection)
                _give_up_or_retry(self.target, commands[0], write, attempt, exc)
                continue
            except BaseException:  # cancelled: a reply may still be on its way
                await connection.disconnect()
                await pool.release(connection)
                raise
            await pool.release(connection)
            return reply
        raise AssertionError("unreachable")

    async def _batch(self, connection: Any, commands: tuple[Command, ...]) -> list[Any]:
        await connection.send_packed_command(
            connection.pack_commands([command.args for command in commands]))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await connection.read_response())
            except self._redis.ResponseError as exc:
                replies.append(exc)
        return replies

    async def _send(self, connection: Any, command: Command) -> Any:
        await connection.send_command(*command.args)
        try:
            return await connection.read_response()
        except self._redis.exceptions.NoScriptError:
            if command.script is None:
                raise
        await connection.send_command("EVAL", command.script.source, *command.args[2:])
        return await connection.read_response()

    async def close(self) -> None:
        """Close the running loop's connections (those of loops that ended
        were closed as they ended)."""
        pools, self._pools = self._pools, weakref.WeakKeyDictionary()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        entry = pools.get(loop)
        if entry is not None:
            await entry[1].aclose()


async def _closed_with_the_loop(pool: Any) -> AsyncGenerator[None, None]:
    """Disconnects ``pool`` when its event loop ends.

    Started once in the loop, it waits at its ``yield``. ``asyncio.run()``
    ends by closing every async generator the loop has started
    (``loop.shutdown_asyncgens()``), which runs the ``finally`` in the loop,
    where the connections can still be closed properly: a store used in one
    ``asyncio.run()`` after another leaves no socket open behind it.
    """
    try:
        yield
    finally:
        await pool.disconnect()


def _sentinel_pool(redis: Any, target: ServerTarget, *, asynchronous: bool) -> Any:
    """The connection pool of the master that Sentinel names for the service."""
    module = __import__("redis.asyncio.sentinel" if asynchronous else "redis.sentinel",
                        fromlist=["Sentinel"])
    options = {key: value for key, value in
               redis.connection.parse_url(target.url).items()
               if key not in ("host", "port", "path", "connection_class")}
    sentinel = module.Sentinel(list(target.nodes), **options)
    return sentinel.master_for(target.service, **options).connection_pool
