"""The ``aiokv`` command (also ``python -m aiokv``).

``check`` and ``dump`` only read the file; every other subcommand opens the
store through ``KV`` and so takes its lock.
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
import sys
import time
from collections.abc import Callable, Iterator, Sequence

from ._async_kv import AioKV
from ._blocking_kv import KV
from ._copy import CopyError, copy_store
from ._engine import COMPACT_SLACK, Engine
from ._errors import AioKVError
from ._files import REAL_FILES
from ._format import decode_value
from ._legacy import ints_as_strings, parse_legacy_json
from ._protocols import Store
from ._recovery import Replay, count_frames, holds_a_record, is_log, replay
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


def _require_store(path: str) -> None:
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


def _replay_log(path: str) -> Replay:
    data = _read(path)
    if not is_log(data):
        raise _UsageError(_not_a_log_message(path, data))
    result = replay(data)
    if result.corruption is not None:
        raise _UsageError(f"{path} is corrupt at byte {result.corruption.offset}: "
                          f"{result.corruption.reason} (see `aiokv check`, `aiokv repair`)")
    if result.torn_tail and data.count(0, result.end) != result.torn_tail:
        # Zero bytes after the last record are space a store open at "flush"
        # reserves (check calls that clean too): no warning for them.
        print(f"aiokv: warning: {path} ends in a torn record ({result.torn_tail} bytes at "
              f"offset {result.end}), ignored", file=sys.stderr)
    return result


def _live(result: Replay, now: float) -> dict[str, float | None]:
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
        records = count_frames(_read(args.file)[:stats.file_bytes])
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
                            relative_ttl=args.relative_ttl, progress=progress)
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


def _cmd_check(args: argparse.Namespace) -> int:  # noqa: PLR0911 (one exit per verdict)
    path = args.file
    try:
        data = _read(path)
    except _UsageError as exc:
        print(f"aiokv: error: cannot check {exc}", file=sys.stderr)
        return CHECK_FAILED
    if not is_log(data):
        print(f"aiokv: error: cannot check {_not_a_log_message(path, data)}",
              file=sys.stderr)
        return CHECK_FAILED
    result = replay(data)
    if result.header is None and result.corruption is None:
        print(f"{path}: empty (a header cut short while being created): {len(data)} bytes; "
              f"opening the store would rewrite it")
        return CHECK_FIXABLE
    if result.corruption is not None:
        damage = result.corruption
        salvage = replay(data, salvage=True)
        print(f"{path}: corrupt at byte {damage.offset}: {damage.reason}")
        if holds_a_record(data):
            print(f"  opening the store fails; `aiokv repair {path}` would keep "
                  f"{_entries(len(salvage.entries))} and copy the damaged file aside")
        else:
            print("  opening the store fails, and no intact record is left in it for "
                  "`aiokv repair` to keep")
        return CHECK_CORRUPT
    entries = len(_live(result, time.time()))
    if result.torn_tail and data.count(0, result.end) == result.torn_tail:
        print(f"{path}: clean: {_entries(entries)}, {result.end} bytes, then "
              f"{result.torn_tail} zero bytes (space a store open at \"flush\" reserves "
              f"for appends; cut when it closes, or at the next open after a crash)")
        return CHECK_CLEAN
    if result.dropped_frames:
        print(f"{path}: torn tail: {result.torn_tail} bytes at offset {result.end}: a gap "
              f"of bytes never fsynced (a power loss), then {result.dropped_frames} "
              f"record(s) that did reach the disk; opening the store truncates them all "
              f"and keeps {_entries(entries)}")
        return CHECK_FIXABLE
    if result.torn_tail:
        print(f"{path}: torn tail: {result.torn_tail} bytes at offset {result.end} "
              f"(a record cut short by a crash); opening the store truncates them "
              f"and keeps {_entries(entries)}")
        return CHECK_FIXABLE
    print(f"{path}: clean: {_entries(entries)}, {len(data)} bytes")
    return CHECK_CLEAN


def _corrupt_copies(path: str) -> set[str]:
    folder = os.path.dirname(path)
    prefix = os.path.basename(path) + ".corrupt-"
    return {os.path.join(folder, name) for name in os.listdir(folder or ".")
            if name.startswith(prefix)}


def _cmd_repair(args: argparse.Namespace) -> int:
    path = args.file
    _require_store(path)
    data = _read(path)
    before = replay(data, salvage=True)
    damage = list(before.skipped)
    if before.corruption is not None:
        damage.append(before.corruption)
    if damage and not holds_a_record(data):
        # A file that held bytes, and not one intact record among them:
        # rewriting it would keep nothing, so it is left as it is.
        raise _UsageError(f"no intact record was found in {path} ({len(data)} bytes, damaged "
                          f"from byte {damage[0].offset}); it is left as it is")
    copies = _corrupt_copies(path)
    with _said_here(), KV(path, recovery="salvage") as kv:  # the store would log the salvage too
        stats = kv.stats()
    new_copies = sorted(_corrupt_copies(path) - copies)
    if damage:
        dropped = sum(item.end - item.offset for item in damage)
        print(f"{path}: skipped {len(damage)} damaged range(s), {dropped} bytes, "
              f"the first at byte {damage[0].offset}")
        if new_copies:
            print(f"  the damaged original is kept as {new_copies[0]}")
        else:
            print("  an identical copy of the damaged original was already kept")
    elif before.torn_tail:
        print(f"{path}: cut a torn tail of {before.torn_tail} bytes at offset {before.end}")
    else:
        print(f"{path}: no damage found")
    print(f"kept {_entries(stats.keys)} ({stats.ttl_keys} with an expiry), "
          f"file {stats.file_bytes} bytes")
    return 0


def _cmd_compact(args: argparse.Namespace) -> int:
    path = args.file
    _require_store(path)
    before = os.path.getsize(path)
    with KV(path) as kv:
        kv.compact()
    after = os.path.getsize(path)
    print(f"{path}: {before} bytes -> {after} bytes")
    return 0


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
  1  fixable: a torn tail (a record cut short by a crash, or records past a
     gap of bytes never fsynced that a power loss left; opening the store
     truncates it) or an empty file (a header cut short while being created;
     opening the store rewrites it)
  4  corruption: bytes changed after they were written; opening the store
     fails (see `aiokv repair`)
  8  could not check: missing, unreadable, or not an aiokv log (a legacy
     JSON state file is converted by `aiokv migrate`)
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
test; those with a violation are kept there (state.kv.as-killed is the log
as the kill left it), the others deleted.

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
            "the store's log file, or the URL of a store on a server (redis://...?prefix=)"
            if url else "the store's log file"))

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
        "Read FILE and verify its header and every frame, without opening the store\n"
        "(no lock taken, nothing written). On a store being written elsewhere, a\n"
        "record half-written at that instant shows as a torn tail.",
        epilog=_CHECK_EPILOG,
    )
    add_file(check)

    repair = add(
        "repair", _cmd_repair, "salvage a corrupt store",
        "Open the store with recovery=\"salvage\": a damaged file is copied aside to\n"
        "FILE.corrupt-<time> and rewritten with every record that validates.\n"
        "Prints what was kept.",
    )
    add_file(repair)

    compact = add("compact", _cmd_compact, "rewrite the log with only the live entries",
                  "Compact the store now; prints the file size before and after.")
    add_file(compact)

    copy = add(
        "copy", _cmd_copy, "copy every entry of one store into another",
        "Copy every live entry of SOURCE into DESTINATION, each with its expiry time.\n"
        "Either is a path or a URL (redis://, rediss://, unix://, redis+sentinel://;\n"
        "see docs/redis.md). A local SOURCE is read under its lock: stop its writer\n"
        "first. A key DESTINATION holds already is left as it is unless --overwrite.\n"
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
