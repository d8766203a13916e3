"""The store's operations on a Redis or Valkey server, as plans: no I/O here.

Each operation is a generator that yields what it needs sent (``Command``,
``Batch``, ``Nodes``) and receives the reply, in the manner of h11: the
async and the blocking store run the same plans through their own
executors (``_redis_client``), so the semantics live in one place and can
be tested without a server. A plan also receives, thrown in, the
``redis.exceptions.ResponseError`` a command got, where it has a meaning.

How values and keys are stored:

* an ``int`` as its canonical decimal text, so that ``INCRBY`` works on it
  and nothing else can be taken for a counter; anything else as its msgpack
  encoding (never decimal text: every msgpack encoding of a value that is
  not an int starts with a byte above 0x7f). Values are checked exactly as
  the local store checks them (``encode_value``);
* a key under the store's prefix; in a cluster, inside a hash tag, so that
  every key of the store is in one slot (unless ``spread``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import re
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack

from ._arguments import check_key, check_ttl, prepare
from ._batch import ABSENT, KEEP, WriteBatch
from ._errors import CorruptionError
from ._format import Encoded, Value

T = TypeVar("T")

SCAN_COUNT = 1000
"""Keys asked of each SCAN call (a hint to the server) and fetched per MGET."""
MAX_TTL_MS = 10**15
"""The longest expiry accepted on a server, in milliseconds (~31,700 years):
Redis refuses an expiry time past 2^63 ms, and the local store none."""
_GLOB_SPECIALS = re.compile(rb"([*?\[\]\\])")
_CANONICAL_INT = re.compile(rb"-?(?:0|[1-9][0-9]*)")
_NOT_OURS = object()


@dataclass(frozen=True)
class Script:
    """A Lua script, sent by its SHA1 (EVALSHA) and loaded when the server lacks it."""

    name: str
    """What it does, for messages: the API call it is."""
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


@dataclass(frozen=True)
class Command:
    """One command, and what the executor must know to send it."""

    args: tuple[Any, ...]
    write: bool = False
    """It may change data: once it may have reached the server, it is never
    sent again (an unknown outcome is reported, see OutcomeUnknownError)."""
    route: bytes | None = None
    """A key it touches: in a cluster, the node that owns its slot runs it."""
    node: Any = None
    """The node to run it on (one of those ``Nodes`` gave), for SCAN."""
    script: Script | None = None
    """``args`` is an EVALSHA of this script: load it if the server lacks it."""


@dataclass(frozen=True)
class Batch:
    """Commands sent together on one connection (pipelined, not atomic; in a
    cluster, each to its node). The reply is a list: each command's reply,
    or the error the server answered it with (a ResponseError)."""

    commands: tuple[Command, ...]


@dataclass(frozen=True)
class Nodes:
    """Asks which nodes hold the store's keys: the reply is a list of nodes
    to give ``Command.node`` (``[None]`` for a single server)."""

    route: bytes | None = None
    """The slot every key is in (a tagged cluster), or None for all."""


Request = Command | Batch | Nodes
Plan = Generator[Request, Any, T]

INCR = Script("incr()", """
local current = redis.call('GET', KEYS[1])
if current and not string.match(current, '^%-?[0-9]+$') then
  return {0, current}
end
local value = redis.pcall('INCRBY', KEYS[1], ARGV[1])
if type(value) == 'table' and value.err then
  return {2, current or '0'}
end
if not current and ARGV[2] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return {1, redis.call('GET', KEYS[1])}
""")
"""incr() in one round trip: refuses a value that is not decimal text (the
reply names it), reports an overflow without changing anything, and sets
the ttl only when INCRBY created the key. The new value is read back as
text: Lua's numbers are doubles, exact only up to 2^53."""

PERSIST = Script("expire(key, None)", """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PERSIST', KEYS[1])
  return 1
end
return 0
""")
"""expire(key, None): remove the expiry; whether the key existed (PERSIST
alone answers 0 for a key that exists without an expiry)."""


