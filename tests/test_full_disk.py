"""A real, small file system filled to ENOSPC at every level, during sets,
compaction and open.

Each test mounts its own file system (a 4 MiB tmpfs, or an 8 MiB ext4 image
on a loop device), fills it with a filler file, and checks what a program
sees: it is told (an ``OSError`` from ``set``/``flush``/``close``) while
writes cannot reach the disk, nothing acknowledged is lost, writes resume
once space is freed, and a reopen holds every acknowledged write. Mounting
needs root: elsewhere the tests skip, saying so (CI runs as root, where a
mount that fails is a failure).

Before: at "buffered" ``set()`` kept succeeding on a full disk, the backlog
was retried as one write larger than the space freed, and ``flush()`` and
``close()`` failed forever while ``stats().pending_writes`` read 0.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aiokv import KV

LEVELS = ["fsync", "flush", "buffered"]
KINDS = ["tmpfs", "ext4"]
TOLD_WITHIN = 10.0
"""Seconds of writing to a full disk before the program must have been told."""
VALUE = "v" * 200


class SmallFileSystem:
    """A small file system mounted by the test, and a filler file in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / "filler"
        self.opened: list[KV] = []

    def fill(self) -> None:
        """Take every free byte (big writes first, then smaller ones)."""
        chunk = 1 << 16
        with open(self.filler, "ab", buffering=0) as filler:
            while chunk:
                try:
                    while True:
                        filler.write(b"\xa5" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    chunk //= 2

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def store(self) -> Path:
        return self.root / "state.kv"

    def open(self, path: Path, **options: object) -> KV:
        """A store in this file system, closed (with space freed) at the end."""
        kv = KV(path, **options).open()  # type: ignore[arg-type]
        self.opened.append(kv)
        return kv

    def close_all(self) -> None:
        self.free()
        for kv in self.opened:
            kv.close()


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


def _cannot_mount(kind: str, why: str) -> None:
    """Skip, saying why; but in CI (root on a VM) a tmpfs must mount. A loop
    device is a kernel feature some machines lack: without one, ext4 skips."""
    if kind == "tmpfs" and os.environ.get("CI") == "true":
        pytest.fail(f"CI runs as root and must mount a small file system: {why}")
    pytest.skip(why)


@pytest.fixture(params=KINDS)
def small_fs(request: pytest.FixtureRequest) -> Iterator[SmallFileSystem]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root (CI runs as root)")
    kind = str(request.param)
    work = Path(tempfile.mkdtemp(prefix=f"aiokv-{kind}-"))
    mountpoint = work / "mnt"
    mountpoint.mkdir()
    if kind == "tmpfs":
        done = _run("mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mountpoint))
    else:
        image = work / "fs.img"
        with open(image, "wb") as file:
            file.truncate(8 << 20)
        made = _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
        if made.returncode != 0:
            shutil.rmtree(work)
            _cannot_mount(kind, f"mkfs.ext4 failed: {made.stderr.strip()}")
        done = _run("mount", "-o", "loop", str(image), str(mountpoint))
    if done.returncode != 0:
        shutil.rmtree(work)
        _cannot_mount(kind, f"mount -t {kind} failed: {done.stderr.strip()}")
    small = SmallFileSystem(mountpoint)
    try:
        yield small
    finally:
        small.close_all()
        unmounted = _run("umount", str(mountpoint))
        if unmounted.returncode != 0:
            _run("umount", "-l", str(mountpoint))
        shutil.rmtree(work, ignore_errors=True)


def write_until_told(kv: KV, acknowledged: dict[str, object], prefix: str) -> OSError:
    """Set new keys until a set raises; return what it raised."""
    deadline = time.monotonic() + TOLD_WITHIN
    i = 0
    while time.monotonic() < deadline:
        key = f"{prefix}{i}"
        try:
            kv.set(key, VALUE)
        except OSError as exc:
            return exc
        acknowledged[key] = VALUE
        i += 1
        if i % 50 == 0:
            time.sleep(0.01)  # "buffered" learns of the failure from its writer thread
    pytest.fail(f"{i} sets on a full disk in {TOLD_WITHIN} s and none raised")


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TOLD_WITHIN
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


def set_succeeds(kv: KV, key: str) -> bool:
    try:
        kv.set(key, VALUE)
    except OSError:
        return False
    return True


def reopened(path: Path) -> dict[str, object]:
    with KV(path) as kv:
        return kv.get_all()


@pytest.mark.parametrize("durability", LEVELS)
def test_sets_on_a_full_disk_raise_and_resume_once_space_is_freed_losing_nothing(
        small_fs: SmallFileSystem, durability: str) -> None:
    path = small_fs.store()
    acknowledged: dict[str, object] = {}
    kv = small_fs.open(path, durability=durability)
    for i in range(200):
        kv.set(f"before{i}", i)
        acknowledged[f"before{i}"] = i
    small_fs.fill()
    told = write_until_told(kv, acknowledged, "full")
    assert told.errno == errno.ENOSPC, told
    if durability == "buffered":
        held = kv.stats().pending_writes
        assert held > 0  # the acknowledged writes that wait for space, counted
        # Every write raises now, and stays undone.
        with pytest.raises(OSError, match="no new write is accepted"):
            kv.set("refused", 1)
        assert kv.get("refused") is None
    else:
        assert kv.stats().pending_writes == 0
    if durability == "buffered":  # at the other levels nothing acknowledged is held
        with pytest.raises(OSError):
            kv.flush()
        with pytest.raises(OSError):
            kv.close()  # and the store stays open, its writes still held
        assert kv.get(next(reversed(acknowledged))) == VALUE
    small_fs.free()
    eventually(lambda: set_succeeds(kv, "resumed"), "a set succeeds once space is freed")
    acknowledged["resumed"] = VALUE
    assert kv.stats().pending_writes <= 1
    kv.flush()
    kv.close()
    assert reopened(path) == acknowledged


@pytest.mark.parametrize("durability", LEVELS)
def test_batches_on_a_full_disk_raise_whole_and_the_store_reopens_to_whole_batches(
        small_fs: SmallFileSystem, durability: str) -> None:
    """An atomic batch is one record: on a full disk it raises and leaves
    nothing of itself, in memory or, after a reopen, in the files."""
    path = small_fs.store()
    acknowledged: dict[str, object] = {}
    kv = small_fs.open(path, durability=durability)
    small_fs.fill()
    deadline = time.monotonic() + TOLD_WITHIN
    i = 0
    while True:
        assert time.monotonic() < deadline, f"{i} batches on a full disk and none raised"
        batch = {f"b{i}:{part}": VALUE for part in "xyz"}
        try:
            kv.set_many(batch)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC or "no new write" in str(exc), exc
            break
        acknowledged.update(batch)
        i += 1
        if i % 20 == 0:
            time.sleep(0.01)  # "buffered" learns of the failure from its writer thread
    assert kv.get_all() == acknowledged  # the failed batch left nothing in memory
    small_fs.free()
    eventually(lambda: set_succeeds(kv, "resumed"), "a set succeeds once space is freed")
    kv.set_many({"after:x": 1, "after:y": 2})
    acknowledged.update({"resumed": VALUE, "after:x": 1, "after:y": 2})
    kv.close()
    assert reopened(path) == acknowledged


@pytest.mark.parametrize("durability", LEVELS)
def test_a_backlog_larger_than_the_space_freed_goes_out_a_chunk_at_a_time(
        small_fs: SmallFileSystem, durability: str) -> None:
    """"buffered": held writes larger than the freed space; the rest of the levels
    write as they go. Whatever the level, freeing space bit by bit lets every
    acknowledged write reach the file."""
    path = small_fs.store()
    acknowledged: dict[str, object] = {}
    kv = small_fs.open(path, durability=durability, flush_interval=2.0)
    small_fs.fill()
    for i in range(3000):  # ~700 KB at "buffered", held: it has 2 s before writing
        key = f"b{i}"
        try:
            kv.set(key, VALUE)
        except OSError:
            break
        acknowledged[key] = VALUE
    with open(small_fs.filler, "r+b") as filler:  # free room for a third of it
        size = os.fstat(filler.fileno()).st_size
        filler.truncate(max(0, size - 256 * 1024))
    if durability == "buffered":
        eventually(lambda: kv.stats().pending_writes < len(acknowledged),
                   "part of the backlog is written")
    small_fs.free()
    eventually(lambda: set_succeeds(kv, "resumed"), "writes resume")
    acknowledged["resumed"] = VALUE
    kv.close()
    assert reopened(path) == acknowledged


@pytest.mark.parametrize("durability", LEVELS)
def test_a_compaction_on_a_full_disk_raises_leaves_no_temp_file_and_the_store_goes_on(
        small_fs: SmallFileSystem, durability: str) -> None:
    path = small_fs.store()
    kv = small_fs.open(path, durability=durability)
    for round_ in range(3):
        for i in range(300):
            kv.set(f"k{i}", f"{round_}-{i}-" + "x" * 100)
    kv.flush()
    small_fs.fill()
    with pytest.raises(OSError) as raised:
        kv.compact()
    assert raised.value.errno == errno.ENOSPC
    assert sorted(name for name in os.listdir(small_fs.root)
                  if name.startswith("state.kv")) == ["state.kv", "state.kv.lock"]
    assert kv.get("k7") == "2-7-" + "x" * 100
    small_fs.free()
    kv.compact()
    kv.set("after", 1)
    kv.close()
    held = reopened(path)
    assert held["after"] == 1 and held["k299"] == "2-299-" + "x" * 100 and len(held) == 301


def _killed_writer(path: Path, count: int) -> None:
    """A process that writes ``count`` keys at "flush" and dies without closing."""
    program = (f"from aiokv import KV; import os; kv = KV({str(path)!r})\n"
               f"for i in range({count}): kv.set(f'k{{i}}', i)\nos._exit(0)")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_opening_on_a_full_disk_raises_or_opens_and_loses_nothing(
        small_fs: SmallFileSystem) -> None:
    """Open recovers (cuts the reserved space a killed writer left, fsyncs and
    vouches for its last frames: a write) and converts a JSON state file (a new
    file and a backup): on a full disk it either works or raises, leaving the
    store whole, and once space is freed it opens with everything."""
    path = small_fs.store()
    _killed_writer(path, 2000)
    small_fs.fill()
    try:
        held = reopened(path)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
        small_fs.free()
        held = reopened(path)
    assert held == {f"k{i}": i for i in range(2000)}

    legacy = small_fs.root / "legacy.json"
    small_fs.free()
    legacy.write_text(json.dumps({f"j{i}": "y" * 100 for i in range(3000)}))
    original = legacy.read_bytes()
    small_fs.fill()
    with pytest.raises(OSError) as raised:
        small_fs.open(legacy)
    assert raised.value.errno == errno.ENOSPC
    assert legacy.read_bytes() == original  # the JSON file is never half replaced
    assert [name for name in os.listdir(small_fs.root) if ".tmp-" in name] == []
    small_fs.free()
    with KV(legacy) as kv:
        assert len(kv.get_all()) == 3000
