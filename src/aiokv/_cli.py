"""The ``aiokv`` command (also ``python -m aiokv``).

``check`` and ``dump`` only read the store's files (its base file, then the
log files ``<base>.log-N`` that follow it: see ``_chain``); every other
subcommand opens the store through ``KV`` and so takes its lock.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import random
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from ._async_kv import AioKV
from ._blocking_kv import KV
from ._chain import LOG_INFIX, ChainReplay, follows_of, log_path, peek_header, replay_chain
from ._compaction import COMPACT_SLACK
from ._copy import CopyError, copy_store
from ._engine import Engine
from ._errors import AioKVError
from ._files import REAL_FILES
from ._format import decode_value
from ._legacy import ints_as_strings, parse_legacy_json
from ._log_files import LogFiles, OnDisk
from ._protocols import Store
from ._recovery import Damage, Replay, count_frames, holds_a_record, is_log
from ._redis_client import sync_executor
from ._redis_plans import Names, items_with_expiry
from ._target import LocalTarget, ServerTarget, parse_target
from ._torture import DURABILITIES, TortureResult, torture
from ._version import __version__

BYTES_MARKER = "$bytes"
"""JSON stand-in for a bytes value: ``{"$bytes": "<base64>"}``."""

# Exit codes of ``check``, as fsck's.
CHECK_CLEAN = 0
CHECK_FIXABLE = 1
CHECK_CORRUPT = 4
CHECK_FAILED = 8

_MISSING = object()


class _UsageError(Exception):
    """A condition reported as one ``aiokv: error:`` line, exit code 1."""


COPY_LEFT_EXISTING = 4
"""``copy``'s exit code when keys the destination held were left as they were."""


def _on_server(where: str) -> ServerTarget | None:
    """The server a URL names (the read-only commands accept one), or None for a path."""
    if "://" not in where:
        return None
    target = parse_target(where)
    if isinstance(target, LocalTarget):
        return None
    return target


def _to_read(where: str) -> Store:
    """The store at ``where``, to read: a server's, or a local one opened
    read-only (no lock, nothing cut or written: it may be open elsewhere)."""
    if _on_server(where) is not None:
        return KV.from_url(where)
    _require_store(where)
    return KV(where, readonly=True)


def _server_items(target: ServerTarget) -> list[tuple[str, object, float | None]]:
    executor = sync_executor(target)
    try:
        names = Names(target.prefix, cluster=target.kind == "cluster", spread=target.spread)
        return executor.run(items_with_expiry(names, target.display))
    finally:
        executor.close()


async def _demo(path: str) -> None:
    print(f"aiokv demo: storing state in {path}")
    async with AioKV(path) as kv:
        runs = await kv.incr("demo:runs")  # an atomic counter, kept across runs
        await kv.set("last_command", "demo")
        await kv.set("seen:demo")  # no value: the current Unix time
        await kv.set("bot", {"greeting": "hello", "channels": ["#general", "#dev"]})
        # Created by the first run only; later runs within a minute find it
        # with less time left.
        await kv.add("session", f"started by run {runs}", ttl=60)
        for i in range(1000):  # a rate-limit style stream of overwrites
            await kv.set(f"rate:user{i % 10}", time.time())
        await kv.delete("rate:user9")
        await kv.set("cooldown", "wait", ttl=3)
    print("written and closed; reopening it ...")
    async with AioKV(path) as kv:
        state = await kv.get_all()
        session_left = await kv.ttl("session")  # whole seconds, rounded up
        print(f"this demo has run {state['demo:runs']} time(s) on this file (incr)")
        for key in sorted(state):
            print(f"  {key} = {state[key]!r}")
        print(f"'session' expires in {session_left} s (ttl=60; run the demo again "
              "within a minute to see it lower)")
        print("'cooldown' was set with ttl=3; counting down:")
        while (left := await kv.ttl("cooldown")) > 0:  # -2: gone
            print(f"  ttl('cooldown') = {left} s, get() -> {await kv.get('cooldown')!r}")
            await asyncio.sleep(1)
        print(f"  ttl('cooldown') = {left} (expired), get() -> {await kv.get('cooldown')!r}, "
              f"exists() -> {await kv.exists('cooldown')}")
        stats = await kv.stats()
    print(
        f"{stats.keys} keys, file {stats.file_bytes} bytes "
        f"({stats.live_bytes} live, {stats.dead_bytes} dead), "
        f"{stats.compactions} compaction(s), durability {stats.durability!r}"
    )
    print(f"Dead bytes are the records that later sets and deletes made obsolete: every "
          f"change is appended, nothing is rewritten in place. A compaction rewrites the "
          f"file with the live entries only, by itself in the background once the dead "
          f"bytes exceed the live ones by {COMPACT_SLACK // 1024} KiB (or now: "
          f"`aiokv compact {path}`).")