APPLY = Script("batch", """
local a = 2
for i = 1, tonumber(ARGV[1]) do
  local current = redis.call('GET', KEYS[tonumber(ARGV[a])])
  if (current or '') ~= ARGV[a + 1] then
    return {0, 0, current}
  end
  a = a + 2
end
local changes = cmsgpack.unpack(ARGV[a])
local j = 1
local removed = 0
for i = 1, #KEYS do
  local op = changes[j]
  if op == 'D' then
    removed = removed + redis.call('UNLINK', KEYS[i])
    j = j + 1
  elseif op == 'S' then
    redis.call('SET', KEYS[i], changes[j + 1])
    j = j + 2
  elseif op == 'P' then
    redis.call('SET', KEYS[i], changes[j + 1], 'PX', changes[j + 2])
    j = j + 3
  else
    redis.call('SET', KEYS[i], changes[j + 1], 'KEEPTTL')
    j = j + 2
  end
end
return {1, removed}
""")
"""An atomic batch (and update()) in one script: if each key read holds
still what it held when read (ARGV: how many checks, then key index and
the value read, '' for none), apply each key's end state and return
{1, keys removed}; else change nothing and return {0, 0, what the first
key that changed holds now}, for the plan to try again. The end states are
the last ARGV, one msgpack array (one argument instead of three a key:
redis-py packs each argument in Python),
per key: 'D' (remove); 'S', value (set); 'P', value, ms (set with PX);
'K', value (set keeping the expiry). A script runs whole or not at all: no
other client sees it half done; the checks come first, so an error
(WRONGTYPE) stops it before any write."""


class Names:
    """How the store's keys are named on the server, and how it finds them."""

    def __init__(self, prefix: str, *, cluster: bool = False, spread: bool = False) -> None:
        if cluster and not spread and prefix and not _has_hash_tag(prefix):
            prefix = "{" + prefix + "}"
        self.prefix = prefix.encode()
        self.cluster = cluster
        self.one_slot = not cluster or not spread
        """Whether every key of the store is on one node, in one slot: then
        MGET and UNLINK may take many keys at once."""
        self.route = self.prefix + b"x" if cluster and self.one_slot else None
        self.flush_marker = self.prefix + b"\x00aiokv:flush"
        """A key flush() writes (expiring at once) so that its connection has
        a write for WAITAOF to wait on; never listed."""

    def full(self, key: str) -> bytes:
        try:
            return self.prefix + key.encode()
        except UnicodeEncodeError as exc:
            raise ValueError(f"key {key!r}: cannot be stored: {exc}") from None

    def short(self, full: bytes) -> str:
        return full[len(self.prefix):].decode("utf-8", "surrogateescape")

    def scan_pattern(self, pattern: str = "*") -> bytes:
        """A Redis glob matching at least every key ``pattern`` matches with
        fnmatch's rules (the two differ: ``[!a]`` and ``[^a]``, backslash
        escapes, bytes and characters): the pattern's literal start, escaped,
        then ``*``. The caller filters with fnmatch."""
        literal = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
        return _escape_glob(self.prefix + literal.encode("utf-8", "surrogatepass")) + b"*"


def _has_hash_tag(prefix: str) -> bool:
    start = prefix.find("{")
    return start >= 0 and prefix.find("}", start + 2) > start


def _escape_glob(raw: bytes) -> bytes:
    return _GLOB_SPECIALS.sub(rb"\\\1", raw)


# -- values ----------------------------------------------------------------


def encode(key: str, value: object) -> bytes:
    """The bytes stored for ``value``, checked as the local store checks it."""
    return payload(prepare(key, value))


def payload(stored: Value) -> bytes:
    """The bytes stored for a value already checked (``prepare``)."""
    if type(stored) is int:
        return str(stored).encode()
    if type(stored) is Encoded:
        return bytes(stored)
    packed: bytes = msgpack.packb(stored, use_bin_type=True)
    return packed


def decode(raw: bytes, key: str, where: str) -> object:
    """The value ``raw`` holds; CorruptionError if aiokv did not write it."""
    if raw[:1] < b"\x80":  # decimal text, or (if not canonical) not ours
        if _CANONICAL_INT.fullmatch(raw):
            return int(raw)
        value: object = _NOT_OURS
    else:
        try:
            value = msgpack.unpackb(raw, strict_map_key=False)
        except Exception:
            value = _NOT_OURS
    if type(value) is int or value is _NOT_OURS:  # an int is written as decimal text
        raise CorruptionError(
            where, 0, f"key {key!r} holds {len(raw)} bytes that are not a value aiokv "
            "writes (an int's decimal text, or the msgpack of anything else)")
    return value


