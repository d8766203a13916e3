"""The ``aiokv`` command (also ``python -m aiokv``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

from ._errors import AioKVError
from ._store import AioKV


async def _demo(path: str) -> None:
    print(f"aiokv demo: storing state in {path}")
    async with AioKV(path) as kv:
        runs = await kv.get("demo:runs", default=0)
        assert isinstance(runs, int)
        await kv.set("demo:runs", runs + 1)
        await kv.set("last_command", "demo")
        await kv.set("seen:demo")  # no value: the current Unix time
        await kv.set("bot", {"greeting": "hello", "channels": ["#general", "#dev"]})
        for i in range(1000):  # a rate-limit style stream of overwrites
            await kv.set(f"rate:user{i % 10}", time.time())
        await kv.delete("rate:user9")
    print("written and closed; reopening it ...")
    async with AioKV(path) as kv:
        state = await kv.get_all()
        stats = await kv.stats()
    print(f"this demo has run {state['demo:runs']} time(s) on this file")
    for key in sorted(state):
        print(f"  {key} = {state[key]!r}")
    print(
        f"{stats.keys} keys, file {stats.file_bytes} bytes "
        f"({stats.live_bytes} live, {stats.dead_bytes} dead), "
        f"{stats.compactions} compaction(s), durability {stats.durability!r}"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiokv", description="Inspect and use aiokv stores.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="store some state, reopen the store and print it",
        description="Write a little state to a store, close it, reopen it and print "
                    "what came back. Run it twice to see the state persist.",
    )
    demo.add_argument("--path", default="aiokv-demo.kv",
                      help="store file to use (default: %(default)s in the current directory)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            asyncio.run(_demo(args.path))
    except (AioKVError, OSError, ValueError, TypeError) as exc:
        print(f"aiokv: error: {exc}", file=sys.stderr)
        return 1
    return 0
