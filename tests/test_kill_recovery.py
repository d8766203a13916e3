"""Kill test: SIGKILL a writing process at random instants, then reopen.

A child process (``crash_child.py``) writes from many tasks and prints each
write's intent before issuing it and its acknowledgement once the ``await``
returned. The test kills it with SIGKILL at a random instant (while Python
starts, while the store opens, while it writes, right after a compaction
began), reopens the store and checks it against the printed lines:

* every key holds the value of its last acknowledged write, or of a write to
  it issued after that one (in flight at the kill); a key whose last
  acknowledged write was a delete is absent or holds such a later value; a key
  with no acknowledged write keeps its value from before the child started,
  or holds one of the child's values for it;
* no value is torn: each is exactly a value the child wrote to that key;
* more strongly, the store holds the state after one prefix of the writes, in
  the order they were issued, that includes every acknowledged write;
* reopening never raises, leaves no temporary file behind, and a write made
  after reopening survives another reopen.

The trials of one durability level share a store (a fresh one every
``FRESH_EVERY`` trials), so later children start from a recovered log. Set
``AIOKV_KILL_SEED`` to replay a run's random choices and ``AIOKV_KILL_TRIALS``
to change the number of trials per level.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from crash_child import RUN_LIMIT, expected_value, is_intact, key_number, same_value

from aiokv import AioKV

HERE = Path(__file__).resolve().parent
CHILD = HERE / "crash_child.py"
SRC = HERE.parent / "src"

TRIALS = int(os.environ.get("AIOKV_KILL_TRIALS", "40"))
SEED = int(os.environ.get("AIOKV_KILL_SEED", str(random.SystemRandom().randrange(1 << 32))))
FRESH_EVERY = 8
"""Trials that share one store before the next starts from no file at all."""
WAIT_LIMIT = 60.0
"""Seconds to wait for the child to reach a point (a busy CI machine)."""
MARKER_KEY = "written after reopening"

KILL_MODES = {
    # mode: weight
    "starting": 2,  # 0-60 ms after spawning: mostly inside Python's start-up
    "opening": 3,  # 0-4 ms after it began opening (replay, torn-tail cut)
    "writing": 17,  # 5-150 ms after its first acknowledged write
    "compacting": 6,  # 0-4 ms after a compaction began, once writes flow
}

_ABSENT = object()


@dataclass
class ChildRun:
    """What one killed child printed."""

    mode: str
    delay: float
    run: int
    intents: list[tuple[int, str, str]] = field(default_factory=list)
    """(seq, op, key) in the order the writes were issued."""
    acked: set[int] = field(default_factory=set)
    absent_deletes: set[int] = field(default_factory=set)
    """Deletes of a key already absent from memory: nothing to write or wait for."""
    began_opening: bool = False
    opened: bool = False
    compactions_begun: int = 0
    compactions_ended: int = 0
    explicit_started: int = 0
    explicit_done: int = 0
    stderr: str = ""

    @property
    def killed_while_compacting(self) -> bool:
        return self.compactions_begun > self.compactions_ended

    def describe(self) -> str:
        return (f"run {self.run}, killed while {self.mode} after {self.delay * 1000:.1f} ms: "
                f"{len(self.intents)} writes issued, {len(self.acked)} acknowledged, "
                f"{self.compactions_begun} compactions begun, {self.compactions_ended} ended")


class _Reader(threading.Thread):
    """Collects the child's stdout lines and signals the points it reaches."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        super().__init__(daemon=True)
        self.process = process
        self.events: list[dict[str, object]] = []
        self.garbage: list[bytes] = []
        self.opening = threading.Event()
        self.acked = threading.Event()
        self.compacting = threading.Event()

    def run(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if not isinstance(event, dict) or not line.endswith(b"\n"):
                self.garbage.append(line)
                continue
            self.events.append(event)
            kind = event.get("e")
            if kind == "opening":
                self.opening.set()
            elif kind == "ack":
                self.acked.set()
            elif kind == "compaction-begin" and self.acked.is_set():
                self.compacting.set()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_and_kill(path: Path, durability: str, run: int, rng: random.Random) -> ChildRun:
    """Start the child on ``path``, SIGKILL it at a random instant, parse its output."""
    mode = rng.choices(list(KILL_MODES), weights=list(KILL_MODES.values()))[0]
    if mode == "starting":
        delay = rng.uniform(0, 0.06)
    elif mode == "writing":
        delay = rng.uniform(0.005, 0.15)
    else:
        delay = rng.uniform(0, 0.004)
    stderr_path = path.with_name(f"child-{run}.stderr")
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(CHILD), str(path), durability, str(run)],
            stdout=subprocess.PIPE, stderr=stderr, env=_child_env(), cwd=str(HERE.parent),
        )
    reader = _Reader(process)
    reader.start()
    try:
        point = {"opening": reader.opening, "writing": reader.acked,
                 "compacting": reader.compacting}.get(mode)
        if point is not None:
            reached = point.wait(WAIT_LIMIT)
            assert reached or process.poll() is not None, f"the child never got {mode}"
        time.sleep(delay)
        exited = process.poll()
        # Still our unreaped child (even if it just died), so the pid is its own.
        os.kill(process.pid, signal.SIGKILL)
        process.wait(WAIT_LIMIT)
    finally:
        if process.returncode is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        reader.join(WAIT_LIMIT)
        assert process.stdout is not None
        process.stdout.close()
    result = ChildRun(mode=mode, delay=delay, run=run,
                      stderr=stderr_path.read_text(errors="replace"))
    assert exited is None and process.returncode == -signal.SIGKILL, (
        f"the child exited by itself (status {process.returncode}):\n{result.stderr}")
    assert not reader.garbage, f"the child printed unexpected lines: {reader.garbage[:3]}"
    for event in reader.events:
        kind = event["e"]
        if kind == "intent":
            seq, op, key = event["seq"], event["op"], event["key"]
            assert isinstance(seq, int) and isinstance(op, str) and isinstance(key, str)
            assert not result.intents or seq == result.intents[-1][0] + 1
            result.intents.append((seq, op, key))
            if op == "del" and event.get("present") is False:
                result.absent_deletes.add(seq)
        elif kind == "ack":
            seq = event["seq"]
            assert isinstance(seq, int)
            result.acked.add(seq)
        elif kind == "opening":
            result.began_opening = True
        elif kind == "open":
            result.opened = True
        elif kind == "compaction-begin":
            result.compactions_begun += 1
        elif kind == "compaction-end":
            result.compactions_ended += 1
        elif kind == "compact-start":
            result.explicit_started += 1
        elif kind == "compact-done":
            result.explicit_done += 1
    issued = {seq for seq, _, _ in result.intents}
    assert result.acked <= issued, "the child acknowledged a write it never announced"
    return result