def ttl_ms(ttl: object) -> int | None:
    """``ttl`` (seconds; None or 0: none) in whole milliseconds, rounded up."""
    seconds = check_ttl(ttl)
    if seconds is None:
        return None
    ms = max(1, math.ceil(seconds * 1000))
    if ms > MAX_TTL_MS:
        raise ValueError(f"ttl must be at most {MAX_TTL_MS // 1000} seconds on a server, "
                         f"not {ttl!r}")
    return ms


# -- single keys -----------------------------------------------------------


def get(names: Names, where: str, key: str, default: object) -> Plan[object]:
    key = check_key(key)
    raw = yield Command(("GET", names.full(key)))
    return default if raw is None else decode(raw, key, where)


def set_(names: Names, key: str, value: object, ttl: object) -> Plan[None]:
    key = check_key(key)
    payload = encode(key, value)
    ms = ttl_ms(ttl)
    full = names.full(key)
    args = ("SET", full, payload) if ms is None else ("SET", full, payload, "PX", ms)
    yield Command(args, write=True, route=full)


def add(names: Names, key: str, value: object, ttl: object) -> Plan[bool]:
    key = check_key(key)
    payload = encode(key, value)
    ms = ttl_ms(ttl)
    full = names.full(key)
    args = (("SET", full, payload, "NX") if ms is None else
            ("SET", full, payload, "NX", "PX", ms))
    reply = yield Command(args, write=True, route=full)
    return reply is not None


def delete(names: Names, key: str) -> Plan[bool]:
    key = check_key(key)
    full = names.full(key)
    yield Command(("UNLINK", full), write=True, route=full)
    return True


def pop(names: Names, where: str, key: str, default: object) -> Plan[object]:
    """GETDEL: the value and its removal in one command (Redis 6.2, Valkey)."""
    key = check_key(key)
    full = names.full(key)
    raw = yield Command(("GETDEL", full), write=True, route=full)
    return default if raw is None else decode(raw, key, where)


def get_many(names: Names, where: str, keys: Iterable[str]) -> Plan[dict[str, object]]:
    """The present ones of ``keys``: MGET a page at a time (GET per key
    where the keys are spread over slots)."""
    if isinstance(keys, str):
        raise TypeError("keys must be an iterable of str keys, not a str")
    wanted = list(dict.fromkeys(check_key(key) for key in keys))
    fulls = [names.full(key) for key in wanted]
    found: dict[str, object] = {}
    for start in range(0, len(fulls), SCAN_COUNT):
        page = fulls[start:start + SCAN_COUNT]
        raws = yield _each(names, "GET", page, write=False, together="MGET")
        for key, raw in zip(wanted[start:start + SCAN_COUNT], raws, strict=True):
            if isinstance(raw, Exception):
                raise raw
            if raw is not None:
                found[key] = decode(raw, key, where)
    return found


def commit_batch(names: Names, where: str, batch: WriteBatch) -> Plan[int]:
    """Apply ``batch`` atomically (APPLY); the number of keys it removed.

    The keys an incr reads are read first (MGET), the end state worked out
    here as the local store does it, and applied only if they hold still
    what was read: else read again (another client wrote one in between).
    In a cluster whose keys are spread over slots, a batch's keys must share
    a slot (a hash tag), or it is refused, applying nothing.
    """
    batch.seal()
    wanted = batch.keys_to_read()
    while True:
        read: dict[str, bytes | None] = {}
        if wanted:
            replies = yield _each(names, "GET", [names.full(key) for key in wanted],
                                  write=False, together="MGET")
            for key, raw in zip(wanted, replies, strict=True):
                if isinstance(raw, Exception):
                    raise raw
                read[key] = raw
        held = {key: ABSENT if raw is None else decode(raw, key, where)
                for key, raw in read.items()}
        ends = batch.end_state(held.__getitem__, 1 << 63, _clock())
        if not ends:
            return 0
        keys = list(ends)
        position = {key: index for index, key in enumerate(keys, 1)}
        checks: list[Any] = []
        for key, raw in read.items():
            checks += [position[key], b"" if raw is None else raw]
        changes: list[Any] = []
        for value, ttl in ends.values():
            if value is ABSENT:
                changes.append("D")
            elif ttl is KEEP:
                changes += ["K", payload(value)]  # type: ignore[arg-type]
            elif ttl is None:
                changes += ["S", payload(value)]  # type: ignore[arg-type]
            else:
                changes += ["P", payload(value), str(ttl_ms(ttl))]  # type: ignore[arg-type]
        applied, removed, _ = yield from _apply(names, keys, checks, changes)
        if applied:
            return int(removed)


