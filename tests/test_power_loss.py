"""Power loss at every file call: what a reboot may show, and what it must keep.

``PowerLossFiles`` is a ``FileSystem`` that does the real file work in a temp
directory and also keeps a model of what a power loss would leave behind:

* per file (an inode: a descriptor keeps pointing at it across renames), the
  content as the OS sees it and the content made durable by the last
  ``fsync(fd)``; whatever was written after that fsync is volatile;
* per directory, the names as the OS sees them and the names made durable by
  the last ``fsync_dir``; the create/replace/remove calls since then are
  pending and a reboot may show any prefix of them (none of them: the old
  name state; all of them: the current one).

It is the inner file system of a ``ScriptedFiles``, the seam's one test
double, scripted (``CrashPoints``) to take a crash point after each call.

``crash_images()`` lists the directory states a power loss may produce: for
each prefix of the pending name changes, the files under those names with
their volatile part (everything past the longest common prefix of the durable
and the current content) dropped, kept, cut (at random points, after its
first byte, before its last), replaced by zeros or random garbage of the same
length, or cut with the rest zeros or garbage (torn appends, as in ALICE);
the same variant for every file, and a few images with a random variant per
file. Randomness is seeded by the crash point, so every run is the same.

A workload (sets, deletes, flushes, compactions, a clear, sets after it,
close and reopen; its steps are ``workload.py``'s, shared with the
fault-injection loop) runs directly on the ``Engine`` on the test's thread,
once per durability level, with both timers set to an hour: no periodic fsync
or buffered write happens at a time chosen by the scheduler, so the order of
the file calls is the same in every run. A crash point is taken right after
every file call (the Nth, for every N, including every call of a
compaction's temp-write / fsync / replace / directory-fsync sequence) and
after every step of the workload.

Each crash image is opened by a plain ``Engine`` in a fresh directory. It must
open (no ``CorruptionError``, no other error) and hold exactly the state after
some prefix of the workload's steps, between:

* the floor: at "fsync" every step that returned (a set returns after its
  Commit.wait()); at "flush" and "buffered" every step up to the last
  flush() or close() that returned (their writes were fsynced);
* the newest: every step that returned plus the one running at the crash.

A state that is no prefix (a lost write with a later one kept, a torn value,
a resurrected key) fails as surely as a lost promised write.

A second workload makes its writes while a compaction walks the entries
(issue 18: at "buffered" the walk took a later write from memory without an
earlier one it had already walked past). The walk takes one entry per batch
and writes each batch as it takes it; after its first snapshot write the
crash-point script calls back, and from there, on the compaction's thread,
the writes are made: steps in the order issued, right after the compaction's
own step (which changes nothing). At "fsync" each waits for its commit there,
so the writer thread's calls come in the same order every run too.
"""

from __future__ import annotations

import functools
import os
import random
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from scripted_files import ANY_CALL, Call, ScriptedFiles
from workload import (
    CLOSE,
    COMPACT,
    FLUSH,
    OPEN,
    Step,
    Typed,
    engine,
    expect,
    perform,
    typed,
)

from aiokv import _compaction, _writer_thread
from aiokv import _log_files as log_files_module
from aiokv._chain import LOG_INFIX
from aiokv._engine import Engine
from aiokv._files import FileSystem, Window
from aiokv._format import HEADER_SIZE
from aiokv._recovery import replay

if TYPE_CHECKING:
    from collections.abc import Callable

    from typing_extensions import Buffer

LEVELS = ("fsync", "flush", "buffered")
VARIANTS = ("drop", "keep", "partial-1", "partial-2", "partial-3", "first-byte", "all-but-last",
            "zeros", "garbage", "torn-zeros", "torn-garbage", "gap-sector", "gap-page",
            "gap-random", "gaps-sectors")
STORE = "state.kv"


# -- the simulated file system ------------------------------------------------


@dataclass
class Inode:
    number: int
    data: bytearray = field(default_factory=bytearray)
    """The content as the OS sees it (what a read returns now)."""
    durable: bytes = b""
    """The content as of the last fsync of this file."""


# A pending name change: ("create", name, "") / ("replace", source, target) /
# ("link", source, target) / ("remove", name, "").
NameOp = tuple[str, str, str]
Names = dict[str, int]
"""A directory's state: name -> inode number."""
Image = tuple[tuple[str, bytes], ...]
"""A directory after a reboot: (name, content) of each file."""