def _written(key: str, run: int, seq: int, op: str) -> object:
    return _ABSENT if op == "del" else expected_value(key, run, seq)


def _show(value: object) -> str:
    text = "<absent>" if value is _ABSENT else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def check_per_key(before: dict[str, object], child: ChildRun,
                  after: dict[str, object]) -> list[str]:
    """Each key: its last acknowledged write, or one issued later; nothing torn."""
    problems: list[str] = []
    writes: dict[str, list[tuple[int, str]]] = {}
    for seq, op, key in child.intents:
        writes.setdefault(key, []).append((seq, op))
    for key in sorted(before.keys() | after.keys() | writes.keys()):
        got = after.get(key, _ABSENT)
        if got is not _ABSENT and key_number(key) is not None and not is_intact(key, got):
            problems.append(f"{key!r} holds a torn or foreign value: {_show(got)}")
            continue
        ops = writes.get(key, [])
        acked = [i for i, (seq, _) in enumerate(ops) if seq in child.acked]
        last = acked[-1] if acked else -1
        allowed = [] if last >= 0 else [before.get(key, _ABSENT)]
        allowed += [_written(key, child.run, seq, op) for seq, op in ops[max(last, 0):]]
        if any(got is want or same_value(got, want) for want in allowed):
            continue
        if last >= 0:
            seq, op = ops[last]
            why = (" (a delete of a key already absent from memory)"
                   if seq in child.absent_deletes else "")
            problems.append(
                f"{key!r} lost its acknowledged write #{seq} ({op}){why}: it holds "
                f"{_show(got)}, not {_show(_written(key, child.run, seq, op))}"
                f" nor one of the {len(ops) - last - 1} writes issued after it")
        else:
            problems.append(f"{key!r} holds {_show(got)}: neither its value before the run,"
                            f" {_show(before.get(key, _ABSENT))}, nor one of its"
                            f" {len(ops)} unacknowledged writes")
    return problems