UNKNOWN = object()
"""``update``'s ``known``: no guess of what the key holds; read it first."""


def update(names: Names, where: str, key: str, fn: Callable[[Any], Any], default: object,
           *, ttl: object, known: object = UNKNOWN) -> Plan[tuple[object, bytes]]:
    """update(): ``fn`` of what the key holds, then APPLY if it holds that
    still; else again on what the script saw (``fn`` may run more than
    once). Returns the new value and the bytes stored.

    ``known``: what this store last saw the key hold (the bytes, or None for
    absent): a guess that saves the read, one round trip instead of two.
    The script's check makes a wrong guess harmless; an error ``fn`` or the
    encoding raises on a guess sends the plan to read the key instead.
    """
    key = check_key(key)
    if not callable(fn):
        raise TypeError(f"fn must be callable, not {type(fn).__name__}")
    ms = ttl_ms(ttl)
    full = names.full(key)
    raw = known
    while True:
        guessed = raw is not UNKNOWN
        if not guessed:
            raw = yield Command(("GET", full), route=full)
        try:
            value = fn(default if raw is None else decode(raw, key, where))  # type: ignore[arg-type]
            stored = encode(key, value)
        except Exception:
            if guessed:
                raw = UNKNOWN  # the guess may be wrong: decide on what the key holds
                continue
            raise
        change: list[object]
        if raw is not None:
            change = ["K", stored]
        else:
            change = ["S", stored] if ms is None else ["P", stored, str(ms)]
        applied, _, raw = yield from _apply(names, [key], [1, raw or b""], change)
        if applied:
            return value, stored


def _apply(names: Names, keys: list[str], checks: list[Any],
           changes: list[Any]) -> Plan[tuple[int, int, bytes | None]]:
    """Run APPLY on ``keys``: whether it applied, how many keys it removed,
    and if it did not, what the first key found changed holds now."""
    fulls = [names.full(key) for key in keys]
    packed = msgpack.packb(changes, use_bin_type=False)  # raw strings: Lua's are bytes
    try:
        reply = yield Command(("EVALSHA", APPLY.sha, len(fulls), *fulls, len(checks) // 2,
                               *checks, packed), write=True, route=fulls[0], script=APPLY)
    except Exception as exc:
        if "CROSSSLOT" in str(exc) or type(exc).__name__ == "ClusterCrossSlotError":
            raise ValueError(
                "the keys of one batch must share a slot in a cluster whose keys are "
                "spread: give them one hash tag, e.g. {user:7}name and {user:7}mail"
                ) from None
        raise
    return int(reply[0]), int(reply[1]), reply[2] if len(reply) > 2 else None


def exists(names: Names, key: str) -> Plan[bool]:
    key = check_key(key)
    full = names.full(key)
    return bool((yield Command(("EXISTS", full), route=full)))


def ttl(names: Names, key: str) -> Plan[int]:
    """As the local store answers: whole seconds left rounded up, -1, -2
    (Redis's TTL rounds to nearest, and says 0 for a live key)."""
    key = check_key(key)
    full = names.full(key)
    left = yield Command(("PTTL", full), route=full)
    if left < 0:
        return int(left)
    return max(1, math.ceil(int(left) / 1000))


def expire(names: Names, key: str, ttl: object) -> Plan[bool]:
    key = check_key(key)
    ms = ttl_ms(ttl)
    full = names.full(key)
    if ms is None:
        existed = yield _script(PERSIST, full)
    else:
        existed = yield Command(("PEXPIRE", full, ms), write=True, route=full)
    return bool(existed)


def incr(names: Names, where: str, key: str, amount: int, ttl: object) -> Plan[int]:
    key = check_key(key)
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError(f"amount must be an int, not {type(amount).__name__}")
    amount = int(amount)
    if not -(1 << 63) <= amount < (1 << 63):
        raise ValueError(f"key {key!r}: {amount} is out of the signed 64-bit range of a "
                         "counter on a server")
    ms = ttl_ms(ttl)
    full = names.full(key)
    outcome, value = yield _script(INCR, full, amount, ms or 0)
    if outcome == 0:
        current = decode(value, key, where)
        raise TypeError(f"key {key!r} holds a {type(current).__name__}, not an int")
    if outcome == 2:
        raise ValueError(f"key {key!r}: {int(value) + amount} is out of the signed 64-bit "
                         "range of a counter on a server")
    return int(value)


