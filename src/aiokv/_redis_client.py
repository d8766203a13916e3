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
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
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


def drive(plan: Generator[Request, Any, T], request: Callable[[Request], Any],
          refusal: type[BaseException]) -> T:
    """Run ``plan``: each request it yields goes to ``request``, and the reply
    (or the server's refusal, a ResponseError) back into it."""
    try:
        asked = next(plan)
        while True:
            try:
                reply = request(asked)
            except refusal as exc:
                asked = plan.throw(exc)
                continue
            asked = plan.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def drive_async(plan: Generator[Request, Any, T],
                      request: Callable[[Request], Awaitable[Any]],
                      refusal: type[BaseException]) -> T:
    """``drive`` with a request that is awaited."""
    try:
        asked = next(plan)
        while True:
            try:
                reply = await request(asked)
            except refusal as exc:
                asked = plan.throw(exc)
                continue
            asked = plan.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


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
        return drive(plan, self._request, self._redis.ResponseError)

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
        return await drive_async(plan, self._request, self._redis.ResponseError)

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
        await _close_in_the_running_loop(pools)


async def _close_in_the_running_loop(
        entries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                           tuple[Any, AsyncGenerator[None, None]]]) -> None:
    """Close the running loop's entry of ``entries`` (its closer disconnects it)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    entry = entries.get(loop)
    if entry is not None:
        await entry[1].aclose()


async def _closed_with_the_loop(pool: Any, method: str = "disconnect"
                                ) -> AsyncGenerator[None, None]:
    """Disconnects ``pool`` (a client: ``method`` "aclose") when its event loop ends.

    Started once in the loop, it waits at its ``yield``. ``asyncio.run()``
    ends by closing every async generator the loop has started
    (``loop.shutdown_asyncgens()``), which runs the ``finally`` in the loop,
    where the connections can still be closed properly: a store used in one
    ``asyncio.run()`` after another leaves no socket open behind it.
    """
    try:
        yield
    finally:
        await getattr(pool, method)()


def _sentinel_pool(redis: Any, target: ServerTarget, *, asynchronous: bool) -> Any:
    """The connection pool of the master that Sentinel names for the service,
    whose ``disconnect()`` also closes the connections to the sentinels."""
    module = __import__("redis.asyncio.sentinel" if asynchronous else "redis.sentinel",
                        fromlist=["Sentinel"])
    options = {key: value for key, value in
               redis.connection.parse_url(target.url).items()
               if key not in ("host", "port", "path", "connection_class")}
    options.update(PROTOCOL)
    sentinel = module.Sentinel(list(target.nodes), **options)
    pool = sentinel.master_for(target.service, **options).connection_pool
    return (_AsyncSentinelPool if asynchronous else _SentinelPool)(pool, sentinel)


class _SentinelPool:
    """A master's pool, and the Sentinel client that found the master."""

    def __init__(self, pool: Any, sentinel: Any) -> None:
        self.pool = pool
        self.sentinel = sentinel

    def get_connection(self) -> Any:
        return self.pool.get_connection()

    def release(self, connection: Any) -> None:
        self.pool.release(connection)

    def disconnect(self) -> None:
        self.pool.disconnect()
        for client in self.sentinel.sentinels:
            client.close()


class _AsyncSentinelPool(_SentinelPool):
    async def get_connection(self) -> Any:
        return await self.pool.get_connection()

    async def release(self, connection: Any) -> None:  # type: ignore[override]
        await self.pool.release(connection)

    async def disconnect(self) -> None:  # type: ignore[override]
        await self.pool.disconnect()
        for client in self.sentinel.sentinels:
            await client.aclose()


# -- a cluster -------------------------------------------------------------