def _apply_name_op(names: Names, op: NameOp, created: dict[str, int]) -> None:
    kind, first, second = op
    if kind == "create":
        names[first] = created[first]
    elif kind == "replace":
        if first in names:
            names[second] = names.pop(first)
    elif kind == "link":
        if first in names:
            names[second] = names[first]
    elif kind == "remove":
        names.pop(first, None)
    else:
        raise AssertionError(kind)


def _canonical(names: Names) -> tuple[tuple[str, int], ...]:
    """Sorted names, the pid in temp names replaced: the same in every run."""
    pid = f".tmp-{os.getpid()}-"
    return tuple(sorted((name.replace(pid, ".tmp-PID-"), number)
                        for name, number in names.items()))


@dataclass(frozen=True)
class CrashPoint:
    label: str
    """Where the power went: after which call of which step, or after a step."""
    name_states: tuple[tuple[tuple[str, int], ...], ...]
    """The directory states a reboot may show, old to new (sorted items)."""
    contents: dict[int, tuple[bytes, bytes]]
    """inode number -> (durable content, current content)."""
    floor: int
    """States[floor] is the oldest state the reboot may show."""
    newest: int
    """States[newest] is the newest."""


class ModelWindow:
    """A mapped window whose every store is also made to the model, then
    reported to it (a store lands in the page cache, as a write(2) does: it
    is a crash point)."""

    def __init__(self, model: PowerLossFiles, inode: Inode, window: Window,
                 offset: int) -> None:
        self._model = model
        self._inode = inode
        self._window = window
        self._offset = offset
        self._position = 0

    def seek(self, position: int, /) -> None:
        self._window.seek(position)
        self._position = position

    def write(self, data: bytes, /) -> int:
        with self._model.guard:
            written = self._window.write(data)
            start = self._offset + self._position
            self._inode.data[start : start + written] = data[:written]
            self._position += written
            self._model.on_store()
            return written

    def close(self) -> None:
        self._window.close()


