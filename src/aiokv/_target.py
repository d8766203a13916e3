"""Where a store lives, read from the string given to ``from_url``: pure parsing.

A path (or a ``file://`` URL) names a local log. ``redis://``, ``rediss://``
and ``unix://`` name one Redis or Valkey server, ``redis+cluster://h1:p1,h2:p2/``
(``rediss+cluster://`` with TLS) a cluster, and
``redis+sentinel://h1:p1,h2:p2/service[/db]`` a server found through
Sentinel. aiokv's own query parameters are taken out here, so that
redis-py, which passes unknown ones to the connection, never sees them:

* ``prefix``: the namespace; every key of the store is stored under it;
* ``whole_database``: ``1``/``true``/``yes`` to use the whole database
  without a prefix (refused otherwise, so that ``clear()`` cannot empty a
  database others use);
* ``spread``: cluster only; keys spread over every slot instead of sharing
  one (see docs/redis.md for what each costs).

Nothing here opens a file or a connection.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass, field

SERVER_SCHEMES = frozenset({"redis", "rediss", "unix", "redis+cluster", "rediss+cluster",
                            "redis+sentinel", "rediss+sentinel"})
OWN_PARAMETERS = frozenset({"prefix", "whole_database", "spread"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True)
class LocalTarget:
    """A log file on this machine."""

    path: str


@dataclass(frozen=True)
class ServerTarget:
    """A store on a Redis or Valkey server (or cluster)."""

    kind: str
    """"server", "cluster" or "sentinel"."""
    url: str
    """What redis-py is given: the URL without aiokv's parameters (for a
    cluster or sentinel, rebuilt for one node: its credentials and options)."""
    display: str
    """The URL without its password, for messages and ``stats().path``."""
    prefix: str
    """Prepended to every key (for a cluster, in a hash tag unless spread)."""
    nodes: tuple[tuple[str, int], ...] = ()
    """A cluster's startup nodes, or the sentinels."""
    service: str = ""
    """The Sentinel service (master) name."""
    db: int = 0
    spread: bool = False
    options: dict[str, str] = field(default_factory=dict, compare=False)
    """redis-py's query parameters, for a cluster or sentinel."""


Target = LocalTarget | ServerTarget


def parse_target(target: str | os.PathLike[str]) -> Target:
    """What ``target`` names; ValueError (saying why) if it names nothing usable."""
    if isinstance(target, os.PathLike):
        target = os.fspath(target)
    if not isinstance(target, str):
        raise TypeError(f"a store target is a path or a URL, not {type(target).__name__}")
    scheme, _, rest = target.partition("://")
    if not rest or "/" in scheme:
        return LocalTarget(target)
    scheme = scheme.lower()
    if scheme == "file":
        if not rest.startswith(("/", "localhost/")):
            raise ValueError(f"{target!r}: a file:// URL needs an absolute path (file:///...)")
        parsed = urllib.parse.urlsplit(target)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{target!r}: a file:// URL names a file on this machine")
        return LocalTarget(urllib.parse.unquote(parsed.path))
    if scheme not in SERVER_SCHEMES:
        raise ValueError(f"{target!r}: unknown scheme {scheme!r}; use a path, file://, "
                         "redis://, rediss://, unix://, redis+cluster:// or "
                         "redis+sentinel://")
    return _server_target(target, scheme)


def _server_target(target: str, scheme: str) -> ServerTarget:
    parsed = urllib.parse.urlsplit(target)
    query = urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)
    own = {name: value for name, value in query if name in OWN_PARAMETERS}
    if len(own) != len([name for name, _ in query if name in OWN_PARAMETERS]):
        raise ValueError(f"{_without_password(target)!r}: a parameter of aiokv is given twice")
    theirs = [(name, value) for name, value in query if name not in OWN_PARAMETERS]
    prefix = own.get("prefix", "")
    whole = _flag(own, "whole_database", target)
    spread = _flag(own, "spread", target)
    kind = ("cluster" if scheme.endswith("+cluster") else
            "sentinel" if scheme.endswith("+sentinel") else "server")
    if spread and kind != "cluster":
        raise ValueError(f"{_without_password(target)!r}: spread= is for a cluster "
                         "(redis+cluster://)")
    if not prefix and not whole:
        raise ValueError(
            f"{_without_password(target)!r} names no namespace: add ?prefix=yourapp: so "
            "that the store's keys (and clear()) stay apart from other data, or "
            "?whole_database=1 if the whole database is this store's")
    if prefix and whole:
        raise ValueError(f"{_without_password(target)!r}: prefix= and whole_database= "
                         "exclude each other")
    if kind == "cluster" and whole:
        spread = True  # no prefix: nothing to tag, keys go where they hash
    # The URL as given, less aiokv's parameters (urlunsplit would drop the
    # "//" of unix:///path).
    head = target.split("?", 1)[0].split("#", 1)[0]
    without_own = head + (f"?{urllib.parse.urlencode(theirs)}" if theirs else "")
    display = _without_password(without_own)
    if kind == "server":
        return ServerTarget("server", without_own, display, prefix)
    nodes = _nodes(parsed.netloc.rpartition("@")[2], target)
    credentials = parsed.netloc.rpartition("@")[0]
    base = "rediss" if scheme.startswith("rediss") else "redis"
    service, db = "", 0
    path = [part for part in parsed.path.split("/") if part]
    if kind == "sentinel":
        if not path or len(path) > 2:
            raise ValueError(f"{display!r}: a sentinel URL ends in /service or /service/db")
        service = urllib.parse.unquote(path[0])
        if len(path) == 2:
            db = _db(path[1], display)
    elif path:
        raise ValueError(f"{display!r}: a cluster has only database 0; the URL takes no path")
    host, port = nodes[0]
    netloc = f"{credentials}@{_host(host)}:{port}" if credentials else f"{_host(host)}:{port}"
    url = urllib.parse.urlunsplit(
        (base, netloc, f"/{db}" if db else "", urllib.parse.urlencode(theirs), ""))
    return ServerTarget(kind, url, display, prefix, nodes=nodes, service=service, db=db,
                        spread=spread, options=dict(theirs))


def _flag(own: dict[str, str], name: str, target: str) -> bool:
    value = own.get(name)
    if value is None:
        return False
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError(f"{_without_password(target)!r}: {name}= takes 1 or 0, not {value!r}")


def _nodes(hosts: str, target: str) -> tuple[tuple[str, int], ...]:
    nodes = []
    for item in hosts.split(","):
        host, port = _split_host_port(item, target)
        nodes.append((host, port))
    if not nodes:
        raise ValueError(f"{_without_password(target)!r} names no node")
    return tuple(nodes)


def _split_host_port(item: str, target: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [IPv6]:port
        host, _, port = item[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"{_without_password(target)!r}: a node without a host ({item!r})")
    if not port:
        return host, 6379 if "sentinel" not in target.split("://", 1)[0] else 26379
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{_without_password(target)!r}: bad port in {item!r}")
    return host, int(port)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _db(text: str, display: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{display!r}: the database is a number, not {text!r}")
    return int(text)


def _without_password(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    scheme, _, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    if at and ":" in credentials:
        user = credentials.split(":", 1)[0]
        netloc = f"{user}:***@{hosts}"
    query_start = tail.find("?")
    if query_start >= 0:
        pairs = urllib.parse.parse_qsl(tail[query_start + 1:], keep_blank_values=True)
        pairs = [(name, "***" if name == "password" else value) for name, value in pairs]
        tail = tail[:query_start + 1] + urllib.parse.urlencode(pairs)
    return f"{scheme}://{netloc}{slash}{tail}"