def _cluster_options(redis: Any, target: ServerTarget, *,
                     asynchronous: bool) -> dict[str, Any]:
    """redis-py's options for the cluster's nodes: the URL's credentials and
    parameters, RESP2, and no retries (see the module docstring)."""
    options = {key: value for key, value in redis.connection.parse_url(target.url).items()
               if key not in ("host", "port", "path", "db", "connection_class")}
    options.update(PROTOCOL)
    retry = __import__("redis.asyncio.retry" if asynchronous else "redis.retry",
                       fromlist=["Retry"]).Retry
    options["retry"] = retry(redis.backoff.NoBackoff(), 0)
    if int(redis.__version__.split(".")[0]) < 6:  # since 6, the retry object says it all
        options["cluster_error_retry_attempts"] = 0
    return options


class SyncClusterExecutor:
    """Runs plans on a Redis Cluster, blocking.

    redis-py's cluster client routes each command to its node (keyed
    commands to the node of ``Command.route``, SCAN to ``Command.node``),
    with its retries off: here a connection that breaks under a write cannot
    be told from one that never connected, so any broken write raises
    ``OutcomeUnknownError`` (it may not have happened; it is never resent).
    """

    def __init__(self, target: ServerTarget) -> None:
        self.target = target
        self._redis = redis_module()
        self._client: Any = None

    def _get_client(self) -> Any:
        if self._client is None:
            cluster = __import__("redis.cluster", fromlist=["RedisCluster"])
            try:
                self._client = cluster.RedisCluster(
                    startup_nodes=[cluster.ClusterNode(host, port)
                                   for host, port in self.target.nodes],
                    **_cluster_options(self._redis, self.target, asynchronous=False))
            except (*_connection_errors(self._redis),
                    self._redis.exceptions.RedisClusterException) as exc:
                raise UnavailableError(self.target.display, exc) from None
        return self._client

    def run(self, plan: Generator[Request, Any, T]) -> T:
        return drive(plan, self._request, self._redis.ResponseError)

    def _request(self, request: Request) -> Any:
        client = self._get_client()
        if isinstance(request, Nodes):
            if request.route is not None:
                return [client.get_node_from_key(request.route)]
            return client.get_primaries()
        commands = request.commands if isinstance(request, Batch) else (request,)
        write = any(command.write for command in commands)
        errors = (*_connection_errors(self._redis), self._redis.exceptions.ClusterError)
        for attempt in (1, 2):
            try:
                if isinstance(request, Batch):
                    pipe = client.pipeline(transaction=False)
                    for command in commands:
                        pipe.execute_command(*command.args)
                    return pipe.execute(raise_on_error=False)
                return self._send(client, request)
            except errors as exc:
                _give_up_or_retry(self.target, commands[0], write, attempt, exc)
        raise AssertionError("unreachable")

    def _send(self, client: Any, command: Command) -> Any:
        node = _node_for(client, command)
        try:
            reply = client.execute_command(*command.args, target_nodes=node)
        except self._redis.exceptions.NoScriptError:
            if command.script is None:
                raise
            reply = client.execute_command("EVAL", command.script.source, *command.args[2:],
                                           target_nodes=node)
        return _from_node(reply, node)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