class PowerLossFiles(FileSystem):
    """Real files in ``directory``, plus a model of what a power loss would
    leave of them: the inner file system of a ``ScriptedFiles``.

    Each call that changes the files or their names does the real work and
    records its effect on the model; every other call is the real one. It
    takes no crash point and holds no lock itself: ``CrashPoints`` makes each
    call, and takes the point after it, under ``guard``. Lock files are not
    modelled: a rebooted directory never holds a lock, and the engine
    creates its own at open.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.names: dict[str, Inode] = {}
        self.durable_names: Names = {}
        self.pending: list[NameOp] = []
        self.created: dict[str, int] = {}
        """Inode number of each name at its latest (pending) create."""
        self.inodes: dict[int, Inode] = {}
        self.fds: dict[int, Inode] = {}
        self.guard = threading.RLock()
        """Held across a call (or a store) and the crash point after it."""
        self.on_store: Callable[[], None] = lambda: None
        """Called, with ``guard`` held, after each store into a mapped window."""

    # -- bookkeeping --

    def _name(self, path: str) -> str:
        directory, name = os.path.split(path)
        assert os.path.abspath(directory) == os.path.abspath(self.directory), path
        return name

    def _new_inode(self) -> Inode:
        inode = Inode(len(self.inodes) + 1)
        self.inodes[inode.number] = inode
        return inode

    def _check_model(self) -> None:
        """The model's view of the names and contents is the real one."""
        real = {name for name in os.listdir(self.directory) if not name.endswith(".lock")}
        assert real == set(self.names), (real, set(self.names))
        for name, inode in self.names.items():
            with open(os.path.join(self.directory, name), "rb") as file:
                assert file.read() == inode.data, f"model of {name} differs from the file"

    def preload(self, image: Image) -> None:
        """Files there before the run: durable content under durable names."""
        with self.guard:
            for name, content in image:
                with open(os.path.join(self.directory, name), "wb") as file:
                    file.write(content)
                inode = self._new_inode()
                inode.data += content
                inode.durable = content
                self.names[name] = inode
            self.durable_names = {name: inode.number for name, inode in self.names.items()}

    def content(self, fd: int) -> bytes:
        """The content of the file open at ``fd``, as the OS sees it now."""
        with self.guard:
            return bytes(self.fds[fd].data)

    def crash_point(self, label: str, floor: int, newest: int) -> CrashPoint:
        """What a power loss now may leave, once the model is checked against
        the real files; ``floor`` and ``newest`` are the test's promise."""
        with self.guard:
            self._check_model()
            states: list[tuple[tuple[str, int], ...]] = []
            names = dict(self.durable_names)
            states.append(_canonical(names))
            for op in self.pending:
                _apply_name_op(names, op, self.created)
                states.append(_canonical(names))
            contents = {number: (inode.durable, bytes(inode.data))
                        for number, inode in self.inodes.items()}
            return CrashPoint(label, tuple(states), contents, floor, newest)

    # -- the seam: the calls that change the model --

    def create(self, path: str) -> int:
        fd = super().create(path)
        name = self._name(path)
        inode = self._new_inode()
        self.names[name] = inode
        self.created[name] = inode.number
        self.pending.append(("create", name, ""))
        self.fds[fd] = inode
        return fd

    def open_append(self, path: str) -> int:
        fd = super().open_append(path)
        self.fds[fd] = self.names[self._name(path)]
        return fd

    def write(self, fd: int, data: Buffer) -> int:
        view = memoryview(data)
        written = os.write(fd, view)
        self.fds[fd].data += view[:written]  # O_APPEND: at the end
        return written

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        written = os.pwrite(fd, data, offset)
        content = self.fds[fd].data
        if len(content) < offset:
            content += bytes(offset - len(content))
        content[offset:offset + written] = memoryview(data)[:written]
        return written

    def allocate(self, fd: int, offset: int, length: int) -> None:
        super().allocate(fd, offset, length)
        content = self.fds[fd].data
        if len(content) < offset + length:
            content += bytes(offset + length - len(content))

    def map(self, fd: int, offset: int, length: int) -> Window:
        return ModelWindow(self, self.fds[fd], super().map(fd, offset, length), offset)

    def truncate(self, fd: int, length: int) -> None:
        super().truncate(fd, length)
        content = self.fds[fd].data
        if len(content) > length:
            del content[length:]
        else:
            content += bytes(length - len(content))

    def fsync(self, fd: int) -> None:
        super().fsync(fd)
        inode = self.fds[fd]
        inode.durable = bytes(inode.data)

    def close(self, fd: int) -> None:
        super().close(fd)
        del self.fds[fd]

    def replace(self, source: str, target: str) -> None:
        super().replace(source, target)
        old, new = self._name(source), self._name(target)
        self.names[new] = self.names.pop(old)
        self.pending.append(("replace", old, new))

    def link(self, source: str, target: str) -> bool:
        linked = super().link(source, target)
        assert linked, "the test's file system has hard links"
        old, new = self._name(source), self._name(target)
        self.names[new] = self.names[old]
        self.pending.append(("link", old, new))
        return linked

    def remove(self, path: str) -> None:
        super().remove(path)
        name = self._name(path)
        del self.names[name]
        self.pending.append(("remove", name, ""))

    def fsync_dir(self, directory: str) -> None:
        super().fsync_dir(directory)
        assert os.path.abspath(directory) == os.path.abspath(self.directory)
        self.durable_names = {name: inode.number for name, inode in self.names.items()}
        self.pending = []


CRASH_CALLS = frozenset({"read", "listdir", "lock", "unlock", "create", "open_append", "write",
                         "pwrite", "allocate", "map", "truncate", "fsync", "close", "replace",
                         "link", "remove", "fsync_dir"})
"""The calls a crash point is taken after: each one that works on the
store's directory (reads it, changes a file or a name, makes them durable,
takes or lets go of the lock). Not the questions about a file open already
(mode, permissions, same_file), nor the parts of lock (lock_open_file) and
give_permissions."""