def _script(script: Script, key: bytes, *args: object) -> Command:
    return Command(("EVALSHA", script.sha, 1, key, *args), write=True, route=key,
                   script=script)


# -- the whole namespace ---------------------------------------------------


def scan(names: Names, pattern: str = "*") -> Plan[list[bytes]]:
    """Every key of the store (full names) matching ``pattern`` by fnmatch's
    rules: SCAN to the end of the cursor on every node that holds keys."""
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str, not {type(pattern).__name__}")
    match = None if pattern == "*" else re.compile(fnmatch.translate(pattern)).match
    glob = names.scan_pattern(pattern)
    found: list[bytes] = []
    for node in (yield Nodes(names.route)):
        cursor: Any = 0
        while True:
            cursor, page = yield Command(("SCAN", cursor, "MATCH", glob, "COUNT", SCAN_COUNT),
                                         node=node, route=names.route)
            found.extend(full for full in page if full != names.flush_marker
                         and (match is None or match(names.short(full))))
            if int(cursor) == 0:
                break
    return list(dict.fromkeys(found))  # SCAN may return a key twice


def keys(names: Names, pattern: str = "*") -> Plan[list[str]]:
    return [names.short(full) for full in (yield from scan(names, pattern))]


def get_all(names: Names, where: str) -> Plan[dict[str, object]]:
    """Every entry: the keys found by SCAN, then their values, a page at a
    time. Not a snapshot: a key written meanwhile may or may not be in it."""
    found = yield from scan(names)
    entries: dict[str, object] = {}
    for page in _pages(found):
        raws = yield _each(names, "GET", page, write=False, together="MGET")
        for full, raw in zip(page, raws, strict=True):
            if raw is not None:  # deleted or expired since the SCAN
                key = names.short(full)
                entries[key] = decode(raw, key, where)
    return entries


def clear(names: Names) -> Plan[bool]:
    """Remove every key of the store, and nothing outside it (never FLUSHDB)."""
    found = yield from scan(names)
    for page in _pages(found):
        yield _each(names, "UNLINK", page, write=True, together="UNLINK")
    return True


def count(names: Names) -> Plan[tuple[int, int]]:
    """How many keys the store has, and how many of them have an expiry."""
    found = yield from scan(names)
    with_ttl = 0
    for page in _pages(found):
        lefts = yield Batch(tuple(Command(("PTTL", full), route=full) for full in page))
        with_ttl += sum(1 for left in lefts if left >= 0)
    return len(found), with_ttl


def _pages(items: list[bytes]) -> Iterable[list[bytes]]:
    return (items[start:start + SCAN_COUNT] for start in range(0, len(items), SCAN_COUNT))


def _each(names: Names, command: str, page: list[bytes], *, write: bool,
          together: str) -> Command | Batch:
    """``together`` for the whole page where its keys share a slot, else
    ``command`` per key in one batch; either way the reply is a list (or an
    int) for the page."""
    if names.one_slot:
        return Command((together, *page), write=write, route=names.route)
    return Batch(tuple(Command((command, full), write=write, route=full) for full in page))


# -- the server ------------------------------------------------------------

LEVELS_A_SERVER_MEETS = {
    "always": ("fsync", "flush", "buffered"),
    "everysec": ("flush", "buffered"),
    "no": ("flush", "buffered"),
}
"""With the AOF on, which of aiokv's levels each ``appendfsync`` meets: an
acknowledged write is in the server's file at once (so it survives the
server's death) and, at "always", fsynced. Without the AOF only "buffered"."""