# -- JSON conversion ----------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _to_json(value: object) -> object:
    """``value`` with every bytes object replaced by the ``$bytes`` marker."""
    if isinstance(value, bytes):
        return {BYTES_MARKER: _b64(value)}
    if isinstance(value, (list, tuple)):
        return [_to_json(item) for item in value]
    if isinstance(value, dict):
        # A map key cannot hold the marker: bytes keys become their base64 text.
        return {
            (_b64(key) if isinstance(key, bytes) else key): _to_json(item)
            for key, item in value.items()
        }
    return value


def _from_json(value: object) -> object:
    """The inverse of ``_to_json``: ``{"$bytes": "<base64>"}`` becomes bytes."""
    if isinstance(value, dict):
        if len(value) == 1 and BYTES_MARKER in value:
            text = value[BYTES_MARKER]
            if not isinstance(text, str):
                raise ValueError(f"{BYTES_MARKER!r} needs a base64 string")
            try:
                return base64.b64decode(text, validate=True)
            except binascii.Error as exc:
                raise ValueError(f"{BYTES_MARKER!r} holds invalid base64: {exc}") from None
        return {key: _from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_from_json(item) for item in value]
    return value


def _parse_value(text: str) -> object:
    """VALUE as JSON (with the bytes marker), or else the plain string."""
    try:
        document = json.loads(text)
    except ValueError:
        return text
    return _from_json(document)


def _dumps(value: object, indent: int | None = None) -> str:
    return json.dumps(_to_json(value), indent=indent, ensure_ascii=False)


# -- reading files without opening the store ---------------------------------


def _entries(count: int) -> str:
    return f"{count} entry" if count == 1 else f"{count} entries"


def _files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


def _read(path: str) -> bytes:
    """The whole file; a usage error for a missing file or one that is not a
    regular file (never blocks on a FIFO nor reads a device)."""
    try:
        data = REAL_FILES.read(path)
    except IsADirectoryError:
        raise _UsageError(f"{path}: is a directory") from None
    except OSError as exc:
        raise _UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if data is None:
        raise _UsageError(f"{path}: no such file")
    return data


def _not_a_log_message(path: str, data: bytes) -> str:
    legacy = parse_legacy_json(data)
    if legacy is not None:
        return (f"{path}: a legacy JSON state file ({_entries(len(legacy))}), not an aiokv "
                f"log; `aiokv migrate {path}` would convert it")
    return f"{path}: not an aiokv log (nor a legacy JSON state file)"


def _log_file_message(path: str, verb: str) -> str:
    """Why a log file of a store (``<base>.log-N``) given as the store is refused:
    its records mean nothing without the files before it."""
    match = re.search(re.escape(LOG_INFIX) + r"[1-9][0-9]*\Z", path)
    if match is None or match.start() == 0:
        return (f"{path}: a log file of a store (it follows the store's base file, named "
                f"like it without the {LOG_INFIX}N suffix), not a store; {verb} that instead")
    base = path[:match.start()]
    return f"{path}: a log file of the store at {base}, not a store; {verb} {base} instead"


def _require_store(path: str, verb: str = "use") -> None:
    """Refuse, before opening, a missing file or one that is not a log.

    Opening would otherwise create a store, or silently convert a legacy
    JSON state file (that is what ``migrate`` is for).
    """
    data = _read(path)
    if not is_log(data):
        if data.lstrip().startswith(b"{"):
            raise _UsageError(f"{path} looks like a legacy JSON state file; convert it "
                              f"first with `aiokv migrate {path}`")
        raise _UsageError(f"{path} is not an aiokv log")
    header = peek_header(data)
    if header is not None and header.log_file:
        raise _UsageError(_log_file_message(path, verb))


@dataclass
class _OnDisk:
    """The files of a store as read at one moment, without opening it: its
    base file (the path given), then the log files that follow it."""

    path: str
    """The store's path as given (the base file)."""
    disk: LogFiles
    found: OnDisk

    @property
    def base(self) -> bytes:
        return self.found.base or b""

    def numbers(self) -> list[int]:
        """Every file there is: 0 for the base, then each log file's number."""
        return [0, *sorted(self.found.below + [n for n, _ in self.found.logs]
                           + self.found.beyond)]

    @property
    def several(self) -> bool:
        """Whether the store is more than its base file."""
        return len(self.numbers()) > 1

    def name(self, number: int) -> str:
        """A file of the store (0: the base) as shown: beside the path given."""
        if number == 0:
            return self.path
        if self.disk.file == os.path.abspath(self.path):
            return log_path(self.path, number)
        return self.disk.log_path(number)  # beside the file a link leads to

    def real_name(self, number: int) -> str:
        """Where a file of the store is, links resolved (as the store names it)."""
        return self.disk.file if number == 0 else self.disk.log_path(number)

    def data(self, number: int) -> bytes:
        """The bytes of the base (0) or of a log file of the chain."""
        return self.base if number == 0 else dict(self.found.logs)[number]

    def chain_data(self) -> list[bytes]:
        """The bytes of every file a replay reads: the base, then its log files."""
        return [self.base, *(data for _, data in self.found.logs)]

    def size(self, number: int) -> int | None:
        """A file's size (None: it is gone, or was never read)."""
        if number == 0 or any(n == number for n, _ in self.found.logs):
            return len(self.data(number))
        try:
            return os.path.getsize(self.real_name(number))
        except OSError:
            return None

    def replay(self, *, salvage: bool = False) -> ChainReplay:
        return replay_chain(self.base, self.found.logs, salvage=salvage)

    def names(self, numbers: Iterable[int]) -> str:
        return ", ".join(map(self.name, numbers))