class CrashPoints:
    """A ``ScriptedFiles`` (``files``) over a ``PowerLossFiles`` model,
    taking a crash point after each call of CRASH_CALLS and each store into
    a mapped window, and one whenever the test calls ``mark``.

    The test sets ``files.doing`` (the step running: the points' labels name
    it) and ``floor``/``newest`` (the states a reboot may show). The points
    touch nothing but ``points``.
    """

    def __init__(self, directory: str) -> None:
        self.model = PowerLossFiles(directory)
        self.files = ScriptedFiles(self.model)
        self.points: list[CrashPoint] = []
        self.floor = 0
        self.newest = 0
        self.calls = 0
        """Calls and stores made so far: the Nth is "call N" in labels."""
        self.after_snapshot_write: Callable[[bytes], None] | None = None
        """Called once, with the file's content, after the first pwrite past
        a compaction's header (and its crash point). With WRITE_CHUNK small
        that is the walk's first batch: the walk holds no lock and has not
        taken the next."""
        self.model.on_store = functools.partial(self._point_after, "store")
        self.files.script(ANY_CALL, self._make_then_point,
                          when=lambda call: call.name in CRASH_CALLS)

    def mark(self, label: str) -> None:
        """Record a crash point now."""
        self.points.append(self.model.crash_point(label, self.floor, self.newest))

    def _point_after(self, call: str) -> None:
        self.calls += 1
        self.mark(f"call {self.calls} ({call}) in {self.files.doing!r}")

    def _make_then_point(self, call: Call) -> object:
        """Make ``call`` and take the crash point after it, both under the
        model's guard (no other thread's call comes between); then the
        callback of a first snapshot write, outside it (at "fsync" it waits
        for the writer thread, whose calls take the guard)."""
        with self.model.guard:
            result = self.files.real(call.name, *call.args)
            self._point_after(call.name)
        hook = self.after_snapshot_write
        if hook is not None and call.name == "pwrite" and call.args[2] >= HEADER_SIZE:
            self.after_snapshot_write = None
            hook(self.model.content(call.args[0]))
        return result


# -- crash images ---------------------------------------------------------------


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _after_reboot(durable: bytes, current: bytes, variant: str, rng: random.Random) -> bytes:
    """One content a power loss may leave: the volatile part per ``variant``.

    The volatile part is everything past the longest common prefix of the
    durable and the current content. "partial" keeps a random part of it;
    "torn-*" keeps a random part and fills the rest with zeros or garbage (the
    size reached the disk, some of the data did not); "first-byte" and
    "all-but-last" are the extreme cuts. "gap-*" keep it all but one block,
    which reads as zeros (a block the disk never got, while later ones made
    it: writeback does not go in order): the 512-byte sector or the 4 KiB page
    holding its first byte, or a random sector of it. "gaps-sectors" zeroes
    each 512-byte sector of it by a coin toss: several holes, with data that
    made it between them.
    """
    assert variant in VARIANTS, variant
    if variant == "drop":
        return durable
    stable = _common_prefix(durable, current)
    volatile = len(current) - stable
    if variant.startswith("gap"):
        block = 4096 if variant == "gap-page" else 512
        first_block = stable - stable % block
        if variant == "gaps-sectors":
            holes = [start for start in range(first_block, len(current), block)
                     if rng.random() < 0.5]
        elif variant == "gap-random":
            holes = [rng.randrange(first_block, len(current) or 1, block)]
        else:
            holes = [first_block]
        content = bytearray(current)
        for start in holes:  # zeros where the disk never got the block; durable bytes stay
            first, end = max(start, stable), min(start + block, len(current))
            if end > first:
                content[first:end] = bytes(end - first)
        return bytes(content)
    fixed_cuts = {"keep": volatile, "first-byte": min(1, volatile),
                  "all-but-last": max(0, volatile - 1), "zeros": 0, "garbage": 0}
    cut = fixed_cuts.get(variant)
    if cut is None:  # partial-N, torn-*
        cut = rng.randint(0, volatile)
    rest = volatile - cut if variant in ("zeros", "garbage", "torn-zeros", "torn-garbage") else 0
    filler = bytes(rest) if variant.endswith("zeros") else rng.randbytes(rest)
    return current[:stable + cut] + filler


MIXED = 3
"""Images per name state in which each file gets its own random variant."""