def server_durability(where: str, wanted: str | None) -> Plan[str]:
    """How the server keeps writes (``"appendfsync always"``...), checked
    against the level asked for: ValueError if the server does not meet it."""
    try:
        reply = yield Command(("CONFIG", "GET", "append*"))
    except Exception:  # CONFIG renamed or refused (managed servers): ask INFO
        info = yield Command(("INFO", "persistence"))
        aof = b"aof_enabled:1" in info
        config = {b"appendonly": b"yes" if aof else b"no"}
    else:  # a map (RESP3), or a flat list of names and values (RESP2)
        config = dict(reply) if isinstance(reply, dict) else dict(
            zip(reply[::2], reply[1::2], strict=True))
    meets: tuple[str, ...]
    if config.get(b"appendonly") != b"yes":
        kept, meets = "appendonly no", ("buffered",)
    elif b"appendfsync" in config:
        fsync = config[b"appendfsync"].decode()
        kept, meets = f"appendfsync {fsync}", LEVELS_A_SERVER_MEETS.get(fsync, ())
    else:
        kept, meets = "appendonly yes", ("flush", "buffered")
    if wanted is not None and wanted not in meets:
        raise ValueError(
            f"durability={wanted!r} cannot be kept by the server of {where!r}, which runs "
            f"with {kept}; it meets {', '.join(map(repr, meets)) or 'none of them'} "
            "(leave durability out to take the server's own)")
    return f"server: {kept}"


def flush(names: Names) -> Plan[bool]:
    """Wait until the server has fsynced everything acknowledged so far.

    WAITAOF (Redis 7.2, Valkey 8) waits for its connection's own writes: a
    write of a marker that expires at once goes first on the same connection
    (one batch), and the AOF being fsynced in order, the wait covers every
    earlier write. Returns False where the server cannot say (no WAITAOF, no
    AOF, or a cluster): then it has only received everything.
    """
    if names.cluster:
        # WAITAOF waits for its connection's writes, on its node only: a
        # cluster cannot say for all of them at once.
        yield Command(("PING",))
        return False
    _, waited = yield Batch((
        Command(("SET", names.flush_marker, b"", "PX", 1), write=True,
                route=names.flush_marker),
        Command(("WAITAOF", 1, 0, 0), route=names.flush_marker)))
    return not isinstance(waited, Exception)


# -- moving a store (aiokv copy) ---------------------------------------------


def items_with_expiry(names: Names, where: str
                      ) -> Plan[list[tuple[str, object, float | None]]]:
    """Every entry with its expiry as a Unix time in seconds (or None), the
    server's clock read with each page (TIME), a page at a time."""
    found = yield from scan(names)
    items: list[tuple[str, object, float | None]] = []
    for page in _pages(found):
        now_s, now_us = yield Command(("TIME",), route=names.route)
        now = int(now_s) + int(now_us) / 1e6
        raws = yield _each(names, "GET", page, write=False, together="MGET")
        lefts = yield Batch(tuple(Command(("PTTL", full), route=full) for full in page))
        for full, raw, left in zip(page, raws, lefts, strict=True):
            if raw is None or isinstance(left, Exception) or left == -2:
                continue  # gone since the SCAN
            key = names.short(full)
            items.append((key, decode(raw, key, where), None if left < 0 else now + left / 1000))
    return items


def put_many(names: Names, items: list[tuple[str, object, float | None]], *,
             overwrite: bool, absolute: bool) -> Plan[list[str]]:
    """Store each (key, value, expiry time) in one batch; the keys left as
    they were because they existed (unless ``overwrite``). An expiry time is
    kept as that time on the server's clock (PXAT), or with ``absolute``
    False as the time left on this machine's clock (PX)."""
    commands = []
    now = _clock()
    for key, value, expires in items:
        full = names.full(check_key(key))
        args: tuple[Any, ...] = ("SET", full, encode(key, value))
        if not overwrite:
            args += ("NX",)
        if expires is not None:
            args += (("PXAT", math.ceil(expires * 1000)) if absolute else
                     ("PX", max(1, math.ceil((expires - now) * 1000))))
        commands.append(Command(args, write=True, route=full))
    replies = yield Batch(tuple(commands))
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return [key for (key, _, _), reply in zip(items, replies, strict=True) if reply is None]


def values_of(names: Names, where: str, keys: list[str]) -> Plan[list[object]]:
    """The values of these keys (``MISSING_VALUE`` for an absent one)."""
    fulls = [names.full(key) for key in keys]
    raws = yield _each(names, "GET", fulls, write=False, together="MGET")
    return [MISSING_VALUE if raw is None else decode(raw, key, where)
            for key, raw in zip(keys, raws, strict=True)]


MISSING_VALUE = object()
"""``values_of``'s answer for a key that is not there."""


def _clock() -> float:
    return time.time()