def _read_store(path: str, verb: str) -> _OnDisk:
    """The base file at ``path`` and the log files that follow it; a usage
    error for a missing base, one that is not a regular file, or a log file
    given in its place (``verb``: what to do with its base instead)."""
    disk = LogFiles(os.path.abspath(path), REAL_FILES)
    disk.resolve()  # as the store does: its log files are beside the file a link leads to
    try:
        found = disk.read()
    except OSError as exc:
        where = path if exc.filename in (None, disk.file) else str(exc.filename)
        if isinstance(exc, IsADirectoryError):
            raise _UsageError(f"{where}: is a directory") from None
        if isinstance(exc, FileNotFoundError):  # its directory is missing
            raise _UsageError(f"{path}: no such file") from None
        raise _UsageError(f"{where}: cannot read: {exc.strerror or exc}") from None
    if found.base is None:
        raise _UsageError(f"{path}: no such file")
    if found.header is not None and found.header.log_file:
        raise _UsageError(_log_file_message(path, verb))
    return _OnDisk(path, disk, found)


SETTLE_READS = 5
SETTLE_PAUSE = 0.02
"""A store open in another process may show a record half copied at its end,
or a log file that moved on since it was read: ``_settled`` reads it again,
up to SETTLE_READS times, this many seconds apart, before reporting either."""


def _in_flight(store: _OnDisk, chain: ChainReplay) -> bool:
    """Whether what a read found may be a writer's append in flight, not a
    crash's doing: a torn tail that is not all zeros, or log files left out."""
    if chain.dropped:
        return True
    number, result = chain.last
    torn = result.torn_tail
    return bool(torn) and store.data(number).count(0, result.end) != torn


def _settled(path: str, verb: str) -> tuple[_OnDisk, ChainReplay]:
    """The files of the store at ``path`` and their replay, read again while
    they show what a live writer leaves for an instant (``_in_flight``)."""
    for attempt in range(SETTLE_READS):
        store = _read_store(path, verb)
        if not is_log(store.base):
            raise _UsageError(_not_a_log_message(path, store.base))
        chain = store.replay()
        if not _in_flight(store, chain) or attempt == SETTLE_READS - 1:
            break
        time.sleep(SETTLE_PAUSE)
    return store, chain


def _replay_log(path: str) -> ChainReplay:
    """Replay the store at ``path`` (every file of it) as dump shows it."""
    store, chain = _settled(path, "dump")
    if chain.corruption is not None:
        number, damage = chain.corruption
        raise _UsageError(f"{store.name(number)} is corrupt at byte {damage.offset}: "
                          f"{damage.reason} (see `aiokv check`, `aiokv repair`)")
    if chain.dropped:
        print(f"aiokv: warning: {path}: {chain.dropped_reason}; left out "
              f"{store.names(chain.dropped)}", file=sys.stderr)
    if store.found.beyond:
        print(f"aiokv: warning: {path}: left out {store.names(store.found.beyond)}: they "
              f"follow no file of the store", file=sys.stderr)
    number, result = chain.last
    data = store.data(number)
    if result.torn_tail and data.count(0, result.end) != result.torn_tail:
        # Zero bytes after the last record are space a store open at "flush"
        # reserves (check calls that clean too): no warning for them.
        print(f"aiokv: warning: {store.name(number)} ends in a torn record "
              f"({result.torn_tail} bytes at offset {result.end}), ignored", file=sys.stderr)
    return chain


def _records(store: _OnDisk, chain: ChainReplay) -> int:
    """How many records the files of the chain hold (the FOLLOWS record that
    opens each log file and the SYNCED frames aside)."""
    count = 0
    for number, result in chain.files:
        data = store.data(number)
        count += count_frames(data[:result.end])
        opening = follows_of(data) if number else None
        if opening is not None and opening.end <= result.end:
            count -= 1  # the FOLLOWS record: where the file's appends came from
    return count


def _live(result: Replay | ChainReplay, now: float) -> dict[str, float | None]:
    """The live keys, sorted, each with its expiry time or None."""
    return {
        key: result.expiries.get(key)
        for key in sorted(result.entries)
        if result.expiries.get(key, now + 1) > now
    }


# -- subcommands ----------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    asyncio.run(_demo(args.path))
    return 0


def _cmd_dump(args: argparse.Namespace) -> int:
    server = _on_server(args.file)
    if server is not None:
        items = sorted(_server_items(server), key=lambda item: item[0])
        if args.jsonl:
            for key, value, expires in items:
                print(_dumps({"key": key, "value": value, "expires": expires}))
        else:
            print(_dumps({key: value for key, value, _ in items}, indent=2))
        return 0
    result = _replay_log(args.file)
    live = _live(result, time.time())
    if args.jsonl:
        for key, expires in live.items():
            value = decode_value(result.entries[key])
            print(_dumps({"key": key, "value": value, "expires": expires}))
    else:
        print(_dumps({key: decode_value(result.entries[key]) for key in live}, indent=2))
    return 0