def crash_images(point: CrashPoint, seed: str) -> list[tuple[str, Image]]:
    """(description, directory content) of every state this crash may leave.

    The same variant for every file, then MIXED images with a variant chosen
    per file (e.g. the old log's tail kept and the temp file's dropped).
    """
    rng = random.Random(seed)
    images: list[tuple[str, Image]] = []
    seen: set[Image] = set()
    for step, names in enumerate(point.name_states):
        where = f"names after {step} of {len(point.name_states) - 1} pending changes"
        choices: list[list[str]] = [[variant] * len(names) for variant in VARIANTS]
        choices += [[rng.choice(VARIANTS) for _ in names] for _ in range(MIXED)]
        for variants in choices:
            image = tuple(
                (name, _after_reboot(*point.contents[number], variant, rng))
                for (name, number), variant in zip(names, variants, strict=True))
            if image not in seen:
                seen.add(image)
                described = ", ".join(f"{name}: {variant}"
                                      for (name, _), variant in zip(names, variants, strict=True))
                images.append((f"{where}, volatile data: {described or 'no files'}", image))
    return images


# -- the workload -----------------------------------------------------------------

COMPACT_WITH_WRITES = "compact+writes"
"""A compaction whose value is a list of Steps, made while it walks the entries."""

WORKLOAD: list[Step] = [
    Step("open #1", "open"),
    Step("set a", "set", "a", 1),
    Step("set b", "set", "b", "b" * 50),
    Step("batch first", "batch", value=(("set", "k0", 0), ("set", "k1", "one"),
                                        ("delete", "b"), ("set", "b", "b2"))),
    Step("flush #1", "flush"),
    Step("set c", "set", "c", b"\x00\xff" * 20),
    Step("set a again", "set", "a", [1, "two", 3.5]),
    Step("delete b", "delete", "b"),
    Step("flush #2", "flush"),
    Step("set d", "set", "d", {"nested": [True, None]}),
    Step("set big", "set", "big", "x" * 2000),
    Step("compact #1", "compact"),
    Step("set e after compact", "set", "e", 2.5),
    Step("delete c", "delete", "c"),
    Step("flush #3", "flush"),
    Step("set f", "set", "f", -7),
    Step("clear", "clear"),
    Step("set g after clear", "set", "g", "g"),
    Step("set h after clear", "set", "h", 2**63),
    Step("flush #4", "flush"),
    Step("delete g", "delete", "g"),
    Step("set ttl i", "set+ttl", "i", "lives an hour"),
    Step("close #1", "close"),
    Step("open #2", "open"),
    Step("set j after reopen", "set", "j", b"j"),
    Step("delete absent", "delete", "zz"),
    Step("pop e", "pop", "e"),
    Step("batch move", "batch", value=(("delete", "k0"), ("set", "done", [1, "two"]),
                                       ("incr", "n", 3), ("set", "wide", "w" * 700))),
    Step("update n", "update", "n", 2),
    Step("set h again", "set", "h", False),
    Step("compact #2", "compact"),
    Step("flush #5", "flush"),
    Step("set k", "set", "k", "k" * 300),
    Step("delete j", "delete", "j"),
    Step("compact #3", "compact"),
    Step("set l after compact", "set", "l", 0),
    Step("close #2", "close"),
]


@dataclass
class Recording:
    level: str
    points: list[CrashPoint]
    states: list[Typed]
    """states[k]: the store after the first k steps."""
    calls: list[str]
    """The label of every call-crash point, in order."""
    walked: list[list[str]] = field(default_factory=list)
    """For each "compact+writes" step, the keys its new file held when the
    writes were made: those the walk had taken."""