def check_prefix(before: dict[str, object], child: ChildRun,
                 after: dict[str, object]) -> list[str]:
    """The store holds the state after writes 0..P-1, for a P past every ack.

    A delete of a key already absent from memory is acknowledged without
    waiting for the writes issued before it, so its ack says nothing about
    them (``check_per_key`` still holds the key absent from then on).
    """
    ordered = child.acked - child.absent_deletes
    must_include = max(ordered, default=-1) + 1  # intents are numbered from 0
    tokens = {key: repr(value) for key, value in after.items()}
    state = {key: repr(value) for key, value in before.items()}
    differ = {key for key in state.keys() | tokens.keys() if state.get(key) != tokens.get(key)}
    prefixes: list[int] = [0] if not differ else []
    for seq, op, key in child.intents:
        if op == "del":
            state.pop(key, None)
        else:
            state[key] = repr(expected_value(key, child.run, seq))
        if state.get(key) == tokens.get(key):
            differ.discard(key)
        else:
            differ.add(key)
        if not differ:
            prefixes.append(seq + 1)
    if any(p >= must_include for p in prefixes):
        return []
    return [f"the store is not the state after any prefix of the writes that includes "
            f"the {must_include} first (the prefixes that match: {prefixes[-5:]})"]


class _LogRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname}: {record.getMessage()}")


async def _reopen(path: Path, durability: str, marker: object
                  ) -> tuple[dict[str, object], int, dict[str, object]]:
    """Reopen after the kill; write once; reopen again. Both contents, compactions."""
    async with AioKV(path, durability=durability) as kv:
        recovered = await kv.get_all()
        compactions = (await kv.stats()).compactions
        await kv.set(MARKER_KEY, marker)
    async with AioKV(path, durability=durability) as kv:
        again = await kv.get_all()
    return recovered, compactions, again


@pytest.mark.parametrize("durability", ["flush", "fsync"])
def test_sigkill_at_random_instants_loses_no_acknowledged_write(
    durability: str, tmp_path: Path
) -> None:
    rng = random.Random(f"{SEED}-{durability}")
    first_run = rng.randrange(RUN_LIMIT - TRIALS)
    counts = dict.fromkeys(
        ["kills", "while starting", "while opening", "while compacting", "while compact() ran",
         "torn tails cut", "compactions completed", "writes acknowledged"], 0)
    log = _LogRecorder()
    logging.getLogger("aiokv").addHandler(log)
    started = time.monotonic()
    try:
        before: dict[str, object] = {}
        path = tmp_path / "store-0" / "state.kv"
        for trial in range(TRIALS):
            if trial % FRESH_EVERY == 0:
                path = tmp_path / f"store-{trial}" / "state.kv"
                path.parent.mkdir()
                before = {}
                counter = 0
            child = run_and_kill(path, durability, first_run + trial, rng)
            where = (f"AIOKV_KILL_SEED={SEED}, {durability}, trial {trial}, {path}: "
                     f"{child.describe()}")
            log.messages.clear()
            marker = {"trial": trial, "run": child.run}
            try:
                after, compactions, again = asyncio.run(_reopen(path, durability, marker))
            except Exception as exc:
                raise AssertionError(f"reopening failed ({where}): {exc!r}") from exc
            problems = check_per_key(before, child, after) or check_prefix(before, child, after)
            assert not problems, f"{where}\n" + "\n".join(problems[:20])
            assert same_value(again, {**after, MARKER_KEY: marker}), (
                f"{where}\nthe write after reopening (or the rest) did not survive a reopen")
            assert compactions >= counter, (
                f"{where}\nthe header's compaction counter went back from {counter} to "
                f"{compactions}")
            counter = compactions
            leftovers = [name.name for name in path.parent.iterdir() if ".tmp-" in name.name]
            assert not leftovers, f"{where}\ntemporary files left after reopening: {leftovers}"
            counts["kills"] += 1
            counts["while starting"] += not child.began_opening
            counts["while opening"] += child.began_opening and not child.opened
            counts["while compacting"] += child.killed_while_compacting
            counts["while compact() ran"] += child.explicit_started > child.explicit_done
            counts["torn tails cut"] += any("torn record" in m for m in log.messages)
            counts["compactions completed"] += child.compactions_ended
            counts["writes acknowledged"] += len(child.acked)
            before = again
    finally:
        logging.getLogger("aiokv").removeHandler(log)
    counts["seconds"] = round(time.monotonic() - started)
    print(f"\n{durability}: seed {SEED}: {counts}")
    assert counts["writes acknowledged"] > 0