def _cmd_get(args: argparse.Namespace) -> int:
    with _to_read(args.file) as kv:
        value = kv.get(args.key, _MISSING)
    if value is _MISSING:
        raise _UsageError(f"no key {args.key!r} in {args.file}")
    print(_dumps(value))
    return 0


def _cmd_set(args: argparse.Namespace) -> int:
    if os.path.exists(args.file):
        _require_store(args.file)
    value = _parse_value(args.value)
    with KV(args.file) as kv:
        kv.set(args.key, value, ttl=args.ttl)
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    _require_store(args.file)
    with KV(args.file) as kv:
        existed = kv.exists(args.key)
        if not kv.delete(args.key):
            raise _UsageError(f"deleting {args.key!r} from {args.file} failed (see the log above)")
    print(f"deleted {args.key!r}" if existed else f"no key {args.key!r}; nothing to delete")
    return 0


def _cmd_keys(args: argparse.Namespace) -> int:
    with _to_read(args.file) as kv:
        keys = kv.keys(args.pattern)
    for key in sorted(keys):
        print(key)
    return 0


def _format_time(when: float | None) -> str:
    if when is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def _cmd_stats(args: argparse.Namespace) -> int:
    if _on_server(args.file) is not None:
        with KV.from_url(args.file) as server:
            counted = server.stats()
        on_server: dict[str, object] = {"keys": counted.keys, "ttl_keys": counted.ttl_keys,
                                        "durability": counted.durability}
        if args.json:
            print(json.dumps(on_server))
        else:
            for name, value in on_server.items():
                print(f"{name.replace('_', ' ').replace('ttl', 'TTL')}: {value}")
        return 0
    with _to_read(args.file) as kv:
        stats = kv.stats()
        store = _read_store(args.file, "use")
    records = _records(store, store.replay())
    fields: dict[str, object] = {
        "keys": stats.keys,
        "live_bytes": stats.live_bytes,
        "dead_bytes": stats.dead_bytes,
        "file_bytes": stats.file_bytes,
        "records": records,
        "ttl_keys": stats.ttl_keys,
        "compactions": stats.compactions,
        "last_compaction": stats.last_compaction,
    }
    if args.json:
        print(json.dumps(fields))
        return 0
    for name, value in fields.items():
        label = name.replace("_", " ").replace("ttl", "TTL")
        shown = _format_time(stats.last_compaction) if name == "last_compaction" else value
        print(f"{label}: {shown}")
    return 0


def _cmd_copy(args: argparse.Namespace) -> int:
    started = time.monotonic()
    shown = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if not args.quiet and (done == total or now - shown[0] >= 1.0):
            shown[0] = now
            rate = done / max(now - started, 1e-9)
            print(f"aiokv copy: {done:,} of {total:,} entries ({rate:,.0f}/s)",
                  file=sys.stderr, flush=True)

    try:
        report = copy_store(args.source, args.destination, overwrite=args.overwrite,
                            relative_ttl=args.relative_ttl, live=args.live, progress=progress)
    except CopyError as exc:
        raise _UsageError(str(exc)) from None
    if report.mismatched:
        raise _UsageError(
            f"{len(report.mismatched)} copied values differ in {args.destination} from "
            f"{args.source} (e.g. {report.mismatched[:3]}): written over meanwhile?")
    print(f"copied {_entries(report.copied)} from {args.source} to {args.destination} in "
          f"{report.seconds:.1f} s; verified"
          + (f"; {report.expired} expired on the way" if report.expired else ""))
    if report.existing:
        print(f"left {_entries(len(report.existing))} the destination held already "
              f"(e.g. {report.existing[:3]}); --overwrite replaces them", file=sys.stderr)
        return COPY_LEFT_EXISTING
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    path = args.file
    try:
        store, chain = _settled(path, "check")
    except _UsageError as exc:
        print(f"aiokv: error: cannot check {exc}", file=sys.stderr)
        return CHECK_FAILED
    verdict = _check_verdict(store, chain)
    if store.several:
        _print_files(store, chain)
    return verdict