class Run:
    """A workload running on one engine, one step at a time.

    Steps are numbered in the order they are issued; the writes of a
    "compact+writes" step are issued from inside the compaction (on its
    thread, at its first snapshot write), so they are the steps right after
    it. The compaction itself changes nothing: the state after it is the one
    before it.

    Touches the engine, its own states, and the crash points' step label and
    promise (``doing``, ``floor``, ``newest``); marks a point after each step.
    """

    def __init__(self, level: str, crash: CrashPoints, path: str,
                 initial: Typed | None) -> None:
        self.level = level
        self.crash = crash
        self.path = path
        self.engine: Engine | None = None
        self.state: dict[str, object] = {key: value
                                         for key, (_, value) in (initial or {}).items()}
        self.states = [typed(self.state)]
        """states[k]: the store after the first k steps issued."""
        self.walked: list[list[str]] = []

    def step(self, step: Step) -> None:
        crash = self.crash
        crash.files.doing = step.label
        crash.newest = len(self.states)  # this step's state, appended below
        if step.kind == OPEN:
            self.engine = engine(self.path, self.level, crash.files)
        if step.kind == COMPACT_WITH_WRITES:
            self._compact_with_writes(step)
        else:
            perform(self._engine(), step)
            expect(self.state, step)
        if step.kind != CLOSE:
            assert typed(self._engine().items()) == typed(self.state), step.label
        if step.kind != COMPACT_WITH_WRITES:
            self.states.append(typed(self.state))
        if self.level == "fsync" or step.kind in (FLUSH, CLOSE):
            crash.floor = len(self.states) - 1  # every step issued so far returned
        crash.mark(f"after {step.label!r}")

    def _engine(self) -> Engine:
        assert self.engine is not None, "the workload starts with an open"
        return self.engine

    def _compact_with_writes(self, step: Step) -> None:
        """A compaction, its writes made from inside it by the crash points'
        snapshot-write callback."""
        self.states.append(typed(self.state))
        writes: list[Step] = step.value  # type: ignore[assignment]
        self.crash.after_snapshot_write = functools.partial(self._write_during_walk,
                                                            step.label, writes)
        perform(self._engine(), step._replace(kind=COMPACT))
        assert self.crash.after_snapshot_write is None, f"{step.label}: no snapshot write"

    def _write_during_walk(self, label: str, writes: list[Step], new_file: bytes) -> None:
        self.walked.append([key for key in self.state if key.encode() in new_file])
        for write in writes:
            self.step(write)
        self.crash.files.doing = f"{label} (after its writes)"


def record(level: str, workload: list[Step] = WORKLOAD, image: Image = (),
           initial: Typed | None = None) -> Recording:
    """Run ``workload`` once and take a crash point at every call and step.

    ``image`` holds the files already there (durable), ``initial`` the
    entries they hold.
    """
    directory = tempfile.mkdtemp(prefix="aiokv-power-")
    try:
        crash = CrashPoints(directory)
        crash.model.preload(image)
        run = Run(level, crash, os.path.join(directory, STORE), initial)
        for step in workload:
            run.step(step)
        calls = [point.label for point in crash.points if point.label.startswith("call ")]
        return Recording(level, crash.points, run.states, calls, run.walked)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


RECORDINGS = {level: record(level) for level in LEVELS}

_recovered: dict[Image, Typed | str] = {}
"""What opening an image gives (its entries, or the error): images repeat."""


def recover(image: Image) -> Typed | str:
    """Open ``image`` in a fresh directory with a plain Engine."""
    if image in _recovered:
        return _recovered[image]
    directory = tempfile.mkdtemp(prefix="aiokv-reboot-")
    try:
        for name, content in image:
            with open(os.path.join(directory, name), "wb") as file:
                file.write(content)
        store = engine(os.path.join(directory, STORE), "flush", FileSystem())
        try:
            store.open()
        except Exception as exc:  # any failure to open is a finding
            result: Typed | str = f"open raised {exc!r}"
        else:
            try:
                result = typed(store.items())
            finally:
                store.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    _recovered[image] = result
    return result


def check_point(recording: Recording, index: int) -> list[str]:
    """Violations at one crash point, one line each."""
    point = recording.points[index]
    allowed = recording.states[point.floor:point.newest + 1]
    problems = []
    for description, image in crash_images(point, f"{recording.level}-{index}"):
        result = recover(image)
        if isinstance(result, str):
            problems.append(f"{point.label}, {description}: {result}")
        elif result not in allowed:
            problems.append(
                f"{point.label}, {description}: recovered {result}, promised one of the "
                f"states after steps {point.floor}..{point.newest}: {allowed}")
    return problems


# -- the cases ------------------------------------------------------------------

def _cases() -> list[object]:
    return [pytest.param(level, index, id=f"{level}-{index:03d}")
            for level, recording in RECORDINGS.items()
            for index in range(len(recording.points))]


@pytest.mark.parametrize(("level", "index"), _cases())
def test_a_power_loss_here_keeps_a_promised_prefix(level: str, index: int) -> None:
    problems = check_point(RECORDINGS[level], index)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("level", LEVELS)