class AsyncClusterExecutor:
    """Runs plans on a Redis Cluster with asyncio: a client per event loop,
    closed as the loop ends (see ``_closed_with_the_loop``); otherwise as
    ``SyncClusterExecutor``."""

    def __init__(self, target: ServerTarget) -> None:
        self.target = target
        self._redis = redis_module()
        self._clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[Any, AsyncGenerator[None, None]]] = (
            weakref.WeakKeyDictionary())
        self._starting: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                                  asyncio.Task[Any]] = weakref.WeakKeyDictionary()
        # redis.asyncio's cluster client raises when a node's connections
        # are all in use, where the pool of a single server waits: wait here.
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                               asyncio.Semaphore] = weakref.WeakKeyDictionary()

    async def _get_client(self) -> Any:
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is not None:
            return entry[0]
        # The first calls of a loop may come together: one of them starts the
        # client (initialize() waits on the network), the others wait for it.
        starting = self._starting.get(loop)
        if starting is None:
            starting = self._starting[loop] = loop.create_task(self._start_client(loop))
        try:
            return await asyncio.shield(starting)
        finally:
            if starting.done():
                self._starting.pop(loop, None)

    async def _start_client(self, loop: asyncio.AbstractEventLoop) -> Any:
        cluster = __import__("redis.asyncio.cluster", fromlist=["RedisCluster"])
        client = cluster.RedisCluster(
            startup_nodes=[cluster.ClusterNode(host, port) for host, port in self.target.nodes],
            **_cluster_options(self._redis, self.target, asynchronous=True))
        try:
            await client.initialize()
        except (*_connection_errors(self._redis),
                self._redis.exceptions.RedisClusterException) as exc:
            await client.aclose()
            raise UnavailableError(self.target.display, exc) from None
        closer = _closed_with_the_loop(client, "aclose")
        await closer.__anext__()
        self._clients[loop] = (client, closer)
        return client

    async def run(self, plan: Generator[Request, Any, T]) -> T:
        return await drive_async(plan, self._request, self._redis.ResponseError)

    async def _request(self, request: Request) -> Any:
        client = await self._get_client()
        if isinstance(request, Nodes):
            if request.route is not None:
                return [client.get_node_from_key(request.route)]
            return client.get_primaries()
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(MAX_CONNECTIONS)
        commands = request.commands if isinstance(request, Batch) else (request,)
        write = any(command.write for command in commands)
        errors = (*_connection_errors(self._redis), self._redis.exceptions.ClusterError)
        async with slots:
            for attempt in (1, 2):
                try:
                    if isinstance(request, Batch):
                        pipe = client.pipeline(transaction=False)
                        for command in commands:
                            pipe.execute_command(*command.args)
                        return await pipe.execute(raise_on_error=False)
                    return await self._send(client, request)
                except errors as exc:
                    _give_up_or_retry(self.target, commands[0], write, attempt, exc)
        raise AssertionError("unreachable")

    async def _send(self, client: Any, command: Command) -> Any:
        node = _node_for(client, command)
        try:
            reply = await client.execute_command(*command.args, target_nodes=node)
        except self._redis.exceptions.NoScriptError:
            if command.script is None:
                raise
            reply = await client.execute_command("EVAL", command.script.source,
                                                 *command.args[2:], target_nodes=node)
        return _from_node(reply, node)

    async def close(self) -> None:
        """As ``AsyncExecutor.close``."""
        clients, self._clients = self._clients, weakref.WeakKeyDictionary()
        await _close_in_the_running_loop(clients)


def _node_for(client: Any, command: Command) -> Any:
    """The one node a command runs on: the one named, the one that owns its
    key's slot, or any primary for a command without keys (CONFIG, TIME)."""
    if command.node is not None:
        return command.node
    if command.route is not None:
        return client.get_node_from_key(command.route)
    return client.get_random_node()


def _from_node(reply: Any, node: Any) -> Any:
    """The reply of the one node, as a single server gives it: redis-py's
    cluster client answers some commands with a map of node name to reply,
    and SCAN with a map of node name to cursor beside the keys."""
    if isinstance(reply, dict) and list(reply) == [node.name]:
        return reply[node.name]
    if (isinstance(reply, tuple) and len(reply) == 2 and isinstance(reply[0], dict)
            and list(reply[0]) == [node.name]):
        return reply[0][node.name], reply[1]
    return reply


def sync_executor(target: ServerTarget) -> SyncExecutor | SyncClusterExecutor:
    """The executor for ``target``'s kind of server."""
    return SyncClusterExecutor(target) if target.kind == "cluster" else SyncExecutor(target)


def async_executor(target: ServerTarget) -> AsyncExecutor | AsyncClusterExecutor:
    return AsyncClusterExecutor(target) if target.kind == "cluster" else AsyncExecutor(target)