def _check_verdict(store: _OnDisk, chain: ChainReplay) -> int:
    """Print what ``check`` found in the files of a store; its exit code."""
    path = store.path
    if chain.header is None and chain.corruption is None:
        print(f"{path}: empty (a header cut short while being created): {len(store.base)} "
              f"bytes; opening the store would rewrite it")
        return CHECK_FIXABLE
    if chain.corruption is not None:
        number, damage = chain.corruption
        print(f"{store.name(number)}: corrupt at byte {damage.offset}: {damage.reason}")
        if any(map(holds_a_record, store.chain_data())):
            salvage = store.replay(salvage=True)
            print(f"  opening the store fails; `aiokv repair {path}` would keep "
                  f"{_entries(len(salvage.entries))} and copy the damaged file aside")
        else:
            print("  opening the store fails, and no intact record is left in it for "
                  "`aiokv repair` to keep")
        return CHECK_CORRUPT
    entries = _entries(len(_live(chain, time.time())))
    number, result = chain.last
    name, data = store.name(number), store.data(number)
    in_files = f" in {_files(len(chain.files))}" if len(chain.files) > 1 else ""
    fixable = []
    if chain.dropped:
        fixable.append(f"{path}: {chain.dropped_reason}; opening the store leaves out "
                       f"{store.names(chain.dropped)} (removing them) and keeps {entries}")
    if store.found.beyond:
        fixable.append(f"{path}: {store.names(store.found.beyond)} follow no file of the store "
                       f"(a gap in the numbers); nothing can replay them, and opening the "
                       f"store removes them")
    reserved = result.torn_tail and data.count(0, result.end) == result.torn_tail
    if result.dropped_frames:
        fixable.append(f"{name}: torn tail: {result.torn_tail} bytes at offset {result.end}: "
                       f"a gap of bytes never fsynced (a power loss), then "
                       f"{result.dropped_frames} record(s) that did reach the disk; opening "
                       f"the store truncates them all and keeps {entries}")
    elif result.torn_tail and not reserved:
        fixable.append(f"{name}: torn tail: {result.torn_tail} bytes at offset {result.end} "
                       f"(a record cut short by a crash); opening the store truncates them "
                       f"and keeps {entries}")
    if fixable:
        print("\n".join(fixable))
        return CHECK_FIXABLE
    if reserved:
        where = f" at the end of {name}" if number else ""
        print(f"{path}: clean: {entries}, {chain.before_last + result.end} bytes{in_files}, "
              f"then {result.torn_tail} zero bytes{where} (space a store open at \"flush\" "
              f"reserves for appends; cut when it closes, or at the next open after a crash)")
        return CHECK_CLEAN
    size = sum(len(store.data(number)) for number, _ in chain.files)
    print(f"{path}: clean: {entries}, {size} bytes{in_files}")
    return CHECK_CLEAN


def _print_files(store: _OnDisk, chain: ChainReplay) -> None:
    """List every file of a store with its size, and what became of it."""
    replayed = dict(chain.files)
    corrupt = chain.corruption[0] if chain.corruption is not None else None
    last = chain.last[0]
    print("  the store's files:")
    for number in store.numbers():
        size = store.size(number)
        shown = "gone" if size is None else f"{size} bytes"
        result = replayed.get(number)
        if number == corrupt:
            note = "corrupt"
        elif number in store.found.below:
            note = ("left by a compaction cut short: the base file holds its records; "
                    "opening the store removes it")
        elif number in store.found.beyond:
            note = "follows no file of the store"
        elif number in chain.dropped:
            note = "left out: it follows a file a power loss cut short"
        elif result is None:
            note = "not read: it follows the corruption"
        elif number != last and size is not None and result.end < size:
            note = f"{size - result.end} bytes past offset {result.end}, where appends moved on"
        else:
            note = "the base file" if number == 0 else ""
        print(f"    {store.name(number)}: {shown}" + (f" ({note})" if note else ""))


def _corrupt_copies(store: _OnDisk) -> set[str]:
    """The damaged files kept aside beside the store: ``<base>.corrupt-*``
    and ``<base>.log-N.corrupt-*`` (as the store names them, links resolved)."""
    real_folder = os.path.dirname(store.disk.file)
    shown_folder = (os.path.dirname(store.path)
                    if store.disk.file == os.path.abspath(store.path) else real_folder)
    pattern = re.compile(re.escape(os.path.basename(store.disk.file))
                         + r"(" + re.escape(LOG_INFIX) + r"[1-9][0-9]*)?\.corrupt-")
    return {os.path.join(shown_folder, name) for name in os.listdir(real_folder or ".")
            if pattern.match(name)}


def _cmd_repair(args: argparse.Namespace) -> int:
    path = args.file
    _require_store(path, "repair")
    store = _read_store(path, "repair")
    before = store.replay(salvage=True)
    damage = list(before.skipped)
    if before.corruption is not None:
        damage.append(before.corruption)
    if damage and not any(map(holds_a_record, store.chain_data())):
        # Files that held bytes, and not one intact record among them:
        # rewriting the store would keep nothing, so it is left as it is.
        first, where = damage[0]
        if not store.found.logs:
            raise _UsageError(f"no intact record was found in {path} ({len(store.base)} "
                              f"bytes, damaged from byte {where.offset}); it is left as it is")
        size = sum(map(len, store.chain_data()))
        raise _UsageError(f"no intact record was found in the files of {path} ({size} bytes "
                          f"in {_files(len(store.chain_data()))}, {store.name(first)} damaged "
                          f"from byte {where.offset}); they are left as they are")
    copies = _corrupt_copies(store)
    with _said_here(), KV(path, recovery="salvage") as kv:  # the store would log the salvage too
        stats = kv.stats()
    new_copies = sorted(_corrupt_copies(store) - copies)
    said = _repair_summary(store, before, damage, new_copies)
    if not said:
        print(f"{path}: no damage found")
    files = 1 + len(store.disk.log_numbers())
    held_in = "file" if files == 1 else f"{_files(files)},"
    print(f"kept {_entries(stats.keys)} ({stats.ttl_keys} with an expiry), "
          f"{held_in} {stats.file_bytes} bytes")
    return 0


