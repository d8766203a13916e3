"""Every file the store writes in place of the log keeps the log's permissions.

A compaction, a repair, a migration and the first write after clear() put a
new file where the log was. Before, each new file was created 0600, so a
log a user had made readable to a group (for a dashboard, a backup job, an
``aiokv get`` run as another user) became unreadable to it at the first
compaction, silently. A new store is still created 0600.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from on_disk import store_files

from aiokv import KV
from aiokv._files import FileSystem, Permissions

MODES = [0o600, 0o640, 0o644, 0o660, 0o664]


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def a_store(path: Path, mode: int) -> None:
    with KV(path) as kv:
        for i in range(50):
            kv.set("counter", i)
        kv.set("kept", "yes")
    path.chmod(mode)


def compact(path: Path) -> None:
    with KV(path) as kv:
        kv.compact()


def clear_then_write(path: Path) -> None:
    with KV(path) as kv:
        kv.clear()
        assert not path.exists()
        kv.set("kept", "yes")


def repair(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[60] ^= 0xFF  # inside the first record; valid records follow
    path.write_bytes(bytes(data))
    with KV(path, recovery="salvage") as kv:
        assert kv.get("kept") == "yes"


REWRITES: dict[str, Callable[[Path], None]] = {
    "compaction": compact, "clear then write": clear_then_write, "salvage": repair}


def test_a_new_store_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "state.kv"
    with KV(path) as kv:
        kv.set("a", 1)
    assert mode_of(path) == 0o600
    assert mode_of(tmp_path / "state.kv.lock") == 0o600


@pytest.mark.parametrize("mode", MODES, ids=oct)
@pytest.mark.parametrize("rewrite", list(REWRITES))
def test_a_rewrite_of_the_log_keeps_its_mode(tmp_path: Path, rewrite: str, mode: int) -> None:
    path = tmp_path / "state.kv"
    a_store(path, mode)
    inode = path.stat().st_ino
    REWRITES[rewrite](path)
    # (clear() removes the file: the new one may get its inode number again)
    if rewrite != "clear then write":
        assert path.stat().st_ino != inode, "the log was not replaced: nothing was tested"
    assert mode_of(path) == mode
    with KV(path) as kv:
        assert kv.get("kept") == "yes"


def test_a_copy_set_aside_by_salvage_keeps_the_mode_of_the_original(tmp_path: Path) -> None:
    path = tmp_path / "state.kv"
    a_store(path, 0o640)
    repair(path)
    (copy,) = tmp_path.glob("state.kv.corrupt-*")
    assert mode_of(copy) == 0o640


@pytest.mark.parametrize("mode", MODES, ids=oct)
def test_aiokv_migrate_keeps_the_mode_of_the_json_file_and_its_backup(
        tmp_path: Path, mode: int) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"a": 1}))
    path.chmod(mode)
    result = subprocess.run([sys.executable, "-m", "aiokv", "migrate", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result
    assert mode_of(path) == mode
    assert mode_of(tmp_path / "state.json.bak") == mode


def test_the_mode_survives_the_store_s_umask_and_a_later_compaction(tmp_path: Path) -> None:
    path = tmp_path / "state.kv"
    a_store(path, 0o664)
    old = os.umask(0o077)  # a daemon's umask: new files would lose group bits
    try:
        compact(path)
        compact(path)
    finally:
        os.umask(old)
    assert mode_of(path) == 0o664


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root "
                    "(CI runs as root)")
def test_a_rewrite_by_root_keeps_the_owner_and_group_of_the_log(tmp_path: Path) -> None:
    path = tmp_path / "state.kv"
    a_store(path, 0o640)
    os.chown(path, 65534, 65534)  # nobody, as a service account would own it
    compact(path)
    info = path.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (65534, 65534, 0o640)


def test_a_process_that_may_not_give_the_file_away_keeps_its_group_and_mode(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.kv"
    a_store(path, 0o660)
    own = path.stat()
    wanted_uid = own.st_uid + 1  # as if another user owned it
    calls: list[tuple[int, int]] = []
    real_fchown = os.fchown

    def fchown(fd: int, uid: int, gid: int) -> None:
        calls.append((uid, gid))
        if uid != -1:
            raise PermissionError(1, "Operation not permitted")  # as for a non-root user
        real_fchown(fd, uid, gid)

    monkeypatch.setattr(os, "fchown", fchown)
    real_permissions = FileSystem.permissions
    seen: list[int] = []

    def permissions(self: FileSystem, fd: int) -> Permissions:
        found = real_permissions(self, fd)
        seen.append(fd)
        if len(seen) == 1:  # the claimed log's, read at open: as if another user owned it
            return found._replace(uid=wanted_uid)
        return found

    monkeypatch.setattr(FileSystem, "permissions", permissions)
    compact(path)
    # For each file the compaction writes (the log file appends move to,
    # then the new base): the owner is refused, the group is given.
    assert calls == [(wanted_uid, own.st_gid), (-1, own.st_gid)] * 2
    for name in store_files(path):
        info = os.stat(name)
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (
            own.st_uid, own.st_gid, 0o660)


def test_a_file_system_without_modes_does_not_stop_a_compaction(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.kv"
    a_store(path, 0o644)
    refused: list[int] = []

    def fchmod(fd: int, mode: int) -> None:
        refused.append(mode)
        raise PermissionError(1, "Operation not permitted")  # vfat mounted without "quiet"

    monkeypatch.setattr(os, "fchmod", fchmod)
    with KV(path) as kv:
        kv.compact()
        assert kv.stats().compactions == 1
        assert kv.get("kept") == "yes"
    assert refused == [0o644] * 2  # the log file appends moved to, the new base