def test_enough_crash_points_are_tried(level: str) -> None:
    recording = RECORDINGS[level]
    images = sum(len(crash_images(point, f"{level}-{i}"))
                 for i, point in enumerate(recording.points))
    print(f"{level}: {len(recording.points)} crash points "
          f"({len(recording.calls)} after a file call), {images} crash images")
    assert len(recording.calls) > 20
    assert len(recording.points) == len(recording.calls) + len(WORKLOAD)
    # Every call of every compaction is a crash point, the directory steps too.
    for label in ("compact #1", "compact #2", "compact #3"):
        calls = {point.label.split("(")[1].split(")")[0] for point in recording.points
                 if point.label.startswith("call ") and point.label.endswith(f"{label!r}")}
        assert calls >= {"create", "pwrite", "fsync", "open_append", "replace", "fsync_dir",
                         "close", "link", "write"}, (label, calls)  # link, write: the log file
    # The third compaction moves appends on from a log file, and removes it.
    third = {point.label.split("(")[1].split(")")[0] for point in recording.points
             if point.label.startswith("call ") and point.label.endswith("'compact #3'")}
    assert "remove" in third
    # Crash images hold log files: the base and its chain are what is checked.
    assert any(LOG_INFIX in name for point in recording.points
               for state in point.name_states for name, _ in state)
    # A crash in a compaction, between the rename and the directory fsync, may
    # show either log.
    assert any(len(point.name_states) > 1 for point in recording.points)


# -- the model itself --------------------------------------------------------------


def test_the_model_loses_what_was_not_fsynced(tmp_path: object) -> None:
    directory = str(tmp_path)
    crash = CrashPoints(directory)
    files = crash.files
    log = os.path.join(directory, "log")
    temp = os.path.join(directory, "temp")
    fd = files.create(log)
    files.write(fd, b"durable")
    files.fsync(fd)
    files.fsync_dir(directory)
    files.write(fd, b"+volatile")
    files.close(fd)
    point = crash.points[-1]
    images = dict(crash_images(point, "model"))
    contents = {image[0][1] for image in images.values()}
    assert b"durable" in contents and b"durable+volatile" in contents
    assert b"durable" + bytes(9) in contents
    assert all(content.startswith(b"durable") and len(content) <= 16 for content in contents)

    fd = files.create(temp)
    files.write(fd, b"new")
    files.fsync(fd)
    files.close(fd)
    files.replace(temp, log)
    point = crash.points[-1]
    assert [dict(names) for names in point.name_states] == [
        {"log": 1}, {"log": 1, "temp": 2}, {"log": 2}]
    shown = {image for _, image in crash_images(point, "model")}
    assert (("log", b"durable"),) in shown  # the rename may be undone by a reboot
    assert (("log", b"new"),) in shown
    files.fsync_dir(directory)
    shown = {image for _, image in crash_images(crash.points[-1], "model")}
    assert shown == {(("log", b"new"),)}


def test_a_power_loss_may_leave_several_holes_in_the_volatile_part() -> None:
    durable = b"d" * 700
    current = durable + b"v" * 2400  # volatile: the rest of sector 1, then sectors 2..6
    sector_sets = set()
    for seed in range(20):
        content = _after_reboot(durable, current, "gaps-sectors", random.Random(seed))
        assert len(content) == len(current) and content.startswith(durable)
        sectors = [content[start:start + 512] for start in range(512, len(content), 512)]
        assert sectors[0][: 700 - 512] == durable[512:]
        holes = []
        for number, sector in enumerate(sectors):
            tail = sector[700 - 512:] if number == 0 else sector
            assert tail in (bytes(len(tail)), b"v" * len(tail)), number
            holes.append(tail == bytes(len(tail)))
        sector_sets.add(tuple(holes))
    # Some image has two holes with written data between them.
    assert any(
        any(h[i] and not h[j] and h[k] for i in range(len(h)) for j in range(i + 1, len(h))
            for k in range(j + 1, len(h)))
        for h in sector_sets)


# -- a second power loss, while the first one's torn log is recovered ---------------

REBOOT_WORKLOAD: list[Step] = [
    Step("open after the reboot", "open"),
    Step("set r1", "set", "r1", "after the reboot"),
    Step("flush r", "flush"),
    Step("set a r2", "set", "a", 99),
    Step("delete r1", "delete", "r1"),
    Step("close r", "close"),
]
TORN_IMAGES_PER_LEVEL = 6