def _repair_summary(store: _OnDisk, before: ChainReplay, damage: list[tuple[int, Damage]],
                    new_copies: list[str]) -> bool:
    """Say what ``repair`` found and did; whether there was anything to say."""
    path = store.path
    if damage:
        by_file: dict[int, list[Damage]] = {}
        for number, item in damage:
            by_file.setdefault(number, []).append(item)
        indent = ""
        if len(by_file) > 1:
            print(f"{path}: skipped {len(damage)} damaged range(s) in "
                  f"{_files(len(by_file))}, {sum(d.end - d.offset for _, d in damage)} bytes")
            indent = "  "
        for number, items in by_file.items():
            dropped = sum(item.end - item.offset for item in items)
            print(f"{indent}{store.name(number)}: skipped {len(items)} damaged range(s), "
                  f"{dropped} bytes, the first at byte {items[0].offset}")
            prefix = os.path.basename(store.real_name(number)) + ".corrupt-"
            kept = [copy for copy in new_copies if os.path.basename(copy).startswith(prefix)]
            if kept:
                print(f"{indent}  the damaged original is kept as {kept[0]}")
            else:
                print(f"{indent}  an identical copy of the damaged original was already kept")
        return True
    said = False
    if before.dropped:
        print(f"{path}: {before.dropped_reason}; left out and removed "
              f"{store.names(before.dropped)}")
        said = True
    if store.found.beyond:
        print(f"{path}: removed {store.names(store.found.beyond)}: they follow no file of the "
              f"store")
        said = True
    number, result = before.last
    if result.torn_tail:
        print(f"{store.name(number)}: cut a torn tail of {result.torn_tail} bytes at offset "
              f"{result.end}")
        said = True
    return said


def _cmd_compact(args: argparse.Namespace) -> int:
    path = args.file
    _require_store(path, "compact")
    before = _store_bytes(path)
    with KV(path) as kv:
        kv.compact()
    after = _store_bytes(path)
    print(f"{path}: {before} bytes -> {after} bytes")
    return 0


def _store_bytes(path: str) -> int:
    """The bytes of the base file at ``path`` and of every log file of it."""
    disk = LogFiles(os.path.abspath(path), REAL_FILES)
    disk.resolve()
    names = [disk.file, *map(disk.log_path, disk.log_numbers())]
    return sum(os.path.getsize(name) for name in names if os.path.exists(name))


def _cmd_migrate(args: argparse.Namespace) -> int:
    path = args.file
    data = _read(path)
    if not data:
        print(f"{path} is empty: nothing to convert (opened, it is an empty store)")
        return 0
    if is_log(data):
        print(f"{path} is already an aiokv log; nothing to do")
        return 0
    legacy = parse_legacy_json(data)
    if legacy is None:
        raise _UsageError(f"{path} is neither an aiokv log nor a JSON state file")
    engine = Engine(path)
    engine.legacy_ints_as_strings = args.ints_as_strings
    with _said_here():  # the store would log the conversion too
        engine.open()
        try:
            count = engine.stats().keys
        finally:
            engine.close()
    backup = path + ".bak"
    for attempt in range(1, 1000):  # the store picks the first free name
        try:
            with open(backup, "rb") as file:
                if file.read() == data:
                    break
        except FileNotFoundError:
            pass
        backup = f"{path}.bak.{attempt}"
    else:
        backup = path + ".bak"
    converted = sum(ints_as_strings(value)[1] for value in legacy.values())
    strings = (f", {converted} int(s) beyond 64 bits stored as strings"
               if args.ints_as_strings and converted else "")
    print(f"converted {path} to the log format ({_entries(count)}{strings}); "
          f"the original is kept as {backup}")
    return 0


@contextlib.contextmanager
def _said_here() -> Iterator[None]:
    """Leave out the store's own log lines while a command reports the same
    thing itself (a conversion, a salvage): each is said once."""
    store_logger = logging.getLogger("aiokv")
    disabled = store_logger.disabled
    store_logger.disabled = True
    try:
        yield
    finally:
        store_logger.disabled = disabled


def _print_flushed(line: str) -> None:
    # A long run prints a violation the moment it is found, even into a pipe.
    print(line, flush=True)


def _print_torture_summary(result: TortureResult) -> None:
    print(f"trials: {result.trials}")
    print(f"kills: {result.kills}")
    print(f"writes checked: {result.writes_checked}")
    print(f"compactions interrupted: {result.compactions_interrupted}")
    print(f"clears interrupted: {result.clears_interrupted}")
    print(f"violations: {len(result.violations)}")
    for store in result.kept:
        print(f"  kept for inspection: {store}")
    if result.violations:
        print(f"replay the same random choices with --seed {result.seed}")


