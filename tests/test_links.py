"""One log, one owner, whatever names lead to it; and nothing but a regular file.

The link matrix: a store reached through a symlink, a dangling symlink, a
symlinked directory or a hard link, with its lock file deleted meanwhile,
from this process and another. The store works on the real file (a
compaction replaces it, clear() removes it, a new log is created there) and
every link stays a link; two opens of one log, by any names, in any
processes, give ``LockedError`` to the second, which changes nothing.

Then what is not a regular file (a FIFO, a directory, a socket, a device
node the test makes itself): refused with a clear error, never read, never
replaced, nothing created beside it; ``aiokv check`` answers at once too.
"""

from __future__ import annotations

import functools
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from calls import returns_within

from aiokv import KV, LockedError
from aiokv._cli import main as cli_main

WAIT = 10.0


def open_in_another_process(path: Path) -> str:
    """What a second process gets when it opens ``path``: "LockedError" or "opened"."""
    program = ("import sys\nfrom aiokv import KV, LockedError\n"
               "try:\n    KV(sys.argv[1]).open()\nexcept LockedError:\n    print('LockedError')\n"
               "else:\n    print('opened')\n")
    done = subprocess.run([sys.executable, "-c", program, str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def write_some(kv: KV, prefix: str, count: int = 300) -> dict[str, object]:
    written: dict[str, object] = {}
    for i in range(count):
        kv.set(f"{prefix}{i}", i)
        written[f"{prefix}{i}"] = i
    return written


def contents(path: Path) -> dict[str, object]:
    with KV(path) as kv:
        return kv.get_all()


# -- symlinks ---------------------------------------------------------------------


def test_through_a_symlink_compact_replaces_the_target_and_the_link_stays_a_link(
        tmp_path: Path) -> None:
    real, link = tmp_path / "real.kv", tmp_path / "link.kv"
    with KV(real) as kv:
        kv.set("before", 0)
    link.symlink_to(real.name)
    with KV(link) as kv:
        written = write_some(kv, "k")
        for _ in range(3):
            write_some(kv, "k")  # dead bytes for the compaction to drop
        kv.compact()
        assert kv.stats().compactions == 1
    assert link.is_symlink() and os.readlink(link) == real.name
    assert contents(real) == {"before": 0, **written}
    # The log file appends moved to sits beside the target, not the link.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "link.kv", "real.kv", "real.kv.lock", "real.kv.log-1"]


def test_clear_through_a_symlink_removes_the_data_of_the_target_and_keeps_the_link(
        tmp_path: Path) -> None:
    real, link = tmp_path / "real.kv", tmp_path / "link.kv"
    link.symlink_to(real.name)
    with KV(link) as kv:
        kv.set("secret", "please forget me")
        kv.flush()
        assert kv.clear()
        assert not real.exists() and link.is_symlink()
        kv.set("after", 1)  # creates the target again, through the link
    assert link.is_symlink()
    assert b"please forget me" not in real.read_bytes()
    assert contents(link) == {"after": 1}


def test_the_first_open_of_a_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    link = tmp_path / "link.kv"
    link.symlink_to(Path("data") / "real.kv")
    with KV(link) as kv:
        kv.set("k", 1)
    assert link.is_symlink()
    assert contents(tmp_path / "data" / "real.kv") == {"k": 1}


def test_a_store_in_a_symlinked_directory_works_in_the_real_directory(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to("real", target_is_directory=True)
    with KV(tmp_path / "alias" / "state.kv") as kv:
        written = write_some(kv, "k")
        kv.compact()
    assert (tmp_path / "alias").is_symlink()
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == [
        "state.kv", "state.kv.lock", "state.kv.log-1"]
    assert contents(tmp_path / "real" / "state.kv") == written


# -- two opens of one log, by any names --------------------------------------------


NAMES: dict[str, Callable[[Path], Path]] = {}
"""How a second name for ``tmp_path/real.kv`` is made, by kind."""


def _symlink(tmp_path: Path) -> Path:
    (tmp_path / "link.kv").symlink_to("real.kv")
    return tmp_path / "link.kv"


def _hard_link(tmp_path: Path) -> Path:
    os.link(tmp_path / "real.kv", tmp_path / "hard.kv")
    return tmp_path / "hard.kv"


def _directory_link(tmp_path: Path) -> Path:
    (tmp_path / "alias").symlink_to(".", target_is_directory=True)
    return tmp_path / "alias" / "real.kv"


def _same_name_lock_deleted(tmp_path: Path) -> Path:
    (tmp_path / "real.kv.lock").unlink()
    return tmp_path / "real.kv"


NAMES.update({"symlink": _symlink, "hard link": _hard_link,
              "symlinked directory": _directory_link,
              "same name, lock file deleted": _same_name_lock_deleted})


@pytest.mark.parametrize("where", ["this process", "another process"])
@pytest.mark.parametrize("name", list(NAMES))
def test_a_second_open_of_one_log_by_any_name_gets_locked_error_and_changes_nothing(
        tmp_path: Path, name: str, where: str) -> None:
    real = tmp_path / "real.kv"
    owner = KV(real).open()
    written = write_some(owner, "k", 2000)  # the log ends in reserved space now
    other = NAMES[name](tmp_path)
    before = real.read_bytes()
    if where == "this process":
        with pytest.raises(LockedError):
            KV(other).open()
    else:
        assert open_in_another_process(other) == "LockedError"
    assert real.read_bytes() == before  # nothing cut, nothing appended
    written.update(write_some(owner, "after", 2000))  # the owner is unaffected
    owner.compact()
    written.update(write_some(owner, "compacted"))
    owner.close()
    assert contents(real) == written


def test_a_cleared_store_whose_lock_file_was_deleted_never_replaces_another_openers_log(
        tmp_path: Path) -> None:
    """After clear() there is no log to lock. If the lock file is deleted
    then, a second opener gets in and creates the log; the owner's next write
    must not replace that file (which would lose the other's writes): the
    owner gets LockedError, and the other's log stays."""
    real = tmp_path / "real.kv"
    owner = KV(real).open()
    write_some(owner, "old", 10)
    assert owner.clear()
    (tmp_path / "real.kv.lock").unlink()
    with KV(real) as other:
        written = write_some(other, "theirs", 50)
    with pytest.raises(LockedError):
        owner.set("mine", 1)
    owner.close()
    assert contents(real) == written


def test_a_second_opener_never_gets_in_while_the_owner_compacts_over_and_over(
        tmp_path: Path) -> None:
    """The owner's compaction replaces the log: an opener that opened the old
    file just before must not take it as free once the owner lets it go."""
    real = tmp_path / "real.kv"
    owner = KV(real).open()
    written = write_some(owner, "k", 500)
    (tmp_path / "real.kv.lock").unlink()
    stop = threading.Event()

    def compact_over_and_over() -> None:
        while not stop.is_set():
            owner.compact()

    compactor = threading.Thread(target=compact_over_and_over)
    compactor.start()
    outcomes = set()
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            second = KV(real)
            try:
                second.open()
            except LockedError:
                outcomes.add("LockedError")
            else:
                outcomes.add("opened")
                second.close()
            os.remove(tmp_path / "real.kv.lock")  # each attempt made a fresh one
    finally:
        stop.set()
        compactor.join()
    assert outcomes == {"LockedError"}
    assert owner.stats().compactions > 3
    owner.close()
    assert contents(real) == written


# -- not a regular file -------------------------------------------------------------


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _directory(path: Path) -> None:
    path.mkdir()


def _socket(path: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()  # the socket file stays


def _device(path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    # A node of our own in the test's directory, for the device that reads as
    # empty (/dev/null's numbers): the case that once replaced a real one.
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))


NOT_FILES: dict[str, Callable[[Path], None]] = {
    "FIFO": _fifo, "directory": _directory, "socket": _socket, "character device": _device}


@pytest.mark.parametrize("kind", list(NOT_FILES))
def test_a_path_that_is_not_a_regular_file_is_refused_and_left_as_it_is(
        tmp_path: Path, kind: str) -> None:
    path = tmp_path / "state.kv"
    NOT_FILES[kind](path)
    before = os.lstat(path)
    for target in (path, tmp_path / "link.kv"):
        if target != path:
            target.symlink_to(path.name)
        with pytest.raises(OSError) as raised:
            returns_within(WAIT, KV(target).open, unblock=path)
        error = raised.value
        assert str(target) in str(error)
        assert kind.rsplit(maxsplit=1)[-1].lower() in str(error).lower()
    after = os.lstat(path)
    assert (stat.S_IFMT(after.st_mode), after.st_ino, after.st_rdev) == (
        stat.S_IFMT(before.st_mode), before.st_ino, before.st_rdev)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.kv", "state.kv"]


@pytest.mark.parametrize("kind", ["FIFO", "directory", "character device"])
def test_aiokv_check_refuses_what_is_not_a_regular_file_at_once(
        tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "state.kv"
    NOT_FILES[kind](path)
    for command in ("check", "dump", "stats"):
        code = returns_within(WAIT, functools.partial(cli_main, [command, str(path)]),
                              unblock=path)
        assert code in (1, 8), (command, code)
        assert "state.kv" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.kv"]