@functools.cache
def _torn_images(level: str) -> list[tuple[str, Image, Typed]]:
    """Crash images of the main workload whose log open must cut a torn tail."""
    found: dict[Image, tuple[str, Image, Typed]] = {}
    recording = RECORDINGS[level]
    for index, point in enumerate(recording.points):
        for description, image in crash_images(point, f"{level}-{index}"):
            log = dict(image).get(STORE)
            if image in found or log is None or replay(log).torn_tail == 0:
                continue
            result = recover(image)
            if isinstance(result, dict):
                found[image] = (f"{point.label}, {description}", image, result)
    torn = list(found.values())
    step = max(1, len(torn) // TORN_IMAGES_PER_LEVEL)
    return torn[::step][:TORN_IMAGES_PER_LEVEL]


def _reboot_cases() -> list[object]:
    return [pytest.param(level, j, id=f"{level}-torn-{j}")
            for level in LEVELS for j in range(TORN_IMAGES_PER_LEVEL)]


@pytest.mark.parametrize(("level", "which"), _reboot_cases())
def test_a_power_loss_while_a_torn_log_is_recovered(level: str, which: int) -> None:
    """Crash again at every call of: open (truncating the torn tail), writes, close."""
    torn = _torn_images(level)
    assert len(torn) == TORN_IMAGES_PER_LEVEL, f"only {len(torn)} torn images"
    origin, image, initial = torn[which]
    recording = record(level, REBOOT_WORKLOAD, image, initial)
    assert any("(truncate)" in label for label in recording.calls), origin
    problems = [problem for index in range(len(recording.points))
                for problem in check_point(recording, index)]
    assert not problems, f"image from {origin}:\n" + "\n".join(problems)


# -- writes made while a compaction walks the entries ----------------------------

WRITES_DURING_THE_WALK: list[Step] = [
    Step("set walked-first during the walk", "set", "walked-first", 1),
    Step("set walked-later during the walk", "set", "walked-later", 1),
    Step("delete deleted-later during the walk", "delete", "deleted-later"),
    Step("set created during the walk", "set", "created", "new"),
]
"""Made after the walk took walked-first and before it takes the others: a
snapshot holding a later write without an earlier one is no prefix."""

WALK_WORKLOAD: list[Step] = [
    Step("open", "open"),
    Step("set walked-first", "set", "walked-first", 0),
    Step("set walked-later", "set", "walked-later", 0),
    Step("set deleted-later", "set", "deleted-later", "doomed"),
    Step("flush #1", "flush"),
    Step("compact while writing", "compact+writes", "", WRITES_DURING_THE_WALK),
    Step("set after the compaction", "set", "after", 2),
    Step("flush #2", "flush"),
    Step("set after the flush", "set", "tail", 3),
    Step("close", "close"),
]


def record_walk(level: str) -> Recording:
    """WALK_WORKLOAD, with a walk of one entry per batch, each batch written
    as soon as it is taken: the writes come between the first two batches."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_compaction, "SNAPSHOT_BATCH", 1)
        patch.setattr(_writer_thread, "WRITE_CHUNK", 1)
        patch.setattr(log_files_module, "WRITE_CHUNK", 1)
        return record(level, WALK_WORKLOAD)


@pytest.mark.parametrize("level", LEVELS)
def test_a_power_loss_after_writes_made_while_a_compaction_walks_keeps_a_prefix(
        level: str) -> None:
    """Issue 18, item 2: at "buffered" the walk took a later write from
    memory, without the earlier one it had walked past."""
    recording = record_walk(level)
    assert recording.walked == [["walked-first"]], "the writes came elsewhere in the walk"
    compaction = [kind for _, kind, _, _ in WALK_WORKLOAD].index("compact+writes")
    returned = (WALK_WORKLOAD[:compaction] + WRITES_DURING_THE_WALK
                + WALK_WORKLOAD[compaction:])  # the writes return before the compaction
    assert [point.label for point in recording.points if point.label.startswith("after ")] \
        == [f"after {label!r}" for label, _, _, _ in returned]
    assert len(recording.states) == len(returned) + 1
    problems = [problem for index in range(len(recording.points))
                for problem in check_point(recording, index)]
    assert not problems, f"{len(problems)} violations:\n" + "\n".join(problems[:5])