def _cmd_torture(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    print(f"aiokv torture: {args.seconds:g} s at durability {args.durability!r}, "
          f"seed {seed}, in {args.dir}", flush=True)
    result = torture(args.dir, args.seconds, args.durability, seed, _print_flushed)
    _print_torture_summary(result)
    return 1 if result.violations else 0


# -- the parser -------------------------------------------------------------------


_CHECK_EPILOG = """\
exit codes (as fsck's):
  0  clean (possibly followed by zero bytes: space reserved for appends)
  1  fixable: a torn tail of the last file (a record cut short by a crash,
     or records past a gap of bytes never fsynced that a power loss left;
     opening the store truncates it), log files left out after a power loss
     or that follow no file of the store (opening the store removes them),
     or an empty file (a header cut short while being created; opening the
     store rewrites it)
  4  corruption: bytes changed after they were written, in the base file or
     in a log file (the one named); opening the store fails (see `aiokv
     repair`)
  8  could not check: missing, unreadable, not an aiokv log (a legacy JSON
     state file is converted by `aiokv migrate`), or a log file of a store
     (check its base file: the path without .log-N)
"""

_TORTURE_EPILOG = """\
each trial starts a process that writes to a store from many tasks (and
compacts, flushes and clears it), kills it with SIGKILL at a random instant
(while it starts, opens, writes or compacts, or right after a compaction),
reopens the store and checks that every acknowledged write survived, that no
value is torn, that the store is the state after a prefix of the writes, and
that it reopens cleanly. At buffered, acknowledged writes may be lost, but
only as a suffix of the writes, never past an acknowledged clear or a flush
that returned.

The stores are made in a new subdirectory of DIR, on the disk you want to
test; those with a violation are kept there (state.kv.as-killed and its
.log-N files are the store as the kill left it), the others deleted.

exit codes:
  0  no violation found
  1  a violation found (or an error)
  2  bad usage, or DIR is not a directory
"""


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return seconds


def _seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if seed < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return seed


def _directory(text: str) -> str:
    # Refused up front, as bad usage: the run must not create DIR (a typo
    # would put the stores on another disk than the one meant).
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"not a directory: {text!r}")
    return text


_BYTES_NOTE = (f'bytes values are shown as {{"{BYTES_MARKER}": "<base64>"}}, also inside lists '
               f"and maps")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiokv", description="Inspect and use aiokv stores.",
        epilog="Errors are reported as one line and exit code 1 (2 for bad usage); "
               "`check` has its own exit codes (see `aiokv check --help`).",
    )
    parser.add_argument("--version", action="version", version=f"aiokv {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int], summary: str,
            description: str, epilog: str | None = None) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=summary, description=description, epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(handler=handler, usage_of=sub)
        return sub

    def add_file(sub: argparse.ArgumentParser, *, url: bool = False) -> None:
        sub.add_argument("file", metavar="FILE", help=(
            "the store's file (its log files FILE.log-N are found beside it), or the URL "
            "of a store on a server (redis://...?prefix=)"
            if url else "the store's file (its log files FILE.log-N are found beside it)"))

    demo = add(
        "demo", _cmd_demo, "store some state, reopen the store and print it",
        "Write a little state to a store, close it, reopen it and print what came "
        "back. Run it twice to see the state persist.",
    )
    demo.add_argument("--path", default="aiokv-demo.kv",
                      help="store file to use (default: %(default)s in the current directory)")

    dump = add(
        "dump", _cmd_dump, "print the live entries as JSON",
        "Print the live (non-expired) entries as one JSON object {key: value}, keys "
        "sorted.\nReads the file without opening the store (no lock, nothing written), "
        "so it also\nworks on a store open elsewhere; it shows what has reached the file.",
        epilog=_BYTES_NOTE + ".\nMap keys that are bytes become their base64 text.",
    )
    add_file(dump, url=True)
    dump.add_argument("--jsonl", action="store_true",
                      help='one JSON object per line instead: {"key": ..., "value": ..., '
                           '"expires": <Unix time or null>}')

    get = add("get", _cmd_get, "print the value of KEY as JSON",
              "Print the value stored under KEY as JSON (exit 1 if there is none).",
              epilog=_BYTES_NOTE + ".")
    add_file(get, url=True)
    get.add_argument("key", metavar="KEY")

    set_ = add(
        "set", _cmd_set, "store VALUE under KEY",
        "Store VALUE under KEY, creating the store if FILE does not exist.\nVALUE is "
        "parsed as JSON (42, true, null, \"text\", [1, 2], {\"a\": 1}); anything that "
        "is\nnot valid JSON is stored as the plain string.",
        epilog=f'{{"{BYTES_MARKER}": "<base64>"}} (alone in its map) stores bytes.',
    )
    add_file(set_)
    set_.add_argument("key", metavar="KEY")
    set_.add_argument("value", metavar="VALUE")
    set_.add_argument("--ttl", type=float, metavar="SECONDS",
                      help="expire the key this many seconds from now")

    delete = add("delete", _cmd_delete, "remove KEY", "Remove KEY (absent is not an error).")
    add_file(delete)
    delete.add_argument("key", metavar="KEY")

    keys = add("keys", _cmd_keys, "list the live keys",
               "List the live keys matching PATTERN, one a line, sorted.")
    add_file(keys, url=True)
    keys.add_argument("pattern", metavar="PATTERN", nargs="?", default="*",
                      help="a glob (fnmatch.fnmatchcase; default: %(default)s)")

    stats = add(
        "stats", _cmd_stats, "print the store's counters",
        "Print keys, live bytes, dead bytes, file bytes, TTL keys, compactions and\n"
        "the time of the last compaction.",
    )
    add_file(stats, url=True)
    stats.add_argument("--json", action="store_true", help="print one JSON object instead")

    check = add(
        "check", _cmd_check, "verify every frame without opening the store",
        "Read FILE and the log files that follow it (FILE.log-N) and verify each\n"
        "header and every frame, without opening the store (no lock taken, nothing\n"
        "written). On a store being written elsewhere, a record half-written at that\n"
        "instant shows as a torn tail. A store of several files is listed file by file.",
        epilog=_CHECK_EPILOG,
    )
    add_file(check)

    repair = add(
        "repair", _cmd_repair, "salvage a corrupt store",
        "Open the store with recovery=\"salvage\": each damaged file (FILE or one of\n"
        "its log files FILE.log-N) is copied aside to <that file>.corrupt-<time>, and\n"
        "the store is rewritten with every record that validates. Prints what was\n"
        "skipped in each file and what was kept.",
    )
    add_file(repair)

    compact = add("compact", _cmd_compact, "rewrite the log with only the live entries",
                  "Compact the store now; prints the bytes of its files (FILE and\n"
                  "its log files FILE.log-N) before and after.")
    add_file(compact)

    copy = add(
        "copy", _cmd_copy, "copy every entry of one store into another",
        "Copy every live entry of SOURCE into DESTINATION, each with its expiry time.\n"
        "Either is a path or a URL (redis://, rediss://, unix://, redis+sentinel://;\n"
        "see docs/redis.md). A local SOURCE is read under its lock: stop its writer\n"
        "first, or back up the store of a running program with --live. A key\n"
        "DESTINATION holds already is left as it is unless --overwrite.\n"
        "At the end every copied value is read back and compared.",
        epilog="Exit codes: 0 copied and verified; 1 error (nothing verified, or a value\n"
               f"differs); 2 bad usage; {COPY_LEFT_EXISTING} copied, but keys the "
               "destination held were left as they were.",
    )
    copy.add_argument("source", metavar="SOURCE")
    copy.add_argument("destination", metavar="DESTINATION")
    copy.add_argument("--overwrite", action="store_true",
                      help="replace the keys the destination holds already")
    copy.add_argument("--relative-ttl", action="store_true",
                      help="on a server, keep each expiry as the time left on this "
                           "machine's clock, not as the same time on the server's clock "
                           "(for a server whose clock differs)")
    copy.add_argument("--quiet", action="store_true", help="no progress lines")
    copy.add_argument("--live", action="store_true",
                      help="a local SOURCE open in another process is read from its files "
                           "as they are, read-only (every write its program acknowledged at "
                           "\"flush\" and \"fsync\"): a backup of a running program's store")

    migrate = add(
        "migrate", _cmd_migrate, "convert a legacy JSON state file to a log",
        "Convert the JSON state file of the original aiokv to the log format; the\n"
        "original is kept as FILE.bak. A file that is already a log is left alone.\n\n"
        "JSON ints have no limit; the log stores 64 bits (-2**63 to 2**64-1). A file\n"
        "holding a bigger one is refused, naming its key, unless --ints-as-strings\n"
        "stores each such int as its decimal string (your program then reads a str).",
    )
    add_file(migrate)
    migrate.add_argument("--ints-as-strings", action="store_true",
                         help="store ints beyond 64 bits as their decimal strings")

    torture_ = add(
        "torture", _cmd_torture, "kill a writing process at random instants; check recovery",
        "Run crash trials in DIR for SECONDS and report what they found.",
        epilog=_TORTURE_EPILOG,
    )
    torture_.add_argument("dir", metavar="DIR", type=_directory,
                          help="an existing directory on the disk to test")
    torture_.add_argument("--seconds", type=_positive_seconds, default=60.0,
                          help="how long to run trials (default: %(default)g)")
    torture_.add_argument("--durability", choices=DURABILITIES, default="flush",
                          help="the store's durability level (default: %(default)s)")
    torture_.add_argument("--seed", type=_seed, metavar="N",
                          help="seed the random choices, to replay an earlier run "
                               "(default: a random one, printed)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = _parser().parse_known_args(argv)
    if extra:  # said by the subcommand, with its usage (not the top-level one)
        args.usage_of.error(f"unrecognized arguments: {' '.join(extra)}")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except BrokenPipeError:  # e.g. `aiokv dump FILE | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (_UsageError, AioKVError, OSError, ValueError, TypeError) as exc:
        print(f"aiokv: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("aiokv: interrupted", file=sys.stderr)
        return 130  # as a shell reports SIGINT
